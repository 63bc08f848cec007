"""The façade the DAG calls: one function per task, plain JSON dicts in and out.

Airflow passes task results through XCom as plain JSON, so each function here reads its arguments
into the stage's records (``records.from_xcom``), calls the stage and hands the result back as a dict
(``records.to_xcom``): the one place records cross XCom. The stages themselves live in ``plan``
(form, environment, probes, cells), ``build`` (export, fix_bn, preprocess, compile), ``nightly`` (the
skip), ``measure`` (infer, evaluate, store, delete) and ``report`` (perf, document, publish, gate);
none imports Airflow.

Failure policy: a bad parameter or input raises BadInput (deterministic: the DAG does not retry it);
a cell that fails to compile or infer is *recorded* with its status and the other cells go on, because
the guide's own table has such a cell (the 310 at batch 64: memory allocation failed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import build, measure, nightly, plan, progress, report, settings
from .deployment import DAG_ID  # noqa: F401  (re-exported for the DAG)
from .devices import Claim
from .errors import RegressionDetected  # noqa: F401  (re-exported: dags/erfnet_notifications.py names it)
from .plan import run_folder_name, validate_params  # noqa: F401  (re-exported for the DAG, demo, retention)
from .records import (
    CellState,
    CompiledCell,
    Environment,
    ExportedModel,
    HostRecord,
    MeasuredCell,
    Model,
    PlannedCell,
    Prepared,
    from_xcom,
    to_xcom,
)

Json = dict[str, Any]


def check_params(raw_params: Json) -> None:
    plan.check_params(raw_params)


def resolve_environment(raw_params: Json, run_id: str, broker_url: str | None = None) -> Json:
    return to_xcom(plan.resolve_environment(raw_params, run_id, broker_url))


def chips_to_probe(env: Json, chip: str) -> list[str]:
    return plan.chips_to_probe(from_xcom(Environment, env), chip)


def probe_host(chip: str) -> Json:
    return to_xcom(plan.probe_host(chip))


def with_hosts(env: Json, probes: list[list[Json] | None]) -> Json:
    found = [[from_xcom(HostRecord, h) for h in (p or [])] for p in probes]
    return to_xcom(plan.with_hosts(from_xcom(Environment, env), found))


def plan_cells(env: Json, group: str, chip: str | None = None) -> list[Json]:
    return [to_xcom(c) for c in plan.plan_cells(from_xcom(Environment, env), group, chip)]


def export_step(env: Json) -> Json:
    return to_xcom(build.export_step(from_xcom(Environment, env)))


def fix_bn_step(exported: Json) -> Json:
    return to_xcom(build.fix_bn_step(from_xcom(ExportedModel, exported)))


def preprocess_dataset(env: Json) -> Json:
    return to_xcom(build.preprocess_dataset(from_xcom(Environment, env)))


def unchanged_since_last_run(env: Json, model: Json, prep: Json, url: str | None = None) -> str | None:
    return nightly.unchanged_since_last_run(
        from_xcom(Environment, env), from_xcom(Model, model), from_xcom(Prepared, prep), url
    )


def open_run(env: Json) -> int:
    return report.open_run(from_xcom(Environment, env))


def compile_cell(cell: Json, model: Json, env: Json, try_number: int | None = None) -> Json:
    """Compile a cell. An AOE tuning is ``queued`` until it holds a device of its chip, then ``tuning``;
    while a measurement of the chip is still to get a device in the run (a plain cell, or a tuned one) it
    leaves it one, raising DeviceWait rather than holding its slot: a measurement takes minutes and
    publishes a cell, a tuning takes hours."""
    planned, environment = from_xcom(PlannedCell, cell), from_xcom(Environment, env)
    run_id, chip = environment.run_id, planned.target.chip
    claim = None
    if planned.target.aoe and chip is not None:
        claim = device_claim(
            lambda: progress.mark(run_id, planned, CellState.TUNING, try_number),
            keep_free=lambda: 1 if progress.measurements_pending(run_id, chip) else 0,
        )
    state = CellState.QUEUED if planned.target.aoe else CellState.COMPILING
    with progress.step(run_id, planned, state, try_number):
        compiled = build.compile_cell(planned, from_xcom(Model, model), environment, claim)
    progress.mark(run_id, planned, CellState.COMPILED, try_number)
    return to_xcom(compiled)


def measure_cell(cell: Json, prep: Json, env: Json, try_number: int | None = None) -> Json:
    """Measure a compiled cell: ``compiled`` (waiting for a device) until it holds one, then ``measuring``."""
    compiled, environment = from_xcom(CompiledCell, cell), from_xcom(Environment, env)
    run_id, planned = environment.run_id, compiled.planned
    claim = device_claim(lambda: progress.mark(run_id, planned, CellState.MEASURING, try_number))
    with progress.step(run_id, planned, CellState.COMPILED, try_number):
        measured = measure.measure_cell(compiled, from_xcom(Prepared, prep), environment, claim)
    return to_xcom(measured)


def device_claim(on_leased: Callable[[], None], keep_free: Callable[[], int] | None = None) -> Claim:
    """How a DAG task asks for a device: a short wait in-process, then its slots given back (DeviceWait)."""
    return Claim(
        wait_s=settings.device_wait_s(),
        recheck_s=settings.device_recheck_s(),
        keep_free=keep_free,
        on_leased=on_leased,
    )


def store_cell(cell: Json, compiled: Json | None, measured: Json | None, env: Json) -> Json:
    """Store the cell the moment it is measured, or, when its task handed back nothing, the cell with
    what its last progress mark says (host_lost, timed_out, task_failed); returns the stored record."""
    planned, environment = from_xcom(PlannedCell, cell), from_xcom(Environment, env)
    if measured is not None:
        stored = from_xcom(MeasuredCell, measured)
    else:
        fate = progress.fate(environment.run_id, planned)
        built = None if compiled is None else from_xcom(CompiledCell, compiled)
        stored = report.unfinished_cell(planned, built, fate)
    report.store_cell(stored, environment)
    return to_xcom(stored)


def new_findings(cell: Json, env: Json) -> list[Json]:
    return report.claim_new_findings(from_xcom(Environment, env), from_xcom(PlannedCell, cell))


def close_run(
    env: Json | None, model: Json | None, prep: Json | None, changed: bool | None, cells: list[Json | None]
) -> Json | None:
    """Close the run, with results.json: ``changed`` False (the nightly skip) removes it; a run whose model
    or data was never built is failed; otherwise every cell of the matrix is published (one whose store
    never ran as task_failed). None when nothing was opened."""
    if env is None:
        return None
    environment = from_xcom(Environment, env)
    if changed is False:
        report.discard_run(environment)
        return {"run_id": environment.run_id, "skipped": True}
    built = None if model is None else from_xcom(Model, model)
    prepared = None if prep is None else from_xcom(Prepared, prep)
    stored = [from_xcom(MeasuredCell, c) for c in cells if c is not None]
    cells_out = report.with_unstored_cells(environment, stored) if built is not None and prepared is not None else []
    doc = report.build_run_document(environment, built, prepared, cells_out)
    return report.publish(doc, environment)


def regression_gate(published: Json | None, params: Json) -> None:
    if published is None or published.get("skipped"):
        return
    report.regression_gate(published["run_id"], params)
