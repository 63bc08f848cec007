"""A run laid out like the guide's tables, as plain (headers, rows) of strings.

Batch sizes go down, targets across, as in the guide's sections 6.3 and 7; mIoU in percent. A cell
that did not run shows its status text (``oom``, ``compile_failed``...), a ratio that cannot be
formed shows ``/`` as the guide does. The CLI prints these as text or CSV, the UI plugin as HTML.
"""

from __future__ import annotations

import csv
import io
import re

from ..errors import ErfnetError
from ..records import PERF_VALUES, CellStatus
from .reference import GUIDE_ACCURACY_BATCHES, GUIDE_COLUMNS, GUIDE_MIOU, GUIDE_THROUGHPUT, guide_column

Table = tuple[list[str], list[list[str]]]

NO_RATIO = "/"


def targets_of(doc: dict) -> list[str]:
    """The run's targets in the order the document first mentions them."""
    seen: dict[str, None] = {}
    for key in ("perf", "accuracy", "compiled"):
        for cell in doc.get(key) or []:
            seen.setdefault(cell["target"], None)
    return list(seen)


def batches_of(doc: dict) -> list[int]:
    return sorted({cell["batch_size"] for key in ("perf", "accuracy", "compiled") for cell in doc.get(key) or []})


def accuracy_table(doc: dict, reference_miou: float = GUIDE_MIOU, tolerance: float = 0.01) -> Table:
    """mIoU (percent) per batch and target, marked where below reference - tolerance; the guide's 72.20 beside."""
    targets, threshold = targets_of(doc), reference_miou - tolerance
    accuracy = _by_cell(doc.get("accuracy"))
    perf = _by_cell(doc.get("perf"))
    guide_batches = set().union(*GUIDE_ACCURACY_BATCHES.values())
    headers = ["batch", *targets, "guide"]
    rows = []
    for batch in batches_of(doc):
        row = [str(batch)]
        for target in targets:
            cell = accuracy.get((target, batch))
            if cell is not None and cell.get("miou") is not None:
                text = _percent(cell["miou"])
                row.append(text if cell["miou"] >= threshold else f"{text} (< {_percent(threshold)})")
            else:
                row.append(_failure_text(perf.get((target, batch))))
        row.append(_percent(GUIDE_MIOU) if batch in guide_batches else "")
        rows.append(row)
    return headers, rows


def perf_table(doc: dict, reference_target: str | None = None) -> Table:
    """Throughput (fps) per batch and target, ratios against ``reference_target`` and the guide's figures.

    Like the guide's section 7: each target's column is followed by its ratio columns, and a last
    row compares each column's best batch.
    """
    targets = targets_of(doc)
    if reference_target is not None and reference_target not in targets:
        raise ErfnetError(f"reference target {reference_target!r} is not in this run "
                          f"(targets: {', '.join(targets) or 'none'})")
    perf = _by_cell(doc.get("perf"))
    batches = batches_of(doc)
    guide_cols = [c for c in GUIDE_COLUMNS if c in {guide_column(t) for t in targets}]

    # Each column is either measured (batch -> (number or None, text)) or a ratio of two measured ones.
    measured: dict[str, dict[int, tuple[float | None, str]]] = {}
    layout: list[tuple[str, tuple[str, str] | None]] = []  # header, (numerator, denominator) for ratios
    for target in targets:
        measured[target] = {b: _fps(perf.get((target, b))) for b in batches}
        layout.append((target, None))
        if reference_target is not None and target != reference_target:
            layout.append((f"{target}/{reference_target}", (target, reference_target)))
        if guide_column(target) is not None:
            guide = f"guide {guide_column(target)}"
            layout.append((f"{target}/{guide}", (target, guide)))
    for col in guide_cols:
        measured[f"guide {col}"] = {b: _guide_fps(b, col) for b in batches}
        layout.append((f"guide {col}", None))

    best = {header: _best(per_batch) for header, per_batch in measured.items()}
    rows = []
    for batch in batches:
        rows.append([str(batch)] + [
            _ratio(measured[ratio[0]][batch][0], measured[ratio[1]][batch][0]) if ratio
            else measured[header][batch][1] for header, ratio in layout])
    rows.append(["best batch"] + [
        _ratio(best[ratio[0]][0], best[ratio[1]][0]) if ratio
        else (NO_RATIO if best[header][0] is None else f"{best[header][0]:.2f} (b{best[header][1]})")
        for header, ratio in layout])
    return ["batch", *[header for header, _ in layout]], rows


def compare_table(doc_a: dict, doc_b: dict) -> Table:
    """Cell by cell: mIoU (percent) and fps of run A and run B, the change in points and the fps ratio B/A."""
    acc_a, acc_b = _by_cell(doc_a.get("accuracy")), _by_cell(doc_b.get("accuracy"))
    perf_a, perf_b = _by_cell(doc_a.get("perf")), _by_cell(doc_b.get("perf"))
    keys = sorted(set(acc_a) | set(acc_b) | set(perf_a) | set(perf_b))
    headers = ["target", "batch", "mIoU A", "mIoU B", "delta points", "fps A", "fps B", "fps B/A"]
    rows = []
    for target, batch in keys:
        miou_a, miou_b = _miou(acc_a.get((target, batch))), _miou(acc_b.get((target, batch)))
        fps_a, fps_b = _fps(perf_a.get((target, batch))), _fps(perf_b.get((target, batch)))
        delta = "" if miou_a is None or miou_b is None else f"{(miou_b - miou_a) * 100:+.2f}"
        rows.append([target, str(batch), _percent(miou_a) if miou_a is not None else "",
                     _percent(miou_b) if miou_b is not None else "", delta, fps_a[1], fps_b[1],
                     _ratio(fps_b[0], fps_a[0])])
    return headers, rows


