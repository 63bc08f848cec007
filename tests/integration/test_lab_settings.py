"""A lab's scheduler and Celery settings and the tools' deadlines (erfnet_tasks/lab_airflow.py): the same
values in docker-compose.yaml (every Airflow service, the scheduler included) and in the local cluster
(deploy/local_cluster.py), each a real Airflow option, and bounds that hold together."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import local_cluster  # deploy/local_cluster.py
import pytest
import yaml
from airflow.providers.celery.get_provider_info import get_provider_info

from erfnet_tasks import deadlines
from erfnet_tasks.lab_airflow import (
    LAB_AIRFLOW_SETTINGS,
    LAB_CELERY_SETTINGS,
    LAB_DEADLINE_SETTINGS,
    LAB_SCHEDULER_SETTINGS,
    lost_host_bound_s,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
SITE = Path(yaml.__file__).resolve().parent.parent  # site-packages, where Airflow is installed too
EVERY_SETTING = {**LAB_AIRFLOW_SETTINGS, **LAB_DEADLINE_SETTINGS}
AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-npu",
]


def _subset(env: dict, keys) -> dict:
    return {k: str(env.get(k)) for k in keys}


def test_compose_carries_the_lab_settings_in_every_airflow_service_the_scheduler_included():
    services = yaml.safe_load(COMPOSE.read_text())["services"]  # YAML merge keys resolved, as compose does
    for name in AIRFLOW_SERVICES:
        assert _subset(services[name]["environment"], EVERY_SETTING) == EVERY_SETTING, name


def test_compose_resolves_with_them(tmp_path):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: run tools/ensure-system-packages.sh (make test does)")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    argv = [
        exe,
        "-f",
        str(COMPOSE),
        "--project-directory",
        str(REPO),
        "--env-file",
        str(tmp_path / ".env"),
        "--profile",
        "npu",
        "config",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    scheduler = yaml.safe_load(proc.stdout)["services"]["airflow-scheduler"]["environment"]
    assert _subset(scheduler, EVERY_SETTING) == EVERY_SETTING


def test_the_local_cluster_sets_the_same(tmp_path):
    cluster = local_cluster.LocalCluster(tmp_path, [])
    cluster.jwt_secret, cluster.health_port, cluster.redis_db = "secret", 1, 0  # what start() sets first
    env = cluster._common_env()
    assert _subset(env, EVERY_SETTING) == EVERY_SETTING
    override = local_cluster.LocalCluster(tmp_path, [], env={"ERFNET_INFER_TIMEOUT_FLOOR": "30"})
    override.jwt_secret, override.health_port, override.redis_db = "secret", 1, 0
    assert override._common_env()["ERFNET_INFER_TIMEOUT_FLOOR"] == "30"  # a test's own still wins


def _documented_options() -> set[tuple[str, str]]:
    core = yaml.safe_load((SITE / "airflow" / "config_templates" / "config.yml").read_text())
    found = {(section, key) for section, spec in core.items() for key in spec.get("options", {})}
    celery = get_provider_info()["config"]
    return found | {(section, key) for section, spec in celery.items() for key in spec["options"]}


def test_every_airflow_setting_names_an_option_airflow_reads():
    documented = _documented_options()
    for name in LAB_AIRFLOW_SETTINGS:
        section, key = name.removeprefix("AIRFLOW__").lower().split("__")
        if (section, key) == ("scheduler", "num_stuck_in_queued_retries"):  # read, but undocumented
            source = (SITE / "airflow" / "jobs" / "scheduler_job_runner.py").read_text()
            assert 'key="num_stuck_in_queued_retries"' in source
            continue
        assert (section, key) in documented, name


def test_the_bounds_hold_together(monkeypatch):
    for name in LAB_DEADLINE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # The broker never hands a running task to a second worker: longer than any NPU task may run.
    visibility = int(LAB_CELERY_SETTINGS["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"])
    assert visibility > deadlines.longest_task_seconds() == 2 * 7200 + 300
    # Lost mid-run, no worker left for the chip: noticed in 130 s, retried after the DAG's 2 min, then
    # twice 180 s queued (+ its 30 s check) before it fails; each well under Airflow's defaults.
    assert lost_host_bound_s(120) == 130 + 120 + 2 * 210 == 670
    assert int(LAB_SCHEDULER_SETTINGS["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) < 300
    assert int(LAB_SCHEDULER_SETTINGS["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) < 600
    assert LAB_CELERY_SETTINGS["AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER"] == "1"
    # The deadlines compose states are deadlines.py's defaults.
    assert {k: float(v) for k, v in LAB_DEADLINE_SETTINGS.items()} == {
        "ERFNET_INFER_TIMEOUT_PER_IMAGE": deadlines.INFER_PER_IMAGE_S,
        "ERFNET_INFER_TIMEOUT_FLOOR": 120.0,
        "ERFNET_ATC_TIMEOUT": 900.0,
        "ERFNET_AOE_TIMEOUT": 7200.0,
    }
