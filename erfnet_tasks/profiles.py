"""Op profiles: one shape for every backend, and the comparison of two (which ops got slower).

An op profile lists, per op: name, type, calls, total and mean time in microseconds, and share of the
profile's total time. Readers: msprof's ``op_summary_*.csv`` (Ascend; columns read by name), ONNX
Runtime's profiler trace (node events), ``torch.profiler``'s ``key_averages()``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from .errors import BadInput

OP_SUMMARY_GLOB = "op_summary_*.csv"
MSPROF_COLUMNS = ("Op Name", "OP Type", "Task Duration(us)")
KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class OpTime:
    op_name: str
    op_type: str
    calls: int
    total_us: float
    mean_us: float
    share: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def profile_from_events(events: Iterable[tuple[str, str, float]]) -> list[OpTime]:
    """(op name, op type, duration in us) per execution -> one OpTime per op, slowest first."""
    calls: dict[str, int] = {}
    totals: dict[str, float] = {}
    types: dict[str, str] = {}
    for name, op_type, duration in events:
        if not math.isfinite(duration) or duration < 0:
            raise BadInput(f"op {name!r}: duration {duration!r} us is not a time")
        calls[name] = calls.get(name, 0) + 1
        totals[name] = totals.get(name, 0.0) + duration
        types.setdefault(name, op_type)
    grand = sum(totals.values())
    ops = [
        OpTime(
            name,
            types[name],
            calls[name],
            totals[name],
            totals[name] / calls[name],
            totals[name] / grand if grand else 0.0,
        )
        for name in totals
    ]
    return sorted(ops, key=lambda op: (-op.total_us, op.op_name))


def find_op_summary(root: str | os.PathLike[str]) -> Path:
    """The op summary under a profiler folder (either msprof layout); the newest when there are several."""
    root = Path(root)
    if root.is_file():
        return root
    found = sorted(root.rglob(OP_SUMMARY_GLOB), key=lambda p: p.name)
    if not found:
        raise BadInput(f"no {OP_SUMMARY_GLOB} under {root}: the profiled pass wrote no op summary")
    return found[-1]


def _duration(text: str, path: Path, line: int) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise BadInput(f"{path} line {line}: Task Duration(us) {text!r} is not a number") from exc


def read_msprof_op_summary(path: str | os.PathLike[str]) -> list[OpTime]:
    """msprof's per-op table (a file, or a folder searched for ``op_summary_*.csv``); one row per op run."""
    path = find_op_summary(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in MSPROF_COLUMNS if name not in header]
            if missing:
                raise BadInput(f"{path} is not an msprof op summary: no column {', '.join(missing)}")
            rows = [{key.strip(): value for key, value in row.items() if key} for row in reader]
    except OSError as exc:
        raise BadInput(f"cannot read op summary {path}: {exc.strerror}") from exc
    return profile_from_events(
        (row["Op Name"], row["OP Type"], _duration(row["Task Duration(us)"], path, n + 2)) for n, row in enumerate(rows)
    )


def read_ort_trace(path: str | os.PathLike[str], *, skip_runs: int = 0) -> list[OpTime]:
    """ONNX Runtime's profiler trace: ``cat`` Node events named ``<node>_kernel_time`` with ``args.op_name``.

    ``skip_runs``: each node's first executions not counted (the warm-up inferences: a session profiles
    from its first run, and the first pays for allocations)."""
    try:
        with open(path, encoding="utf-8") as fh:
            events = json.load(fh)
    except OSError as exc:
        raise BadInput(f"cannot read ONNX Runtime trace {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is not an ONNX Runtime trace (bad JSON: {exc.msg})") from exc
    if not isinstance(events, list):
        raise BadInput(f"{path} is not an ONNX Runtime trace (no event list)")
    nodes = [
        (str(e["name"])[: -len(KERNEL_SUFFIX)], str(e.get("args", {}).get("op_name", "")), float(e.get("dur", 0)))
        for e in events
        if isinstance(e, dict) and e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)
    ]
    return profile_from_events(_after_warmup(nodes, skip_runs))


def _after_warmup(events: list[tuple[str, str, float]], skip_runs: int) -> list[tuple[str, str, float]]:
    seen: dict[str, int] = {}
    kept = []
    for event in events:
        seen[event[0]] = seen.get(event[0], 0) + 1
        if seen[event[0]] > skip_runs:
            kept.append(event)
    return kept


class TorchAverage(Protocol):
    """The part of ``torch.autograd.profiler_util.FunctionEventAvg`` read here."""

    key: str
    count: int
    self_cpu_time_total: float


def read_torch_averages(averages: Iterable[TorchAverage]) -> list[OpTime]:
    """``torch.profiler.profile(...).key_averages()``: self time per aten op (CPU plus device), in us.

    PyTorch has no node names: each op key is its own name and type, and ``calls`` is its count.
    """
    ops = []
    for avg in averages:
        total = float(avg.self_cpu_time_total) + float(getattr(avg, "self_device_time_total", 0.0) or 0.0)
        if avg.count > 0 and total > 0:
            ops.append((avg.key, avg.count, total))
    grand = sum(total for _, _, total in ops)
    return sorted(
        (OpTime(key, key, count, total, total / count, total / grand) for key, count, total in ops),
        key=lambda op: (-op.total_us, op.op_name),
    )
