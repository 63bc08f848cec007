"""Host-local exclusive leases on NPU devices: one measurement (inference or AOE tuning) per device.

Device N is the Nth chip ``npu-smi info`` lists. A lease is an ``fcntl.flock`` on
``<ERFNET_DEVICE_LOCK_DIR>/device<N>.lock``: the kernel drops it when the holding process exits, however
it exits (a killed task included), so a dead process never leaves a stale lease behind. The Airflow pool
only admits work; the lease decides which device of the cell's chip it gets on this host.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import settings
from .errors import InferFailed
from .lifeline import die_with_parent

if TYPE_CHECKING:
    from .backends import Backend

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
LOG_EVERY_SECONDS = 60.0


def devices_of_chip(chip: str, chips: list[str] | None = None) -> list[int]:
    """The ids of this host's devices of ``chip``, from npu-smi's device-to-chip map."""
    if chips is None:
        from .backends.ascend import detect_chips

        chips = detect_chips()
    return [i for i, c in enumerate(chips) if c == chip]


def _try_lock(device: int) -> int | None:
    folder = settings.device_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"device{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking; the flock decides
    return fd


@contextlib.contextmanager
def lease(chip: str, *, chips: list[str] | None = None, poll: float = POLL_SECONDS) -> Iterator[int]:
    """Hold a free device of ``chip`` for the block (waiting, and saying so, while all are busy)."""
    candidates = devices_of_chip(chip, chips)
    if not candidates:
        raise InferFailed(f"this host has no {chip} device (npu-smi info lists none)", status="device_open_failed")
    die_with_parent()  # an orphan of a killed worker would hold the device for nobody (lifeline.py)
    started, said = time.monotonic(), None
    while True:
        for device in candidates:
            fd = _try_lock(device)
            if fd is not None:
                if said is not None:
                    log.info("device %d of %s free after %.0fs", device, chip, time.monotonic() - started)
                try:
                    yield device
                finally:
                    os.close(fd)  # releases the flock
                return
        if said is None or time.monotonic() - said >= LOG_EVERY_SECONDS:
            log.info("waiting for a device of %s: all busy (devices %s)", chip, ",".join(map(str, candidates)))
            said = time.monotonic()
        time.sleep(poll)


@contextlib.contextmanager
def hold_device(cell: Mapping[str, Any], backend: Backend) -> Iterator[str | int | None]:
    """The device a cell's tool runs on, held for the block: a leased NPU device of the cell's chip, or
    the host backend's device (ONNX Runtime and PyTorch share the host; the DAG's pools bound them)."""
    if backend.RUNS_ON == "npu":
        with lease(cell["chip"]) as device:
            yield device
    else:
        yield backend.device_for(cell)
