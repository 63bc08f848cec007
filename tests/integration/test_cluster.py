"""The pipeline as deployed: a real CeleryExecutor cluster (deploy/local_cluster.py) with the api-server,
scheduler, dag-processor, one CPU worker on queue `default` and two simulated NPU hosts, each a Celery
worker started with the compose command (`--queues $(erfnet worker-queues)`) under its own stand-in
environment (tests/standins: test doubles, no NPU is involved): host A with two 310P3 devices, host B with
one 310. The DAG is triggered through the REST API, as an operator's client would."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from local_cluster import LocalCluster, Worker  # deploy/local_cluster.py

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests" / "standins"
DAG_ID = "erfnet_offline_inference"

pytestmark = pytest.mark.postgres


HOSTS = {"host-a": "Ascend310P3,Ascend310P3", "host-b": "Ascend310"}


def _npu_host(tmp: Path, name: str) -> Worker:
    """A simulated NPU host: its stand-in devices, CANN 8.0.0, its own device leases and busy markers."""
    toolkit = tmp / name / "ascend-toolkit"
    toolkit.mkdir(parents=True)
    (toolkit / "version.cfg").write_text("# version: 1.0\nruntime_running_version=[7.6.0.1.220:8.0.0]\n")
    return Worker(
        name,
        "airflow-worker-npu",
        {
            "PATH": str(STANDINS / "bin"),
            "PYTHONPATH": str(STANDINS),
            "ASCEND_TOOLKIT_HOME": str(toolkit),
            "STANDIN_NPU_CHIP": HOSTS[name],
            "STANDIN_HOST": name,
            "STANDIN_NPU_STATE": str(tmp / name / "devices"),
            "ERFNET_DEVICE_LOCK_DIR": str(tmp / name / "leases"),
            "STANDIN_RECORD": str(tmp / "standin_invocations.jsonl"),
        },
        concurrency=2,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # The pool admits the fleet's device count (three); each host's leases pick the device.
    cluster = LocalCluster(
        tmp, [Worker("cpu-worker"), *(_npu_host(tmp, name) for name in HOSTS)], env={"ERFNET_NPU_SLOTS": "3"}
    )
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
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", ([cluster.meta_db, cluster.results_db],)
        ).fetchall()
    assert left == []


@pytest.fixture(scope="module")
def data(cluster):
    from erfnet_tasks.datasets.synthetic import write_sample_data
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


def test_each_chip_on_its_host_one_measurement_per_device_and_the_environment_per_cell(cluster, data):
    cluster.wait_for_dag(DAG_ID)
    cluster.unpause(DAG_ID)  # a paused DAG's runs are not scheduled
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["Ascend310", "Ascend310P3"],
        "batch_sizes": [1, 2, 64],
        "reference_miou": 0.0,
        "image_limit": 2,
    }
    run_id = cluster.trigger(DAG_ID, conf)
    state = cluster.wait_for_run(DAG_ID, run_id, 900)
    tis = cluster.task_instances(DAG_ID, run_id)
    summary = [(t["task_id"], t["map_index"], t["state"], t["queue"], t["hostname"]) for t in tis]
    assert state == "success", (summary, _failed_logs(cluster, run_id, tis))
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["task_id"] for t in ran} >= {
        "resolve_environment",
        "probe_Ascend310",
        "probe_Ascend310P3",
        "open_run",
        "cells_Ascend310.compile",
        "cells_Ascend310.measure",
        "cells_Ascend310.store",
        "cells_Ascend310P3.compile",
        "cells_Ascend310P3.measure",
        "publish_results",
    }, summary
    # preprocess ran in a Celery prefork child (daemonic) and still had its worker processes.
    prep_log = cluster.task_log(DAG_ID, run_id, "preprocess")
    assert "preprocess" in prep_log and "cannot start worker processes" not in prep_log, prep_log[-3000:]
    # Every task on its queue's worker: each chip's work on the host that has it.
    expected_host = {"default": "cpu-worker", "npu-Ascend310P3": "host-a", "npu-Ascend310": "host-b"}
    for t in ran:
        assert t["hostname"] == expected_host[t["queue"]], summary

    doc = _document(cluster, run_id)
    assert doc["run"]["status"] == "complete"
    cells = {(c["target"], c["batch_size"]): c for c in doc["perf"]}
    assert {k: c["status"] for k, c in cells.items()} == {
        ("Ascend310", 1): "ok",
        ("Ascend310", 2): "ok",
        ("Ascend310", 64): "oom",
        ("Ascend310P3", 1): "ok",
        ("Ascend310P3", 2): "ok",
        ("Ascend310P3", 64): "ok",
    }
    for (target, _batch), cell in cells.items():
        host, devices = ("host-b", {"0"}) if target == "Ascend310" else ("host-a", {"0", "1"})
        assert (cell["host"], cell["cann_version"], cell["driver_version"]) == (host, "8.0.0", "22.0.2"), cell
        assert cell["device"] in devices, cell
    assert {(c["target"], c["host"], c["cann_version"]) for c in doc["compiled"]} == {
        ("Ascend310", "host-b", "8.0.0"),
        ("Ascend310P3", "host-a", "8.0.0"),
    }
    _assert_one_measurement_per_device(cluster)

    status, page = cluster.get(f"/erfnet/runs/{run_id}")
    text = page.decode()
    assert status == 200 and "Ascend310P3 on host-a, CANN 8.0.0" in text and "Ascend310 on host-b" in text
    assert 'id="cell-environment"' in text


def test_a_cann_upgrade_on_host_b_alone_measures_its_chip_again(cluster, data):
    previous = _document(cluster, "latest")
    version = cluster.workdir / "host-b" / "ascend-toolkit" / "version.cfg"
    version.write_text("# version: 1.0\nruntime_running_version=[7.7.0.1.100:8.1.RC1]\n")
    # `auto`: every chip a live NPU worker of the fleet serves, so the same two chips as before.
    conf = {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["auto"],
        "batch_sizes": [1, 2, 64],
        "reference_miou": 0.0,
        "image_limit": 2,
    }
    run_id = cluster.trigger(DAG_ID, conf)
    cluster.wait_for_run(DAG_ID, run_id, 900)  # the gate may fail it on a stand-in throughput wobble
    tis = {(t["task_id"], t["map_index"]): t["state"] for t in cluster.task_instances(DAG_ID, run_id)}
    assert tis[("publish_results", -1)] == "success", tis
    doc = _document(cluster, run_id)
    cells = {(c["target"], c["batch_size"]): c for c in doc["perf"]}
    assert sorted(cells) == sorted(_cells_of(previous))
    assert {c["cann_version"] for (t, _b), c in cells.items() if t == "Ascend310"} == {"8.1.RC1"}
    assert {c["cann_version"] for (t, _b), c in cells.items() if t == "Ascend310P3"} == {"8.0.0"}
    assert "8.0.0" in doc["run"]["cann_version"] and "8.1.RC1" in doc["run"]["cann_version"]
    # The gate's baseline is per chip: only the upgraded chip's cells compare with the run before.
    assert all(
        f["target"] == "Ascend310" and f["baseline_run_id"] == previous["run"]["id"]
        for f in doc["findings"]
        if f["baseline_run_id"]
    ), doc["findings"]
    _assert_one_measurement_per_device(cluster)


def _cells_of(doc: dict) -> list[tuple[str, int]]:
    return [(c["target"], c["batch_size"]) for c in doc["perf"]]


def _document(cluster: LocalCluster, run_id: str) -> dict:
    from erfnet_tasks.results import db, queries

    with db.session_scope(cluster.results_url) as session:
        return queries.run_document(session, run_id)


def _assert_one_measurement_per_device(cluster: LocalCluster) -> None:
    """From the stand-ins' own record: no device was ever shared, and host A's two devices both served
    when two 310P3 measurements overlapped."""
    import harness

    uses = harness.device_uses(cluster.workdir / "standin_invocations.jsonl")
    assert uses and not [u for u in uses if u["shared"]], uses
    assert {(u["host"], u["chip"]) for u in uses} == {("host-a", "Ascend310P3"), ("host-b", "Ascend310")}
    for i, a in enumerate(uses):
        for b in uses[i + 1 :]:
            overlap = a["start"] < b["end"] and b["start"] < a["end"]
            assert not (overlap and (a["host"], a["device"]) == (b["host"], b["device"])), (a, b)
    on_a = [u for u in uses if u["host"] == "host-a"]
    if any(a["start"] < b["end"] and b["start"] < a["end"] for i, a in enumerate(on_a) for b in on_a[i + 1 :]):
        assert {u["device"] for u in on_a} == {0, 1}


def _failed_logs(cluster: LocalCluster, run_id: str, tis: list[dict]) -> str:
    out = []
    for t in tis:
        if t["state"] not in ("success", "skipped"):
            task_log = cluster.task_log(DAG_ID, run_id, t["task_id"], max(1, t["try_number"]), t["map_index"])
            out.append(f"--- {t['task_id']}[{t['map_index']}] {t['state']}\n{task_log[-2500:]}")
    for name in ("scheduler", "cpu-worker", *HOSTS):
        out.append(f"--- {name}\n{cluster.tail(name, 2000)}")
    return "\n".join(out)
