"""A task holding a device lease and a tool dies with the worker process that started it apart, in a
process group of its own (as Airflow's supervisor starts every task): erfnet_tasks/lifeline.py."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# The "worker" starts the "task" in a session of its own and waits; the task leases a device, then runs a
# tool that writes its pid and sleeps, as ais_bench would measure.
TASK = textwrap.dedent(
    """
    import sys
    from erfnet_tasks import devices, toolrun
    from erfnet_tasks.deadlines import Deadline

    pid = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
    tool = [sys.executable, "-c", pid]
    with devices.lease("Ascend310P3", chips=["Ascend310P3"]):
        toolrun.run_bounded([*tool, sys.argv[1]], Deadline(600, "a test"))
    """
)
WORKER = textwrap.dedent(
    """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True)
    time.sleep(600)
    """
)


def _gone(pid: int, within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat[stat.rfind(")") + 2] == "Z":
            return True
        time.sleep(0.1)
    return False


def _lease_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_killed_worker_takes_its_tasks_lease_and_tool_with_it(tmp_path, monkeypatch):
    leases = tmp_path / "leases"
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(leases))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path]))
    tool_pid_file = tmp_path / "tool.pid"
    # The worker in a session of its own, as the cluster starts each service: its group is not ours.
    worker = subprocess.Popen([sys.executable, "-c", WORKER, TASK, str(tool_pid_file)], start_new_session=True)
    left: list[int] = []  # what to stop should the test fail
    try:
        end = time.monotonic() + 60
        while not (tool_pid_file.exists() and tool_pid_file.read_text()):
            assert worker.poll() is None and time.monotonic() < end, "the task never started its tool"
            time.sleep(0.1)
        tool = int(tool_pid_file.read_text())
        holder = int((leases / "device0.lock").read_text())  # the lease names the task that holds it
        left += [holder, tool]
        assert not _lease_free(leases / "device0.lock")
        assert os.getpgid(holder) != os.getpgid(worker.pid)  # apart: killing the worker's group spares it

        os.killpg(os.getpgid(worker.pid), signal.SIGKILL)  # the worker's whole group, as a lost host
        worker.wait(10)

        assert _gone(holder), "the orphaned task still runs"
        assert _gone(tool), "its tool still runs"
        assert _lease_free(leases / "device0.lock")
    finally:
        worker.kill()
        worker.wait(10)
        for pid in left:
            if not _gone(pid, 0):
                os.kill(pid, signal.SIGKILL)
