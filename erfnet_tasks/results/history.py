"""History over any date range, and the summary of every CANN version, sized to what a page shows.

- ``points``: one row per run, target and batch in a range, with only the numbers a chart draws
  (mIoU and fps, never the per-class JSON), in one query; ``points_page`` the same a page of runs at
  a time (the JSON API: five years of every batch is 44,000 points, 9 MB).
- ``cann_summary``: per CANN version, target and batch the best, median and latest fps and mIoU over
  all runs, read from the table that ``cann_summary.refresh`` keeps (module ``cann_summary``).
- ``findings_between`` and ``runs_between``: the range's findings and runs, one query each.

A running run (records.RunStatus.RUNNING) is listed with its runs, its cells counted ``stored of
planned``, and its findings so far are shown; its points are not charted, nor in the CANN summary, until
it closes: a night half measured is not a night's result.

"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import BadInput
from ..records import RunStatus
from .cann_summary import cells_with_miou
from .cann_summary import rows as summary_rows
from .document import FINDING_FIELDS, format_time, validate_run_id
from .models import Accuracy, Finding, Performance, Run
from .queries import run_counts

AnySelect = TypeVar("AnySelect", bound=sa.Select[*tuple[Any, ...]])


def span(session: Session) -> tuple[datetime | None, datetime | None]:
    """The start of the first and of the newest run (index-only on runs.started_at)."""
    first, last = session.execute(sa.select(sa.func.min(Run.started_at), sa.func.max(Run.started_at))).one()
    return first, last


def _closed(stmt: AnySelect) -> AnySelect:
    """Only the runs that have closed (complete, incomplete, failed): what the charts draw."""
    return stmt.where(Run.status != RunStatus.RUNNING.value)


def _in_range(stmt: AnySelect, since: datetime | None, until: datetime | None) -> AnySelect:
    if since is not None:
        stmt = stmt.where(Run.started_at >= since)
    if until is not None:
        stmt = stmt.where(Run.started_at < until)
    return stmt


def points(
    session: Session, since: datetime | None = None, until: datetime | None = None, batch_size: int | None = None
) -> list[dict[str, Any]]:
    """Per closed run, target and batch in [since, until): fps, status and mIoU, oldest run first."""
    return _points(session, lambda stmt: _closed(_in_range(stmt, since, until)), batch_size)


def points_page(
    session: Session,
    since: datetime | None,
    until: datetime | None,
    batch_size: int | None,
    runs: int,
    after: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The points of the oldest ``runs`` closed runs of the range that started after run ``after`` (a
    keyset on start time and id, so a page never shifts when newer runs arrive), and the id to pass
    as ``after`` for the next page (None on the last page)."""
    stmt = _closed(_in_range(sa.select(Run.id).order_by(Run.started_at, Run.id).limit(runs + 1), since, until))
    if after is not None:
        validate_run_id(after)
        edge = session.get(Run, after)
        if edge is None:
            raise BadInput(f"no run {after!r} in the results database (after= takes the next page's run id)")
        stmt = stmt.where(
            sa.or_(Run.started_at > edge.started_at, sa.and_(Run.started_at == edge.started_at, Run.id > edge.id))
        )
    ids = list(session.scalars(stmt))
    page = ids[:runs]
    found = _points(session, lambda cells: cells.where(Run.id.in_(page)), batch_size) if page else []
    return found, (page[-1] if len(ids) > runs else None)


def _points(
    session: Session, narrow: Callable[[sa.Select[Any]], sa.Select[Any]], batch_size: int | None
) -> list[dict[str, Any]]:
    acc = sa.orm.aliased(Accuracy)
    filters = [] if batch_size is None else [Performance.batch_size == batch_size]
    stmt = cells_with_miou(
        acc,
        filters,
        Run.id,
        Run.started_at,
        Run.cann_version,
        Performance.target,
        Performance.batch_size,
        Performance.throughput_fps,
        Performance.status,
        acc.miou,
    )
    started: dict[str, str | None] = {}  # one isoformat per run, not per cell
    out = []
    for run_id, at, cann, target, batch, fps, status, miou in session.execute(narrow(stmt)):
        if run_id not in started:
            started[run_id] = format_time(at)
        out.append(
            {
                "run_id": run_id,
                "started_at": started[run_id],
                "cann_version": cann,
                "target": target,
                "batch_size": batch,
                "throughput_fps": fps,
                "status": status,
                "miou": miou,
            }
        )
    # Sorted here: the database would sort every cell by locale-aware text; ISO times in UTC sort as text.
    out.sort(key=lambda p: (p["started_at"], p["run_id"], p["target"], p["batch_size"]))
    return out


RECENT_RUNS = 30


def batch_sizes(session: Session) -> list[int]:
    """The batch sizes of the newest runs (a bounded read: the selector offers what the nightlies measure)."""
    recent = sa.select(Run.id).order_by(Run.started_at.desc()).limit(RECENT_RUNS).scalar_subquery()
    return list(
        session.scalars(
            sa.select(Performance.batch_size)
            .where(Performance.run_id.in_(recent))
            .distinct()
            .order_by(Performance.batch_size)
        )
    )


def runs_between(
    session: Session, since: datetime | None, until: datetime | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The newest ``limit`` runs in the range, with their cell counts (a running run's planned cells
    too), and whether the range holds more."""
    stmt = (
        sa.select(Run.id, Run.started_at, Run.status, Run.cann_version, Run.host)
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(limit + 1)
    )
    rows = session.execute(_in_range(stmt, since, until)).all()
    shown = rows[:limit]
    running = [row.id for row in shown if row.status == RunStatus.RUNNING]
    counts = run_counts(session, [row.id for row in shown], running)
    return (
        [
            {
                "id": run_id,
                "started_at": format_time(started),
                "status": status,
                "cann_version": cann,
                "host": host,
                **counts[run_id],
            }
            for run_id, started, status, cann, host in shown
        ],
        len(rows) > limit,
    )


def findings_between(
    session: Session, since: datetime | None, until: datetime | None, limit: int = 500
) -> list[dict[str, Any]]:
    """The range's regression findings, newest run first, in one query (no query per run)."""
    stmt = (
        sa.select(Finding, Run.started_at)
        .join(Run, Run.id == Finding.run_id)
        .order_by(Run.started_at.desc(), Finding.run_id.desc(), Finding.rule, Finding.target, Finding.batch_size)
        .limit(limit)
    )
    return [
        {"run_id": f.run_id, "started_at": format_time(started), **{k: getattr(f, k) for k in FINDING_FIELDS}}
        for f, started in session.execute(_in_range(stmt, since, until))
    ]


def cann_summary(session: Session, batch_size: int | None = None) -> list[dict[str, Any]]:
    """Per CANN version, target and batch over all runs: best, median and latest fps and mIoU
    (the summary table kept up to date by every publish: a read of versions x cells rows)."""
    return summary_rows(session, batch_size)
