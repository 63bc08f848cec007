"""run_parallel where tasks really run: an ordinary process (the CLI, `airflow dags test`) and a daemonic
process like the Celery prefork child that runs a task on a worker (tests/integration/test_cluster.py runs it in a
real Celery worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from erfnet_tasks.parallel import run_parallel
from tests.helpers.parallel_jobs import fail_on_three as _fail_on_three
from tests.helpers.parallel_jobs import pid_of_worker as _pid_of_worker

REPO = Path(__file__).resolve().parents[2]


def test_ordinary_process_uses_worker_processes_and_keeps_the_order():
    results = list(run_parallel(_pid_of_worker, list(range(16)), 2, False, "t"))
    assert [job for job, _ in results] == list(range(16))
    assert os.getpid() not in {pid for _, pid in results}
    assert len({pid for _, pid in results}) == 2


def test_an_error_in_a_job_reaches_the_caller():
    with pytest.raises(ValueError, match="job 3 is bad"):
        list(run_parallel(_fail_on_three, list(range(8)), 2, False, "t"))


def _children_in_a_daemonic_process(make_process: str) -> str:
    """Run run_parallel inside a daemonic child made by `make_process`; print what it saw."""
    script = textwrap.dedent(f"""
        import logging, os, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
        from erfnet_tasks.parallel import is_daemonic, run_parallel
        from tests.helpers.parallel_jobs import pid_of_worker as _pid_of_worker

        def body(queue):
            me = os.getpid()
            pids = {{pid for _, pid in run_parallel(_pid_of_worker, list(range(12)), 2, False, "t")}}
            queue.put((is_daemonic(), me in pids, len(pids)))

        {make_process}
        proc = ctx.Process(target=body, args=(queue,), daemon=True)
        proc.start()
        print("RESULT", queue.get(timeout=120))
        proc.join()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_daemonic_billiard_process_like_a_celery_prefork_child_has_worker_processes():
    # billiard is what Celery's prefork pool forks its children with; they are daemonic.
    out = _children_in_a_daemonic_process('import billiard; ctx = billiard.get_context("fork"); queue = ctx.Queue()')
    assert "RESULT (True, False, 2)" in out, out
    assert "LOG" not in out, out


def test_daemonic_stdlib_process_has_worker_processes():
    out = _children_in_a_daemonic_process(
        'import multiprocessing; ctx = multiprocessing.get_context("fork"); queue = ctx.Queue()'
    )
    assert "RESULT (True, False, 2)" in out, out


def test_a_process_that_cannot_fork_says_so_once_and_still_computes():
    # The kernel refusing fork (EAGAIN: process limit) is injected at os.fork, the one call it affects.
    script = textwrap.dedent("""
        import errno, logging, os, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
        def refuse(*a, **k):
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        os.fork = refuse
        from erfnet_tasks.parallel import run_parallel
        from tests.helpers.parallel_jobs import square as _square
        print("FIRST", list(run_parallel(_square, [1, 2, 3], 2, False, "t")))
        print("SECOND", list(run_parallel(_square, [4, 5], 2, False, "t")))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FIRST [1, 4, 9]" in proc.stdout and "SECOND [16, 25]" in proc.stdout
    logged = [line for line in proc.stdout.splitlines() if line.startswith("LOG")]
    assert len(logged) == 1, proc.stdout
    assert "cannot start worker processes" in logged[0] and "Resource temporarily unavailable" in logged[0]
