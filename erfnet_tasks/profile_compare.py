"""Which ops got slower: two op profiles (baseline cell, current cell) compared op by op and per op type.

Times are per inference: each op's mean time per call (an op runs once per inference, so passes of
different lengths compare). ``share`` is an entry's part of the total time difference (null when the
total did not grow). Ops or op types present on one side only are marked ``appeared`` or ``vanished``
(a fusion that changed), with the missing side's time null.
"""

from __future__ import annotations

from collections.abc import Iterable

from .profiles import OpTime

TOP_OPS = 10


def _entry(op_type: str, op_name: str | None, base: float | None, cur: float | None, total: float) -> dict[str, object]:
    delta = (cur or 0.0) - (base or 0.0)
    change = "appeared" if base is None else "vanished" if cur is None else "grew" if delta > 0 else "shrank"
    return {
        "op_type": op_type,
        "op_name": op_name,
        "baseline_us": base,
        "current_us": cur,
        "share": delta / total if total > 0 else None,
        "change": change,
        "_delta": delta,
    }


def _by_type(ops: Iterable[OpTime]) -> dict[str, float]:
    types: dict[str, float] = {}
    for op in ops:
        types[op.op_type] = types.get(op.op_type, 0.0) + op.mean_us
    return types


def _ranked(entries: list[dict[str, object]], limit: int) -> list[dict[str, object]]:
    """Those that grew, most first (at most ``limit``), then every op that appeared or vanished."""
    grew = sorted((e for e in entries if e["change"] in ("grew", "appeared")), key=lambda e: -float(str(e["_delta"])))
    listed = grew[:limit]
    listed += [e for e in entries if e["change"] in ("appeared", "vanished") and e not in listed]
    return listed


def compare_profiles(
    baseline: list[OpTime], current: list[OpTime], *, top: int = TOP_OPS
) -> dict[str, list[dict[str, object]]]:
    """``{"ops": [...]}``: op types that grew (op_name null), most first, then the top ops that grew."""
    base_ops = {op.op_name: op for op in baseline}
    cur_ops = {op.op_name: op for op in current}
    total = sum(op.mean_us for op in current) - sum(op.mean_us for op in baseline)
    base_types, cur_types = _by_type(baseline), _by_type(current)
    type_entries = [
        _entry(t, None, base_types.get(t), cur_types.get(t), total) for t in sorted(set(base_types) | set(cur_types))
    ]
    op_entries = [
        _entry(
            (cur_ops.get(name) or base_ops[name]).op_type,
            name,
            base_ops[name].mean_us if name in base_ops else None,
            cur_ops[name].mean_us if name in cur_ops else None,
            total,
        )
        for name in sorted(set(base_ops) | set(cur_ops))
    ]
    listed = _ranked(type_entries, top) + _ranked(op_entries, top)
    return {"ops": [{k: v for k, v in e.items() if k != "_delta"} for e in listed]}
