"""A running run's page in headless Chromium against a real ``airflow api-server`` (issue 26): the cells
stored so far and each missing cell's state; then a cell is stored and the run closed, straight in the
results database as the DAG's tasks do, and the page shows both without being reloaded. Screenshots go
to artifacts/."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from erfnet_tasks.records import CellState
from erfnet_tasks.results import publish
from tests.helpers.api_server import plugin_api_server
from tests.helpers.chromium import Chromium, log_in_to_airflow
from tests.helpers.run_documents import make_doc
from tests.helpers.running_run import RunningRun

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
USER, PASSWORD = "tester", "erfnet-live-test"
CLOSED = "scheduled__2026-12-01T02:00:00+00:00"
RUNNING = "scheduled__2026-12-02T02:00:00+00:00"
PLANNED = [(t, b) for t in ("Ascend310", "Ascend310P3", "cpu") for b in (1, 4)]
REFRESH_WAIT = 40  # s: the page polls every 10 s; a shared CI machine may be slow to answer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("live_airflow_home")
    url = f"sqlite:///{home / 'results.sqlite'}"
    publish.publish_run(
        make_doc(CLOSED, "2026-12-01T02:00:00+00:00", "8.0", [(t, b, 0.72, 40.0, "ok") for t, b in PLANNED]), url
    )
    aoe = [("Ascend310P3", 1), ("Ascend310P3", 4)]
    run = RunningRun(url, RUNNING, "2026-12-02T02:00:00+00:00", "8.0", PLANNED, aoe=aoe).open()
    run.store(("cpu", 1, 0.7300, 100.0, "ok"), ("Ascend310", 1, 0.7210, 200.0, "ok"))
    run.set_state("Ascend310P3", 1, CellState.TUNING, host="npu-a")
    run.set_state("Ascend310P3", 4, CellState.COMPILING, host="npu-a")
    run.set_state("Ascend310", 4, CellState.MEASURING, host="npu-b")
    with plugin_api_server(home, url, USER, PASSWORD) as base:
        yield base, run


def _table(browser: Chromium, table_id: str) -> dict[str, dict[str, str]]:
    """The table's rows by their first cell, each row by column header."""
    rows = browser.evaluate(
        f"[...document.querySelectorAll('#{table_id} tr')].map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    return {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}


def _cell_is(table_id: str, batch: str, column: str, text: str) -> str:
    """A JS condition: the page is the one we marked, and the cell reads ``text``."""
    return (
        "window.erfnetTestMarker === 'not reloaded' && (() => {"
        f" const rows = [...document.querySelectorAll('#{table_id} tr')];"
        f" const col = [...rows[0].cells].findIndex(c => c.textContent.trim() === {json.dumps(column)});"
        f" const row = rows.find(r => r.cells[0].textContent.trim() === {json.dumps(batch)});"
        f" return !!row && row.cells[col].textContent.trim() === {json.dumps(text)}; }})()"
    )


def test_a_running_run_fills_in_without_a_reload_and_stops_when_it_closes(server, browser):
    base, run = server
    log_in_to_airflow(browser, base, USER, PASSWORD)
    browser.navigate(f"{base}/erfnet/runs/{quote(RUNNING, safe='')}")
    browser.wait_for("!!document.querySelector('#perf-table') && !!window.erfnetLive")
    browser.evaluate("window.erfnetTestMarker = 'not reloaded'")

    assert browser.evaluate("document.getElementById('run-status').textContent") == "running"
    progress = browser.evaluate("document.getElementById('progress').textContent")
    assert "2 of 6 cells stored" in " ".join(progress.split())
    assert "2026-12-02 02:00:00 UTC" in progress
    accuracy = _table(browser, "accuracy-table")
    assert accuracy["1"]["cpu"] == "73.00 ✓" and accuracy["1"]["Ascend310"] == "72.10 ✓"
    assert accuracy["1"]["Ascend310P3"] == "tuning (AOE)" and accuracy["4"]["cpu"] == "queued"
    perf = _table(browser, "perf-table")
    assert perf["1"]["cpu"] == "100.00" and perf["1"]["Ascend310"] == "200.00"
    assert perf["4"]["Ascend310"] == "measuring" and perf["4"]["Ascend310P3"] == "compiling"
    assert perf["best batch"]["cpu"] == "pending"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "erfnet-plugin-running.png")

    # One more cell measured and stored: the page shows it at its next refresh, on the same page.
    run.store(("cpu", 4, 0.7301, 110.0, "ok"))
    browser.wait_for(_cell_is("perf-table", "4", "cpu", "110.00"), timeout=REFRESH_WAIT)
    progress = browser.evaluate("document.getElementById('progress').textContent")
    assert "3 of 6 cells stored" in " ".join(progress.split())
    assert _table(browser, "accuracy-table")["4"]["cpu"] == "73.01 ✓"
    assert browser.evaluate("window.erfnetLive.refreshes") >= 1

    # The rest stored and the run closed: the badge says so, the progress line goes, the polling stops.
    run.store(
        ("Ascend310", 4, 0.72, 210.0, "ok"),
        ("Ascend310P3", 1, 0.72, 290.0, "ok"),
        ("Ascend310P3", 4, 0.72, 310.0, "ok"),
    )
    run.close()
    browser.wait_for(
        "window.erfnetTestMarker === 'not reloaded' && window.erfnetLive.status === 'complete'"
        " && document.getElementById('run-status').textContent === 'complete'",
        timeout=REFRESH_WAIT,
    )
    assert browser.evaluate("document.getElementById('progress')") is None
    assert _table(browser, "perf-table")["best batch"]["Ascend310P3"] == "310.00 (b4)"
    assert "has closed (complete)" in browser.evaluate("document.getElementById('live-note').textContent")
    browser.screenshot(ARTIFACTS / "erfnet-plugin-running-closed.png")
    refreshes = browser.evaluate("window.erfnetLive.refreshes")
    time.sleep(12)  # longer than the refresh period
    assert browser.evaluate("window.erfnetLive.refreshes") == refreshes
