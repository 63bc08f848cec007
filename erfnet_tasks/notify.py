"""What the pipeline tells people: the messages for a regression, a failed run and a nightly summary.

Plain text and HTML built from the results database and the run's identity; sending them is Airflow's
(``dags/erfnet_notifications.py`` hands them to the SMTP and Apprise notifiers). Every message links to
the results page of the run and to its DAG run in the Airflow UI, both under Airflow's API base URL.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .deployment import DAG_ID, PLUGIN_PREFIX
from .errors import BadInput
from .results import db, queries, tables
from .results.reference import GUIDE_MIOU

Doc = dict[str, Any]  # a run document, or one of its cells or findings, as JSON
_METRICS = {"accuracy_below_reference": "mIoU (%)", "throughput_drop": "throughput (fps)", "cell_failed": "cell status"}


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str
    failure: bool  # a regression or a failure (Apprise shows it as such); a summary is not


@dataclass(frozen=True)
class Links:
    """URLs into the Airflow UI under ``base_url`` (Airflow's ``[api] base_url``)."""

    base_url: str

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise BadInput(f"the Airflow base URL must start with http:// or https://, got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    def results_page(self, run_id: str) -> str:
        return f"{self.base_url}{PLUGIN_PREFIX}/runs/{quote(run_id, safe='')}"

    def dag_run(self, dag_id: str, run_id: str) -> str:
        return f"{self.base_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int | None = None
    ) -> str:
        url = f"{self.dag_run(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"
        if map_index is not None and map_index >= 0:
            url += f"/mapped/{map_index}"
        return url + (f"?try_number={int(try_number)}" if try_number else "")


# ------------------------------------------------------------------------------- regression


def load_run(run_id: str, url: str | None = None) -> tuple[Doc, dict[str, Doc]]:
    """The run's document (findings included) and the documents of the baseline runs its findings name."""
    with db.session_scope(url) as session:
        doc = queries.run_document(session, run_id)
        early = queries.notified_findings(session, run_id)
        doc["findings"] = [
            {**f, "notified_early": (f["rule"], f["target"], f["batch_size"]) in early} for f in doc["findings"]
        ]
        baselines = {
            f["baseline_run_id"]: queries.run_document(session, f["baseline_run_id"])
            for f in doc["findings"]
            if f.get("baseline_run_id")
        }
    return doc, baselines


def _perf_cell(doc: Doc | None, target: str, batch: int) -> Doc:
    return next((c for c in (doc or {}).get("perf", []) if c["target"] == target and c["batch_size"] == batch), {})


def _num(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.2f}" if percent else f"{value:.2f}"


def finding_row(finding: Doc, doc: Doc, baselines: dict[str, Doc]) -> Doc:
    """One finding spelled out: where, which metric, this run against its baseline, numbers, rule."""
    rule, target, batch = finding["rule"], finding["target"], finding["batch_size"]
    base_id = finding.get("baseline_run_id")
    base = baselines.get(base_id) if base_id else None
    now_cell, base_cell = _perf_cell(doc, target, batch), _perf_cell(base, target, batch)
    row = {
        "target": target,
        "batch": batch,
        "metric": _METRICS.get(rule, rule),
        "rule": rule,
        "run_cann": doc["run"].get("cann_version") or "unknown",
        "baseline": base_id or "guide reference",
        "baseline_cann": (base["run"].get("cann_version") or "unknown") if base else "-",
        "notified_early": bool(finding.get("notified_early")),
    }
    if rule == "accuracy_below_reference":
        params = doc["run"].get("params") or {}
        reference = params["reference_miou"] / 100 if params.get("reference_miou") else GUIDE_MIOU
        row.update(
            value=_num(finding.get("value"), True),
            baseline_value=_num(reference, True),
            threshold=_num(finding.get("threshold"), True),
        )
    elif rule == "cell_failed":
        row.update(
            value=now_cell.get("status") or "failed",
            baseline_value=f"ok, {_num(base_cell.get('throughput_fps'))} fps",
            threshold="ok",
        )
    else:
        row.update(
            value=_num(finding.get("value")),
            baseline_value=_num(base_cell.get("throughput_fps")),
            threshold=_num(finding.get("threshold")),
        )
    return row


_FINDING_COLUMNS = (
    ("target", "target"),
    ("batch", "batch"),
    ("metric", "metric"),
    ("value", "this run"),
    ("baseline_value", "baseline"),
    ("threshold", "threshold"),
    ("rule", "rule"),
    ("baseline", "baseline run"),
    ("baseline_cann", "baseline CANN"),
    ("run_cann", "this CANN"),
)


def early_findings_message(doc: Doc, baselines: dict[str, Doc], findings: list[Doc], links: Links) -> Message:
    """The findings of a cell just stored, while its run goes on (the run's final message lists them all)."""
    return regression_message({**doc, "findings": findings}, baselines, links, early=True)


def regression_message(doc: Doc, baselines: dict[str, Doc], links: Links, *, early: bool = False) -> Message:
    run = doc["run"]
    rows = [finding_row(f, doc, baselines) for f in doc["findings"]]
    where = f"CANN {run.get('cann_version') or 'unknown'} on {run.get('host') or 'unknown host'}"
    if early:
        subject = f"[ErfNet] regression found while run {run['id']} goes on: {len(rows)} finding(s) ({where})"
        opening = (
            f"The regression gate found this in run {run['id']} ({where}) as its cells were stored; "
            f"the run is still going."
        )
    else:
        subject = f"[ErfNet] regression: {len(rows)} finding(s) in run {run['id']} ({where})"
        opening = f"The regression gate fired for run {run['id']} ({where})."
    lines = [opening, ""]
    for r in rows:
        lines.append(
            f"- {r['target']} batch {r['batch']}, {r['metric']}: {r['value']} "
            f"(baseline {r['baseline_value']}, "
            f"threshold {r['threshold']}); rule {r['rule']}; baseline run {r['baseline']} "
            f"(CANN {r['baseline_cann']}) against this run (CANN {r['run_cann']})"
            + ("; notified earlier, as its cell was stored" if r["notified_early"] and not early else "")
        )
    lines += ["", *_link_lines(links, run)]
    table = tables.Table([h for _k, h in _FINDING_COLUMNS], [[str(r[k]) for k, _h in _FINDING_COLUMNS] for r in rows])
    body = f"<p>{_e(opening)}</p>{_html_table(table)}{_html_links(links, run)}"
    return Message(subject=subject, text="\n".join(lines), html=_html_page(subject, body), failure=True)


# --------------------------------------------------------------------------------- failure


def failure_message(
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    error: str,
    links: Links,
    map_index: int = -1,
    try_number: int | None = None,
) -> Message:
    """A run that failed for another reason than the gate: the task, its one-line error, its log."""
    error_line = (str(error).strip().splitlines() or ["(no error message)"])[0]
    task = task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"
    log_url = links.task_log(dag_id, run_id, task_id, map_index, try_number)
    subject = f"[ErfNet] run {run_id} failed in {task}"
    run = {"id": run_id, "dag_id": dag_id}
    text = "\n".join(
        [
            f"Task {task} of run {run_id} ({dag_id}) failed:",
            f"  {error_line}",
            "",
            f"Task log: {log_url}",
            *_link_lines(links, run),
        ]
    )
    body = (
        f"<p>Task <b>{_e(task)}</b> of run <b>{_e(run_id)}</b> ({_e(dag_id)}) failed:</p>"
        f'<pre>{_e(error_line)}</pre><p><a href="{_e(log_url)}">Task log</a></p>{_html_links(links, run)}'
    )
    return Message(subject=subject, text=text, html=_html_page(subject, body), failure=True)


# --------------------------------------------------------------------------------- summary


def summary_message(doc: Doc, links: Links) -> Message:
    """A complete run in short: the guide's two tables (accuracy in mIoU %, throughput in fps)."""
    run = doc["run"]
    ok = sum(1 for c in doc.get("perf", []) if c.get("status") == "ok")
    subject = (
        f"[ErfNet] run {run['id']} complete: {ok}/{len(doc.get('perf', []))} cells ok, no regression "
        f"(CANN {run.get('cann_version') or 'unknown'})"
    )
    accuracy, perf = tables.accuracy_table(doc), tables.perf_table(doc)
    text = "\n".join(
        [
            subject.removeprefix("[ErfNet] "),
            "",
            "Accuracy (mIoU %)",
            tables.render_text(accuracy),
            "",
            "Throughput (fps)",
            tables.render_text(perf),
            "",
            *_link_lines(links, run),
        ]
    )
    body = (
        f"<p>Run <b>{_e(run['id'])}</b> is complete and passed the regression gate.</p>"
        f"<h3>Accuracy (mIoU %)</h3>{_html_table(accuracy)}<h3>Throughput (fps)</h3>{_html_table(perf)}"
        f"{_html_links(links, run)}"
    )
    return Message(subject=subject, text=text, html=_html_page(subject, body), failure=False)


# ----------------------------------------------------------------------------------- layout


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link_lines(links: Links, run: Doc) -> list[str]:
    dag_id = run.get("dag_id") or DAG_ID
    return [f"Results page: {links.results_page(run['id'])}", f"DAG run: {links.dag_run(dag_id, run['id'])}"]


def _html_links(links: Links, run: Doc) -> str:
    dag_id = run.get("dag_id") or DAG_ID
    return (
        f'<p><a href="{_e(links.results_page(run["id"]))}">Results page</a> · '
        f'<a href="{_e(links.dag_run(dag_id, run["id"]))}">DAG run</a></p>'
    )


def _html_table(table: tables.Table) -> str:
    head = "".join(f'<th style="border:1px solid #999;padding:2px 6px">{_e(h)}</th>' for h in table.headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td style="border:1px solid #999;padding:2px 6px">{_e(tables.text(c))}</td>' for c in row)
        + "</tr>"
        for row in table.rows
    )
    return f'<table style="border-collapse:collapse"><tr>{head}</tr>{body}</table>'


def _html_page(title: str, body: str) -> str:
    return f'<html><head><meta charset="utf-8"><title>{_e(title)}</title></head><body>{body}</body></html>'


# ------------------------------------------------------------------------------------ policy

UNATTENDED_RUN_TYPES = ("scheduled", "asset_triggered")  # the nightly, and the run after a CANN upgrade


def wants_summary(mode: str, run_type: str | None, status: str | None) -> bool:
    """Whether a run that passed the gate gets a summary (ERFNET_NOTIFY_SUMMARY: off, nightly, all)."""
    if status != "complete" or mode == "off":
        return False
    return mode == "all" or (run_type or "") in UNATTENDED_RUN_TYPES
