"""What this host offers: CANN version, NPU chips, driver, and which backends can run.

One description serves ``erfnet environment`` and the DAG's ``resolve_environment``. It never raises:
what cannot be found is None (or []) with the reason in ``notes``, so an ``npu-smi`` that fails on a
host never aborts a run that only has host targets.
"""

from __future__ import annotations

import shutil
from typing import Any

from ..errors import ErfnetError
from . import all_backends


def describe_toolchain() -> dict[str, Any]:
    """``{"cann_version", "chips", "driver_version", "atc", "notes"}`` of this host (``atc``: on PATH)."""
    from . import ascend

    notes = []
    try:
        cann = ascend.detect_cann_version()
    except ErfnetError as exc:
        cann = None
        notes.append(str(exc))
    try:
        chips = ascend.detect_chips()
        driver = ascend.detect_driver_version()
    except ErfnetError as exc:
        chips, driver = [], None
        notes.append(str(exc))
    return {
        "cann_version": cann,
        "chips": chips,
        "driver_version": driver,
        "atc": shutil.which("atc") is not None,
        "notes": notes,
    }


def describe_environment() -> dict[str, Any]:
    """``describe_toolchain()`` plus ``"backends": {name: {"available", "version"}}`` (for the CLI)."""
    host = describe_toolchain()
    backends = {}
    for backend in all_backends():
        usable = backend.available()
        backends[backend.NAME] = {"available": usable, "version": backend.version() if usable else None}
    return {
        "cann_version": host["cann_version"],
        "chips": host["chips"],
        "driver_version": host["driver_version"],
        "backends": backends,
        "notes": host["notes"],
    }


def format_environment(env: dict[str, Any]) -> str:
    lines = [
        f"CANN version:   {env['cann_version'] or 'not found'}",
        f"NPU chips:      {', '.join(env['chips']) or 'none'}",
        f"driver version: {env['driver_version'] or 'not found'}",
        "backends:",
    ]
    for name, info in env["backends"].items():
        state = f"available, version {info['version']}" if info["available"] else "not available"
        lines.append(f"  {name:<12} {state}")
    lines += [f"note: {note}" for note in env["notes"]]
    return "\n".join(lines)
