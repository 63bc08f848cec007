"""
### ErfNet maintenance — retention of run folders and compile-cache entries

Daily: `erfnet runs prune --older-than <older_than>`. Removes run folders and compile-cache entries
unused for that long; never the latest complete run's folder for each target, a cache entry that run
used, or a database row. The task log lists what it removed and the space it freed. Its own settings:
`older_than` (default `$ERFNET_PRUNE_OLDER_THAN` or 30d) and `dry_run`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from erfnet_tasks import retention, settings


@dag(
    dag_id="erfnet_maintenance",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["erfnet", "maintenance"],
    params={
        "older_than": Param(
            settings.prune_older_than(),
            type="string",
            pattern=r"^\d{1,6}[dhm]$",
            title="Remove what is unused for (30d, 12h, 90m)",
        ),
        "dry_run": Param(False, type="boolean", title="Only list what would be removed"),
    },
)
def erfnet_maintenance():
    @task(retries=0)
    def prune_runs(params=None) -> dict:
        plan, report = retention.prune(params["older_than"], dry_run=params["dry_run"])
        print(report)
        return {"removed": [str(r.path) for r in plan.removals], "bytes": plan.bytes, "dry_run": params["dry_run"]}

    prune_runs()


erfnet_maintenance()
