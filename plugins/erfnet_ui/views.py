"""What the pages show, shaped from run documents and ``erfnet_tasks.results.tables``.

The tables' layout and values come from the shared ``tables`` module (the CLI prints the same ones), as
numbers, statuses and None; this module formats them at the last moment, adding what HTML needs: a CSS
class per cell, readable failure statuses and the pass/fail marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from erfnet_tasks.errors import BadInput
from erfnet_tasks.records import CellState, CellStatus
from erfnet_tasks.results import regression, tables
from erfnet_tasks.results.document import LEGACY_CLASS_NAMES

# A cell that did not run shows its status, in words that read better than the stored codes. Every
# status but ok has words, by construction: a new CellStatus reads as its code with spaces.
_READS_BETTER = {
    CellStatus.OOM: "device memory exhausted",
    CellStatus.INFER_FAILED: "inference failed",
    CellStatus.NO_SPACE: "no space for the outputs",
}
STATUS_TEXT = {
    status: _READS_BETTER.get(status, status.value.replace("_", " "))
    for status in CellStatus
    if status is not CellStatus.OK
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


def _value_cell(value: tables.Value, errors: dict[str, str], note: str = "") -> Cell:
    """A table value as a cell: a failure status in words, with an example error as its tooltip; a cell
    still pending shows its state, with where and since when (``note``) as its tooltip."""
    if isinstance(value, CellStatus) and value in STATUS_TEXT:
        return Cell(STATUS_TEXT[value], "status", errors.get(value, ""))
    if isinstance(value, CellState):
        return Cell(STATE_TEXT.get(value, value.value), f"state {value.value}", note)
    if value is tables.Mark.PENDING:
        return Cell(tables.text(value), "state", "not known until every batch of the column is stored")
    return Cell(tables.text(value))


def _errors_by_status(doc: dict) -> dict[str, str]:
    """One example error message per failure status, shown as the failed cells' tooltip."""
    found: dict[str, str] = {}
    for cell in doc.get("perf") or []:
        if cell.get("status") not in (None, "ok") and cell.get("error"):
            found.setdefault(cell["status"], cell["error"])
    return found


def accuracy_view(doc: dict, reference_miou: float, tolerance: float) -> HtmlTable:
    table = tables.accuracy_table(doc, reference_miou, tolerance)
    errors = _errors_by_status(doc)
    notes = pending_notes(doc)
    out = []
    for batch, *measured, guide in table.rows:
        cells = [
            Cell(tables.text(batch), "label"),
            *(
                _miou_cell(value, errors, notes.get((target, batch), ""))
                for target, value in zip(table.headers[1:-1], measured, strict=True)
            ),
        ]
        cells.append(Cell(tables.text(guide), "muted"))
        out.append(cells)
    return HtmlTable(table.headers, out)


def _miou_cell(value: tables.Value, errors: dict[str, str], note: str = "") -> Cell:
    if not isinstance(value, tables.Percent):
        return _value_cell(value, errors, note)
    if value.below:
        return Cell(f"{tables.text(value)} ✗", "fail", "below reference minus tolerance")
    return Cell(f"{tables.text(value)} ✓", "pass", "within tolerance of the reference")


def perf_view(doc: dict, reference_target: str | None) -> HtmlTable:
    table = tables.perf_table(doc, reference_target)
    errors = _errors_by_status(doc)
    notes = pending_notes(doc)
    out, row_css = [], []
    for label, *values in table.rows:
        cells = [Cell(tables.text(label), "label")]
        for column, value in enumerate(values, start=1):
            cell = _value_cell(value, errors, notes.get((table.headers[column], label), ""))
            if column in table.guide_columns:  # the guide's published figures, for comparison only
                cell.css = (cell.css + " muted").strip()
            cells.append(cell)
        out.append(cells)
        row_css.append("best" if label is tables.Mark.BEST_BATCH else "")
    return HtmlTable(table.headers, out, row_css)


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
        rows.append(
            [Cell("mIoU", "label"), *[Cell(f"{c['miou'] * 100:.2f}") for c in cells if c.get("miou") is not None]]
        )
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
        notice = (
            f"reference target {reference_target!r} is not in this run; showing {targets[0] if targets else 'none'}"
        )
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


# ------------------------------------------------------------------------------- a running run

LIVE_REFRESH_SECONDS = 10  # how often a running run's page fetches its tables again
# The states in the words a reader needs: "compiled" alone would read as done.
STATE_TEXT = {CellState.COMPILED: "waiting for a device", CellState.TUNING: "tuning (AOE)"}


@dataclass
class LiveView:
    """What a running run's page adds: how far it has come, since when, and its cells not stored yet."""

    done: int
    total: int
    started_at: str | None
    running_for: str
    updated_at: str | None
    states: list[tuple[str, int]]  # (state in words, cells), the states a cell goes through, in order
    pending: HtmlTable
    refresh_seconds: int = LIVE_REFRESH_SECONDS


def with_pending(doc: dict, progress: dict | None) -> dict:
    """The document with a running run's cells not stored yet (``queries.run_progress``), as the tables
    lay them out: each shows its state where its value will be."""
    if progress is None or not progress["running"]:
        return doc
    return dict(doc, pending=progress["pending"])


