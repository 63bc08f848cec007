"""`erfnet diagnose` on full-size inputs (issue 27: "in seconds for 2 images") -> bench/diagnose.json.

    .venv/bin/python bench/diagnose.py [--images 2] [--repeats 3]

Two synthetic full-size Cityscapes images (2048x1024 PNGs), preprocessed as the guide does (512x1024
model inputs); the random checkpoint's fixed export is the golden. Compared with it, as a stored cell
would be: ONNX Runtime, the `cpu` backend's compiled model (batch 1) of a copy with one conv's weights
perturbed; PyTorch, the checkpoint with that conv perturbed. Each diagnosis is the whole command in its
own process (`erfnet diagnose ... --images N --json`), the repeats interleaved; wall seconds and the
process's peak RSS. bench/report.py renders its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "diagnose.json"
PERTURBED_NODE = "/encoder/layers.3/conv1x3_1/Conv"
PERTURBED_WEIGHT = "module.encoder.layers.3.conv1x3_1.weight"


def prepare(root: Path, images: int) -> dict[str, Path]:
    """Inputs, golden and the two perturbed models, built with the pipeline's own functions."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    from erfnet_tasks.backends import onnxruntime as ort_backend
    from erfnet_tasks.datasets.cityscapes import dataset_dirs, preprocess
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint
    from erfnet_tasks.onnx_export import export_onnx, fix_bn

    write_sample_data(root / "cs", images, seed=0)
    img_dir, gt_dir = dataset_dirs(root / "cs")
    preprocess(img_dir, root / "prep", gt_dir, root / "gt", progress=False)
    weights = write_random_checkpoint(root / "erfnet_random_untrained.pth", seed=0)
    export_onnx(weights, root / "ErfNet_origin.onnx", verify_batches=(1,))
    fix_bn(root / "ErfNet_origin.onnx", root / "ErfNet.onnx")

    model = onnx.load(str(root / "ErfNet.onnx"))
    node = next(n for n in model.graph.node if n.name == PERTURBED_NODE)
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    value = numpy_helper.to_array(weight)
    noisy = value + np.random.default_rng(1).normal(0, 2 * value.std(), value.shape).astype(value.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    onnx.save(model, str(root / "perturbed.onnx"))
    (root / "compiled").mkdir()
    compiled = ort_backend.compile(root / "perturbed.onnx", root / "compiled", chip="cpu", batch_size=1).path

    state = torch.load(weights, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(1)
    state[PERTURBED_WEIGHT] = state[PERTURBED_WEIGHT] + torch.randn(
        state[PERTURBED_WEIGHT].shape, generator=generator
    ) * (2 * state[PERTURBED_WEIGHT].std())
    torch.save(state, root / "perturbed.pth")
    return {
        "golden": root / "ErfNet.onnx",
        "prep": root / "prep",
        "onnxruntime": compiled,
        "torch": root / "perturbed.pth",
    }


def command(paths: dict[str, Path], backend: str, images: int) -> list[str]:
    return [
        str(Path(sys.executable).with_name("erfnet")),
        "diagnose",
        "--golden",
        str(paths["golden"]),
        "--model",
        str(paths[backend]),
        "--backend",
        backend,
        "--input",
        str(paths["prep"]),
        "--images",
        str(images),
        "--json",
    ]


def timed(argv: list[str], out: Path) -> tuple[float, float, dict]:
    """(wall s, peak RSS MiB, the JSON printed) of one diagnosis in its own process."""
    started = time.perf_counter()
    with open(out, "w") as stdout:
        child = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {child.stderr.read().decode()[-800:] if child.stderr else ''}")
    return seconds, usage.ru_maxrss / 1024, json.loads(out.read_text())


def git_head() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE.parent)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    backends = ("onnxruntime", "torch")
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="erfnet-bench-diagnose-") as tmp:
        paths = prepare(Path(tmp), args.images)
        runs: dict[str, dict[str, list]] = {
            b: {"seconds": [], "peak_rss_mib": [], "first_diverging": []} for b in backends
        }
        for _ in range(args.repeats):
            for backend in backends:  # interleaved: a burst of load elsewhere hits both alike
                seconds, rss, doc = timed(command(paths, backend, args.images), Path(tmp) / "out.json")
                runs[backend]["seconds"].append(round(seconds, 2))
                runs[backend]["peak_rss_mib"].append(round(rss))
                runs[backend]["first_diverging"].append((doc["first_diverging"] or {}).get("node"))
                runs[backend]["layers"] = len(doc["layers"])
                print(f"{backend}: {seconds:.1f} s, {rss:.0f} MiB", file=sys.stderr, flush=True)
    result = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_head(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "images": args.images,
        "repeats": args.repeats,
        "perturbed_node": PERTURBED_NODE,
        "command": "erfnet diagnose --golden ErfNet.onnx --model MODEL --backend BACKEND --input PREP "
        f"--images {args.images} --json",
        "backends": {b: {**r, "median_s": statistics.median(r["seconds"])} for b, r in runs.items()},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