CELL_CSV_HEADERS = ["run_id", "target", "batch_size", "images", "miou", *PERF_VALUES]


def cell_rows(doc: dict) -> Table:
    """One machine-readable row per (target, batch): mIoU as a fraction, fps, latencies, status."""
    accuracy, perf = _by_cell(doc.get("accuracy")), _by_cell(doc.get("perf"))
    rows = []
    for key in sorted(set(accuracy) | set(perf)):
        acc, cell = accuracy.get(key) or {}, perf.get(key) or {}
        rows.append([doc["run"]["id"], key[0], str(key[1]), _plain(acc.get("images")), _plain(acc.get("miou")),
                     *[_plain(cell.get(name)) for name in PERF_VALUES]])
    return CELL_CSV_HEADERS, rows


def fleet_summary(doc: dict) -> list[tuple[str, str, str]]:
    """The (chip, host, CANN) set a run covered, from where each NPU cell was measured (issue 16)."""
    chips = {c["target"]: c.get("chip") for c in doc.get("compiled") or []}
    return sorted({(chips.get(c["target"]) or "", c.get("host") or "", c.get("cann_version") or "unknown")
                   for c in doc.get("perf") or [] if chips.get(c["target"]) and c.get("host")})


def environment_table(doc: dict) -> Table:
    """Where each cell was compiled and measured: host, device, CANN and driver per cell."""
    compiled = _by_cell(doc.get("compiled"))
    headers = ["target", "batch", "compiled on", "measured on", "device", "CANN", "driver", "status"]
    rows = []
    for key, cell in sorted(_by_cell(doc.get("perf")).items()):
        built = compiled.get(key) or {}
        rows.append([key[0], str(key[1]), _plain(built.get("host")), _plain(cell.get("host")),
                     _plain(cell.get("device")), _plain(cell.get("cann_version")),
                     _plain(cell.get("driver_version")), _plain(cell.get("status"))])
    return headers, rows


def runs_table(runs: list[dict]) -> Table:
    headers = ["run", "started", "status", "CANN", "host", "cells", "failed", "findings"]
    rows = [[r["id"], r["started_at"] or "", r["status"], r["cann_version"] or "", r["host"] or "",
             str(r["perf_cells"]), str(r["failed_cells"]), str(r["findings"])] for r in runs]
    return headers, rows


def reference_table(figures: list[dict]) -> Table:
    """The guide's figures as stored: one row per (metric, column, batch); a cell that did not run shows
    the guide's own words."""
    headers = ["metric", "column", "batch", "value"]
    rows = [[f["metric"], f["column"] or "", "" if f["batch_size"] is None else str(f["batch_size"]),
             (f["note"] or f["status"]) if f["value"] is None else f"{f['value']:g}"] for f in figures]
    return headers, rows


def findings_table(findings: list[dict]) -> Table:
    return ["rule", "target", "batch", "finding"], [
        [f["rule"], f["target"], str(f["batch_size"]), f["message"]] for f in findings]


# ---------------------------------------------------------------------------------------- rendering

# C0 controls (ESC starts ANSI sequences), DEL and C1 controls: a stored field must not drive the terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# OWASP CSV injection: a cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def printable(value) -> str:
    """``value`` as text safe to print: every control character shown as its escape (ESC -> \\x1b)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def csv_safe(value) -> str:
    """OWASP's neutralisation: prefix a formula-like cell with a single quote. Plain numbers (-1.25) stay
    numbers; they cannot run anything."""
    text = str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def render_text(table: Table) -> str:
    headers, rows = table
    headers = [printable(h) for h in headers]
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line("-" * w for w in widths), *(line(r) for r in rows)])


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([csv_safe(c) for c in table[0]])
    writer.writerows([csv_safe(c) for c in row] for row in table[1])
    return out.getvalue()


# ------------------------------------------------------------------------------------------ helpers

def _by_cell(cells) -> dict[tuple[str, int], dict]:
    return {(c["target"], c["batch_size"]): c for c in cells or []}


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2f}"


def _miou(cell) -> float | None:
    return None if cell is None else cell.get("miou")


def _fps(cell) -> tuple[float | None, str]:
    if cell is None:
        return None, ""
    if cell.get("status", CellStatus.OK) == CellStatus.OK and cell.get("throughput_fps") is not None:
        return cell["throughput_fps"], f"{cell['throughput_fps']:.2f}"
    return None, cell.get("status") or ""


def _failure_text(perf_cell) -> str:
    status = (perf_cell or {}).get("status")
    return status if status and status != CellStatus.OK else ""


def _guide_fps(batch: int, column: str) -> tuple[float | None, str]:
    value = GUIDE_THROUGHPUT.get(batch, {}).get(column)
    if value is None:
        return None, ""
    if isinstance(value, str):
        return None, value
    return value, f"{value:.2f}"


def _best(per_batch: dict[int, tuple[float | None, str]]) -> tuple[float | None, int | None]:
    measured = [(number, batch) for batch, (number, _text) in per_batch.items() if number is not None]
    return max(measured, key=lambda nb: (nb[0], -nb[1])) if measured else (None, None)


def _ratio(a: float | None, b: float | None) -> str:
    return NO_RATIO if a is None or b is None or b == 0 else f"{a / b:.3f}"


def _plain(value) -> str:
    return "" if value is None else str(value)
