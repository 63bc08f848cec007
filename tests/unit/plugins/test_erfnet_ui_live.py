"""A running run in the results UI (issue 26): its page with the cells stored so far and each missing
cell's state, the fragment and the JSON its page refreshes from (behind Airflow's login), and the
history page that lists it without charting it."""

from __future__ import annotations

import pytest
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from erfnet_ui.app import URL_PREFIX, create_app
from fastapi.testclient import TestClient

from erfnet_tasks.records import CellState
from erfnet_tasks.results import db, publish
from erfnet_tasks.results.models import Finding
from tests.helpers.html_tables import Tables
from tests.helpers.run_documents import make_doc
from tests.helpers.running_run import RunningRun

CLOSED = "scheduled__2026-06-01T02:00:00+00:00"
RUNNING = "scheduled__2026-06-02T02:00:00+00:00"
PLANNED = [("Ascend310P3", 1), ("Ascend310P3", 4), ("cpu", 1), ("cpu", 4)]
LIVE_PATHS = [f"/runs/{RUNNING}/live", f"/api/runs/{RUNNING}/progress", "/static/live.js"]


@pytest.fixture
def running(sqlite_url):
    publish.publish_run(
        make_doc(CLOSED, "2026-06-01T02:00:00+00:00", "8.0", [(t, b, 0.72, 40.0, "ok") for t, b in PLANNED]),
        sqlite_url,
    )
    run = RunningRun(sqlite_url, RUNNING, "2026-06-02T02:00:00+00:00", "8.0", PLANNED).open()
    run.store(("cpu", 1, 0.7300, 100.0, "ok"))
    run.set_state("Ascend310P3", 1, CellState.TUNING, host="npu-a")
    run.set_state("Ascend310P3", 4, CellState.MEASURING, host="npu-b", try_number=2)
    return run


def _client(url: str, monkeypatch, user: bool = True) -> TestClient:
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", url)
    app = create_app(require_user=get_user)  # as plugins/erfnet_plugin.py builds it
    if user:
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="tester", role="admin")
    return TestClient(app, root_path=URL_PREFIX, raise_server_exceptions=False)


@pytest.mark.parametrize("path", LIVE_PATHS)
def test_the_live_endpoints_need_the_airflow_login(path, running, monkeypatch):
    create_auth_manager()  # what get_user consults
    client = _client(running.url, monkeypatch, user=False)
    assert client.get(path).status_code == 401
    client.cookies.set("_token", "forged")
    refused = client.get(path)
    assert refused.status_code in (401, 403) and "npu-a" not in refused.text


def test_a_running_runs_page_shows_stored_cells_and_each_missing_cells_state(running, monkeypatch):
    client = _client(running.url, monkeypatch)
    response = client.get("/")  # the latest run is the running one
    assert response.status_code == 200
    page = Tables(response.text)
    assert 'id="run-status">running</span>' in response.text
    assert page.cell("accuracy-table", "1", "cpu") == "73.00 ✓"
    assert page.cell("accuracy-table", "1", "Ascend310P3").startswith("tuning")
    assert page.cell("accuracy-table", "4", "cpu") == "queued"
    assert page.cell("perf-table", "1", "cpu") == "100.00"
    assert page.cell("perf-table", "4", "Ascend310P3") == "measuring"
    assert page.cell("perf-table", "best batch", "cpu") == "pending"
    assert 'title="measuring on npu-b (try 2) since ' in response.text  # where the cell is, as its tooltip
    text = page.all_text
    assert "1 of 4 cells stored" in text and "Started 2026-06-02 02:00:00 UTC" in text
    assert {row[0] for row in page.tables["pending-cells"][1:]} == {"Ascend310P3", "cpu"}
    assert "No regressions found so far" in text
    # The page refreshes itself from the run's fragment, named by its id (not 'latest', which moves on).
    assert f'data-url="/erfnet/runs/{RUNNING.replace(":", "%3A").replace("+", "%2B")}/live?reference=' in (
        response.text
    )
    assert 'src="/erfnet/static/live.js"' in response.text


def test_the_fragment_follows_the_run_until_it_closes(running, monkeypatch):
    client = _client(running.url, monkeypatch)
    fragment = client.get(f"/runs/{RUNNING}/live")
    assert fragment.status_code == 200 and fragment.headers["cache-control"] == "no-store"
    assert fragment.text.lstrip().startswith('<div id="live" data-status="running">')
    assert "<nav>" not in fragment.text  # the part that is swapped, not a page
    assert Tables(fragment.text).cell("perf-table", "4", "cpu") == "queued"

    running.store(("cpu", 4, 0.7301, 110.0, "ok"))
    stored = Tables(client.get(f"/runs/{RUNNING}/live").text)
    assert stored.cell("perf-table", "4", "cpu") == "110.00" and "2 of 4 cells stored" in stored.all_text

    running.store(("Ascend310P3", 1, 0.72, 290.0, "ok"))
    _find(running.url, "Ascend310P3", 1, "Ascend310P3 batch 1 dropped 20% against its baseline")
    early = Tables(client.get(f"/runs/{RUNNING}/live").text)
    assert early.tables["findings"][1][-1] == "Ascend310P3 batch 1 dropped 20% against its baseline"

    running.store(("Ascend310P3", 4, 0.72, 310.0, "ok"))
    running.close()
    closed = client.get(f"/runs/{RUNNING}/live")
    assert 'data-status="complete"' in closed.text and 'id="progress"' not in closed.text
    assert Tables(closed.text).cell("perf-table", "best batch", "Ascend310P3") == "310.00 (b4)"
    page = client.get(f"/runs/{RUNNING}")
    assert "live.js" not in page.text and "so far" not in page.text  # a closed run's page does not poll


def _find(url: str, target: str, batch: int, message: str) -> None:
    """A finding the gate stored while the run goes on (it judges each cell as it is stored)."""
    with db.session_scope(url) as session:
        session.add(Finding(run_id=RUNNING, rule="throughput_drop", target=target, batch_size=batch, message=message))


def test_progress_json(running, monkeypatch):
    client = _client(running.url, monkeypatch)
    body = client.get("/api/runs/latest/progress").json()
    assert (body["run_id"], body["status"], body["done"], body["total"]) == (RUNNING, "running", 1, 4)
    assert {(c["target"], c["batch_size"], c["state"]) for c in body["pending"]} == {
        ("Ascend310P3", 1, "tuning"),
        ("Ascend310P3", 4, "measuring"),
        ("cpu", 4, "queued"),
    }
    missing = client.get("/api/runs/manual__1999-01-01/progress")
    assert missing.status_code == 404 and "no run" in missing.json()["detail"]
    assert client.get("/api/runs/bad%20id/progress").status_code == 404


def test_history_lists_the_running_run_and_charts_only_closed_ones(running, monkeypatch):
    client = _client(running.url, monkeypatch)
    response = client.get("/history", params={"batch": 1})
    page = Tables(response.text)
    runs = {row[0]: row for row in page.tables["runs"][1:]}
    assert runs[RUNNING][2] == "running" and runs[RUNNING][5] == "1 of 4"
    assert runs[CLOSED][5] == "4"
    assert "1 run(s) still running" in page.all_text
    assert RUNNING not in response.text.split('<script id="history-data"')[1].split("</script>")[0]
    listed = {r["id"]: r for r in client.get("/api/runs").json()}
    assert listed[RUNNING]["status"] == "running" and listed[RUNNING]["planned_cells"] == 4
