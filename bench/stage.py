"""One pipeline stage in its own process, so that its peak memory (VmHWM) and I/O are its own.

    python bench/stage.py STAGE JSON_ARGS   ->  one JSON line on stdout

Stages: preprocess, infer, evaluate, guide_preprocess, guide_evaluate. ``seconds`` is the stage's call
alone (no interpreter start or imports); preprocessing and evaluation are timed this way too, so that
their worker pools fork a small process, as in the CLI or a DAG task, not the benchmark's large one.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _io() -> dict:
    """This process's read/written bytes through syscalls (/proc/self/io; Linux only)."""
    try:
        fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return {"rchar": int(fields["rchar"]), "wchar": int(fields["wchar"])}
    except (OSError, KeyError, ValueError):
        return {"rchar": None, "wchar": None}


def _peak_rss_kib() -> int:
    """VmHWM of this process's own address space: unlike ru_maxrss, it does not carry over the parent's
    high-water mark across fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(stage: str, args: dict) -> dict:
    # Imports and PIL's one-off plugin loading happen before the clock starts, and only what the stage
    # needs is imported, so that peak RSS is the stage's own (torch only for the guide's evaluation).
    from PIL import Image

    Image.init()
    if stage == "guide_evaluate":
        import torch  # noqa: F401
    if stage == "infer":
        import onnxruntime  # noqa: F401
    from baselines import guide_evaluate, guide_preprocess

    from erfnet_tasks.backends import get_backend
    from erfnet_tasks.datasets.cityscapes import preprocess
    from erfnet_tasks.evaluate import evaluate_summary

    extra = {}
    started = time.perf_counter()
    if stage == "preprocess":
        m = preprocess(
            args["img_dir"],
            args["prep_dir"],
            args["gt_dir"],
            args["gt_out_dir"],
            workers=args["workers"],
            progress=False,
        )
        extra["images"] = m["images"]
    elif stage == "infer":
        r = get_backend("onnxruntime").infer(
            args["model"],
            args["input_dir"],
            args["output_dir"],
            batch_size=args["batch_size"],
            output_type=args.get("output_type", "fp16"),
        )
        extra["summary_path"] = str(r.summary_path)
        extra["throughput_fps"] = r.throughput_fps
    elif stage == "evaluate":
        r = evaluate_summary(args["summary"], args["gt_dir"], workers=args["workers"], progress=False)
        extra["miou"], extra["images"] = r.miou, r.images
    elif stage == "guide_preprocess":
        extra["images"] = guide_preprocess(args["img_dir"], args["prep_dir"])
    elif stage == "guide_evaluate":
        extra["miou"] = guide_evaluate(args["summary"], args["gt_dir"])
    else:
        raise SystemExit(f"unknown stage {stage}")
    seconds = time.perf_counter() - started
    return {"stage": stage, "seconds": seconds, "maxrss_kib": _peak_rss_kib(), **_io(), **extra}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], json.loads(sys.argv[2]))))