def pending_notes(doc: dict) -> dict[tuple[str, tables.Value], str]:
    """Each pending cell's tooltip: its state, host, try and since when; its error if a step raised."""
    return {(c["target"], c["batch_size"]): _pending_note(c) for c in doc.get("pending") or []}


def _pending_note(cell: dict) -> str:
    state = CellState(cell["state"])
    note = STATE_TEXT.get(state, state.value)
    if cell.get("host"):
        note += f" on {cell['host']}"
    if (cell.get("try_number") or 1) > 1:  # a retry: the earlier tries failed
        note += f" (try {cell['try_number']})"
    if cell.get("updated_at"):
        note += f" since {clock_text(cell['updated_at'])}"
    if cell.get("error"):
        note += f"; last error: {cell['error']}"
    return note


def live_view(progress: dict, now: datetime | None = None) -> LiveView:
    started = datetime.fromisoformat(progress["started_at"]) if progress["started_at"] else None
    now = now or datetime.now(UTC)
    return LiveView(
        done=progress["done"],
        total=progress["total"],
        started_at=clock_text(progress["started_at"]),
        running_for=duration_text(now - started) if started else "",
        updated_at=clock_text(progress["updated_at"]),
        states=[(STATE_TEXT.get(CellState(s), s), n) for s, n in progress["states"].items() if n],
        pending=pending_table(progress["pending"]),
    )


def pending_table(pending: list[dict]) -> HtmlTable:
    """The cells not stored yet, one row each: where each is and since when."""
    headers = ["target", "batch", "state", "chip", "AOE", "host", "since", "error"]
    rows = [
        [
            Cell(c["target"], "label"),
            Cell(str(c["batch_size"])),
            Cell(STATE_TEXT.get(CellState(c["state"]), c["state"]), f"label state {c['state']}"),
            Cell(c.get("chip") or "", "label"),
            Cell("yes" if c.get("aoe") else "", "label"),
            Cell(c.get("host") or "", "label"),
            Cell(clock_text(c.get("updated_at")) or "", "label"),
            Cell(c.get("error") or "", "label status" if c.get("error") else "label"),
        ]
        for c in pending
    ]
    return HtmlTable(headers, rows)


