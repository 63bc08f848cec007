"""
### ErfNet offline inference — the guide as one DAG

1. **check_params** — the form alone (a run without configured defaults ends here);
   **resolve_environment** — validate the form, detect CANN, chips and driver (on the NPU worker), plan
   the target x batch matrix.
2. **3.1** export_onnx (ErfNet_pth2onnx.py) -> fix_bn (modify_bn_weights.py).
3. **4** preprocess the Cityscapes val set (in parallel with the export).
4. changed_since_last_run — a nightly run with the same CANN, weights and data ends here (unless `force`).
5. **3.2** compile, mapped over the matrix: atc on the `npu` queue, AOE holding an `npu_devices` slot,
   ONNX Runtime on the host; cached by content.
6. **5** + **6** measure, mapped over the compiled cells: infer (NPU inference holds an `npu_devices` slot),
   then evaluate on the same worker (mIoU, per-class IoU, confusion matrix) and delete the counted
   outputs unless `keep_outputs`; **7** collect_perf.
8. publish_results to the results database (and a JSON file beside the outputs) -> regression_gate.

Every task is a call into `erfnet_tasks.pipeline`; see the README for the parameters.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task

from erfnet_tasks import pipeline, settings
from erfnet_tasks.params import form_fields

NPU_QUEUE = settings.npu_queue()
NPU_POOL = "npu_devices"
RESULTS_ASSET = Asset(name="erfnet_results", uri="erfnet://results/erfnet_offline_inference")
AFTER_SKIPPED_GROUPS = "none_failed_min_one_success"  # a matrix group may be empty (no NPU targets)

# Bad parameters, inputs and regressions are deterministic: retrying them changes nothing. A results
# database that stayed down through publish's own backoff may be back by the next try.
NO_RETRY_ON_BAD_INPUT = ExceptionRetryPolicy(rules=[
    RetryRule(exception="erfnet_tasks.errors.PublishFailed", action=RetryAction.RETRY,
              reason="the results database is unreachable; the run's results.json is already written"),
    RetryRule(exception="erfnet_tasks.errors.ErfnetError", action=RetryAction.FAIL,
              reason="deterministic failure (bad input, configuration or a regression)"),
])


@dag(
    dag_id=pipeline.DAG_ID,
    doc_md=__doc__,
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["erfnet", "ascend", "regression"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_policy": NO_RETRY_ON_BAD_INPUT},
    params={name: Param(**spec) for name, spec in form_fields().items()},
)
def erfnet_offline_inference():
    # On the default queue: unpausing starts a scheduled run at once, and one whose default weights or
    # dataset are not configured must end in seconds, also where no NPU worker is up yet.
    @task
    def check_params(params=None) -> None:
        pipeline.check_params(dict(params))

    @task(queue=NPU_QUEUE)
    def resolve_environment(params=None, run_id=None) -> dict:
        return pipeline.resolve_environment(dict(params), run_id)

    @task
    def export_onnx(env: dict) -> dict:
        return pipeline.export_step(env)

    @task
    def fix_bn(exported: dict) -> dict:
        return pipeline.fix_bn_step(exported)

    @task
    def preprocess(env: dict) -> dict:
        return pipeline.preprocess_dataset(env)

    @task.short_circuit
    def changed_since_last_run(env: dict, model: dict, prep: dict) -> bool:
        previous = pipeline.unchanged_since_last_run(env, model, prep)
        if previous:
            print(f"Nothing changed since run {previous} (same CANN version, weights and dataset): "
                  f"ending early. Trigger with force=true to measure again.")
        return previous is None

    @task
    def plan(env: dict, group: str) -> list[dict]:
        return pipeline.plan_cells(env, group)

    @task
    def compile_cell(cell: dict, model: dict, env: dict) -> dict:
        return pipeline.compile_cell(cell, model, env)

    @task
    def measure_cell(cell: dict, prep: dict, env: dict) -> dict:
        # infer, then evaluate and delete the counted outputs on the worker that holds them
        return pipeline.measure_cell(cell, prep, env)

    @task(trigger_rule=AFTER_SKIPPED_GROUPS)
    def gather_cells(first: list[dict], second: list[dict]) -> list[dict]:
        return [*(first or []), *(second or [])]

    @task
    def collect_perf(cells: list[dict]) -> list[dict]:
        return pipeline.collect_perf(list(cells))

    @task(outlets=[RESULTS_ASSET])
    def publish_results(env: dict, model: dict, prep: dict, cells: list[dict], perf: list[dict]) -> dict:
        doc = pipeline.build_run_document(env, model, prep, list(cells), perf)
        return pipeline.publish(doc, env)

    @task(retries=0)
    def regression_gate(published: dict, params=None) -> None:
        pipeline.regression_gate(published["run_id"], dict(params))

    env = resolve_environment()
    check_params() >> env
    model = fix_bn(export_onnx(env))
    prep = preprocess(env)
    go = changed_since_last_run(env, model, prep)

    groups = {name: plan.override(task_id=f"plan_{name}_cells")(env, name) for name in ("npu", "npu_aoe", "host")}
    go >> list(groups.values())
    # A task's queue and pool are fixed, so each group of the matrix gets its own copy of the step.
    compile_on_npu = compile_cell.override(task_id="compile_on_npu", queue=NPU_QUEUE)
    compile_with_aoe = compile_cell.override(task_id="compile_with_aoe", queue=NPU_QUEUE, pool=NPU_POOL)
    compile_on_host = compile_cell.override(task_id="compile_on_host")
    compiled_npu = compile_on_npu.partial(model=model, env=env).expand(cell=groups["npu"])
    compiled_aoe = compile_with_aoe.partial(model=model, env=env).expand(cell=groups["npu_aoe"])
    compiled_host = compile_on_host.partial(model=model, env=env).expand(cell=groups["host"])

    # Airflow skips a task mapped over an empty group, and a concat of it; gathering keeps the rest going.
    compiled_for_npu = gather_cells.override(task_id="gather_npu_cells")(compiled_npu, compiled_aoe)
    measure_on_npu = measure_cell.override(task_id="measure_on_npu", queue=NPU_QUEUE, pool=NPU_POOL)
    measure_on_host = measure_cell.override(task_id="measure_on_host")
    measured_npu = measure_on_npu.partial(prep=prep, env=env).expand(cell=compiled_for_npu)
    measured_host = measure_on_host.partial(prep=prep, env=env).expand(cell=compiled_host)
    measured = gather_cells.override(task_id="gather_measured_cells")(measured_npu, measured_host)

    perf = collect_perf(measured)
    regression_gate(publish_results(env, model, prep, measured, perf))


erfnet_offline_inference()
