"""Run independent jobs (one image each) across worker processes, wherever the task runs.

Tasks run in three kinds of process: the `erfnet` command, `airflow dags test` (ordinary processes), and a
Celery prefork worker, where the task runs in a *daemonic* process (billiard marks its pool children
daemonic, also in the standard library's view). The standard library refuses children there
("daemonic processes are not allowed to have children"), so the pool is billiard's: Celery's own fork of
multiprocessing, which allows them and is installed with Celery anyway. A process that still cannot
start children (fork refused: process limit, memory) says so once in the log and runs the jobs itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)
_warned_no_children = False


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def is_daemonic() -> bool:
    """True in a Celery prefork child (or any daemonic multiprocessing process)."""
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


def _say_once_no_children(reason: str, jobs: int) -> None:
    global _warned_no_children
    if not _warned_no_children:
        _warned_no_children = True
        log.warning(
            "this process cannot start worker processes (%s): running %d job(s) here, one at a time; "
            "later calls in this process do the same without saying so again",
            reason,
            jobs,
        )


def _start_pool(workers: int) -> Any:  # billiard ships no types: its Pool is Any here
    """billiard's fork pool, or None (logged once) when this process cannot have children."""
    try:
        import billiard

        # fork, not spawn/forkserver: those re-import __main__, which breaks `python -` and unguarded
        # scripts (benchmarks, notebooks). Workers touch only numpy/PIL and their own files.
        return billiard.get_context("fork").Pool(processes=workers)
    except (OSError, AssertionError) as exc:
        _say_once_no_children(f"{type(exc).__name__}: {exc}", workers)
        return None


Job = TypeVar("Job")
Result = TypeVar("Result")


def run_parallel(
    func: Callable[[Job], Result], jobs: list[Job], workers: int | None, progress: bool, desc: str
) -> Iterator[Result]:
    """Yield ``func(job)`` for every job, in order, across processes, with a progress bar on stderr."""
    from tqdm import tqdm

    workers = min(workers or default_workers(), max(1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False)
    pool = _start_pool(workers) if workers > 1 else None
    try:
        if pool is None:
            results = map(func, jobs)
        else:
            results = pool.imap(func, jobs, chunksize=max(1, min(8, len(jobs) // (workers * 4))))
        for result in results:
            yield result
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            # terminate, not close: a consumer that stops early (an exception) must not leave workers.
            pool.terminate()
            pool.join()
