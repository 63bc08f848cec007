"""A run laid out like the guide's tables, as typed values: numbers, statuses, None; text comes last.

Batch sizes go down, targets across, as in the guide's sections 6.3 and 7; mIoU in percent. A cell
that did not run holds its ``CellStatus`` (``oom``, ``compile_failed``...), a ratio that cannot be
formed is ``NO_RATIO`` (``/``, as the guide writes it). A running run's document may list its cells not
stored yet under ``pending`` (``queries.run_progress``): each of those holds its ``CellState``
(``queued``, ``compiling``...) instead, and a best batch over a column still filling is ``PENDING``.
The values say what they are, so each reader formats them at the last moment: ``text`` (the CLI's
tables, CSV and the mails), the UI plugin's views (HTML).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import BadInput
from ..records import PERF_VALUES, CellState, CellStatus
from .reference import GUIDE_ACCURACY_BATCHES, GUIDE_COLUMNS, GUIDE_MIOU, GUIDE_THROUGHPUT, guide_column


@dataclass(frozen=True)
class Number:
    """A measured or computed figure and how the guide writes it: fps ``.2f``, ratios ``.3f``."""

    value: float
    spec: str = ".2f"


@dataclass(frozen=True)
class Percent:
    """An mIoU (a fraction), shown in points; ``threshold`` is the pass mark it is judged by, if any."""

    fraction: float
    threshold: float | None = None

    @property
    def below(self) -> bool:
        return self.threshold is not None and self.fraction < self.threshold


@dataclass(frozen=True)
class Best:
    """A column's best throughput over the batch sizes, and the batch that reached it."""

    fps: float
    batch: int


class Mark(Enum):
    """A place in a table that holds no figure, with the guide's word for it."""

    NO_RATIO = "/"  # a ratio with a side that did not run
    BEST_BATCH = "best batch"  # the label of the row that compares each column's best batch
    PENDING = "pending"  # the best batch of a column whose cells are not all stored yet: not known


Value = str | int | float | None | CellStatus | CellState | Number | Percent | Best | Mark


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Value]]
    guide_columns: frozenset[int] = field(default_factory=frozenset)  # the guide's own figures, by index


NO_RATIO = Mark.NO_RATIO
_CellDoc = Mapping[str, Any]


def targets_of(doc: Mapping[str, Any]) -> list[str]:
    """The run's targets in the order the document first mentions them; with cells still pending, in
    name order (the order stored cells come back in), so no column moves as the cells are stored."""
    seen: dict[str, None] = {}
    for key in ("perf", "accuracy", "compiled", "pending"):
        for cell in doc.get(key) or []:
            seen.setdefault(cell["target"], None)
    return sorted(seen) if doc.get("pending") else list(seen)


def batches_of(doc: Mapping[str, Any]) -> list[int]:
    return sorted(
        {cell["batch_size"] for key in ("perf", "accuracy", "compiled", "pending") for cell in doc.get(key) or []}
    )


def accuracy_table(doc: Mapping[str, Any], reference_miou: float = GUIDE_MIOU, tolerance: float = 0.01) -> Table:
    """mIoU per batch and target, judged against reference - tolerance; the guide's 72.20 beside."""
    targets, threshold = targets_of(doc), reference_miou - tolerance
    accuracy = _by_cell(doc.get("accuracy"))
    perf = _by_cell(doc.get("perf"))
    pending = _pending_states(doc)
    guide_batches = set().union(*GUIDE_ACCURACY_BATCHES.values())
    rows: list[list[Value]] = []
    for batch in batches_of(doc):
        row: list[Value] = [batch]
        for target in targets:
            cell = accuracy.get((target, batch))
            if cell is not None and cell.get("miou") is not None:
                row.append(Percent(cell["miou"], threshold))
            elif (target, batch) in pending and (target, batch) not in perf:
                row.append(pending[(target, batch)])
            else:
                row.append(_failure(perf.get((target, batch))))
        row.append(Percent(GUIDE_MIOU) if batch in guide_batches else None)
        rows.append(row)
    headers = ["batch", *targets, "guide"]
    return Table(headers, rows, frozenset({len(headers) - 1}))


