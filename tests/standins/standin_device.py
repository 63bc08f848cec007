"""TEST DOUBLE. The stand-in host's NPU devices, shared by the stand-in npu-smi, aoe and ais_bench.

Device N is the Nth chip ``npu-smi info`` lists. The chips come from $STANDIN_NPU_CHIP: a comma-separated
list names each device's chip (``Ascend310P3,Ascend310P3`` is a host with two 310P3 cards); a single
name is repeated $STANDIN_NPU_COUNT times (default 1).

A real device shared by two processes gives both of them wrong timings without any error, so the
stand-in detects it: every use of a device holds a non-blocking flock on ``device<N>.busy`` in
$STANDIN_NPU_STATE (one folder per simulated host; default beside $STANDIN_RECORD, named after the
host's name, chips and toolkit) and, when another
process already holds it, records ``"shared": true``. Each use is appended to $STANDIN_RECORD as
``{"tool": "device", "device", "chip", "host", "start", "end", "shared", "pid"}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time


def device_chips() -> list[str]:
    names = [c.strip() for c in os.environ.get("STANDIN_NPU_CHIP", "Ascend310P3").split(",") if c.strip()]
    if len(names) == 1:
        return names * int(os.environ.get("STANDIN_NPU_COUNT", "1"))
    return names


def openable_devices() -> int:
    """Device ids below this open; $STANDIN_NPU_DEVICES overrides the count npu-smi lists."""
    return int(os.environ.get("STANDIN_NPU_DEVICES") or len(device_chips()))


def chip_of(device: int) -> str | None:
    chips = device_chips()
    return chips[device] if 0 <= device < len(chips) else None


def _state_dir() -> str:
    """$STANDIN_NPU_STATE, else a folder per simulated host: simulated hosts on one machine differ in their
    name, chips or toolkit, so those name the folder (two hosts' device 0 are different devices)."""
    record = os.environ.get("STANDIN_RECORD")
    base = os.path.dirname(record) if record else tempfile.gettempdir()
    host = "|".join(
        os.environ.get(k, "")
        for k in (
            "STANDIN_HOST",
            "ERFNET_WORKER_HOSTNAME",
            "STANDIN_NPU_CHIP",
            "STANDIN_NPU_COUNT",
            "ASCEND_TOOLKIT_HOME",
        )
    )
    default = os.path.join(base, "standin-npu-state-" + hashlib.sha256(host.encode()).hexdigest()[:12])
    folder = os.environ.get("STANDIN_NPU_STATE") or default
    os.makedirs(folder, exist_ok=True)
    return folder


@contextlib.contextmanager
def occupy(device: int, tool: str):
    """Use a device for the block; a second concurrent user is detected and recorded as shared."""
    fd = os.open(os.path.join(_state_dir(), f"device{device}.busy"), os.O_RDWR | os.O_CREAT, 0o644)
    start = time.time()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shared = False
        except BlockingIOError:
            shared = True  # someone else is measuring on this device right now
        yield shared
    finally:
        os.close(fd)  # releases the flock
        _record(
            {
                "tool": "device",
                "user": tool,
                "device": device,
                "chip": chip_of(device),
                "host": os.environ.get("STANDIN_HOST") or os.environ.get("ERFNET_WORKER_HOSTNAME", ""),
                "start": start,
                "end": time.time(),
                "shared": shared,
                "pid": os.getpid(),
            }
        )


def _record(entry: dict) -> None:
    record = os.environ.get("STANDIN_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
