"""What this host offers: CANN version, NPU chips, driver, and which backends can run (``erfnet environment``)."""

from __future__ import annotations

from ..errors import ErfnetError
from . import BACKEND_MODULES, get_backend


def describe_environment() -> dict:
    """``{"cann_version", "chips", "driver_version", "backends": {name: {"available", "version"}}, "notes"}``;
    what cannot be found is None (or []) with the reason in ``notes``, never an exception."""
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
    backends = {}
    for name in dict.fromkeys(BACKEND_MODULES.values()):  # aliases share a module: list each once
        module = get_backend(name)
        usable = module.available()
        backends[name] = {"available": usable, "version": module.version() if usable else None}
    return {"cann_version": cann, "chips": chips, "driver_version": driver, "backends": backends, "notes": notes}


def format_environment(env: dict) -> str:
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
