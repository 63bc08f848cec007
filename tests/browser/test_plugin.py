"""A real ``airflow api-server`` with the plugin loaded, driven by headless Chromium over the DevTools
protocol: log in through Airflow's login page, open the ErfNet view inside the Airflow UI, read its
tables, save a screenshot under artifacts/."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import nightlies  # bench/nightlies.py: the generated nightlies of the scale benchmark
import pytest

from tests.helpers.api_server import plugin_api_server
from tests.helpers.chromium import Chromium, log_in_to_airflow

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]

# A year of nightlies by default; ERFNET_HISTORY_YEARS=5 gives the five-year screenshots.
HISTORY_YEARS = int(os.environ.get("ERFNET_HISTORY_YEARS", "1"))
ARTIFACTS = REPO / "artifacts"
USER, PASSWORD = "tester", "erfnet-ui-test"
RUN_ID = "manual__2026-11-25T08:00:00+00:00"


def _results_document() -> dict:
    perf, acc = [], []
    for target, fps in (("Ascend310P3", 300.0), ("cpu", 12.5)):
        for batch in (1, 4, 64):
            if (target, batch) == ("Ascend310P3", 64):
                perf.append({"target": target, "batch_size": batch, "status": "oom", "error": "aclrtMalloc failed"})
                continue
            perf.append({"target": target, "batch_size": batch, "throughput_fps": fps + batch, "status": "ok"})
            acc.append({"target": target, "batch_size": batch, "images": 4, "miou": 0.7220, "per_class": [0.72] * 19})
    return {
        "run": {
            "id": RUN_ID,
            "dag_id": "erfnet_offline_inference",
            "started_at": "2026-11-25T08:00:00+00:00",
            "status": "complete",
            "cann_version": "8.0.RC3",
            "driver_version": "24.1.0",
            "host": "browser-test-host",
            "model_sha256": "f" * 64,
            "images": 4,
        },
        "accuracy": acc,
        "perf": perf,
        "findings": [],
    }


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """``airflow api-server`` on a free port: own AIRFLOW_HOME, SQLite metadata, SimpleAuthManager user."""
    from erfnet_tasks.results import importing
    from erfnet_tasks.results.publish import publish_run

    home = tmp_path_factory.mktemp("airflow_home")
    results_url = f"sqlite:///{home / 'results.sqlite'}"
    publish_run(_results_document(), results_url)
    # The nightlies end the day before RUN_ID, which stays the latest run.
    nightlies.write_documents(nightlies.nightly_documents(365 * HISTORY_YEARS), home / "nightlies")
    importing.import_paths([str(home / "nightlies")], results_url, report=lambda _line: None)
    with plugin_api_server(home, results_url, USER, PASSWORD) as base:
        yield base


def test_anonymous_request_is_refused(api_server):
    for path in ("/erfnet/", "/erfnet/api/runs/latest", "/erfnet/runs/latest/perf.csv"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(api_server + path, timeout=30)
        assert refused.value.code in (401, 403)
        assert b"browser-test-host" not in refused.value.read()


# The iframe's document, where the plugin page lives inside the Airflow UI.
FRAME = "document.querySelector('iframe[title=\"ErfNet results\"]')?.contentDocument"


def test_logged_in_user_sees_the_tables_inside_the_airflow_ui(api_server, browser):
    log_in_to_airflow(browser, api_server, USER, PASSWORD)
    # The nav entry of the external view is in Airflow's own navigation.
    browser.wait_for('!!document.querySelector(\'a[href$="/plugin/erfnet"][aria-label="ErfNet results"]\')')
    browser.wait_for(f"!!{FRAME}?.querySelector('#perf-table')")

    accuracy = browser.evaluate(
        f"[...{FRAME}.querySelectorAll('#accuracy-table tr')].map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    assert accuracy[0] == ["batch", "Ascend310P3", "cpu", "guide"]
    assert accuracy[1] == ["1", "72.20 ✓", "72.20 ✓", "72.20"]
    assert accuracy[3][:2] == ["64", "device memory exhausted"]
    perf = browser.evaluate(
        f"[...{FRAME}.querySelectorAll('#perf-table tr')].map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    header = perf[0]
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in perf[1:]}
    assert rows["1"]["Ascend310P3"] == "301.00" and rows["1"]["cpu"] == "13.50"
    assert rows["1"]["cpu/Ascend310P3"] == f"{13.5 / 301:.3f}"
    assert rows["64"]["Ascend310P3"] == "device memory exhausted"
    assert rows["best batch"]["Ascend310P3"] == "304.00 (b4)"
    environment = browser.evaluate(f"{FRAME}.querySelector('#environment').textContent")
    assert "8.0.RC3" in environment and "browser-test-host" in environment

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "erfnet-plugin-latest.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000

    # History inside the same frame: the charting library comes from the plugin itself.
    browser.evaluate(f"{FRAME}.querySelector('nav a[href$=\"/history\"]').click()")
    browser.wait_for(f"{FRAME}?.defaultView.erfnetCharts && {FRAME}.querySelectorAll('#chart-fps svg').length > 0")
    browser.screenshot(ARTIFACTS / "erfnet-plugin-history.png")


def _texts(selector: str) -> str:
    return f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)"


def _shot(browser: Chromium, selector: str, path: Path) -> None:
    """A screenshot of one element, whole, even where it reaches below the window."""
    box = browser.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect(); return [r.x, r.y + scrollY, r.width, r.height]; })()"
    )
    clip = {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}
    data = browser.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
    path.write_bytes(base64.b64decode(data))
    assert path.stat().st_size > 20_000


def test_history_of_a_year_renders_labelled_bands_and_a_tooltip(api_server, browser):
    log_in_to_airflow(browser, api_server, USER, PASSWORD)
    days = 365 * HISTORY_YEARS
    browser.navigate(f"{api_server}/erfnet/history?days={days}")
    browser.wait_for("window.erfnetCharts && document.querySelectorAll('#chart-miou svg path').length > 10")
    data = browser.evaluate("JSON.parse(document.getElementById('history-data').textContent)")
    assert len(data["runs"]) >= days * 0.95  # every measured night of the range (a few are skipped ones)
    assert len(data["targets"]) == 4
    # The CANN versions: every band of the range is drawn with its label on the charts.
    labels = browser.evaluate(_texts("#chart-fps svg text"))
    versions = [b["cann"] for b in data["bands"]]
    assert len(versions) >= 12 * HISTORY_YEARS
    assert all(f"CANN {v}" in labels for v in versions), (versions, labels[:40])

    # The tooltip of one night: its run id, CANN version and values.
    k = len(data["runs"]) // 2
    run_at, run_id, cann = data["runs"][k]
    browser.evaluate(f"window.erfnetCharts.fps.dispatchAction({{type: 'showTip', seriesIndex: 0, dataIndex: {k}}})")
    tip = browser.wait_for(
        "[...document.querySelectorAll('#chart-fps div')].map(d => d.innerText)"
        f".find(t => t && t.includes({json.dumps(run_id)}))"
    )
    assert f"CANN {cann}" in tip and " fps" in tip and "mIoU" in tip and run_at[:10] in tip

    ARTIFACTS.mkdir(exist_ok=True)
    _shot(browser, "#chart-fps", ARTIFACTS / f"erfnet-history-{HISTORY_YEARS}y-fps.png")
    browser.evaluate("window.erfnetCharts.fps.dispatchAction({type: 'hideTip'})")
    _shot(browser, "#chart-miou", ARTIFACTS / f"erfnet-history-{HISTORY_YEARS}y-miou.png")
    # Zoom to the newest 10% (what the slider and the mouse wheel do): the labels follow.
    browser.evaluate("window.erfnetCharts.fps.dispatchAction({type: 'dataZoom', start: 90, end: 100})")
    browser.wait_for("true")
    _shot(browser, "#chart-fps", ARTIFACTS / f"erfnet-history-{HISTORY_YEARS}y-fps-zoomed.png")
