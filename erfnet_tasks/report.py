"""The report: perf rows (7), the run document, publishing it, and the regression gate.

The document's cell rows are built from the measured cells by one function per row type
(``compiled_row``, ``accuracy_row``, ``perf_row``); their fields are the records' (records.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from . import plan
from .errors import RegressionDetected
from .progress import Fate
from .records import (
    AccuracyRow,
    CellStatus,
    Compilation,
    CompiledCell,
    CompiledRow,
    CompileStatus,
    Environment,
    Inference,
    MeasuredCell,
    Model,
    PerfRow,
    PlannedCell,
    Prepared,
    RunStatus,
    run_status,
    to_xcom,
)
from .results import db, regression
from .results import progress as live
from .results import publish as results_publish
from .results.progress import MatrixCell

log = logging.getLogger(__name__)


def perf_row(cell: MeasuredCell) -> PerfRow:
    inference, planned = cell.inference, cell.planned
    compute = inference.compute_ms or {}
    return PerfRow(
        target=planned.target.name,
        batch_size=planned.batch_size,
        throughput_fps=inference.throughput_fps if inference.status == CellStatus.OK else None,
        compute_min_ms=compute.get("min"),
        compute_mean_ms=compute.get("mean"),
        compute_median_ms=compute.get("median"),
        compute_p99_ms=compute.get("percentile(99%)"),
        h2d_mean_ms=(inference.h2d_ms or {}).get("mean"),
        d2h_mean_ms=(inference.d2h_ms or {}).get("mean"),
        status=inference.status,
        error=inference.error,
        host=inference.host,
        device=inference.device,
        cann_version=inference.cann_version,
        driver_version=inference.driver_version,
    )


def collect_perf(cells: list[MeasuredCell]) -> list[PerfRow]:
    return sorted((perf_row(c) for c in cells), key=lambda r: (r.target, r.batch_size))


def compiled_row(cell: MeasuredCell) -> CompiledRow:
    target, compilation = cell.planned.target, cell.compiled.compilation
    return CompiledRow(
        target=target.name,
        batch_size=cell.planned.batch_size,
        backend=target.backend,
        chip=target.chip,
        **compilation.model_dump(),
    )


def accuracy_row(cell: MeasuredCell) -> AccuracyRow | None:
    """The cell's accuracy, or None for a cell that was not measured."""
    if cell.status != CellStatus.OK or cell.evaluation is None:
        return None
    evaluation = cell.evaluation
    return AccuracyRow(
        target=cell.planned.target.name,
        batch_size=cell.planned.batch_size,
        images=evaluation.images,
        miou=evaluation.miou,
        per_class=list(evaluation.per_class),
        confusion=[list(row) for row in evaluation.confusion],
        label_mode=evaluation.label_mode,
    )


def cell_rows(cell: MeasuredCell) -> dict[str, list[dict[str, Any]]]:
    """A cell's rows as the run document holds them: what storing the cell, and the run, write."""
    accuracy = accuracy_row(cell)
    return {
        "compiled": [to_xcom(compiled_row(cell))],
        "accuracy": [] if accuracy is None else [to_xcom(accuracy)],
        "perf": [to_xcom(perf_row(cell))],
    }


def run_fields(env: Environment, model: Model | None, prep: Prepared | None, status: RunStatus) -> dict[str, Any]:
    """The run's own row; ``model`` and ``prep`` are None while they are not built (or never were)."""
    return {
        "id": env.run_id,
        "dag_id": env.dag_id,
        "started_at": env.started_at,
        "finished_at": None if status == RunStatus.RUNNING else dt.datetime.now(dt.UTC).isoformat(),
        "status": status.value,
        "params": dict(env.params),
        "cann_version": env.cann_version,
        "driver_version": env.driver_version,
        "host": env.host,
        "backends": dict(env.backends),
        "model_sha256": None if model is None else model.sha256,
        "weights_sha256": env.weights_sha256,
        "dataset_fingerprint": None if prep is None else prep.fingerprint,
        "images": None if prep is None else prep.images,
        "synthetic": None if prep is None else prep.synthetic,
        "class_names": None if prep is None else list(prep.class_names),
    }


def build_run_document(
    env: Environment,
    model: Model | None,
    prep: Prepared | None,
    cells: list[MeasuredCell],
    perf: list[PerfRow] | None = None,
) -> dict[str, Any]:
    # A recorded refusal (the 310's batch 64 oom) is a result; a cell that never reached a device makes
    # the run incomplete; the run failed only if nothing was measured.
    status = run_status([c.status for c in cells])
    by_cell = sorted(cells, key=lambda c: (c.planned.target.name, c.planned.batch_size))
    return {
        "run": run_fields(env, model, prep, status),
        "compiled": [to_xcom(compiled_row(c)) for c in cells],
        "accuracy": [to_xcom(row) for row in map(accuracy_row, by_cell) if row is not None],
        "perf": [to_xcom(row) for row in (collect_perf(cells) if perf is None else perf)],
        "findings": [],
    }