def clock_text(iso: str | None) -> str | None:
    """A stored UTC time to the second, as a reader scans it: ``2026-12-01 08:03:10 UTC``."""
    if not iso:
        return None
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(elapsed: timedelta) -> str:
    """``42 s``, ``12 min``, ``3 h 05 min``: how long a run has been going, to the unit that matters."""
    seconds = max(0, int(elapsed.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plain_table(table: tables.Table) -> HtmlTable:
    return HtmlTable(table.headers, [[Cell(tables.text(value)) for value in row] for row in table.rows])


def run_rules(doc: dict, reference_miou: float | None, tolerance: float | None) -> tuple[float, float]:
    """A run is judged by the reference and tolerance it ran with, unless the caller says otherwise."""
    rules = regression.rules_from_params(doc["run"].get("params"))
    return (
        rules.reference_miou if reference_miou is None else reference_miou,
        rules.tolerance if tolerance is None else tolerance,
    )


def accuracy_csv(doc: dict, reference_miou: float | None = None, tolerance: float | None = None) -> str:
    reference_miou, tolerance = run_rules(doc, reference_miou, tolerance)
    return tables.render_csv(tables.accuracy_table(doc, reference_miou, tolerance))


def perf_csv(doc: dict, reference_target: str | None = None) -> str:
    targets = tables.targets_of(doc)
    if reference_target is None and targets:
        reference_target = targets[0]
    return tables.render_csv(tables.perf_table(doc, reference_target))


@dataclass
class HistoryView:
    runs: list[dict]
    more_runs: bool
    batches: list[int]
    batch: int | None
    chart: dict
    findings: list[dict]
    by_cann: HtmlTable


def chart_data(points: list[dict], batch: int | None, rules: regression.Rules, upgrades: Sequence[dict] = ()) -> dict:
    """What the history charts draw, in one pass over the points (oldest run first): the runs on the
    time axis, per target its fps and mIoU per run (None where the cell did not run), the spans
    of consecutive runs on one CANN version (the labelled bands), and the moments the CANN probe saw
    a host's toolkit change (marked lines)."""
    runs: list[list] = []
    index: dict[str, int] = {}
    cells: dict[tuple[str, int], tuple] = {}
    for p in points:
        if p["batch_size"] != batch:
            continue
        if p["run_id"] not in index:
            index[p["run_id"]] = len(runs)
            runs.append([p["started_at"], p["run_id"], p["cann_version"] or "n/a"])
        cells[(p["target"], index[p["run_id"]])] = (
            p["throughput_fps"] if p["status"] == "ok" else None,
            None if p["miou"] is None else round(p["miou"] * 100, 4),
            p["status"],
        )
    targets = sorted({target for target, _i in cells})
    series: dict[str, dict[str, list[object]]] = {t: {"fps": [], "miou": [], "status": []} for t in targets}
    for target in targets:
        for i in range(len(runs)):
            fps, miou, status = cells.get((target, i), (None, None, None))
            series[target]["fps"].append(fps)
            series[target]["miou"].append(miou)
            series[target]["status"].append(status)
    return {
        "batch": batch,
        "runs": runs,
        "targets": targets,
        "series": series,
        "bands": cann_bands(runs),
        "upgrades": [{"time": u["time"], "label": upgrade_label(u)} for u in upgrades],
        "reference": round(rules.reference_miou * 100, 4),
        "tolerance": round(rules.tolerance * 100, 4),
    }


def upgrade_label(event: dict) -> str:
    """``host: CANN 8.0 -> 8.1`` (or the driver or chips, when that is what changed)."""
    for what, key in (("CANN", "cann_version"), ("driver", "driver_version"), ("chips", "chips")):
        before, after = event[f"old_{key}"], event[f"new_{key}"]
        if before != after:
            show = (lambda v: ",".join(v) or "none") if key == "chips" else (lambda v: v or "none")
            return f"{event['host']}: {what} {show(before)} \u2192 {show(after)}"
    return f"{event['host']}: changed"


def cann_bands(runs: list[list]) -> list[dict]:
    """Consecutive runs on one CANN version as [start, end) spans; a band ends where the next begins."""
    bands: list[dict] = []
    for started, _run_id, cann in runs:
        if bands and bands[-1]["cann"] == cann:
            bands[-1]["last"] = started
            continue
        if bands:
            bands[-1]["end"] = started
        bands.append({"cann": cann, "start": started, "last": started, "end": started})
    if bands:
        bands[-1]["end"] = bands[-1]["last"]
    return bands


def _figure(value: float | None, scale: float = 1.0) -> Cell:
    return Cell("" if value is None else f"{value * scale:.2f}")


def cann_table(summary: list[dict], batch: int | None) -> HtmlTable:
    """Per CANN version and target, at one batch size: runs, first run, best/median/latest fps and mIoU."""
    headers = [
        "CANN",
        "target",
        "runs",
        "first run",
        "fps best",
        "fps median",
        "fps latest",
        "mIoU % best",
        "mIoU % median",
        "mIoU % latest",
    ]
    rows, css = [], []
    previous = object()
    for row in summary:
        if row["batch_size"] != batch:
            continue
        first_of_version = row["cann_version"] != previous
        previous = row["cann_version"]
        rows.append(
            [
                Cell(row["cann_version"] or "n/a", "label"),
                Cell(row["target"], "label"),
                Cell(str(row["runs"])),
                Cell((row["first_started_at"] or "")[:10], "label"),
                _figure(row["fps_best"]),
                _figure(row["fps_median"]),
                _figure(row["fps_latest"]),
                _figure(row["miou_best"], 100),
                _figure(row["miou_median"], 100),
                _figure(row["miou_latest"], 100),
            ]
        )
        css.append("version-start" if first_of_version else "")
    return HtmlTable(headers, rows, css)


def history_view(
    points: list[dict],
    summary: list[dict],
    runs: list[dict],
    more_runs: bool,
    findings: list[dict],
    batches: list[int],
    batch: int | None,
    upgrades: Sequence[dict] = (),
) -> HistoryView:
    """The history page: charts of the range at one batch size, every CANN version's summary, the
    range's findings and runs."""
    if batch not in batches:
        batch = batches[0] if batches else None
    return HistoryView(
        runs,
        more_runs,
        batches,
        batch,
        chart_data(points, batch, regression.Rules(), upgrades),
        findings,
        cann_table(summary, batch),
    )


DEFAULT_DAYS = 90


@dataclass(frozen=True)
class Window:
    """The history's date range: whole UTC days from ``first`` to ``last``, both included."""

    first: date
    last: date
    older: tuple[date, date] | None  # the same number of days before, while runs exist there
    newer: tuple[date, date] | None

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time(), UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def history_window(
    span: tuple[datetime | None, datetime | None], since: date | None, until: date | None, days: int | None
) -> Window:
    """The range asked for; by default the ``DEFAULT_DAYS`` up to the newest run (not up to today, so a
    database whose runs stopped still shows them)."""
    first_run, last_run = (value.date() if value else None for value in span)
    last = until or last_run or datetime.now(UTC).date()
    first = since or last - timedelta(days=(days or DEFAULT_DAYS) - 1)
    if first > last:
        raise BadInput(f"the range starts ({first}) after it ends ({last})")
    length = timedelta(days=(last - first).days + 1)
    older = (first - length, first - timedelta(days=1)) if first_run and first_run < first else None
    newer = (last + timedelta(days=1), last + length) if last_run and last_run > last else None
    return Window(first, last, older, newer)


def check_reference(doc: dict, reference_target: str | None) -> None:
    """CSV downloads refuse an unknown reference target rather than silently changing it."""
    if reference_target is not None and reference_target not in tables.targets_of(doc):
        raise BadInput(f"reference target {reference_target!r} is not in run {doc['run']['id']!r}")
