"""``python tool_launcher.py PARENT_PID TOOL [ARGS...]``: toolrun.py's first process in a tool's group.

It runs the tool as its child and exits with the tool's status. Its one job besides: should the task
that started it die (a worker killed with SIGKILL runs no ``finally``), the kernel tells it
(``PR_SET_PDEATHSIG``, Linux) and it kills its whole process group, the tool and whatever the tool
forked, so nothing stays on a device whose lease died with the task. Run as a script by path: it
imports nothing of the package, whatever the tool's environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1
PARENT_GONE = signal.SIGUSR1


def _kill_group(signum: int = 0, frame: FrameType | None = None) -> None:
    os.killpg(0, signal.SIGKILL)  # this process included


def _exit_like(status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed by a signal: end the same way, so the caller sees the tool's own status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def main(argv: list[str]) -> None:
    parent, tool = int(argv[0]), argv[1:]
    signal.signal(PARENT_GONE, _kill_group)
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(PARENT_GONE), 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        _kill_group()
    child = os.fork()
    if child == 0:
        signal.signal(PARENT_GONE, signal.SIG_DFL)
        try:
            os.execv(tool[0], tool)
        except OSError as exc:
            print(f"could not start {tool[0]}: {exc}", flush=True)
            os._exit(127)
    _, status = os.waitpid(child, 0)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
