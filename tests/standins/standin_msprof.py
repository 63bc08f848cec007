"""TEST DOUBLE. msprof's per-op table for the stand-in ais_bench's ``--profiler 1``, from ONNX Runtime's
real per-node timings, in msprof's layout (docs/reference/diagnosis-interfaces.md):
``OUTPUT/profiler/PROF_<id>/mindstudio_profiler_output/op_summary_<timestamp>.csv``, one row per op
execution. The stand-in CANN's slowed op type (standin_cann.py) has its durations multiplied. Not Huawei's code.
"""

from __future__ import annotations

import csv
import json
import os
import time

from standin_cann import slow_factor_of

COLUMNS = [
    "Device_id",
    "Model Name",
    "Model ID",
    "Task ID",
    "Stream ID",
    "Infer ID",
    "Op Name",
    "OP Type",
    "OP State",
    "Task Type",
    "Task Start Time(us)",
    "Task Duration(us)",
    "Task Wait Time(us)",
    "Block Num",
    "Input Shapes",
    "Input Data Types",
    "Input Formats",
    "Output Shapes",
    "Output Data Types",
    "Output Formats",
    "aicore_time(us)",
    "total_cycles",
]
KERNEL = "_kernel_time"


def node_events(trace_path: str) -> list[dict]:
    with open(trace_path, encoding="utf-8") as fh:
        events = json.load(fh)
    return [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL)]


def type_share(trace_path: str, op_type: str) -> float:
    """The part of the node time spent in ops of ``op_type``."""
    events = node_events(trace_path)
    total = sum(e["dur"] for e in events)
    mine = sum(e["dur"] for e in events if e.get("args", {}).get("op_name") == op_type)
    return mine / total if total else 0.0


def _shapes(items) -> str:
    shapes = []
    for item in items or []:
        for _, dims in item.items():
            shapes.append(",".join(str(d) for d in dims))
    return ";".join(shapes)


def write_op_summary(output_root: str, trace_path: str, *, model: str, device: int, skip_runs: int, how: dict) -> str:
    """Rows for every node execution after the first ``skip_runs`` (the warm-up) inferences."""
    seen: dict[str, int] = {}
    rows, epoch_us = [], time.time() * 1e6
    for task_id, event in enumerate(node_events(trace_path)):
        name = event["name"][: -len(KERNEL)]
        run = seen.get(name, 0)
        seen[name] = run + 1
        if run < skip_runs:
            continue
        args = event.get("args", {})
        op_type = args.get("op_name", "")
        duration = float(event["dur"]) * slow_factor_of(op_type, how)
        rows.append(
            [
                device,
                os.path.basename(model).rsplit(".", 1)[0],
                1,
                task_id,
                0,
                run - skip_runs,
                name,
                op_type,
                "static",
                "AI_CORE",
                f"{epoch_us + float(event['ts']):.3f}",
                f"{duration:.3f}",
                "0.000",
                1,
                _shapes(args.get("input_type_shape")),
                "FLOAT",
                "NCHW",
                _shapes(args.get("output_type_shape")),
                "FLOAT",
                "NCHW",
                f"{duration:.3f}",
                int(duration * 1000),
            ]
        )
    stamp = time.strftime("%Y%m%d%H%M%S")
    folder = os.path.join(
        output_root,
        "profiler",
        f"PROF_000001_{stamp}{int(time.time() * 1000) % 1000:03d}_STANDIN",
        "mindstudio_profiler_output",
    )
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"op_summary_{stamp}.csv")
    with open(path + ".part", "w", newline="") as fh:
        csv.writer(fh).writerows([COLUMNS, *rows])
    os.replace(path + ".part", path)
    return path
