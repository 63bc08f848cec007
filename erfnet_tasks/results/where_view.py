"""A finding's "where" laid out for people: one line (the notification's, the findings table's), the op-time
comparison as a table (baseline against this run, most growth first) and the first diverging layer's
metrics, as the values of ``tables`` (``Table``, ``Number``); each reader formats them at the last moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tables import Number, Table, Value, printable, render_text

Where = Mapping[str, Any]
LINE_ENTRIES = 3  # op types, and ops, named in the one-line summary
LAYER_METRICS = ("cosine", "max_abs_error", "relative_euclidean", "kl_divergence", "rmse", "mean_relative_error")
OPS_HEADERS = ["op type", "op", "baseline (us)", "this run (us)", "growth (us)", "share of growth (%)", "change"]


def where_line(where: Where | None) -> str:
    """The where in one line: the first diverging layer, or the op types and ops that grew most; else the
    note that says why there is nothing to point at ("" for a finding that has no where)."""
    if not where:
        return ""
    first = where.get("first_diverging")
    if first:
        return layer_line(first)
    ops = list(where.get("ops") or [])
    types = [e for e in ops if e.get("op_name") is None][:LINE_ENTRIES]
    named = [e for e in ops if e.get("op_name") is not None][:LINE_ENTRIES]
    parts = []
    if types:
        parts.append("slower op types: " + "; ".join(_op_text(e, e["op_type"]) for e in types))
    if named:
        parts.append("top ops: " + "; ".join(_op_text(e, f"{e['op_name']} ({e['op_type']})") for e in named))
    return ". ".join(parts) if parts else str(where.get("note") or "")


def layer_line(layer: Mapping[str, Any]) -> str:
    nodes = ", ".join(layer.get("onnx_nodes") or []) or "-"
    metrics = ", ".join(f"{name} {_metric(layer.get(name))}" for name in ("cosine", "relative_euclidean"))
    return f"first diverging layer {layer['node']} ({layer['op_type']}; ONNX nodes {nodes}): {metrics}"


def _op_text(entry: Mapping[str, Any], label: str) -> str:
    base, now = entry.get("baseline_us"), entry.get("current_us")
    if base is None:
        return f"{label} appeared ({now:.1f} us)"
    if now is None:
        return f"{label} vanished (was {base:.1f} us)"
    share = entry.get("share")
    growth = f", {share:.0%} of the growth" if share is not None else ""
    change = f" ({(now - base) / base:+.0%}{growth})" if base else ""
    return f"{label} {base:.1f} -> {now:.1f} us{change}"


def ops_table(where: Where | None) -> Table:
    """The op-time comparison: op types first, then ops, each most growth first (``profile_compare``)."""
    rows: list[list[Value]] = []
    for entry in (where or {}).get("ops") or []:
        base, now = entry.get("baseline_us"), entry.get("current_us")
        share = entry.get("share")
        rows.append(
            [
                entry["op_type"],
                entry.get("op_name") or "(all)",
                _number(base, ".1f"),
                _number(now, ".1f"),
                _number((now or 0.0) - (base or 0.0), "+.1f"),
                _number(share * 100 if share is not None else None, ".0f"),
                entry.get("change"),
            ]
        )
    return Table(list(OPS_HEADERS), rows)


def layer_table(layer: Mapping[str, Any] | None) -> Table:
    """The first diverging layer's metrics, one row."""
    if not layer:
        return Table(["node", "op type", *LAYER_METRICS], [])
    row: list[Value] = [layer["node"], layer["op_type"], *(_number(layer.get(m), ".6g") for m in LAYER_METRICS)]
    return Table(["node", "op type", *LAYER_METRICS], [row])


def _number(value: object, spec: str) -> Number | None:
    return Number(float(value), spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _metric(value: object) -> str:
    return format(float(value), ".6g") if isinstance(value, (int, float)) else "NaN"


def findings_text(findings: list[Mapping[str, Any]]) -> str:
    """``erfnet results show --findings``: each finding, then where it regressed (the first diverging
    layer's metrics, or the op-time comparison table)."""
    if not findings:
        return "no regression findings"
    return "\n\n".join(_finding_text(f) for f in findings)


def _finding_text(finding: Mapping[str, Any]) -> str:
    lines = [printable(f"{finding['rule']}: {finding['message']}")]
    where = finding.get("where")
    if where:
        lines.append(printable(f"  where: {where_line(where)}"))
        first = where.get("first_diverging")
        table = layer_table(first) if first else ops_table(where)
        if table.rows:
            lines += ["    " + line for line in render_text(table).splitlines()]
    return "\n".join(lines)
