"""Host-local exclusive leases on NPU devices: one measurement (inference or AOE tuning) per device.

Device N is the Nth chip ``npu-smi info`` lists. A lease is an ``fcntl.flock`` on
``<ERFNET_DEVICE_LOCK_DIR>/device<N>.lock``: the kernel drops it when the holding process exits, however
it exits (a killed task included), so a dead process never leaves a stale lease behind. The Airflow pool
only admits work; the lease decides which device of the cell's chip it gets on this host.

A task of the DAG waits for a device in its own process only briefly (``Claim.wait_s``): a wait behind an
hour of AOE tuning would hold a pool slot and a worker slot that another chip's work could use, and a
tuning that waits for measurements to get a device first must never hold the slot they need. It raises
``DeviceWait`` instead, and the DAG reschedules the task, which holds no slot until it starts again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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


class DeviceWait(Exception):
    """No device of the chip for this task now: the task gives its pool and worker slots back and asks to be
    started again in ``seconds`` (the DAG turns this into an Airflow reschedule). Not an error."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


@dataclass(frozen=True)
class Claim:
    """How a task asks for a device.

    ``wait_s``: how long it waits for one in its own process before it raises DeviceWait (None: as long as
    it takes, the CLI's way); ``recheck_s``: when it asks to be started again. ``keep_free``: how many other
    devices of the chip must stay free beside the one it takes (asked at each look; a tuning leaves one to
    the run's measurements of the chip); a device kept free that way is never waited for in-process, the
    very wait that held every pool slot while the measurements it gave way to waited for one. ``on_leased``: called with
    the device is held (the cell's live state)."""

    wait_s: float | None = None
    recheck_s: float = 30.0
    keep_free: Callable[[], int] | None = None
    on_leased: Callable[[], None] | None = None


@contextlib.contextmanager
def lease(
    chip: str, *, chips: list[str] | None = None, poll: float = POLL_SECONDS, claim: Claim | None = None
) -> Iterator[int]:
    """Hold a free device of ``chip`` for the block (waiting, and saying so, while all are busy)."""
    claim = claim or Claim()
    candidates = devices_of_chip(chip, chips)
    if not candidates:
        raise InferFailed(f"this host has no {chip} device (npu-smi info lists none)", status="device_open_failed")
    die_with_parent()  # an orphan of a killed worker would hold the device for nobody (lifeline.py)
    started, said = time.monotonic(), None
    while True:
        taken, kept = _take(chip, candidates, claim.keep_free)
        if taken is not None:
            device, fd = taken
            if said is not None:
                log.info("device %d of %s free after %.0fs", device, chip, time.monotonic() - started)
            try:
                if claim.on_leased is not None:
                    claim.on_leased()
                yield device
            finally:
                os.close(fd)  # releases the flock
            return
        why = f"keeping {kept} free for the run's measurements" if kept else "all busy"
        waited = time.monotonic() - started
        if claim.wait_s is not None and (kept or waited >= claim.wait_s):
            raise DeviceWait(
                f"no device of {chip} for this task after {waited:.0f}s ({why}): its slot is given back, "
                f"started again in {claim.recheck_s:.0f}s",
                claim.recheck_s,
            )
        if said is None or time.monotonic() - said >= LOG_EVERY_SECONDS:
            log.info("waiting for a device of %s: %s (devices %s)", chip, why, ",".join(map(str, candidates)))
            said = time.monotonic()
        time.sleep(poll)


def _take(chip: str, candidates: list[int], keep_free: Callable[[], int] | None) -> tuple[tuple[int, int] | None, int]:
    """((device, fd), 0) for a device taken; (None, n) when none is, n > 0 while devices are to be kept free."""
    if keep_free is None:
        for device in candidates:
            fd = _try_lock(device)
            if fd is not None:
                return (device, fd), 0
        return None, 0
    # Counting the free devices and taking one is atomic among the tasks that keep some free (the admission
    # lock), so two tunings that start together never both take the device they meant to leave.
    with _admission(chip):
        spare = keep_free()
        free = [(device, fd) for device in candidates if (fd := _try_lock(device)) is not None]
        for _, fd in free[1:]:
            os.close(fd)
        if free and len(free) - 1 >= spare:
            return free[0], 0
        if free:
            os.close(free[0][1])
        return None, spare


@contextlib.contextmanager
def _admission(chip: str) -> Iterator[None]:
    folder = settings.device_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"admission-{chip}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a look at the devices, never for a tool
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_device(cell: Mapping[str, Any], backend: Backend, claim: Claim | None = None) -> Iterator[str | int | None]:
    """The device a cell's tool runs on, held for the block: a leased NPU device of the cell's chip, or
    the host backend's device (ONNX Runtime and PyTorch share the host; the DAG's pools bound them)."""
    if backend.RUNS_ON == "npu":
        with lease(cell["chip"], claim=claim) as device:
            yield device
    else:
        if claim is not None and claim.on_leased is not None:
            claim.on_leased()
        yield backend.device_for(cell)
