"""The profiled pass's cost (issue 27): its wall time against a 500-image cell's measured pass, ONNX Runtime CPU.

    .venv/bin/python bench/profiled_pass.py [--images 500] [--size 128x256] [--batch-sizes 1,8] [--repeats 3]

ERFNET (a random checkpoint, exported and BN-fixed as the pipeline does) with its input set to --size (it is
fully convolutional: the same ops on fewer pixels; 500 full-size images take some 4 minutes per pass on
2 cores and write 10 GB of logits), compiled by the ONNX Runtime backend at each batch size. Per batch size,
--repeats interleaved rounds of, side by side:
- measured: ``backend.infer`` over the images, what ``measure.infer_cell`` runs on its lease (FP16 outputs
  written, the summary);
- profiled: ``profiled_pass.profile_cell``, what ``infer_cell`` runs right after it (a new session with
  the profiler on, one warm-up batch, ``ERFNET_PROFILE_IMAGES`` images, the trace read into the op profile).
The cost is profiled / measured (target: at most 5%), from the medians. A full-size (512x1024) point is
added: the profiled pass at full size against --full-images full-size images measured, scaled to 500
images by the measured per-image time (an extrapolation, said so).
Writes bench/profiled_pass.json and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
RESULTS = HERE / "profiled_pass.json"
MARKDOWN = REPO / "BENCHMARKS.md"
START, END = "<!-- profiled-pass:start -->", "<!-- profiled-pass:end -->"
TARGET = 0.05


def sized_model(source: Path, out: Path, height: int, width: int) -> Path:
    import onnx

    model = onnx.load(str(source))
    for io in [*model.graph.input, *model.graph.output]:
        dims = io.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = height, width
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out


def write_inputs(folder: Path, images: int, height: int, width: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        rng.random((3, height, width), dtype=np.float32).tofile(folder / f"img_{i}.bin")
    return folder


def one_round(backend, model: Path, inputs: Path, work: Path, batch: int) -> tuple[float, float, int]:
    """(measured s, profiled s, ops profiled): the two passes of one cell, as infer_cell runs them."""
    from erfnet_tasks.profiled_pass import profile_cell

    out = work / f"out_bs{batch}"
    started = time.perf_counter()
    backend.infer(model, inputs, out, batch_size=batch, device="cpu")
    measured = time.perf_counter() - started
    started = time.perf_counter()
    ops = profile_cell(backend, str(model), str(inputs), out, batch_size=batch, device="cpu", what="bench")
    profiled = time.perf_counter() - started
    shutil.rmtree(out)
    assert ops, "the profiled pass recorded nothing"
    return measured, profiled, len(ops)


def measure_size(backend, golden: Path, work: Path, images: int, size: tuple[int, int], batches, repeats) -> dict:
    height, width = size
    model_src = sized_model(golden, work / f"erfnet_{height}x{width}.onnx", height, width)
    inputs = write_inputs(work / f"inputs_{height}x{width}_{images}", images, height, width)
    rows = {}
    models = {b: backend.compile(model_src, work / f"bs{b}", chip="cpu", batch_size=b).path for b in batches}
    runs: dict[int, list[tuple[float, float, int]]] = {b: [] for b in batches}
    for _ in range(repeats):  # interleaved: each round runs every batch size once
        for b in batches:
            runs[b].append(one_round(backend, models[b], inputs, work, b))
            print(f"{height}x{width} bs{b}: {runs[b][-1]}", flush=True)
    for b in batches:
        measured = [m for m, _p, _n in runs[b]]
        profiled = [p for _m, p, _n in runs[b]]
        rows[str(b)] = {
            "measured_s": measured,
            "profiled_s": profiled,
            "ops": runs[b][0][2],
            "measured_median_s": statistics.median(measured),
            "profiled_median_s": statistics.median(profiled),
            "cost": statistics.median(profiled) / statistics.median(measured),
        }
    shutil.rmtree(inputs)
    return rows


def render(r: dict) -> str:
    batches = ", ".join(r["small"])
    h, w = r["size"]
    L = [
        START,
        "## The profiled pass's cost (issue 27)",
        "",
        f"`{r['command']}` (run separately from `make bench`; {r['when']}, git {r['git']}, {r['cores']} cores, "
        f"load average before {r['load_before']}, after {r['load_after']}; ONNX Runtime {r['onnxruntime']}, "
        f"`ERFNET_PROFILE_IMAGES={r['profile_images']}`). Each cell's profiled pass runs after its measured pass, "
        "on the same device lease (`measure.infer_cell`): a new session with ONNX Runtime's profiler on, one "
        "warm-up batch, the profiled images, the trace read into the op profile. Measured pass: the backend's "
        f"`infer` over the cell's images, FP16 outputs written. Median (min–max) of {r['repeats']} interleaved "
        "repeats, side by side; cost = profiled / measured, from the medians; target at most "
        f"{TARGET:.0%} of a 500-image cell.",
        "",
        f"**{r['images']} images at {h}x{w}, not full size**: ERFNET is fully convolutional, so a smaller "
        "input runs the same ops on fewer pixels; 500 full-size images take minutes per pass on this "
        "2-core machine and write 10 GB of logits, too slow to repeat side by side. The full-size row below "
        f"measures both passes at 512x1024 but {r['full']['images']} measured images, and scales the measured "
        "pass to 500 images by its per-image time: an extrapolation.",
        "",
        "| input | images | batch | measured pass s | profiled pass s | ops profiled | cost | met |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    for b, row in r["small"].items():
        met = "yes" if row["cost"] <= TARGET else "**no**"
        L.append(
            f"| {h}x{w} | {r['images']} | {b} | {spread(row['measured_s'])} | {spread(row['profiled_s'])} | "
            f"{row['ops']} | {row['cost']:.2%} | {met} |"
        )
    full = r["full"]
    for b, row in full["rows"].items():
        scaled = row["measured_median_s"] * 500 / full["images"]
        cost = row["profiled_median_s"] / scaled
        met = "yes" if cost <= TARGET else "**no**"
        L.append(
            f"| 512x1024 | {full['images']} measured, scaled to 500 | {b} | {spread(row['measured_s'])} "
            f"(500: {scaled:.1f}) | {spread(row['profiled_s'])} | {row['ops']} | {cost:.2%} | {met} |"
        )
    L += [
        "",
        f"Batch sizes {batches}: the profiled pass is one warm-up batch and the batches of its "
        f"{r['profile_images']} images (at least one), so its cost grows with the batch size: at batch 64 it "
        "is 2 batches beside the 8 of a 500-image cell (arithmetic, not measured here).",
        "",
    ]
    if r["load_before"][0] > 1:
        L += [
            f"The machine was shared during this run (load average {r['load_before'][0]} at the start, on "
            f"{r['cores']} cores): the spread of the measured passes comes from it; both passes of a round ran "
            "back to back, under the same load.",
            "",
        ]
    L.append(END)
    return "\n".join(L)


def write_markdown(results: dict) -> None:
    text = MARKDOWN.read_text(encoding="utf-8") if MARKDOWN.exists() else "# Benchmarks\n"
    section = render(results)
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    MARKDOWN.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", default="128x256", help="HEIGHTxWIDTH of the small input (multiples of 8)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-images", type=int, default=16, help="full-size images of the extrapolated row")
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from the JSON")
    args = parser.parse_args()
    if args.report_only:
        write_markdown(json.loads(RESULTS.read_text()))
        return 0
    import onnxruntime

    from erfnet_tasks import settings
    from erfnet_tasks.backends import get_backend
    from erfnet_tasks.model import write_random_checkpoint
    from erfnet_tasks.onnx_export import export_onnx, fix_bn

    size = tuple(int(v) for v in args.size.split("x"))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    load_before = [round(v, 2) for v in os.getloadavg()]
    backend = get_backend("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="bench_profiled_pass_") as tmp:
        work = Path(tmp)
        weights = write_random_checkpoint(work / "w.pth", seed=7)
        export_onnx(weights, work / "origin.onnx")
        fix_bn(work / "origin.onnx", work / "ErfNet.onnx")
        small = measure_size(backend, work / "ErfNet.onnx", work, args.images, size, batches, args.repeats)
        full = measure_size(backend, work / "ErfNet.onnx", work, args.full_images, (512, 1024), [1], args.repeats)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    flags = " ".join(sys.argv[1:])
    results = {
        "command": f".venv/bin/python bench/profiled_pass.py {flags}".strip(),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git.stdout.strip(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "onnxruntime": onnxruntime.__version__,
        "profile_images": settings.profile_images(),
        "images": args.images,
        "size": list(size),
        "repeats": args.repeats,
        "small": small,
        "full": {"images": args.full_images, "rows": full},
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)
    print(f"wrote {RESULTS} and the profiled pass's section of {MARKDOWN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
