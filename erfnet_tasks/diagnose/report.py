"""The diagnosis's one shape: every layer in execution order, and the first that diverged.

``--json`` prints ``{"first_diverging": {...} or null, "layers": [...]}``; each layer holds ``node``,
``op_type``, ``onnx_nodes``, every metric, ``precision_error``, and ``note`` (why a metric is NaN:
NaN/Inf in an output, no ONNX counterpart, shape mismatch) or null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .metrics import NUMERIC_METRICS, Metrics, is_precision_error


@dataclass
class Layer:
    node: str
    op_type: str
    onnx_nodes: list[str]
    metrics: Metrics
    tensor_index: int = 0
    note: str | None = None
    precision_error: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.precision_error = is_precision_error(self.op_type, self.metrics)

    def as_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "onnx_nodes": list(self.onnx_nodes),
            "tensor_index": self.tensor_index,
            **{k: _json_number(v) for k, v in self.metrics.items()},
            "precision_error": self.precision_error,
            "note": self.note,
        }


def _json_number(value: float | str) -> float | str | None:
    """JSON has no NaN: an uncomputable metric is null (the note says why)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def first_diverging(layers: list[Layer]) -> Layer | None:
    """msprobe's definition: the first row in execution order that is a precision error."""
    return next((layer for layer in layers if layer.precision_error), None)


def as_document(layers: list[Layer]) -> dict[str, object]:
    first = first_diverging(layers)
    return {"first_diverging": first.as_dict() if first else None, "layers": [layer.as_dict() for layer in layers]}


def to_json(layers: list[Layer]) -> str:
    return json.dumps(as_document(layers), allow_nan=False)


def _cell(value: float | str) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def format_table(layers: list[Layer]) -> str:
    """One line per layer (execution order); the first diverging layer marked, then a verdict line."""
    first = first_diverging(layers)
    header = f"{'#':>4}  {'node':<48} {'op_type':<18} {'cosine':>10} {'max_abs_err':>12} {'rel_euclid':>11}  flag"
    lines = [header]
    for index, layer in enumerate(layers):
        flag = "<- FIRST DIVERGING" if layer is first else ("diverges" if layer.precision_error else "")
        if layer.note:
            flag = f"{flag} ({layer.note})".strip()
        lines.append(
            f"{index:>4}  {layer.node:<48} {layer.op_type:<18} {_cell(layer.metrics['cosine']):>10} "
            f"{_cell(layer.metrics['max_abs_error']):>12} {_cell(layer.metrics['relative_euclidean']):>11}"
            f"  {flag}".rstrip()
        )
    lines.append(verdict(layers))
    return "\n".join(lines)


def verdict(layers: list[Layer]) -> str:
    first = first_diverging(layers)
    if first is None:
        return f"no layer diverges ({len(layers)} compared; msprobe's thresholds)"
    metrics = ", ".join(f"{key} {_cell(first.metrics[key])}" for key in NUMERIC_METRICS[:4])
    return (
        f"first diverging layer: {first.node} ({first.op_type}; ONNX nodes {', '.join(first.onnx_nodes) or '-'}): "
        f"{metrics}"
    )
