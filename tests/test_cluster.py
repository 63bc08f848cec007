"""The pipeline as deployed: a real CeleryExecutor cluster (deploy/local_cluster.py) with the api-server,
scheduler, dag-processor, one CPU worker on queue `default` and one NPU worker on queue `npu` with the
Ascend stand-ins (tests/standins: test doubles, no NPU is involved). The DAG is triggered through the REST
API, as an operator's client would."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STANDINS = REPO / "tests" / "standins"
DAG_ID = "erfnet_offline_inference"
sys.path.insert(0, str(REPO / "deploy"))
from local_cluster import LocalCluster, Worker  # noqa: E402

pytestmark = pytest.mark.postgres


def _npu_worker(tmp: Path) -> Worker:
    """The NPU worker's environment: the stand-in atc/npu-smi/ais_bench and a CANN version file."""
    toolkit = tmp / "ascend-toolkit"
    toolkit.mkdir()
    (toolkit / "version.cfg").write_text("# version: 1.0\nruntime_running_version=[7.6.0.1.220:8.0.0]\n")
    return Worker("npu-worker", "airflow-worker-npu", {
        "PATH": str(STANDINS / "bin"), "PYTHONPATH": str(STANDINS), "ASCEND_TOOLKIT_HOME": str(toolkit),
        "STANDIN_NPU_CHIP": "Ascend310P3", "STANDIN_RECORD": str(tmp / "standin_invocations.jsonl")})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(tmp, [Worker("cpu-worker"), _npu_worker(tmp)])
    try:
        cluster.start()
        yield cluster
    finally:
        groups = cluster.process_groups()
        cluster.stop()
        _assert_all_gone(cluster, groups)


def _assert_all_gone(cluster: LocalCluster, groups: list[int]) -> None:
    import psycopg

    for pgid in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                            ([cluster.meta_db, cluster.results_db],)).fetchall()
    assert left == []


@pytest.fixture(scope="module")
def data(cluster):
    from erfnet_tasks.cityscapes import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint

    root = cluster.workdir / "data"
    write_sample_data(root / "cityscapes", 2)
    write_random_checkpoint(root / "erfnet_random_untrained.pth", seed=3)
    return root


def _wait_for_any_run(cluster: LocalCluster, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not (runs := cluster.runs(DAG_ID)):
        cluster.check_alive()
        assert time.monotonic() < deadline, "unpausing started no run"
        time.sleep(2)
    return runs[0]


def test_unpausing_without_configured_defaults_ends_at_once_saying_what_to_set(cluster):
    cluster.wait_for_dag(DAG_ID)
    cluster.unpause(DAG_ID)
    run = _wait_for_any_run(cluster, 90)
    assert run["run_type"] == "scheduled"
    started = time.monotonic()
    assert cluster.wait_for_run(DAG_ID, run["dag_run_id"], 120) == "failed"
    assert time.monotonic() - started < 90
    tis = {ti["task_id"]: ti for ti in cluster.task_instances(DAG_ID, run["dag_run_id"])}
    failed = [task for task, ti in tis.items() if ti["state"] == "failed"]
    assert failed == ["check_params"], tis
    log = cluster.task_log(DAG_ID, run["dag_run_id"], "check_params")
    assert "ERFNET_WEIGHTS" in log, log[-3000:]


def test_triggered_run_succeeds_with_each_task_on_its_queues_worker(cluster, data):
    cluster.wait_for_dag(DAG_ID)
    cluster.unpause(DAG_ID)  # a paused DAG's runs are not scheduled
    conf = {"weights": str(data / "erfnet_random_untrained.pth"), "dataset_root": str(data / "cityscapes"),
            "targets": ["Ascend310P3", "cpu"], "batch_sizes": [1], "reference_miou": 0.0}
    run_id = cluster.trigger(DAG_ID, conf)
    state = cluster.wait_for_run(DAG_ID, run_id, 420)
    tis = cluster.task_instances(DAG_ID, run_id)
    summary = [(t["task_id"], t["map_index"], t["state"], t["queue"], t["hostname"]) for t in tis]
    assert state == "success", (summary, _failed_logs(cluster, run_id, tis))
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["task_id"] for t in ran} >= {"resolve_environment", "preprocess", "compile_on_npu", "measure_on_npu",
                                           "compile_on_host", "measure_on_host", "publish_results",
                                           "regression_gate"}, summary
    # preprocess ran in a Celery prefork child (daemonic) and still had its worker processes.
    prep_log = cluster.task_log(DAG_ID, run_id, "preprocess")
    assert "preprocess" in prep_log and "cannot start worker processes" not in prep_log, prep_log[-3000:]
    expected_host = {"default": "cpu-worker", "npu": "npu-worker"}
    for t in ran:
        assert t["hostname"] == expected_host[t["queue"]], summary

    from erfnet_tasks.results import db, queries

    with db.session_scope(cluster.results_url) as session:
        doc = queries.run_document(session, run_id)
    assert doc["run"]["status"] == "complete"
    assert {(c["target"], c["batch_size"], c["status"]) for c in doc["perf"]} == {
        ("Ascend310P3", 1, "ok"), ("cpu", 1, "ok")}

    status, page = cluster.get("/erfnet/")
    assert status == 200 and run_id in page.decode(), page[:2000]
    status, page = cluster.get(f"/erfnet/runs/{run_id}")
    assert status == 200 and "Ascend310P3" in page.decode()


def _failed_logs(cluster: LocalCluster, run_id: str, tis: list[dict]) -> str:
    out = []
    for t in tis:
        if t["state"] not in ("success", "skipped"):
            out.append(f"--- {t['task_id']}[{t['map_index']}] {t['state']}\n"
                       f"{cluster.task_log(DAG_ID, run_id, t['task_id'], max(1, t['try_number']), t['map_index'])[-2500:]}")
    for name in ("scheduler", "cpu-worker", "npu-worker"):
        out.append(f"--- {name}\n{cluster.tail(name, 2000)}")
    return "\n".join(out)
