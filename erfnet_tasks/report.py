"""The report: perf rows (7), the run document, publishing it, and the regression gate.

The document's cell rows are built from the measured cells by one function per row type
(``compiled_row``, ``accuracy_row``, ``perf_row``); their fields are the records' (records.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from .errors import RegressionDetected
from .records import (
    AccuracyRow,
    CellStatus,
    CompiledRow,
    Environment,
    MeasuredCell,
    Model,
    PerfRow,
    Prepared,
    run_status,
    to_xcom,
)
from .results import db, regression
from .results import publish as results_publish


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


def build_run_document(
    env: Environment, model: Model, prep: Prepared, cells: list[MeasuredCell], perf: list[PerfRow]
) -> dict[str, Any]:
    # A recorded refusal (the 310's batch 64 oom) is a result; a cell that never reached a device makes
    # the run incomplete; the run failed only if nothing was measured.
    status = run_status([c.status for c in cells]).value
    by_cell = sorted(cells, key=lambda c: (c.planned.target.name, c.planned.batch_size))
    return {
        "run": {
            "id": env.run_id,
            "dag_id": env.dag_id,
            "started_at": env.started_at,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "status": status,
            "params": dict(env.params),
            "cann_version": env.cann_version,
            "driver_version": env.driver_version,
            "host": env.host,
            "backends": dict(env.backends),
            "model_sha256": model.sha256,
            "weights_sha256": env.weights_sha256,
            "dataset_fingerprint": prep.fingerprint,
            "images": prep.images,
            "synthetic": prep.synthetic,
            "class_names": list(prep.class_names),
        },
        "compiled": [to_xcom(compiled_row(c)) for c in cells],
        "accuracy": [to_xcom(row) for row in map(accuracy_row, by_cell) if row is not None],
        "perf": [to_xcom(row) for row in perf],
        "findings": [],
    }


def publish(doc: dict[str, Any], env: Environment, url: str | None = None) -> dict[str, Any]:
    """Write the run's JSON beside its outputs first (it survives a database outage), then the database."""
    path = Path(env.work_dir) / "results.json"
    results_publish.write_run_file(doc, path)
    results_publish.publish_run(doc, url=url)
    return {"run_id": doc["run"]["id"], "results_file": str(path), "status": doc["run"]["status"]}


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
