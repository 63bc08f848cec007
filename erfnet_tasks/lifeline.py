"""A task on a device dies with the worker process that runs it.

Airflow's task supervisor (in each Celery worker) starts every task in a process group of its own, so a
worker killed with its whole process group (a host lost, the chaos test, an OOM kill of the group) leaves
its tasks running, orphaned: still holding their device leases and their tools, measuring for nobody (the
result dies with the supervisor) and in the way of the cell's retry on the same host once it is back. So
before a task takes a device or starts a tool it asks the kernel to SIGKILL it when its parent (the
supervisor) dies (``PR_SET_PDEATHSIG``, Linux): its leases, flocks, go with it, and its tool's launcher
(tool_launcher.py) kills the tool's group in turn. Elsewhere (no prctl), or run by hand, nothing changes
but that a process whose parent dies goes with it.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies; at once if the parent is already gone."""
    parent = os.getppid()
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is None:  # not Linux: no such request
        return
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
