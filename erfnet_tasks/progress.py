"""Each cell's progress, recorded by its own tasks as they go, and what became of a cell whose task died.

A cell's compile and measure tasks mark the step they enter (``step``) and, if the step raises, its
one-line error. The plugin shows those states while the run goes on. When a cell's task fails for good
without handing back a result (its worker killed, a timeout, a crash of ours), the cell's store task
reads the last mark (``fate``) and publishes the cell with what it says: a step that raised is
``task_failed`` (``timed_out`` for a deadline); a step that began and never said another word, or one
that no worker ever began, is ``host_lost``. Marks are best effort: a database that is down while a cell
runs costs its live state, never the measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from .devices import DeviceWait
from .errors import Transient, first_line
from .fleet import queue_for
from .records import CellState, CellStatus, PlannedCell
from .results import db
from .results import progress as stored
from .settings import host_name

log = logging.getLogger(__name__)

# Exception class names that mean a deadline: ours (toolrun), and Airflow's execution_timeout, named
# rather than imported (the library imports no Airflow).
DEADLINE_ERRORS = frozenset({"ToolTimedOut", "AirflowTaskTimeout"})


@dataclass(frozen=True)
class Fate:
    """What a cell that handed back no result is published as."""

    status: CellStatus
    error: str
    host: str | None


def _best_effort(write: Callable[[Session], object], url: str | None) -> None:
    try:
        with db.session_scope(url) as session:
            write(session)
    except Exception as exc:  # the live view loses a state; the cell's own work goes on
        log.warning("cell progress not recorded (%s: %s)", type(exc).__name__, first_line(exc))


def mark(
    run_id: str, cell: PlannedCell, state: CellState, try_number: int | None = None, url: str | None = None
) -> None:
    _best_effort(
        lambda s: stored.mark(
            s, run_id, cell.target.name, cell.batch_size, state, host=host_name(), try_number=try_number
        ),
        url,
    )


@contextmanager
def step(
    run_id: str, cell: PlannedCell, state: CellState, try_number: int | None = None, url: str | None = None
) -> Iterator[None]:
    """Mark the cell as in ``state`` on this host; if the step raises, record its error and re-raise."""
    mark(run_id, cell, state, try_number, url)
    try:
        yield
    except DeviceWait:
        raise  # no device yet: the task is started again, nothing failed
    except BaseException as exc:
        kind, error = type(exc).__name__, first_line(exc)
        _best_effort(
            lambda s: stored.record_error(s, run_id, cell.target.name, cell.batch_size, kind, error[:2000]), url
        )
        raise


def fate(run_id: str, cell: PlannedCell, url: str | None = None) -> Fate:
    """What the cell's last mark says happened to it. Raises Transient while the database is unreachable
    (the store task retries): a cell is never published as lost for want of reading its record."""
    try:
        with db.session_scope(url) as session:
            row = stored.progress_of(session, run_id, cell.target.name, cell.batch_size)
            last = None if row is None else (CellState(row.state), row.host, row.error, row.error_kind)
    except Exception as exc:
        raise Transient(
            f"cannot read the progress of {cell.target.name} batch {cell.batch_size}: {first_line(exc)}"
        ) from exc
    return judge(cell, last)


def judge(cell: PlannedCell, last: tuple[CellState, str | None, str | None, str | None] | None) -> Fate:
    """The verdict on a cell's last mark: (state, host, error, error class) or None for no record."""
    if last is None:
        return Fate(CellStatus.TASK_FAILED, "task_failed: the run has no record of this cell's tasks", None)
    state, host, error, kind = last
    if error is not None:
        status = CellStatus.TIMED_OUT if kind in DEADLINE_ERRORS else CellStatus.TASK_FAILED
        return Fate(status, f"{status.value}: {kind}: {error} (while {state.value} on {host})", host)
    queue = queue_for(cell.target.chip) if cell.target.chip else "the default queue"
    if state in (CellState.QUEUED, CellState.COMPILED):
        waiting = "its compile" if state == CellState.QUEUED else "its measurement"
        return Fate(
            CellStatus.HOST_LOST,
            f"host_lost: no worker of {queue} started {waiting} (every host of the chip lost or busy past the "
            f"queued timeout)",
            host,
        )
    return Fate(
        CellStatus.HOST_LOST,
        f"host_lost: the task stopped while {state.value} on {host} without a word (its worker was lost), "
        f"and no worker of {queue} measured it again",
        host,
    )


def measurements_pending(run_id: str, chip: str, url: str | None = None) -> bool:
    """Whether a measurement of ``chip`` in the run is still to get a device: a plain cell not yet
    measuring, or a tuned one waiting for its measurement (False when unknown: a database that is down
    never holds a tuning back)."""
    try:
        with db.session_scope(url) as session:
            return stored.measurements_pending(session, run_id, chip) > 0
    except Exception as exc:
        log.warning("cannot tell whether measurements are pending (%s: %s)", type(exc).__name__, first_line(exc))
        return False
