"""The nightly skip and runs that are still going (issue 26): a run is in the results database as
``running`` from its first task, with the cells measured so far, and none of that is a reason to skip."""

from __future__ import annotations

from erfnet_tasks import nightly, report
from erfnet_tasks.results import publish


def _env(make, run_id: str, started_at: str):
    return make.env(
        targets=["cpu"],
        run_id=run_id,
        started_at=started_at,
        params={"batch_sizes": [1, 4]},
    )


def _publish(make, env, url: str, status: str | None = None, batches=(1, 4)) -> None:
    cells = [make.measured("cpu", b) for b in batches]
    doc = report.build_run_document(env, make.model(), make.prep(), cells, report.collect_perf(cells))
    if status is not None:
        doc["run"]["status"] = status
        doc["run"]["finished_at"] = None
    publish.publish_run(doc, url)


def test_a_running_run_is_never_the_run_to_skip_to(sqlite_url, make):
    tonight = _env(make, "scheduled__3", "2026-11-27T02:00:00+00:00")
    # Last night is still open with every cell of the same matrix stored (its DAG died before it closed,
    # or it is tonight's own run, opened by its first task): it proves nothing.
    _publish(make, _env(make, "scheduled__2", "2026-11-26T02:00:00+00:00"), sqlite_url, status="running")
    assert nightly.unchanged_since_last_run(tonight, make.model(), make.prep(), sqlite_url) is None

    # The night before closed complete: that one is the last complete run, though older than the running one.
    _publish(make, _env(make, "scheduled__1", "2026-11-25T02:00:00+00:00"), sqlite_url)
    assert nightly.unchanged_since_last_run(tonight, make.model(), make.prep(), sqlite_url) == "scheduled__1"
    assert nightly.previous_complete_run(sqlite_url)["run"]["id"] == "scheduled__1"


def test_a_running_run_that_closes_complete_becomes_the_run_to_skip_to(sqlite_url, make):
    tonight = _env(make, "scheduled__3", "2026-11-27T02:00:00+00:00")
    last_night = _env(make, "scheduled__2", "2026-11-26T02:00:00+00:00")
    _publish(make, last_night, sqlite_url, status="running", batches=(1,))
    assert nightly.unchanged_since_last_run(tonight, make.model(), make.prep(), sqlite_url) is None
    _publish(make, last_night, sqlite_url)  # its last cell stored, the run closed
    assert nightly.unchanged_since_last_run(tonight, make.model(), make.prep(), sqlite_url) == "scheduled__2"
