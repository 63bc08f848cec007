"""
### CANN version probe — a run within minutes of a CANN upgrade

Every few minutes (`ERFNET_CANN_PROBE_MINUTES`, default 5) one task per NPU queue reads that host's CANN
version, driver and chips and records them in the results database's per-host version history. When
they differ from the last ones seen on that host, the task updates the Asset `erfnet_cann_version`
(the event's extra says host, old and new), and `erfnet_offline_inference`, scheduled on "02:00 or
that Asset", gets a run. No change: the task ends *skipped* and no event is emitted.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from erfnet_tasks import cann_probe, fleet, settings

CANN_ASSET = Asset(name=cann_probe.ASSET_NAME, uri=cann_probe.ASSET_URI)


@dag(
    dag_id="erfnet_cann_probe",
    doc_md=__doc__,
    schedule=timedelta(minutes=settings.cann_probe_minutes()),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["erfnet", "ascend", "cann"],
    default_args={"retries": 0},  # the next probe comes in a few minutes anyway
)
def erfnet_cann_probe():
    @task(outlets=[CANN_ASSET], execution_timeout=timedelta(minutes=2))
    def probe(outlet_events=None) -> dict:
        result = cann_probe.probe()
        if not result["changed"]:
            raise AirflowSkipException(f"no change on {result['host']}: CANN {result['current']['cann_version']}")
        print(f"CANN probe: {cann_probe.describe_change(result)}")
        outlet_events[CANN_ASSET].extra = {k: result[k] for k in ("host", "previous", "current")}
        return result

    for queue in fleet.npu_queues():  # one probe per chip's queue, so each chip's hosts check themselves
        probe.override(task_id=f"probe_{re.sub(r'[^A-Za-z0-9_]', '_', queue)}", queue=queue)()


erfnet_cann_probe()
