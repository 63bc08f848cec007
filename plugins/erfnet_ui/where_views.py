"""The run page's "where it regressed" section: for each cell with a finding that says where, the per-layer
cosine curve of its diagnosis (an inline SVG, the first diverging layer marked) and the op-time comparison
against its baseline cell (most growth first).

Values in, drawing coordinates and HTML table cells out; the template (``_where.html``) writes the SVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from erfnet_tasks.diagnose.metrics import COSINE_MIN
from erfnet_tasks.results import tables
from erfnet_tasks.results.where_view import layer_line, ops_table, where_line

from .views import Cell, HtmlTable

WIDTH, HEIGHT = 760, 240  # the chart's SVG box, in px
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 34  # room for the axes' labels


@dataclass
class Point:
    x: float
    y: float
    index: int
    node: str
    op_type: str
    cosine: float


@dataclass
class CosineCurve:
    """One diagnosis as a chart: a polyline per stretch of computable cosines, the threshold, the marker."""

    width: int
    height: int
    segments: list[str]  # SVG polyline "x,y x,y ..." strings
    points: list[Point]
    threshold_y: float
    threshold: float
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str]]
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    first: Point | None
    layers: int


@dataclass
class CellWhere:
    target: str
    batch_size: int
    lines: list[str]  # each finding of the cell, then where it regressed
    curve: CosineCurve | None = None
    first_diverging: str = ""
    ops: HtmlTable | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"where-{''.join(c if c.isalnum() else '-' for c in self.target)}-b{self.batch_size}"


def cell_wheres(doc: dict) -> list[CellWhere]:
    """A section per cell that has a finding with a "where" (a throughput drop, an accuracy failure)."""
    diagnoses = {(d["target"], d["batch_size"]): d for d in doc.get("diagnoses") or []}
    found: dict[tuple[str, int], CellWhere] = {}
    for finding in doc.get("findings") or []:
        where = finding.get("where")
        if not where:
            continue
        key = (finding["target"], finding["batch_size"])
        cell = found.setdefault(key, CellWhere(*key, lines=[]))
        cell.lines.append(finding["message"])
        if where.get("ops"):
            cell.ops = ops_view(where)
        elif where.get("note"):
            cell.notes.append(str(where["note"]))
        diagnosis = diagnoses.get(key)
        if finding["rule"] == "accuracy_below_reference" and diagnosis:
            cell.curve = cosine_curve(diagnosis["layers"], (diagnosis.get("first_diverging") or {}).get("node"))
            cell.first_diverging = where_line(where) if where.get("first_diverging") else ""
    for (target, batch), diagnosis in diagnoses.items():  # a diagnosed cell whose finding was not kept
        if (target, batch) not in found and diagnosis.get("first_diverging"):
            cell = CellWhere(target, batch, lines=[], first_diverging=layer_line(diagnosis["first_diverging"]))
            cell.curve = cosine_curve(diagnosis["layers"], diagnosis["first_diverging"]["node"])
            found[(target, batch)] = cell
    return [found[key] for key in sorted(found)]


def ops_view(where: dict) -> HtmlTable:
    """The op-time comparison, as ``where_view.ops_table`` lays it out: growth red, shrinking green."""
    table = ops_table(where)
    rows = []
    for row in table.rows:
        growth = row[4]
        css = "fail" if isinstance(growth, tables.Number) and growth.value > 0 else "pass"
        cells = [Cell(tables.text(value), "label" if i < 2 or i == 6 else "") for i, value in enumerate(row)]
        cells[4].css = css
        rows.append(cells)
    return HtmlTable(table.headers, rows, ["types" if row[1] == "(all)" else "" for row in table.rows])


def _cosine(layer: dict) -> float | None:
    value = layer.get("cosine")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def cosine_curve(layers: list[dict], first_node: str | None) -> CosineCurve:
    """Cosine similarity per layer in execution order; layers whose cosine could not be computed break
    the line. The y axis spans the lowest cosine (and the threshold) to 1."""
    left, top, right, bottom = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    values = [_cosine(layer) for layer in layers]
    known = [v for v in values if v is not None]
    low = min([*known, COSINE_MIN - 0.01])
    low = math.floor(low * 20) / 20 if low < 0.9 else math.floor(low * 100) / 100
    span = max(1.0 - low, 1e-6)
    count = max(len(layers) - 1, 1)

    def x_of(index: int) -> float:
        return round(left + (right - left) * index / count, 1)

    def y_of(value: float) -> float:
        return round(bottom - (bottom - top) * (value - low) / span, 1)

    points: list[Point] = []
    segments: list[str] = []
    current: list[str] = []
    for index, (layer, value) in enumerate(zip(layers, values, strict=True)):
        if value is None:
            if current:
                segments.append(" ".join(current))
            current = []
            continue
        point = Point(x_of(index), y_of(value), index, str(layer.get("node")), str(layer.get("op_type")), value)
        points.append(point)
        current.append(f"{point.x},{point.y}")
    if current:
        segments.append(" ".join(current))
    first = next((p for p in points if p.node == first_node), None) if first_node else None
    ticks = [low + span * k / 4 for k in range(5)]
    return CosineCurve(
        width=WIDTH,
        height=HEIGHT,
        segments=segments,
        points=points,
        threshold_y=y_of(COSINE_MIN),
        threshold=COSINE_MIN,
        y_ticks=[(y_of(v), f"{v:.3g}") for v in ticks],
        x_ticks=[(x_of(i), str(i)) for i in sorted({0, len(layers) // 2, max(len(layers) - 1, 0)})],
        plot=(left, top, right, bottom),
        first=first,
        layers=len(layers),
    )
