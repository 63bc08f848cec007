"""Airflow's trigger form for the DAG, filled by clicking in headless Chromium.

A real ``airflow api-server`` on the DAG as the dag-processor serializes it (``airflow dags reserialize``),
with the form defaults ``make airflow`` sets. No scheduler: the triggered run stays queued, which is all
this test needs; it reads the run's conf back through the REST API. Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from erfnet_tasks.deployment import DAG_ID, local_airflow_env, without_project_settings
from tests.helpers.api_server import wait_for_health
from tests.helpers.chromium import CHROMIUM, Chromium

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
USER, PASSWORD = "tester", "erfnet-form-test"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(home: Path, data: Path, port: int) -> dict[str, str]:
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    env = local_airflow_env(
        home,
        dags_folder=REPO / "dags",
        plugins_folder=REPO / "plugins",
        inherit=without_project_settings(os.environ),
        data=data,
        api_url=f"http://127.0.0.1:{port}",
    )
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": "erfnet-form-test-secret",
            # The form defaults `make airflow` sets (deploy/local_airflow.py).
            "ERFNET_WEIGHTS": str(data / "demo" / "erfnet_random_untrained.pth"),
            "ERFNET_DATASET_ROOT": str(data / "demo" / "synthetic-cityscapes"),
            "ERFNET_TARGETS": "cpu",
            "ERFNET_BATCH_SIZES": "1,4",
            "ERFNET_REFERENCE_MIOU": "0",
            "ERFNET_RESULTS_DB_URL": f"sqlite:///{home / 'results.sqlite'}",
        }
    )
    return env


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("form_airflow_home")
    data = home / "data"
    port = _free_port()
    env = _environment(home, data, port)
    for argv in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run([str(BIN / "airflow"), *argv], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    log_path = home / "api-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(server, base, log_path)
        yield base, data
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _api(base: str, path: str) -> dict:
    request = urllib.request.Request(
        f"{base}/auth/token",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": USER, "password": PASSWORD}).encode(),
    )
    token = json.load(urllib.request.urlopen(request, timeout=30))["access_token"]
    request = urllib.request.Request(f"{base}/api/v2{path}", headers={"Authorization": f"Bearer {token}"})
    return json.load(urllib.request.urlopen(request, timeout=30))


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make system-test-deps` (tools/ensure-system-packages.sh)")
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


def _buttons(text: str) -> str:
    return f"[...document.querySelectorAll('button')].filter(b => b.textContent.trim() === {json.dumps(text)})"


def _open_trigger_form(browser: Chromium, base: str) -> None:
    browser.call("Page.enable")
    browser.navigate(f"{base}/dags/{DAG_ID}")
    browser.wait_for("!!document.querySelector('input[name=password]')")
    browser.type_into("input[name=username]", USER)
    browser.type_into("input[name=password]", PASSWORD)
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    browser.wait_for(f"location.pathname.startsWith('/dags/{DAG_ID}') && {_buttons('Trigger')}.length > 0")
    browser.click(f"{_buttons('Trigger')}[0]")
    browser.wait_for("!!document.querySelector('#element_targets') && !!document.querySelector('#element_batch_sizes')")


def _pick(browser: Chromium, field: str, labels: list[str]) -> None:
    """Clear a multi-select with its x, then click each entry in the list it opens."""
    select = f"document.querySelector('#element_{field}')"
    browser.click(f"{select}.querySelector('[aria-label=\"Clear selected options\"]')")
    browser.wait_for(f"{select}.querySelectorAll('[aria-label^=Remove]').length === 0", 10)
    for label in labels:
        browser.click(f"{select}.querySelector('input')")
        option = (
            f"[...document.querySelectorAll('[role=option]')].find(o => o.textContent.trim() === {json.dumps(label)})"
        )
        browser.wait_for(f"!!{option}", 10)
        browser.click(option)


def _chips(browser: Chromium, field: str) -> list[str]:
    return browser.evaluate(
        f"[...document.querySelectorAll('#element_{field} [aria-label^=Remove]')]"
        ".map(e => e.getAttribute('aria-label').replace(/^Remove /, ''))"
    )


def test_trigger_form_fills_by_clicking_and_the_run_gets_exactly_that_conf(airflow_ui, browser):
    base, data = airflow_ui
    ARTIFACTS.mkdir(exist_ok=True)
    _open_trigger_form(browser, base)
    assert _chips(browser, "targets") == ["cpu (onnxruntime on cpu)"] and _chips(browser, "batch_sizes") == ["1", "4"]
    browser.screenshot(ARTIFACTS / "trigger-form-defaults.png")

    _pick(browser, "targets", ["torch-cpu (torch on cpu)", "cpu (onnxruntime on cpu)"])
    _pick(browser, "batch_sizes", ["2", "8"])
    assert _chips(browser, "targets") == ["torch-cpu (torch on cpu)", "cpu (onnxruntime on cpu)"]
    assert _chips(browser, "batch_sizes") == ["2", "8"]
    browser.click("document.getElementById('switch:element_force:control')")
    browser.screenshot(ARTIFACTS / "trigger-form-picked.png")

    browser.click(f"{_buttons('Trigger')}.pop()")
    browser.wait_for(f"location.pathname.startsWith('/dags/{DAG_ID}/runs/')")
    run_id = browser.evaluate("decodeURIComponent(location.pathname.split('/runs/')[1])")
    conf = _api(base, f"/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id)}")["conf"]
    assert conf == {
        "weights": str(data / "demo" / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "demo" / "synthetic-cityscapes"),
        "targets": ["torch-cpu", "cpu"],
        "batch_sizes": ["2", "8"],
        "aoe": False,
        "image_limit": 0,
        "reference_miou": 0,
        "tolerance": 1,
        "force": True,
        "keep_outputs": False,
        "labels_on_device": False,
    }
    # The library, the source of truth, reads the form's strings as the batch sizes they name.
    from erfnet_tasks.params import RUN_PARAMS

    batch_sizes = next(p for p in RUN_PARAMS if p.name == "batch_sizes")
    assert batch_sizes.check("batch_sizes", conf["batch_sizes"], ()) == [2, 8]


def test_an_emptied_required_field_shows_a_message_and_blocks_the_trigger(airflow_ui, browser):
    base, _ = airflow_ui
    _open_trigger_form(browser, base)
    runs_before = _api(base, f"/dags/{DAG_ID}/dagRuns")["total_entries"]
    browser.click("document.querySelector('#element_weights')")
    browser.evaluate("document.querySelector('#element_weights').select()")
    for kind in ("keyDown", "keyUp"):  # a real Backspace over the selected path
        browser.call("Input.dispatchKeyEvent", type=kind, key="Backspace", code="Backspace", windowsVirtualKeyCode=8)
    field = "document.querySelector('#element_weights').closest('[role=group]').textContent"
    browser.wait_for(f"{field}.includes('This field is required')", 10)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "trigger-form-invalid.png")
    assert browser.evaluate(f"{_buttons('Trigger')}.pop().disabled") is True
    assert _api(base, f"/dags/{DAG_ID}/dagRuns")["total_entries"] == runs_before
