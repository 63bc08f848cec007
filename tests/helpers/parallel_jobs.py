"""Jobs for run_parallel's tests, in a module the test's subprocesses can import by name."""

from __future__ import annotations

import os
import time


def pid_of_worker(job: int) -> tuple[int, int]:
    time.sleep(0.05)  # long enough that every worker gets a share of the jobs
    return job, os.getpid()


def square(job: int) -> int:
    return job * job


def fail_on_three(job: int) -> int:
    if job == 3:
        raise ValueError("job 3 is bad")
    return job
