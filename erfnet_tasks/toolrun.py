"""Run a device tool (atc, AOE, ais_bench) under its deadline, in a process group of its own.

The tool starts in a new session, so its process group holds it and every process it starts, and none
of ours. At the deadline the whole group gets SIGTERM, then SIGKILL after ``KILL_GRACE_S``: a hung
ais_bench and the helpers it forked are all gone before the caller releases the device lease. The same
happens when the caller itself is interrupted (Airflow's execution_timeout, a signal). And should the task
itself be killed with SIGKILL (its worker lost), tool_launcher.py, the group's first process, is told by
the kernel and kills the group: no tool or helper of it stays on a device whose lease died with the task.
The task itself dies with its worker (lifeline.py), which Airflow starts it apart from.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .deadlines import Deadline
from .errors import BadInput, ToolTimedOut
from .lifeline import die_with_parent

KILL_GRACE_S = 10.0  # SIGTERM to SIGKILL: time for a tool to close its device context
REAP_WAIT_S = 5.0  # after SIGKILL: the kernel ends the group at once, this only bounds the wait
_POLL_S = 0.05
LAUNCHER = Path(__file__).with_name("tool_launcher.py")  # kills the group should the task die (its docstring)


def _launch_argv(argv: list[str]) -> list[str]:
    path = shutil.which(argv[0])
    if path is None:
        raise BadInput(f"could not start {argv[0]}: not found")
    return [sys.executable, str(LAUNCHER), str(os.getpid()), path, *argv[1:]]


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, sig)


def _wait_group(proc: subprocess.Popen[str], seconds: float) -> bool:
    """Whether the group emptied within ``seconds`` (the leader is reaped on the way)."""
    end = time.monotonic() + seconds
    while True:
        proc.poll()
        if not group_members(proc.pid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(_POLL_S)


def stop_group(proc: subprocess.Popen[str], grace: float | None = None) -> str:
    """SIGTERM the tool's group, SIGKILL what is left after the grace; returns the output it wrote."""
    _signal_group(proc.pid, signal.SIGTERM)
    if not _wait_group(proc, KILL_GRACE_S if grace is None else grace):
        _signal_group(proc.pid, signal.SIGKILL)
        _wait_group(proc, REAP_WAIT_S)
    try:
        output, _ = proc.communicate(timeout=REAP_WAIT_S)
    except subprocess.TimeoutExpired:  # a process outside the group holds the pipe: stop reading it
        proc.kill()
        output = ""
    return output or ""


def run_bounded(
    argv: list[str],
    deadline: Deadline,
    *,
    env: Mapping[str, str] | None = None,
    grace: float | None = None,
    tool: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (stdout and stderr together) and return its output, or raise ToolTimedOut once its
    whole process group is stopped at the deadline. ``tool`` names it in messages (default: argv[0]'s name)."""
    tool = tool or Path(argv[0]).name
    die_with_parent()  # so that the launcher, in turn, stops the tool should our worker be killed (lifeline.py)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            _launch_argv(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise BadInput(f"could not start {argv[0]}: {exc}") from exc
    try:
        output, _ = proc.communicate(timeout=deadline.seconds)
    except subprocess.TimeoutExpired as exc:
        output = stop_group(proc, grace)
        elapsed = time.monotonic() - started
        raise ToolTimedOut(
            f"{tool} timed out: stopped after {elapsed:.0f} s, past its deadline of {deadline.seconds:g} s "
            f"({deadline.basis})",
            tool=tool,
            deadline_s=deadline.seconds,
            elapsed_s=elapsed,
            images=deadline.images,
            output=output,
        ) from exc
    except BaseException:  # interrupted (execution_timeout, a signal): the tool must not outlive us
        stop_group(proc, grace)
        raise
    if group_members(proc.pid):  # the tool exited but left helpers behind: they hold nothing of ours
        _signal_group(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, output or "", None)
