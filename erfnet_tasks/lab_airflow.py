"""The Airflow scheduler's and Celery's settings for a lab: a host lost mid-run is noticed in minutes.

docker-compose.yaml carries the same values (the scheduler's in the ``airflow-scheduler`` service, the
Celery ones and the tools' deadlines in ``x-airflow-common``, which every service merges), and
deploy/local_cluster.py sets them from here; tests/test_lab_settings.py compares the two. What each one
trades: docs/deployment.md, "When a host or a device fails". Plain strings: these are environment values.

Airflow's defaults, for comparison: heartbeat timeout 300 s, queued timeout 600 s checked every 120 s,
two requeues of a task stuck in queued, visibility timeout 86400 s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from . import deadlines

HEARTBEAT_TIMEOUT_S = 120  # the task's supervisor heartbeats every 5 s ([workers] min_heartbeat_interval)
HEARTBEAT_CHECK_S = 10
QUEUED_TIMEOUT_S = 180
QUEUED_CHECK_S = 30
STUCK_IN_QUEUED_RETRIES = 1  # requeues before a task stuck in queued fails (Airflow reads it, undocumented)
VISIBILITY_MARGIN_S = 600
RETRY_DELAY_S = 120  # the DAG's retry_delay (ERFNET_RETRY_DELAY): time for a rebooting host to come back


def visibility_timeout_s() -> int:
    """Longer than the longest NPU task may run (AOE's, by default), rounded up to the hour: the broker
    never hands a task that is still running to a second worker."""
    longest = deadlines.AOE_JOBS * deadlines.AOE_JOB_S + deadlines.TASK_MARGIN_S  # task_timeout_seconds, by default
    return math.ceil((longest + VISIBILITY_MARGIN_S) / 3600) * 3600


LAB_SCHEDULER_SETTINGS: dict[str, str] = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(HEARTBEAT_CHECK_S),
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(QUEUED_TIMEOUT_S),
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": str(QUEUED_CHECK_S),
    "AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES": str(STUCK_IN_QUEUED_RETRIES),
}
LAB_CELERY_SETTINGS: dict[str, str] = {
    "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(visibility_timeout_s()),
}
LAB_AIRFLOW_SETTINGS: dict[str, str] = {**LAB_SCHEDULER_SETTINGS, **LAB_CELERY_SETTINGS}
# The tools' deadlines as docker-compose.yaml states them: the defaults of deadlines.py, written out.
LAB_DEADLINE_SETTINGS: dict[str, str] = {
    "ERFNET_INFER_TIMEOUT_PER_IMAGE": f"{deadlines.INFER_PER_IMAGE_S:g}",
    "ERFNET_INFER_TIMEOUT_FLOOR": f"{deadlines.INFER_FLOOR_S:g}",
    "ERFNET_ATC_TIMEOUT": f"{deadlines.ATC_S:g}",
    "ERFNET_AOE_TIMEOUT": f"{deadlines.AOE_JOB_S:g}",
}


def lost_host_bound_s(retry_delay_s: float = RETRY_DELAY_S, settings: Mapping[str, str] | None = None) -> float:
    """The most a task on a host lost mid-run waits before it fails, with no worker left for its chip:
    the heartbeat timeout and its check, the retry delay, then each time in queued (the first and every
    requeue) with its check. Once a worker of the chip serves the retry, it is measured instead.
    ``settings``: environment values that replace the lab's (a test's scaled-down cluster)."""
    values = {**LAB_SCHEDULER_SETTINGS, **(settings or {})}

    def seconds(name: str) -> float:
        return float(values[f"AIRFLOW__SCHEDULER__{name}"])

    noticed = seconds("TASK_INSTANCE_HEARTBEAT_TIMEOUT") + seconds("TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL")
    queued = seconds("TASK_QUEUED_TIMEOUT") + seconds("TASK_QUEUED_TIMEOUT_CHECK_INTERVAL")
    return noticed + retry_delay_s + (1 + seconds("NUM_STUCK_IN_QUEUED_RETRIES")) * queued
