"""The DAG erfnet_offline_inference: its structure in a real DagBag, and real runs with `airflow dags test`
(Airflow's in-process dag.test()) against a throwaway PostgreSQL results database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers.airflow_dags import AIRFLOW, DAG_ID, REPO, STANDINS, DagRun, airflow_env, run_dag


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """A migrated SQLite metadata database, shared by the runs of this module."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_env(home, home / "unused")
    proc = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def dataset_and_weights(tmp_path_factory):
    """A synthetic Cityscapes tree of two images and a random checkpoint, under one data root."""
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint

    data = tmp_path_factory.mktemp("erfnet_data")
    write_sample_data(data / "cityscapes", 2)
    write_random_checkpoint(data / "erfnet_random_untrained.pth", seed=3)
    return data


def ascend_standins(tmp_path: Path, pg_url: str, chips: str, **extra: str) -> tuple[Path, dict]:
    """A CANN 8.0.0 toolkit folder and the environment that puts the Ascend stand-ins in charge."""
    toolkit = tmp_path / "ascend-toolkit"
    toolkit.mkdir()
    (toolkit / "version.cfg").write_text("# version: 1.0\nruntime_running_version=[7.6.0.1.220:8.0.0]\n")
    return toolkit, {
        "PATH": f"{STANDINS / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(STANDINS), os.environ.get("PYTHONPATH")])),
        "ASCEND_TOOLKIT_HOME": str(toolkit),
        "STANDIN_NPU_CHIP": chips,
        "ERFNET_RESULTS_DB_URL": pg_url,
        **extra,
    }


def run_document(url: str, run: DagRun) -> dict:
    from erfnet_tasks.results import db, queries

    assert "publish_results" in run.ran, run.output[-8000:]
    with db.session_scope(url) as session:
        return queries.run_document(session, run.run_id)


# ------------------------------------------------------------------------------------- structure


