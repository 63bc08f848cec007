"""Outputs that do not fill the disk (issue 17): bytes written per image, wall time per cell and peak disk.

    .venv/bin/python bench/cell_storage.py [--images 16] [--batch-sizes 1,2,4,8]

One synthetic dataset and random checkpoint, ONNX Runtime CPU (`cpu`), one cell per batch size, run four
ways, each through the pipeline's own functions:
- `today`: infer every cell, then evaluate every cell; every output is kept (the path before issue 17);
- `keep_outputs`: `measure_cell` with keep_outputs true (infer, evaluate, store; nothing deleted);
- `default`: `measure_cell` (infer, evaluate, store, delete the counted logits);
- `labels_on_device`: `measure_cell` with ArgMax compiled into the model (int32 label maps), deleted.
A sampler thread records the bytes under the run's folder every 50 ms (the peak disk of the run). The tie
rate is the share of pixels where the label maps differ from the host-side argmax of the FP16 logits.
Writes bench/cell_storage.json and its section of BENCHMARKS.md (bench/report.py renders it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "cell_storage.json"


def folder_bytes(folder: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # deleted between listing and stat
                total += os.lstat(os.path.join(base, name)).st_size
    return total


class PeakDisk:
    """The largest byte count seen under a folder, sampled every 50 ms on a thread."""

    def __init__(self, folder: Path):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, folder_bytes(self.folder))
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, folder_bytes(self.folder))


def setup(root: Path, images: int, batch_sizes: list[int], labels: bool) -> dict:
    from erfnet_tasks import build, plan

    form = {
        "weights": str(root / "w.pth"),
        "dataset_root": str(root / "cityscapes"),
        "targets": ["cpu"],
        "batch_sizes": batch_sizes,
        "labels_on_device": labels,
    }
    env = plan.resolve_environment(form, f"bench_{'labels' if labels else 'logits'}")
    model = build.fix_bn_step(build.export_step(env))
    prep = build.preprocess_dataset(env)
    cells = [build.compile_cell(c, model, env) for c in plan.plan_cells(env, "host")]
    return {"env": env, "prep": prep, "cells": cells}


def run_way(way: str, s: dict, work: Path) -> dict:
    """One way over every cell: seconds per cell, bytes per image written, peak disk, the mIoUs."""
    from erfnet_tasks import measure

    keep = way in ("today", "keep_outputs")
    env = s["env"].model_copy(update={"work_dir": str(work), "params": {**s["env"].params, "keep_outputs": keep}})
    seconds, results, written = [], [], []
    with PeakDisk(work) as disk:
        if way == "today":
            started = time.perf_counter()
            inferred = [measure.infer_cell(c, s["prep"], env) for c in s["cells"]]
            for cell in inferred:
                written.append(_bytes_per_image(cell))
            results = [measure.evaluate_cell(c, s["prep"]) for c in inferred]
            seconds = [(time.perf_counter() - started) / len(s["cells"])] * len(s["cells"])
        else:
            for cell in s["cells"]:
                started = time.perf_counter()
                result = measure.measure_cell(cell, s["prep"], env)
                seconds.append(time.perf_counter() - started)
                results.append(result)
                written.append(_written_by(result))
    return {
        "seconds_per_cell": seconds,
        "bytes_per_image": max(written),
        "peak_bytes": disk.peak,
        "left_bytes": folder_bytes(work / "outputs"),
        "miou": [r.evaluation.miou for r in results],
        "label_mode": [r.evaluation.label_mode.value for r in results],
        "summaries": [r.inference.summary for r in results],
    }


def _bytes_per_image(cell) -> int:
    from erfnet_tasks.outputs import read_summary

    entries = read_summary(cell.inference.summary)
    return max(os.path.getsize(e.outfiles[0]) for e in entries)


def _written_by(result) -> int:
    """Bytes per image the cell wrote: its planned output format (the files may be gone)."""
    return result.planned.output.bytes_per_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.evaluate import prediction_disagreement
    from erfnet_tasks.model import write_random_checkpoint

    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench_cell_storage_") as tmp:
        root = Path(tmp)
        os.environ["ERFNET_DATA_DIR"] = os.environ["ERFNET_DATA_ROOTS"] = str(root)
        write_sample_data(root / "cityscapes", args.images)
        write_random_checkpoint(root / "w.pth", seed=7)
        logits, labels = setup(root, args.images, batch_sizes, False), setup(root, args.images, batch_sizes, True)
        ways = {}
        for way, s in (("today", logits), ("keep_outputs", logits), ("default", logits), ("labels_on_device", labels)):
            ways[way] = run_way(way, s, root / "work" / way)
            print(way, json.dumps({k: v for k, v in ways[way].items() if k != "summaries"}), flush=True)
        # The default way deleted its label maps: the tie rate compares a kept batch-1 cell with kept logits.
        tie_env = labels["env"].model_copy(
            update={"work_dir": str(root / "work" / "ties"), "params": {**labels["env"].params, "keep_outputs": True}}
        )
        from erfnet_tasks import measure

        kept_labels = measure.measure_cell(labels["cells"][0], labels["prep"], tie_env)
        differing, total = prediction_disagreement(kept_labels.inference.summary, ways["keep_outputs"]["summaries"][0])
    for way in ways.values():
        del way["summaries"]
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    result = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git,
        "images": args.images,
        "batch_sizes": batch_sizes,
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "ways": ways,
        "tie_pixels": differing,
        "pixels": total,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