def perf_table(doc: Mapping[str, Any], reference_target: str | None = None) -> Table:
    """Throughput (fps) per batch and target, ratios against ``reference_target`` and the guide's figures.

    Like the guide's section 7: each target's column is followed by its ratio columns, and a last
    row compares each column's best batch.
    """
    targets = targets_of(doc)
    if reference_target is not None and reference_target not in targets:
        raise BadInput(
            f"reference target {reference_target!r} is not in this run (targets: {', '.join(targets) or 'none'})"
        )
    perf = _by_cell(doc.get("perf"))
    batches = batches_of(doc)
    measured, layout = _perf_layout(targets, batches, perf, reference_target, _pending_states(doc))
    best = {header: _best(per_batch) for header, per_batch in measured.items()}
    rows: list[list[Value]] = []
    for batch in batches:
        rows.append(
            [
                batch,
                *(
                    _ratio_of(measured[ratio[0]][batch], measured[ratio[1]][batch])
                    if ratio
                    else measured[header][batch]
                    for header, ratio in layout
                ),
            ]
        )
    rows.append(
        [
            Mark.BEST_BATCH,
            *(
                _ratio_of(best[ratio[0]], best[ratio[1]]) if ratio else (best[header] or NO_RATIO)
                for header, ratio in layout
            ),
        ]
    )
    guide = frozenset(
        i + 1 for i, (header, ratio) in enumerate(layout) if ratio is None and header.startswith("guide ")
    )
    return Table(["batch", *[header for header, _ in layout]], rows, guide)


_Layout = list[tuple[str, tuple[str, str] | None]]  # header, (numerator, denominator) for a ratio column


def _perf_layout(
    targets: list[str],
    batches: list[int],
    perf: dict[tuple[str, int], _CellDoc],
    reference_target: str | None,
    pending: Mapping[tuple[str, int], CellState],
) -> tuple[dict[str, dict[int, Value]], _Layout]:
    """Each measured column's value per batch (a Number, a status, a pending cell's state, the guide's
    words or None), and the columns in order: a target, its ratio columns, and last the guide's columns."""
    measured: dict[str, dict[int, Value]] = {}
    layout: _Layout = []
    for target in targets:
        measured[target] = {
            b: _fps(perf[(target, b)]) if (target, b) in perf else pending.get((target, b)) for b in batches
        }
        layout.append((target, None))
        if reference_target is not None and target != reference_target:
            layout.append((f"{target}/{reference_target}", (target, reference_target)))
        if guide_column(target) is not None:
            guide = f"guide {guide_column(target)}"
            layout.append((f"{target}/{guide}", (target, guide)))
    for col in [c for c in GUIDE_COLUMNS if c in {guide_column(t) for t in targets}]:
        measured[f"guide {col}"] = {b: _guide_fps(b, col) for b in batches}
        layout.append((f"guide {col}", None))
    return measured, layout


def compare_table(doc_a: Mapping[str, Any], doc_b: Mapping[str, Any]) -> Table:
    """_CellDoc by cell: mIoU (percent) and fps of run A and run B, the change in points and the fps ratio B/A."""
    acc_a, acc_b = _by_cell(doc_a.get("accuracy")), _by_cell(doc_b.get("accuracy"))
    perf_a, perf_b = _by_cell(doc_a.get("perf")), _by_cell(doc_b.get("perf"))
    keys = sorted(set(acc_a) | set(acc_b) | set(perf_a) | set(perf_b))
    headers = ["target", "batch", "mIoU A", "mIoU B", "delta points", "fps A", "fps B", "fps B/A"]
    rows: list[list[Value]] = []
    for target, batch in keys:
        miou_a, miou_b = _miou(acc_a.get((target, batch))), _miou(acc_b.get((target, batch)))
        fps_a, fps_b = _fps(perf_a.get((target, batch))), _fps(perf_b.get((target, batch)))
        delta = None if miou_a is None or miou_b is None else Number((miou_b - miou_a) * 100, "+.2f")
        rows.append(
            [
                target,
                batch,
                None if miou_a is None else Percent(miou_a),
                None if miou_b is None else Percent(miou_b),
                delta,
                fps_a,
                fps_b,
                _ratio(_fps_of(fps_b), _fps_of(fps_a)),
            ]
        )
    return Table(headers, rows)


