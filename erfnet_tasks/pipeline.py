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

from typing import Any

from . import build, measure, nightly, plan, report
from .deployment import DAG_ID  # noqa: F401  (re-exported for the DAG)
from .errors import RegressionDetected  # noqa: F401  (re-exported: dags/erfnet_notifications.py names it)
from .plan import run_folder_name, validate_params  # noqa: F401  (re-exported for the DAG, demo, retention)
from .records import (
    CompiledCell,
    Environment,
    ExportedModel,
    HostRecord,
    MeasuredCell,
    Model,
    PerfRow,
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


def compile_cell(cell: Json, model: Json, env: Json) -> Json:
    return to_xcom(
        build.compile_cell(from_xcom(PlannedCell, cell), from_xcom(Model, model), from_xcom(Environment, env))
    )


def measure_cell(cell: Json, prep: Json, env: Json) -> Json:
    return to_xcom(
        measure.measure_cell(from_xcom(CompiledCell, cell), from_xcom(Prepared, prep), from_xcom(Environment, env))
    )


def collect_perf(cells: list[Json]) -> list[Json]:
    return [to_xcom(row) for row in report.collect_perf([from_xcom(MeasuredCell, c) for c in cells])]


def build_run_document(env: Json, model: Json, prep: Json, cells: list[Json], perf: list[Json]) -> Json:
    return report.build_run_document(
        from_xcom(Environment, env),
        from_xcom(Model, model),
        from_xcom(Prepared, prep),
        [from_xcom(MeasuredCell, c) for c in cells],
        [from_xcom(PerfRow, p) for p in perf],
    )


def publish(doc: Json, env: Json) -> Json:
    return report.publish(doc, from_xcom(Environment, env))


def regression_gate(run_id: str, params: Json) -> None:
    report.regression_gate(run_id, params)
