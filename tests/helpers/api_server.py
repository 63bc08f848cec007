"""A test's own ``airflow api-server``: waiting for it to answer, and starting one with the plugin, shared
by the browser tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def wait_for_health(server: subprocess.Popen, base: str, log: Path, timeout: float = 180) -> None:
    """Return once ``base``'s health endpoint answers; fail with the log's tail if the server dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"api-server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)


@contextmanager
def plugin_api_server(home: Path, results_url: str, user: str, password: str) -> Iterator[str]:
    """An ``airflow api-server`` on a free port with the project's plugins and no DAGs: its own home and
    SQLite metadata, one SimpleAuthManager admin, the results database at ``results_url``. Yields its
    base URL; stopped on the way out."""
    from erfnet_tasks.deployment import local_airflow_env, without_project_settings

    (home / "dags").mkdir(exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({user: password}))
    env = local_airflow_env(
        home, dags_folder=home / "dags", plugins_folder=REPO / "plugins", inherit=without_project_settings(os.environ)
    )
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": f"erfnet-test-secret-{home.name}",
            "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
            "ERFNET_RESULTS_DB_URL": results_url,
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = home / "api-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(server, base, log_path)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