CELL_CSV_HEADERS = ["run_id", "target", "batch_size", "images", "miou", *PERF_VALUES]


def cell_rows(doc: Mapping[str, Any]) -> Table:
    """One machine-readable row per (target, batch): mIoU as a fraction, fps, latencies, status."""
    accuracy, perf = _by_cell(doc.get("accuracy")), _by_cell(doc.get("perf"))
    rows: list[list[Value]] = []
    for key in sorted(set(accuracy) | set(perf)):
        acc, cell = accuracy.get(key) or {}, perf.get(key) or {}
        rows.append(
            [
                doc["run"]["id"],
                key[0],
                key[1],
                acc.get("images"),
                acc.get("miou"),
                *[cell.get(name) for name in PERF_VALUES],
            ]
        )
    return Table(CELL_CSV_HEADERS, rows)


def fleet_summary(doc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The (chip, host, CANN) set a run covered, from where each NPU cell was measured (issue 16)."""
    chips = {c["target"]: c.get("chip") for c in doc.get("compiled") or []}
    return sorted(
        {
            (chips.get(c["target"]) or "", c.get("host") or "", c.get("cann_version") or "unknown")
            for c in doc.get("perf") or []
            if chips.get(c["target"]) and c.get("host")
        }
    )


def environment_table(doc: Mapping[str, Any]) -> Table:
    """Where each cell was compiled and measured: host, device, CANN and driver per cell."""
    compiled = _by_cell(doc.get("compiled"))
    headers = ["target", "batch", "compiled on", "measured on", "device", "CANN", "driver", "status"]
    rows: list[list[Value]] = []
    for key, cell in sorted(_by_cell(doc.get("perf")).items()):
        built = compiled.get(key) or {}
        rows.append(
            [
                key[0],
                key[1],
                built.get("host"),
                cell.get("host"),
                cell.get("device"),
                cell.get("cann_version"),
                cell.get("driver_version"),
                cell.get("status"),
            ]
        )
    return Table(headers, rows)


def runs_table(runs: Iterable[Mapping[str, Any]]) -> Table:
    """One row per run (``queries.list_runs``); a running run's cells read ``stored of planned``."""
    headers = ["run", "started", "status", "CANN", "host", "cells", "failed", "findings"]
    rows: list[list[Value]] = [
        [
            r["id"],
            r["started_at"],
            r["status"],
            r["cann_version"],
            r["host"],
            stored_cells(r),
            r["failed_cells"],
            r["findings"],
        ]
        for r in runs
    ]
    return Table(headers, rows)


def stored_cells(run: Mapping[str, Any]) -> Value:
    """A listed run's cell count: its perf cells, or for a running run how many of its planned cells are stored."""
    planned = run.get("planned_cells")
    return run["perf_cells"] if planned is None else f"{run['perf_cells']} of {planned}"


def reference_table(figures: Iterable[Mapping[str, Any]]) -> Table:
    """The guide's figures as stored: one row per (metric, column, batch); a cell that did not run shows
    the guide's own words."""
    headers = ["metric", "column", "batch", "value"]
    rows: list[list[Value]] = [
        [
            f["metric"],
            f["column"],
            f["batch_size"],
            (f["note"] or f["status"]) if f["value"] is None else Number(f["value"], "g"),
        ]
        for f in figures
    ]
    return Table(headers, rows)


def findings_table(findings: Iterable[Mapping[str, Any]]) -> Table:
    return Table(
        ["rule", "target", "batch", "finding"],
        [[f["rule"], f["target"], f["batch_size"], f["message"]] for f in findings],
    )


# ---------------------------------------------------------------------------------------- rendering

# C0 controls (ESC starts ANSI sequences), DEL and C1 controls: a stored field must not drive the terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# OWASP CSV injection: a cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def text(value: Value) -> str:
    """A table value as the CLI, the CSV files and the mails write it (the guide's number formats)."""
    if value is None:
        return ""
    if isinstance(value, Number):
        return format(value.value, value.spec)
    if isinstance(value, Percent):
        points = f"{value.fraction * 100:.2f}"
        return f"{points} (< {value.threshold * 100:.2f})" if value.below and value.threshold is not None else points
    if isinstance(value, Best):
        return f"{value.fps:.2f} (b{value.batch})"
    if isinstance(value, Mark):
        return value.value
    return str(value)


def printable(value: object) -> str:
    """``value`` as text safe to print: every control character shown as its escape (ESC -> \\x1b)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def csv_safe(value: object) -> str:
    """OWASP's neutralisation: prefix a formula-like cell with a single quote. Plain numbers (-1.25) stay
    numbers; they cannot run anything."""
    cell = str(value)
    if cell.startswith(_FORMULA_START) and not _NUMBER.match(cell):
        return "'" + cell
    return cell


def render_text(table: Table) -> str:
    headers = [printable(h) for h in table.headers]
    rows = [[printable(text(c)) for c in row] for row in table.rows]
    widths = [max(len(x) for x in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Iterable[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return "\n".join([line(headers), line("-" * w for w in widths), *(line(r) for r in rows)])


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([csv_safe(c) for c in table.headers])
    writer.writerows([csv_safe(text(c)) for c in row] for row in table.rows)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ helpers


def _by_cell(cells: Iterable[_CellDoc] | None) -> dict[tuple[str, int], _CellDoc]:
    return {(c["target"], c["batch_size"]): c for c in cells or []}


def _miou(cell: _CellDoc | None) -> float | None:
    return None if cell is None else cell.get("miou")


def _status(cell: _CellDoc) -> CellStatus | None:
    status = cell.get("status")
    return CellStatus(status) if status else None


def _fps(cell: _CellDoc | None) -> Value:
    """A cell's throughput, else its status (None where it has neither)."""
    if cell is None:
        return None
    if cell.get("status", CellStatus.OK) == CellStatus.OK and cell.get("throughput_fps") is not None:
        return Number(cell["throughput_fps"])
    return _status(cell)


def _fps_of(value: Value) -> float | None:
    """The throughput a value stands for, if it is one."""
    if isinstance(value, Number):
        return value.value
    if isinstance(value, Best):
        return value.fps
    return None


def _pending_states(doc: Mapping[str, Any]) -> dict[tuple[str, int], CellState]:
    """The state of each cell the document lists as not stored yet (a running run's ``pending``)."""
    return {(c["target"], c["batch_size"]): CellState(c["state"]) for c in doc.get("pending") or []}


def _ratio_of(a: Value, b: Value) -> Value:
    """The ratio a/b of two perf values: blank beside a cell still pending, pending beside a best batch not
    known yet, else the ratio of their throughputs (NO_RATIO where a side did not run)."""
    if isinstance(a, CellState) or isinstance(b, CellState):
        return None
    if Mark.PENDING in (a, b):
        return Mark.PENDING
    return _ratio(_fps_of(a), _fps_of(b))


def _failure(perf_cell: _CellDoc | None) -> CellStatus | None:
    status = _status(perf_cell) if perf_cell is not None else None
    return status if status is not None and status != CellStatus.OK else None


def _guide_fps(batch: int, column: str) -> Value:
    figure = GUIDE_THROUGHPUT.get(batch, {}).get(column)
    return Number(figure) if isinstance(figure, float | int) else figure


def _best(per_batch: Mapping[int, Value]) -> Best | Mark | None:
    """The column's best batch; PENDING while any of its cells is still to be stored."""
    if any(isinstance(value, CellState) for value in per_batch.values()):
        return Mark.PENDING
    measured = [(fps, batch) for batch, value in per_batch.items() if (fps := _fps_of(value)) is not None]
    if not measured:
        return None
    fps, batch = max(measured, key=lambda nb: (nb[0], -nb[1]))
    return Best(fps, batch)


def _ratio(a: float | None, b: float | None) -> Number | Mark:
    return NO_RATIO if a is None or b is None or b == 0 else Number(a / b, ".3f")
