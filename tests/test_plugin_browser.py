"""A real ``airflow api-server`` with the plugin loaded, driven by headless Chromium over the DevTools
protocol: log in through Airflow's login page, open the ErfNet view inside the Airflow UI, read its
tables, save a screenshot under artifacts/."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chromium import CHROMIUM, Chromium

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
PASSWORD = "erfnet-ui-test"
RUN_ID = "manual__2026-11-25T08:00:00+00:00"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _results_document() -> dict:
    perf, acc = [], []
    for target, fps in (("Ascend310P3", 300.0), ("cpu", 12.5)):
        for batch in (1, 4, 64):
            if (target, batch) == ("Ascend310P3", 64):
                perf.append({"target": target, "batch_size": batch, "status": "oom", "error": "aclrtMalloc failed"})
                continue
            perf.append({"target": target, "batch_size": batch, "throughput_fps": fps + batch, "status": "ok"})
            acc.append({"target": target, "batch_size": batch, "images": 4, "miou": 0.7220,
                        "per_class": [0.72] * 19})
    return {"run": {"id": RUN_ID, "dag_id": "erfnet_offline_inference", "started_at": "2026-11-25T08:00:00+00:00",
                    "status": "complete", "cann_version": "8.0.RC3", "driver_version": "24.1.0",
                    "host": "browser-test-host", "model_sha256": "f" * 64, "images": 4},
            "accuracy": acc, "perf": perf, "findings": []}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """``airflow api-server`` on a free port: own AIRFLOW_HOME, SQLite metadata, SimpleAuthManager user."""
    from erfnet_tasks.results.publish import publish_run

    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"tester": PASSWORD}))
    results_url = f"sqlite:///{home / 'results.sqlite'}"
    publish_run(_results_document(), results_url)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "tester:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "erfnet-browser-test-secret",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        "ERFNET_RESULTS_DB_URL": results_url,
    })
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = (home / "api-server.log").open("wb")
    server = subprocess.Popen([airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"api-server did not come up:\n{(home / 'api-server.log').read_text()[-3000:]}")
                time.sleep(1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make system-test-deps` (tools/ensure-system-packages.sh)")
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


def test_anonymous_request_is_refused(api_server):
    for path in ("/erfnet/", "/erfnet/api/runs/latest", "/erfnet/runs/latest/perf.csv"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(api_server + path, timeout=30)
        assert refused.value.code in (401, 403)
        assert b"browser-test-host" not in refused.value.read()


# The iframe's document, where the plugin page lives inside the Airflow UI.
FRAME = "document.querySelector('iframe[title=\"ErfNet results\"]')?.contentDocument"


def test_logged_in_user_sees_the_tables_inside_the_airflow_ui(api_server, browser):
    browser.call("Page.enable")
    browser.navigate(f"{api_server}/plugin/erfnet")
    # Anonymous: the UI sends us to Airflow's login page first.
    browser.wait_for("!!document.querySelector('input[name=password]')")
    assert "/auth/login" in browser.evaluate("location.pathname")
    browser.type_into("input[name=username]", "tester")
    browser.type_into("input[name=password]", PASSWORD)
    browser.evaluate("document.querySelector('button[type=submit]').click()")

    browser.wait_for("location.pathname === '/plugin/erfnet' || location.pathname.startsWith('/plugin/erfnet/')")
    # The nav entry of the external view is in Airflow's own navigation.
    browser.wait_for("!!document.querySelector('a[href$=\"/plugin/erfnet\"][aria-label=\"ErfNet results\"]')")
    browser.wait_for(f"!!{FRAME}?.querySelector('#perf-table')")

    accuracy = browser.evaluate(f"[...{FRAME}.querySelectorAll('#accuracy-table tr')].map(r => "
                                "[...r.cells].map(c => c.textContent.trim()))")
    assert accuracy[0] == ["batch", "Ascend310P3", "cpu", "guide"]
    assert accuracy[1] == ["1", "72.20 ✓", "72.20 ✓", "72.20"]
    assert accuracy[3][:2] == ["64", "device memory exhausted"]
    perf = browser.evaluate(f"[...{FRAME}.querySelectorAll('#perf-table tr')].map(r => "
                            "[...r.cells].map(c => c.textContent.trim()))")
    header = perf[0]
    rows = {row[0]: dict(zip(header, row)) for row in perf[1:]}
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

    # History inside the same frame: charts drawn on the server.
    browser.evaluate(f"{FRAME}.querySelector('nav a[href$=\"/history\"]').click()")
    browser.wait_for(f"{FRAME}?.querySelectorAll('svg.chart').length === 3")
    browser.screenshot(ARTIFACTS / "erfnet-plugin-history.png")
