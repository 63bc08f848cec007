"""Waiting for a test's own ``airflow api-server`` to answer, shared by the browser tests."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


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
