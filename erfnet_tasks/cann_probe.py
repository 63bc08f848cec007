"""The CANN version probe: what this NPU host runs now, recorded in its version history.

Run every few minutes on each NPU queue (dags/erfnet_cann_probe.py). When the CANN version, driver or
chips differ from the last ones seen on this host, the probe's task announces it as an event of the
Asset below, and the regression DAG, scheduled on "02:00 or that Asset", runs within minutes.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from .backends import ascend
from .errors import ErfnetError
from .results import hosts

log = logging.getLogger(__name__)

# The Asset the probe updates and the regression DAG is scheduled on (names only: no Airflow here).
ASSET_NAME = "erfnet_cann_version"
ASSET_URI = "erfnet://hosts/cann-version"


def observe() -> dict[str, Any]:
    """This host's CANN version (None without a toolkit), driver version and chips."""
    try:
        cann = ascend.detect_cann_version()
    except ErfnetError:
        cann = None
    return {"cann_version": cann, "driver_version": ascend.detect_driver_version(), "chips": ascend.detect_chips()}


def probe(url: str | None = None, host: str | None = None) -> dict[str, Any]:
    """Observe this host and record it; the result says whether anything changed since the last probe."""
    host = host or socket.gethostname()
    result = hosts.record_observation(host, observe(), url)
    if result["changed"]:
        log.info("CANN probe: %s", describe_change(result))
    return result


def describe_change(result: dict[str, Any]) -> str:
    """One line for the task log and the Asset event: host, old -> new."""
    old, new = result.get("previous") or {}, result["current"]
    parts = [
        f"{label} {old.get(key)} -> {new.get(key)}"
        for key, label in (("cann_version", "CANN"), ("driver_version", "driver"), ("chips", "chips"))
        if old.get(key) != new.get(key)
    ]
    return f"{result['host']}: " + ("; ".join(parts) if parts else "first seen")
