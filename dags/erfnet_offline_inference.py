"""
### ErfNet offline inference — the guide as one DAG

1. **check_params** — the form alone (a run without configured defaults ends here);
   **resolve_environment** — validate the form, resolve the targets (`auto`: every chip a live NPU worker
   serves); **probe_<chip>** — CANN, driver and devices on a host of each chip the run needs (queue
   `npu-<chip>`), merged by **with_hosts**.
2. **3.1** export_onnx (ErfNet_pth2onnx.py) -> fix_bn (modify_bn_weights.py).
3. **4** preprocess the Cityscapes val set (in parallel with the export).
4. changed_since_last_run — a nightly run with the same CANN, weights and data measures nothing (unless
   `force`); **open_run** has already put the run in the results database as `running`, with its matrix.
5. **3.2** + **5** + **6**, one chain per cell (mapped task groups `cells_on_host`, `cells_<chip>`,
   `cells_aoe_<chip>`): **compile** (atc on the chip's queue `npu-<chip>`, AOE there holding an
   `npu_devices` slot and a device, leaving one to the chip's measurements while any waits for one;
   ONNX Runtime on the host; cached by content) -> **measure** as soon as its own model is ready (infer
   holding a slot and a device lease, then evaluate on the same worker, delete the counted outputs unless
   `keep_outputs`; a task that finds no device free for a while gives its slot back and is
   rescheduled) -> **store** (whatever became of the two: the cell's rows, gated at once against its
   baseline, each new finding notified; a task that died is stored `host_lost`, `timed_out` or
   `task_failed` with its reason and host).
6. **7** + **8** publish_results closes the run in every case (every planned cell, `results.json`) ->
   regression_gate.

Scheduled nightly at 02:00 and whenever `erfnet_cann_probe` sees a CANN upgrade on an NPU host. A failed
task, the gate's findings and (optionally) a summary go to the connections in `ERFNET_NOTIFY`.

Every task is a call into `erfnet_tasks.pipeline`; see the README for the parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    TriggerRule,
    dag,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSkipException
from airflow.settings import TIMEZONE  # [core] default_timezone, what a plain cron string used
from erfnet_notifications import notify_findings, on_gate_passed, on_task_failure

from erfnet_tasks import cann_probe, deadlines, lab_airflow, pipeline, settings
from erfnet_tasks.deployment import DAG_ID
from erfnet_tasks.devices import DeviceWait
from erfnet_tasks.errors import BadInput, ErfnetError, Transient, Verdict
from erfnet_tasks.fleet import queue_for
from erfnet_tasks.params import form_fields

# A task's queue is fixed when the DAG is parsed (expand() maps a task's arguments, never its queue), so
# each chip of ERFNET_NPU_CHIPS gets its own copy of every NPU step; a run's other chips' copies are skipped.
NPU_CHIPS = settings.npu_chips()
NPU_POOL = "npu_devices"
# Airflow's backup of the tools' own deadlines (erfnet_tasks/deadlines.py). Fixed when the DAG is parsed,
# before a run's image count is known: computed for the largest run (deadlines.MAX_IMAGES, 500 images).
TIMEOUTS = {kind: deadlines.execution_timeout(kind) for kind in ("measure", "compile", "compile_aoe")}
RESULTS_ASSET = Asset(name="erfnet_results", uri=f"erfnet://results/{DAG_ID}")
# Updated by dags/erfnet_cann_probe.py when an NPU host's CANN version, driver or chips change.
CANN_ASSET = Asset(name=cann_probe.ASSET_NAME, uri=cann_probe.ASSET_URI)
NIGHTLY = "0 2 * * *"
AFTER_SKIPPED_GROUPS = "none_failed_min_one_success"  # a matrix group may be empty (no NPU targets)
# When a slot of the pool frees, a measurement (minutes) goes before an AOE tuning (hours); "absolute":
# Airflow's default weight sums a task's downstream tasks, which would put every compile first.
MEASURE_FIRST = {"priority_weight": 10, "weight_rule": "absolute"}
TUNE_LAST = {"priority_weight": 1, "weight_rule": "absolute"}

# The error's kind says what to do. Rules match by isinstance and the first match wins, so the kinds come
# before ErfnetError, their common base: a transient failure (no live NPU worker, a results database that
# stayed down through publish's own backoff) may be gone by the next try; bad input and a verdict are
# deterministic, retrying them changes nothing.
NO_RETRY_ON_BAD_INPUT = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=Transient,
            action=RetryAction.RETRY,
            reason="transient infrastructure (no live NPU worker, results database unreachable)",
        ),
        RetryRule(
            exception=[BadInput, Verdict],
            action=RetryAction.FAIL,
            reason="deterministic failure (bad input or configuration, or the gate's verdict)",
        ),
        RetryRule(
            exception=ErfnetError, action=RetryAction.FAIL, reason="a deterministic failure stated as a one-line error"
        ),
    ]
)


@contextmanager
def slots_given_back_while_no_device() -> Iterator[None]:
    """A task with no device of its chip free (DeviceWait) is rescheduled: up_for_reschedule, it
    holds no pool or worker slot until it starts again (its try number stays)."""
    try:
        yield
    except DeviceWait as wait:
        print(wait)
        raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=wait.seconds)) from wait


def celery_broker_url() -> str | None:
    """The broker `auto` asks for live NPU workers; None when no Celery executor runs the tasks."""
    from airflow.configuration import conf

    return conf.get("celery", "broker_url", fallback=None) if "CeleryExecutor" in conf.get("core", "executor") else None


@dag(
    dag_id=DAG_ID,
    doc_md=__doc__,
    # Nightly at 02:00 (the default timezone), or as soon as the probe sees a CANN upgrade.
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(NIGHTLY, timezone=TIMEZONE), assets=CANN_ASSET),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["erfnet", "ascend", "regression"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=settings.retry_delay(lab_airflow.RETRY_DELAY_S)),
        "retry_policy": NO_RETRY_ON_BAD_INPUT,
        "on_failure_callback": on_task_failure,
    },  # ERFNET_NOTIFY's receivers hear of it
    params={name: Param(**spec) for name, spec in form_fields().items()},
)
def erfnet_offline_inference():
    # On the default queue: unpausing starts a scheduled run at once, and one whose default weights or
    # dataset are not configured must end in seconds, also where no NPU worker is up yet.
    @task
    def check_params(params=None) -> None:
        pipeline.check_params(dict(params))

    @task
    def resolve_environment(params=None, run_id=None) -> dict:
        return pipeline.resolve_environment(dict(params), run_id, celery_broker_url())

    @task
    def chips_to_probe(env: dict, chip: str) -> list[str]:
        return pipeline.chips_to_probe(env, chip)

    @task
    def probe(chip: str) -> dict:
        return pipeline.probe_host(chip)

    @task(trigger_rule=AFTER_SKIPPED_GROUPS)
    def with_hosts(env: dict, *probes) -> dict:
        return pipeline.with_hosts(env, [list(p or []) for p in probes])

    @task
    def export_onnx(env: dict) -> dict:
        return pipeline.export_step(env)

    @task
    def fix_bn(exported: dict) -> dict:
        return pipeline.fix_bn_step(exported)

    @task
    def preprocess(env: dict) -> dict:
        return pipeline.preprocess_dataset(env)

    @task
    def changed_since_last_run(env: dict, model: dict, prep: dict) -> bool:
        previous = pipeline.unchanged_since_last_run(env, model, prep)
        if previous:
            print(
                f"Nothing changed since run {previous} (same CANN version, weights and dataset): "
                f"ending early. Trigger with force=true to measure again."
            )
        return previous is None

    @task
    def open_run(env: dict) -> int:
        return pipeline.open_run(env)

    @task
    def plan(env: dict, changed: bool, group: str, chip: str | None = None) -> list[dict]:
        if not changed:  # the nightly skip: every cell is skipped, publish_results removes the opened run
            raise AirflowSkipException("nothing changed since the last run")
        return pipeline.plan_cells(env, group, chip)

    @task
    def compile_cell(cell: dict, model: dict, env: dict, ti=None) -> dict:
        with slots_given_back_while_no_device():
            return pipeline.compile_cell(cell, model, env, ti.try_number)

    @task
    def measure_cell(cell: dict, prep: dict, env: dict, ti=None) -> dict:
        # infer, then evaluate and delete the counted outputs on the worker that holds them
        with slots_given_back_while_no_device():
            return pipeline.measure_cell(cell, prep, env, ti.try_number)

    # Whatever became of the cell's compile and measure (a result, or a task that failed for good, its
    # worker lost): stored at once, gated, and each new finding notified while the run goes on.
    @task(trigger_rule=TriggerRule.ALL_DONE, retry_delay=timedelta(seconds=30))
    def store_cell(cell: dict, compiled: dict | None, measured: dict | None, env: dict, **context) -> dict:
        stored = pipeline.store_cell(cell, compiled, measured, env)
        notify_findings(pipeline.new_findings(cell, env), context)
        return stored

    # 7 + 8: the run closed, in every case: every planned cell published (results.json too), then the gate.
    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[RESULTS_ASSET])
    def publish_results(planned: dict, env: dict, model: dict, prep: dict, changed: bool, *stored) -> dict | None:
        # A group's stores: a sequence, or the one cell itself where the group planned one; None: skipped.
        cells = [c for group in stored for c in ([group] if isinstance(group, dict) else group or [])]
        return pipeline.close_run(env or planned, model, prep, changed, cells)

    @task(retries=0, on_success_callback=on_gate_passed)
    def regression_gate(published: dict | None, params=None) -> None:
        pipeline.regression_gate(published, dict(params))

    def cells(group_id: str, planned, queue: str | None = None, compile_kw: dict | None = None, measure_kw=None):
        """Each planned cell its own chain, compile -> measure -> store: a cell waits for its own model only."""
        on_queue = {"queue": queue} if queue else {}

        @task_group(group_id=group_id)
        def cell(planned_cell):
            compiled = compile_cell.override(task_id="compile", **on_queue, **(compile_kw or {}))(
                planned_cell, model, env
            )
            measured = measure_cell.override(task_id="measure", **on_queue, **(measure_kw or {}))(compiled, prep, env)
            return store_cell.override(task_id="store")(planned_cell, compiled, measured, env)

        return cell.expand(planned_cell=planned)

    planned = resolve_environment()
    check_params() >> planned
    probes = [
        probe.override(task_id=f"probe_{chip}", queue=queue_for(chip)).expand(
            chip=chips_to_probe.override(task_id=f"needs_{chip}")(planned, chip)
        )
        for chip in NPU_CHIPS
    ]
    opened = open_run(planned)
    env = with_hosts(planned, *probes)
    model = fix_bn(export_onnx(planned))
    prep = preprocess(planned)
    go = changed_since_last_run(env, model, prep)

    host_cells = plan.override(task_id="plan_host_cells")(env, go, "host")
    opened >> host_cells
    stored = [cells("cells_on_host", host_cells)]
    for chip in NPU_CHIPS:  # compile (atc; AOE holding a pool slot) and measure each chip's cells on its queue
        queue = queue_for(chip)
        planned_npu = plan.override(task_id=f"plan_npu_{chip}")(env, go, "npu", chip)
        planned_aoe = plan.override(task_id=f"plan_npu_aoe_{chip}")(env, go, "npu_aoe", chip)
        opened >> [planned_npu, planned_aoe]
        on_device = {"pool": NPU_POOL, "execution_timeout": TIMEOUTS["measure"], **MEASURE_FIRST}
        stored.append(cells(f"cells_{chip}", planned_npu, queue, {"execution_timeout": TIMEOUTS["compile"]}, on_device))
        aoe = {"pool": NPU_POOL, "execution_timeout": TIMEOUTS["compile_aoe"], **TUNE_LAST}
        stored.append(cells(f"cells_aoe_{chip}", planned_aoe, queue, aoe, on_device))

    published = publish_results(planned, env, model, prep, go, *stored)
    # The gate also waits on the stages publish_results (all_done) outlives: a run whose form, environment,
    # export or preprocessing failed is published failed, and still ends failed.
    [planned, env, model, prep, go] >> regression_gate(published)


erfnet_offline_inference()
