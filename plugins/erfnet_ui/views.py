"""What the pages show, shaped from run documents and ``erfnet_tasks.results.tables``.

The tables' layout and numbers come from the shared ``tables`` module (the CLI prints the same ones);
this module only adds what HTML needs: a CSS class per cell and readable failure statuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.records import CellStatus
from erfnet_tasks.results import regression, tables
from erfnet_tasks.results.document import LEGACY_CLASS_NAMES

from .charts import line_chart

DAG_ID = "erfnet_offline_inference"

# A cell that did not run shows its status; these read better than the stored codes.
STATUS_TEXT = {
    CellStatus.OOM: "device memory exhausted",
    CellStatus.COMPILE_FAILED: "compile failed",
    CellStatus.INFER_FAILED: "inference failed",
    CellStatus.MODEL_LOAD_FAILED: "model load failed",
    CellStatus.DEVICE_OPEN_FAILED: "device open failed",
}


def class_names(doc: dict) -> list[str]:
    """The run's own class names, stored with it (documents from before that were all Cityscapes runs)."""
    return list(doc["run"].get("class_names") or LEGACY_CLASS_NAMES)


@dataclass
class Cell:
    text: str
    css: str = ""
    title: str = ""


@dataclass
class HtmlTable:
    headers: list[str]
    rows: list[list[Cell]]
    row_css: list[str] = field(default_factory=list)


@dataclass
class RunView:
    run: dict
    targets: list[str]
    reference_target: str | None
    notice: str
    accuracy: HtmlTable
    perf: HtmlTable
    per_class: HtmlTable
    compiled: list[dict]
    findings: list[dict]
    cells_environment: HtmlTable  # where each cell was compiled and measured
    fleet: list[tuple[str, str, str]]  # the (chip, host, CANN) set the run covered
    reference_miou: float
    tolerance: float


def _status_cell(text: str, errors: dict[str, str]) -> Cell:
    if text in STATUS_TEXT:
        return Cell(STATUS_TEXT[text], "status", errors.get(text, ""))
    return Cell(text)


def _errors_by_status(doc: dict) -> dict[str, str]:
    """One example error message per failure status, shown as the failed cells' tooltip."""
    found: dict[str, str] = {}
    for cell in doc.get("perf") or []:
        if cell.get("status") not in (None, "ok") and cell.get("error"):
            found.setdefault(cell["status"], cell["error"])
    return found


def accuracy_view(doc: dict, reference_miou: float, tolerance: float) -> HtmlTable:
    headers, rows = tables.accuracy_table(doc, reference_miou, tolerance)
    targets = tables.targets_of(doc)
    mious = {(c["target"], c["batch_size"]): c.get("miou") for c in doc.get("accuracy") or []}
    errors = _errors_by_status(doc)
    out = []
    for row in rows:
        batch = int(row[0])
        cells = [Cell(row[0], "label")]
        for target, text in zip(targets, row[1:]):
            miou = mious.get((target, batch))
            if miou is None:
                cells.append(_status_cell(text, errors))
            elif miou >= reference_miou - tolerance:
                cells.append(Cell(f"{text} ✓", "pass", "within tolerance of the reference"))
            else:
                cells.append(Cell(f"{text} ✗", "fail", "below reference minus tolerance"))
        cells.append(Cell(row[-1], "muted"))
        out.append(cells)
    return HtmlTable(headers, out)


def perf_view(doc: dict, reference_target: str | None) -> HtmlTable:
    headers, rows = tables.perf_table(doc, reference_target)
    errors = _errors_by_status(doc)
    out, row_css = [], []
    for row in rows:
        cells = [Cell(row[0], "label")]
        for header, text in zip(headers[1:], row[1:]):
            cell = _status_cell(text, errors)
            if header.startswith("guide"):  # the guide's published figures, for comparison only
                cell.css = (cell.css + " muted").strip()
            cells.append(cell)
        out.append(cells)
        row_css.append("best" if row[0] == "best batch" else "")
    return HtmlTable(headers, out, row_css)


def per_class_view(doc: dict) -> HtmlTable:
    cells = [c for c in doc.get("accuracy") or [] if c.get("per_class")]
    names = class_names(doc)
    headers = ["class", *[f"{c['target']} b{c['batch_size']}" for c in cells]]
    rows = []
    for i, name in enumerate(names):
        row = [Cell(name, "label")]
        for c in cells:
            value = c["per_class"][i] if i < len(c["per_class"]) else None
            row.append(Cell("" if value is None else f"{value * 100:.2f}"))
        rows.append(row)
    if cells:
        rows.append([Cell("mIoU", "label"), *[Cell(f"{c['miou'] * 100:.2f}") for c in cells if c.get("miou") is not None]])
    return HtmlTable(headers, rows)