@pytest.fixture(scope="module")
def dag(airflow_home):
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    sys.path.insert(0, str(REPO / "dags"))  # Airflow puts its DAGS_FOLDER there: the DAG's helper modules
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_dagbag_structure_queues_pools_params_schedule(dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    tasks = {t.task_id: t for t in dag.tasks}
    assert {
        "resolve_environment",
        "with_hosts",
        "export_onnx",
        "fix_bn",
        "preprocess",
        "changed_since_last_run",
        "open_run",
        "cells_Ascend310.compile",
        "cells_aoe_Ascend310P3.compile",
        "cells_on_host.compile",
        "cells_Ascend310P3.measure",
        "cells_on_host.measure",
        "cells_on_host.store",
        "publish_results",
        "regression_gate",
    } <= set(tasks)
    assert isinstance(tasks["probe_Ascend310"], MappedOperator)
    for in_cell in ("cells_Ascend310.compile", "cells_aoe_Ascend310P3.measure", "cells_on_host.store"):
        assert tasks[in_cell].get_closest_mapped_task_group() is not None, in_cell  # one copy per planned cell
    # A cell's measure waits for its own compile only (no barrier over the chip's compiles), and its
    # store for whatever became of both.
    assert tasks["cells_Ascend310.measure"].upstream_task_ids == {"cells_Ascend310.compile", "preprocess", "with_hosts"}
    assert tasks["cells_Ascend310.store"].trigger_rule == "all_done"
    assert tasks["publish_results"].trigger_rule == "all_done"
    # Each chip's device work on its own queue (ERFNET_NPU_CHIPS, by default the guide's two chips),
    # holding a device slot where it measures or tunes; nothing else leaves the default queue.
    for chip in ("Ascend310", "Ascend310P3"):
        assert {t.task_id for t in dag.tasks if t.queue == f"npu-{chip}"} == {
            f"probe_{chip}",
            f"cells_{chip}.compile",
            f"cells_{chip}.measure",
            f"cells_aoe_{chip}.compile",
            f"cells_aoe_{chip}.measure",
        }
    assert {t.task_id for t in dag.tasks if t.pool == "npu_devices"} == {
        f"{group}_{chip}.{step}"
        for chip in ("Ascend310", "Ascend310P3")
        for group, step in (("cells", "measure"), ("cells_aoe", "compile"), ("cells_aoe", "measure"))
    }
    assert all(t.queue == "default" for t in dag.tasks if not t.queue.startswith("npu-"))
    # Export and preprocessing run side by side after resolving the environment.
    assert tasks["preprocess"].upstream_task_ids == {"resolve_environment"}
    assert tasks["export_onnx"].upstream_task_ids == {"resolve_environment"}
    assert dag.max_active_runs == 1 and not dag.catchup
    # Nightly at 02:00, or as soon as the CANN probe sees an upgrade.
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.timetable.expression == "0 2 * * *"
    assert dag.timetable.asset_condition.name == "erfnet_cann_version"
    assert tasks["regression_gate"].on_success_callback and all(t.on_failure_callback for t in dag.tasks)
    params = dag.params.dump()
    assert params["batch_sizes"] == ["1", "4", "8", "16", "32", "64"]  # the multi-select holds strings
    assert params["reference_miou"] == 72.20 and params["tolerance"] == 1.0
    assert params["aoe"] is False and params["force"] is False
    assert {"weights", "dataset_root", "targets", "image_limit"} <= set(params)
    assert tasks["regression_gate"].retries == 0
    assert tasks["cells_Ascend310.measure"].retries == 2
    assert any(o.name == "erfnet_results" for o in tasks["publish_results"].outlets)


def test_a_task_with_no_device_free_is_rescheduled_and_measurements_go_before_tunings(dag, monkeypatch):
    """DeviceWait (no device of the chip for a while, or one kept for measurements) becomes an Airflow
    reschedule: up_for_reschedule holds no pool slot. When a slot frees, a measurement goes first."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowRescheduleException

    from erfnet_tasks import pipeline
    from erfnet_tasks.devices import DeviceWait

    def no_device(*args):
        raise DeviceWait("no device of Ascend310 for this task after 60s (all busy)", 45)

    tasks = {t.task_id: t for t in dag.tasks}
    for task_id, step in (("cells_Ascend310.measure", "measure_cell"), ("cells_aoe_Ascend310.compile", "compile_cell")):
        monkeypatch.setattr(pipeline, step, no_device)
        before = datetime.now(UTC)
        with pytest.raises(AirflowRescheduleException) as info:
            tasks[task_id].python_callable({}, {}, {}, ti=SimpleNamespace(try_number=1))
        assert before + timedelta(seconds=44) < info.value.reschedule_date < datetime.now(UTC) + timedelta(seconds=46)
    weights = {t.task_id: (t.priority_weight, t.weight_rule) for t in dag.tasks if t.pool == "npu_devices"}
    measures = [w for task_id, w in weights.items() if task_id.endswith(".measure")]
    tunings = [w for task_id, w in weights.items() if task_id.endswith(".compile")]
    assert measures and tunings and min(m[0] for m in measures) > max(t[0] for t in tunings)
    assert {rule for _, rule in weights.values()} == {"absolute"}


def test_cann_probe_dag_runs_on_every_npu_queue_and_updates_the_asset(dag):
    from airflow.dag_processing.dagbag import DagBag

    probe = DagBag(dag_folder=str(REPO / "dags" / "erfnet_cann_probe.py")).dags["erfnet_cann_probe"]
    assert probe.timetable.delta.total_seconds() == 300 and not probe.catchup and probe.max_active_runs == 1
    # one probe per chip's queue (ERFNET_NPU_CHIPS, by default the guide's two chips)
    assert sorted((t.task_id, t.queue, [o.name for o in t.outlets]) for t in probe.tasks) == [
        ("probe_npu_Ascend310", "npu-Ascend310", ["erfnet_cann_version"]),
        ("probe_npu_Ascend310P3", "npu-Ascend310P3", ["erfnet_cann_version"]),
    ]


def test_trigger_form_refuses_bad_values(dag):
    from airflow.sdk import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    bad_values = {"batch_sizes": [0], "targets": ["Ascend310; rm -rf /"], "image_limit": -1, "reference_miou": 101}
    for key, value in bad_values.items():
        params = ParamsDict(dag.params)
        with pytest.raises(ParamValidationError):
            params[key] = value
    params = ParamsDict(dag.params)
    params["targets"] = ["Ascend310P3+AOE", "cpu"]  # the form's pattern admits what the library accepts
    params["batch_sizes"] = [1, 64]
    params["batch_sizes"] = ["2", 64]  # the multi-select's strings, the API's integers
    params["aoe"] = None  # switches are optional: null is off
    for bad in (["0"], ["4 "], ["1e3"], [True]):
        with pytest.raises(ParamValidationError):
            params["batch_sizes"] = bad


def test_every_form_field_has_a_title_and_a_description_and_switches_are_optional(dag):
    from erfnet_tasks.params import RUN_PARAMS

    params = dict(dag.params.items())
    schema = {name: param.schema for name, param in params.items()}
    assert set(schema) == {p.name for p in RUN_PARAMS}
    for name, field in schema.items():
        assert field.get("title") and len(params[name].description or "") > 20, name
    assert schema["aoe"]["type"] == schema["force"]["type"] == ["boolean", "null"]
    # Arrays with examples render as multi-selects in Airflow's trigger form.
    assert {"cpu", "torch-cpu", "auto", "Ascend310P3"} <= set(schema["targets"]["examples"])
    assert {"1", "4", "64"} <= set(schema["batch_sizes"]["examples"])
    assert "check_params" in params["weights"].description


# ------------------------------------------------------------------------------------- real runs


def test_end_to_end_onnxruntime_publishes_to_postgres(airflow_home, dataset_and_weights, pg_url):
    data = dataset_and_weights
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["cpu"],
        "batch_sizes": [1, 2],
        "reference_miou": 0.0,
    }
    run = run_dag(airflow_home, data, conf, ERFNET_RESULTS_DB_URL=pg_url)
    assert run.state == "success", run.output[-5000:]
    doc = run_document(pg_url, run)
    assert doc["run"]["status"] == "complete" and doc["run"]["images"] == 2
    assert doc["run"]["backends"]["onnxruntime"]
    assert sorted((c["target"], c["batch_size"]) for c in doc["perf"]) == [("cpu", 1), ("cpu", 2)]
    assert all(c["status"] == "ok" and c["throughput_fps"] > 0 for c in doc["perf"])
    assert len(doc["accuracy"]) == 2 and all(len(c["per_class"]) == 19 for c in doc["accuracy"])
    # Same model and data at two batch sizes: the same predictions, so the same mIoU.
    assert doc["accuracy"][0]["miou"] == pytest.approx(doc["accuracy"][1]["miou"], abs=1e-9)
    results_file = data / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", run.run_id).strip("_") / "results.json"
    assert json.loads(results_file.read_text())["run"]["id"] == run.run_id


def test_outputs_are_deleted_once_counted_unless_keep_outputs_and_the_miou_is_the_same(
    airflow_home, dataset_and_weights, pg_url
):
    data = dataset_and_weights
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["cpu"],
        "batch_sizes": [1, 2],
        "reference_miou": 0.0,
        "force": True,
    }
    runs = {}
    for keep in (False, True):
        run = run_dag(airflow_home, data, {**conf, "keep_outputs": keep}, ERFNET_RESULTS_DB_URL=pg_url)
        assert run.state == "success", run.output[-5000:]
        folder = data / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", run.run_id).strip("_")
        runs[keep] = (run_document(pg_url, run), folder)
    (gone, gone_dir), (kept, kept_dir) = runs[False], runs[True]
    assert sorted(gone_dir.rglob("*.bin")) == [] and len(list(gone_dir.rglob("*_summary.json"))) == 2
    assert len(list(kept_dir.rglob("*.bin"))) == 2 * 2  # two cells of two images
    # The published mIoU is the same to the last digit, and each cell stored its confusion matrix.
    assert [c["miou"] for c in gone["accuracy"]] == [c["miou"] for c in kept["accuracy"]]
    assert all(len(c["confusion"]) == 20 and c["label_mode"] == "logits" for c in gone["accuracy"])


def test_ascend_standins_two_chips_one_cell_out_of_memory_then_nightly_and_cann_upgrade(
    airflow_home, dataset_and_weights, pg_url, tmp_path
):
    data = dataset_and_weights
    toolkit, standins = ascend_standins(
        tmp_path, pg_url, "Ascend310,Ascend310P3", STANDIN_NPU_OOM_BATCH="2"
    )  # the 310's batch-64 failure, affordably
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["Ascend310", "Ascend310P3"],
        "batch_sizes": [1, 2],
        "reference_miou": 0.0,
        "image_limit": 1,
    }

    first = run_dag(airflow_home, data, conf, **standins)
    assert first.state == "success", first.output[-5000:]
    doc = run_document(pg_url, first)
    assert doc["run"]["cann_version"] == "8.0.0"
    cells = {(c["target"], c["batch_size"]): c for c in doc["perf"]}
    assert set(cells) == {("Ascend310", 1), ("Ascend310", 2), ("Ascend310P3", 1), ("Ascend310P3", 2)}
    assert cells[("Ascend310", 2)]["status"] == "oom"
    assert "malloc" in cells[("Ascend310", 2)]["error"] or "memory" in cells[("Ascend310", 2)]["error"]
    assert all(c["status"] == "ok" for key, c in cells.items() if key != ("Ascend310", 2))
    assert {(a["target"], a["batch_size"]) for a in doc["accuracy"]} == {
        ("Ascend310", 1),
        ("Ascend310P3", 1),
        ("Ascend310P3", 2),
    }

    # Nothing changed: the nightly run ends early; the run it opened is removed, the first stays the latest.
    second = run_dag(airflow_home, data, conf, **standins)
    assert second.state == "success"
    assert f"Nothing changed since run {first.run_id}" in second.output
    assert not any(t.endswith((".compile", ".measure", ".store")) for t in second.ran), second.ran
    from erfnet_tasks.results import db, queries

    with db.session_scope(pg_url) as session:
        assert queries.list_runs(session, limit=1)[0]["id"] == first.run_id

    # A CANN upgrade: the matrix runs again and the gate compares against the previous version's run;
    # the 310 now also fails at batch 1, a cell that was ok and now fails, so the gate fails the run.
    (toolkit / "version.cfg").write_text("# version: 1.0\nruntime_running_version=[7.7.0.1.100:8.1.RC1]\n")
    third = run_dag(airflow_home, data, conf, **{**standins, "STANDIN_NPU_OOM_BATCH": "1"})
    assert "publish_results" in third.ran
    assert third.state == "failed"
    doc3 = run_document(pg_url, third)
    assert doc3["run"]["cann_version"] == "8.1.RC1"
    newly_failing = [f for f in doc3["findings"] if f["target"] == "Ascend310" and f["batch_size"] == 1]
    assert newly_failing and all(f["baseline_run_id"] == first.run_id for f in newly_failing)


def test_a_cell_whose_model_never_loads_makes_the_run_incomplete_and_the_next_nightly_runs(
    airflow_home, dataset_and_weights, pg_url, tmp_path
):
    """Issue 13: a cell that never reaches a device is an infrastructure failure, not a result. The host
    has only a 310P3, so the Ascend310 om compiles but no device of its chip can be leased (issue 16:
    with routing by chip this is a worker consuming a queue of a chip it lacks)."""
    data = dataset_and_weights
    _toolkit, standins = ascend_standins(tmp_path, pg_url, "Ascend310P3")
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["Ascend310", "Ascend310P3"],
        "batch_sizes": [1],
        "reference_miou": 0.0,
        "image_limit": 1,
    }

    first = run_dag(airflow_home, data, conf, **standins)
    assert "publish_results" in first.ran
    assert first.state == "failed", first.output[-5000:]  # the gate fails it
    assert f"run {first.run_id} is incomplete" in first.output
    doc = run_document(pg_url, first)
    assert doc["run"]["status"] == "incomplete"
    cells = {c["target"]: c for c in doc["perf"]}
    assert cells["Ascend310"]["status"] == "device_open_failed" and cells["Ascend310P3"]["status"] == "ok"
    assert [(f["rule"], f["target"]) for f in doc["findings"]] == [("cell_not_measured", "Ascend310")]
    assert "has no Ascend310 device" in doc["findings"][0]["message"]

    # Nothing changed, but the last run was incomplete: the nightly measures again instead of skipping.
    second = run_dag(airflow_home, data, conf, **standins)
    assert "Nothing changed" not in second.output
    assert "publish_results" in second.ran and second.state == "failed"


def test_retries_only_what_can_recover(dag):
    from airflow.sdk import RetryAction

    from erfnet_tasks.errors import BadInput, CompileFailed, ErfnetError, RegressionDetected, Transient
    from erfnet_tasks.results.publish import PublishFailed

    for task in dag.tasks:  # every task, with the rules in the order they are written
        decide = task.retry_policy.evaluate
        assert decide(Transient("no live NPU worker consumes npu-Ascend310P3"), 1, 3).action == RetryAction.RETRY
        assert decide(PublishFailed("results database unreachable"), 1, 3).action == RetryAction.RETRY
        assert decide(BadInput("bad weights path"), 1, 3).action == RetryAction.FAIL
        assert decide(CompileFailed("atc refused", code="E10007"), 1, 3).action == RetryAction.FAIL
        assert decide(RegressionDetected("regression: mIoU dropped"), 1, 3).action == RetryAction.FAIL
        assert decide(ErfnetError("any other one-line error"), 1, 3).action == RetryAction.FAIL
        assert decide(TimeoutError("device busy"), 1, 3).action == RetryAction.DEFAULT


# ------------------------------------------------------------------------------------- maintenance


def test_maintenance_dag_prunes_daily_and_logs_what_it_freed(airflow_home, tmp_path, sqlite_url):
    from airflow.dag_processing.dagbag import DagBag

    from erfnet_tasks.results.publish import publish_run

    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    maintenance = DagBag(dag_folder=str(REPO / "dags")).dags["erfnet_maintenance"]
    assert maintenance.timetable.expression == "0 0 * * *" and [t.task_id for t in maintenance.tasks] == ["prune_runs"]
    params = maintenance.params.dump()
    assert params["older_than"] == "30d" and params["dry_run"] is False

    data = tmp_path / "data"
    for run_id in ("kept_latest", "old_one"):
        folder = data / "runs" / run_id
        folder.mkdir(parents=True)
        (folder / "results.json").write_text("{}")
        old = __import__("time").time() - 40 * 86400
        for path in (folder / "results.json", folder):
            os.utime(path, (old, old))
    publish_run(
        {
            "run": {"id": "kept_latest", "started_at": "2026-01-01T00:00:00+00:00", "status": "complete"},
            "perf": [{"target": "cpu", "batch_size": 1, "throughput_fps": 1.0, "status": "ok"}],
        },
        url=sqlite_url,
        retries=0,
    )
    env = airflow_env(airflow_home, data, ERFNET_RESULTS_DB_URL=sqlite_url)
    proc = subprocess.run(
        [str(AIRFLOW), "dags", "test", "erfnet_maintenance", "--conf", json.dumps({})],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "state=success" in output, output[-5000:]
    assert sorted(p.name for p in (data / "runs").iterdir()) == ["kept_latest"]
    assert "removed run" in output and "old_one" in output and "freed" in output


def test_a_hung_device_costs_its_deadline_and_the_run_publishes_the_cell_as_timed_out(
    airflow_home, dataset_and_weights, pg_url, tmp_path
):
    """Issue 25: the 310P3 at batch 2 hangs on its device (the stand-in's hang switch); ais_bench is stopped
    at its deadline, the other cell is measured, the run ends incomplete with the reason."""
    data = dataset_and_weights
    _toolkit, standins = ascend_standins(
        tmp_path,
        pg_url,
        "Ascend310P3",
        STANDIN_AIS_BENCH_HANG="Ascend310P3:2",
        ERFNET_INFER_TIMEOUT_FLOOR="15",
        STANDIN_RECORD=str(tmp_path / "record"),
    )
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["Ascend310P3"],
        "batch_sizes": [1, 2],
        "reference_miou": 0.0,
        "image_limit": 1,
    }
    run = run_dag(airflow_home, data, conf, **standins)
    assert "publish_results" in run.ran and run.state == "failed", run.output[-5000:]  # the gate fails it
    doc = run_document(pg_url, run)
    assert doc["run"]["status"] == "incomplete"
    cells = {c["batch_size"]: c for c in doc["perf"]}
    assert (cells[1]["status"], cells[2]["status"]) == ("ok", "timed_out")
    assert "past its deadline of 15 s (1 images x 1.2 s per image, floor 15 s)" in cells[2]["error"]
    assert [(f["rule"], f["batch_size"]) for f in doc["findings"]] == [("cell_not_measured", 2)]
    [hang] = [e for e in map(json.loads, (tmp_path / "record").read_text().splitlines()) if e["tool"] == "hang"]
    for pid in (hang["pid"], hang["child"]):  # the hung tool and its child: gone (at most a zombie)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