def publish(doc: dict[str, Any], env: Environment, url: str | None = None) -> dict[str, Any]:
    """Write the run's JSON beside its outputs first (it survives a database outage), then the database.
    Findings already stored (as cells were stored) are kept, with the time each was notified."""
    path = Path(env.work_dir) / "results.json"
    results_publish.write_run_file(doc, path)
    results_publish.publish_run(doc, url=url, keep_findings=True)
    return {"run_id": doc["run"]["id"], "results_file": str(path), "status": doc["run"]["status"]}


# ----------------------------------------------------------------------- a run as it happens


def open_run(env: Environment, url: str | None = None) -> int:
    """The run in the results database as ``running``, with its matrix queued; returns the cell count."""
    cells = plan.matrix(env)
    matrix = [MatrixCell(c.target.name, c.batch_size, c.target.chip, c.target.backend, c.target.aoe) for c in cells]
    fields = run_fields(env, None, None, RunStatus.RUNNING)
    results_publish.with_database(lambda session: live.open_run(session, fields, matrix), url)
    return len(matrix)


def unfinished_cell(planned: PlannedCell, compiled: CompiledCell | None, fate: Fate) -> MeasuredCell:
    """The record of a cell whose task handed back nothing: its status and reason, and where it was."""
    if compiled is None:
        failed = Compilation(
            status=CompileStatus.FAILED, path=None, sha256=None, seconds=None, cache_hit=False, error=fate.error
        )
        compiled = CompiledCell(planned=planned, compilation=failed)
    return MeasuredCell(compiled=compiled, inference=Inference(status=fate.status, error=fate.error, host=fate.host))


def store_cell(cell: MeasuredCell, env: Environment, url: str | None = None) -> list[dict[str, Any]]:
    """Store the cell as it is measured and apply the gate's rules to it; returns its findings."""
    target, batch = cell.planned.target.name, cell.planned.batch_size
    rows = cell_rows(cell)

    def write(session: Session) -> list[dict[str, Any]]:
        if not live.is_running(session, env.run_id):
            log.warning("run %s is not open: %s batch %s is published with the run", env.run_id, target, batch)
            return []
        live.store_cell(session, env.run_id, target, batch, rows)
        found: list[dict[str, Any]] = regression.find_regressions(
            session, env.run_id, regression.rules_from_params(dict(env.params)), cell=(target, batch)
        )
        return found

    return results_publish.with_database(write, url, migrate=False)  # open_run migrated it


def claim_new_findings(env: Environment, cell: PlannedCell, url: str | None = None) -> list[dict[str, Any]]:
    """The cell's findings no notification carried yet, marked as notified (so each is notified once)."""
    key = (cell.target.name, cell.batch_size)
    return results_publish.with_database(lambda s: regression.claim_unnotified(s, env.run_id, key), url, migrate=False)


def with_unstored_cells(env: Environment, stored: list[MeasuredCell]) -> list[MeasuredCell]:
    """``stored`` and, for each cell of the matrix missing from it (its store task failed for good), the
    cell as task_failed: every planned cell is published, each once."""
    have = {(c.planned.target.name, c.planned.batch_size) for c in stored}
    lost = Fate(CellStatus.TASK_FAILED, "task_failed: the cell's store task failed (see its log)", None)
    missing = [unfinished_cell(c, None, lost) for c in plan.matrix(env) if (c.target.name, c.batch_size) not in have]
    return stored + missing


def discard_run(env: Environment, url: str | None = None) -> None:
    """Remove a run that ended before measuring anything of its own (the nightly skip): the run it
    repeats stays the latest."""
    results_publish.with_database(lambda session: live.discard_run(session, env.run_id), url)


def regression_findings(run_id: str, params: dict[str, Any], url: str | None = None) -> list[dict[str, Any]]:
    with db.session_scope(url) as session:
        findings: list[dict[str, Any]] = regression.find_regressions(
            session, run_id, regression.rules_from_params(params)
        )
        return findings


def gate_message(run_id: str, findings: list[dict[str, Any]]) -> str:
    """The gate's one line: the verdict, then the first five findings."""
    listed = "; ".join(f["message"] for f in findings[:5])
    more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
    unmeasured = sum(f["rule"] == "cell_not_measured" for f in findings)
    verdict = (
        f"run {run_id} is incomplete ({unmeasured} cell(s) never reached a device)"
        if unmeasured
        else f"{len(findings)} regression(s) in run {run_id}"
    )
    return f"{verdict}: {listed}{more}"


def regression_gate(run_id: str, params: dict[str, Any], url: str | None = None) -> list[dict[str, Any]]:
    findings = regression_findings(run_id, params, url)
    if findings:
        raise RegressionDetected(gate_message(run_id, findings))
    return findings