def run_view(
    doc: dict,
    *,
    reference_target: str | None = None,
    reference_miou: float | None = None,
    tolerance: float | None = None,
) -> RunView:
    reference_miou, tolerance = run_rules(doc, reference_miou, tolerance)
    targets = tables.targets_of(doc)
    notice = ""
    if reference_target and reference_target not in targets:
        notice = f"reference target {reference_target!r} is not in this run; showing {targets[0] if targets else 'none'}"
        reference_target = None
    if not reference_target and targets:
        reference_target = targets[0]
    return RunView(
        run=doc["run"],
        targets=targets,
        reference_target=reference_target,
        notice=notice,
        accuracy=accuracy_view(doc, reference_miou, tolerance),
        perf=perf_view(doc, reference_target),
        per_class=per_class_view(doc),
        compiled=doc.get("compiled") or [],
        findings=doc.get("findings") or [],
        cells_environment=plain_table(tables.environment_table(doc)),
        fleet=tables.fleet_summary(doc),
        reference_miou=reference_miou,
        tolerance=tolerance,
    )


def plain_table(table: tables.Table) -> HtmlTable:
    headers, rows = table
    return HtmlTable(headers, [[Cell(text) for text in row] for row in rows])


def run_rules(doc: dict, reference_miou: float | None, tolerance: float | None) -> tuple[float, float]:
    """A run is judged by the reference and tolerance it ran with, unless the caller says otherwise."""
    rules = regression.rules_from_params(doc["run"].get("params"))
    return (rules.reference_miou if reference_miou is None else reference_miou,
            rules.tolerance if tolerance is None else tolerance)


def accuracy_csv(doc: dict, reference_miou: float | None = None, tolerance: float | None = None) -> str:
    reference_miou, tolerance = run_rules(doc, reference_miou, tolerance)
    return tables.render_csv(tables.accuracy_table(doc, reference_miou, tolerance))


def perf_csv(doc: dict, reference_target: str | None = None) -> str:
    targets = tables.targets_of(doc)
    if reference_target is None and targets:
        reference_target = targets[0]
    return tables.render_csv(tables.perf_table(doc, reference_target))


def _run_label(point: dict) -> str:
    return f"{(point['started_at'] or '')[5:16].replace('T', ' ')} CANN {point['cann_version'] or 'n/a'}"


@dataclass
class HistoryView:
    runs: list[dict]
    batches: list[int]
    batch: int | None
    charts: list
    findings: list[dict]
    by_cann: HtmlTable


def history_view(runs: list[dict], points: list[dict], findings: list[dict], batch: int | None) -> HistoryView:
    """Charts of mIoU and throughput per target over runs (oldest first), labelled with CANN versions."""
    batches = sorted({p["batch_size"] for p in points})
    if batch not in batches:
        batch = batches[0] if batches else None
    run_ids = list(dict.fromkeys(p["run_id"] for p in points))
    labels = {p["run_id"]: _run_label(p) for p in points}
    targets = sorted({p["target"] for p in points})

    def series(metric: str, scale: float, pick) -> dict[str, list[float | None]]:
        out = {}
        for target in targets:
            values = []
            for run_id in run_ids:
                found = [p[metric] for p in points if p["run_id"] == run_id and p["target"] == target
                         and pick(p) and p[metric] is not None]
                values.append(max(found) * scale if found else None)
            out[target] = values
        return out

    x = [labels[r] for r in run_ids]
    charts = [
        line_chart(f"mIoU (%) at batch {batch}", x, series("miou", 100, lambda p: p["batch_size"] == batch),
                   y_label="mIoU %"),
        line_chart(f"Throughput (fps) at batch {batch}", x,
                   series("throughput_fps", 1, lambda p: p["batch_size"] == batch), y_label="fps"),
        line_chart("Best-batch throughput (fps)", x, series("throughput_fps", 1, lambda p: True), y_label="fps"),
    ]
    return HistoryView(runs, batches, batch, charts, findings, _by_cann(points, targets))


def _by_cann(points: list[dict], targets: list[str]) -> HtmlTable:
    """Per CANN version (in order of first appearance): each target's best mIoU and best throughput."""
    versions = list(dict.fromkeys(p["cann_version"] or "n/a" for p in points))
    headers = ["CANN", *[f"{t} mIoU %" for t in targets], *[f"{t} best fps" for t in targets]]
    rows = []
    for version in versions:
        mine = [p for p in points if (p["cann_version"] or "n/a") == version]
        row = [Cell(version, "label")]
        for metric, scale in (("miou", 100), ("throughput_fps", 1)):
            for target in targets:
                values = [p[metric] for p in mine if p["target"] == target and p[metric] is not None]
                row.append(Cell(f"{max(values) * scale:.2f}" if values else ""))
        rows.append(row)
    return HtmlTable(headers, rows)


def check_reference(doc: dict, reference_target: str | None) -> None:
    """CSV downloads refuse an unknown reference target rather than silently changing it."""
    if reference_target is not None and reference_target not in tables.targets_of(doc):
        raise ErfnetError(f"reference target {reference_target!r} is not in run {doc['run']['id']!r}")
