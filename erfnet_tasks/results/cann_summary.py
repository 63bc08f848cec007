"""The summary of every CANN version: per version, target and batch the best, median and latest fps and
mIoU over all runs, the number of runs, the first and last run.

Computed by one SQL aggregate, but not per page view: at five years of nightlies the aggregate reads
every cell (43,800) and costs more than a page may. Every write of a run (``publish.replace_run``)
recomputes only the rows of the CANN versions that run touches (its old and its new one: about a
month of runs each), in the same transaction, so the table always equals the aggregate over all runs,
and a page reads versions x cells rows. ``rebuild`` recomputes all of it (``db.upgrade`` runs it when a
database reaches the revision that adds the table).

A running run is left out until it closes: its cells so far are not a result yet (a night's first
plain cells are not its best, and its median is not that of the night). Its closing publish
(``replace_run``) recomputes its version with it.

Two writers of the same version serialise on a lock named after the version (an advisory lock on
PostgreSQL; SQLite's database write lock is held already), so neither computes without the other's run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..records import CellStatus, RunStatus
from .document import format_time
from .models import Accuracy, CannSummary, Performance, Run

COLUMNS = (
    "cann_version",
    "target",
    "batch_size",
    "runs",
    "first_started_at",
    "last_started_at",
    "fps_best",
    "fps_median",
    "fps_latest",
    "miou_best",
    "miou_median",
    "miou_latest",
    "latest_run_id",
)


def rows(session: Session, batch_size: int | None = None) -> list[dict[str, Any]]:
    """The summary, versions in order of their first run, then target and batch."""
    stmt = sa.select(*(getattr(CannSummary, name) for name in COLUMNS))
    if batch_size is not None:
        stmt = stmt.where(CannSummary.batch_size == batch_size)
    return _ordered([dict(zip(COLUMNS, row, strict=True)) for row in session.execute(stmt)])


def computed(session: Session, batch_size: int | None = None) -> list[dict[str, Any]]:
    """The same rows straight from the aggregate over every run (what the table must equal)."""
    stmt = _aggregate(session.get_bind().dialect.name, batch_size=batch_size)
    return _ordered([dict(zip(COLUMNS, row, strict=True)) for row in session.execute(stmt)])


def refresh(session: Session, versions: Iterable[str | None]) -> None:
    """Recompute the rows of ``versions`` from the runs as they are now in this transaction."""
    dialect = session.get_bind().dialect.name
    for version in sorted(set(versions), key=lambda v: (v is not None, v or "")):  # one lock order for all
        if dialect == "postgresql":
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(version))))
        session.execute(sa.delete(CannSummary).where(CannSummary.cann_version.is_not_distinct_from(version)))
        session.execute(sa.insert(CannSummary).from_select(COLUMNS, _aggregate(dialect, version)))


def rebuild(session: Session) -> None:
    """Recompute the whole table."""
    session.execute(sa.delete(CannSummary))
    session.execute(sa.insert(CannSummary).from_select(COLUMNS, _aggregate(session.get_bind().dialect.name)))


_ALL = object()


def _aggregate(dialect: str, version: object = _ALL, batch_size: int | None = None) -> sa.Select[Any]:
    """The aggregate over every closed run's cells, or only those of one CANN version or batch size."""
    filters: list[ColumnElement[bool]] = [Run.status != RunStatus.RUNNING.value]
    if version is not _ALL:
        filters.append(Run.cann_version.is_not_distinct_from(version))
    if batch_size is not None:
        filters.append(Performance.batch_size == batch_size)
    return _postgres_summary(filters) if dialect == "postgresql" else _portable_summary(filters, dialect)


def _lock_key(version: str | None) -> int:
    digest = hashlib.sha256(f"erfnet cann summary {version!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _ordered(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions in order of their first run (ties by name), then target and batch. Ordered here, on
    versions x cells rows: PostgreSQL and SQLite collate targets differently."""
    first_seen: dict[str | None, str] = {}
    for row in found:
        for name in ("first_started_at", "last_started_at"):
            row[name] = format_time(row[name])
        key = row["cann_version"]
        first_seen[key] = min(first_seen.get(key, row["first_started_at"]), row["first_started_at"])
    return sorted(
        found,
        key=lambda row: (first_seen[row["cann_version"]], row["cann_version"] or "", row["target"], row["batch_size"]),
    )


def cells_with_miou(acc: Any, filters: list[ColumnElement[bool]], *columns: Any) -> sa.Select[Any]:
    """SELECT ``columns`` over the runs' perf cells that pass ``filters``, each with its accuracy row
    (``acc``) where it has one."""
    return (
        sa.select(*columns)
        .join(Performance, Performance.run_id == Run.id)
        .outerjoin(
            acc,
            sa.and_(
                acc.run_id == Performance.run_id,
                acc.target == Performance.target,
                acc.batch_size == Performance.batch_size,
            ),
        )
        .where(*filters)
    )


def _ok_fps() -> ColumnElement[float]:
    return sa.case((Performance.status == CellStatus.OK.value, Performance.throughput_fps))


def _bytewise(column: Any, dialect: str) -> Any:
    """``column`` compared byte by byte on PostgreSQL (COLLATE "C"): grouping and ranking need equality,
    not language order, and a locale-aware sort of every cell costs several times more. SQLite
    compares bytes already."""
    return column.collate("C") if dialect == "postgresql" else column


def _nulls_last(column: Any) -> tuple[ColumnElement[int], Any]:
    # ``NULLS LAST`` spelled portably: SQLite sorts NULL first, PostgreSQL last.
    return (sa.case((column.is_(None), 1), else_=0), column)


def _postgres_summary(filters: list[ColumnElement[bool]]) -> sa.Select[Any]:
    """PostgreSQL: ordered-set aggregates in one GROUP BY pass (about twice as fast as three windows)."""
    acc = sa.orm.aliased(Accuracy)
    fps = _ok_fps()
    cann, target = Run.cann_version.collate("C"), Performance.target.collate("C")
    newest = Run.started_at.desc()

    def median(value: Any) -> ColumnElement[Any]:
        return sa.func.percentile_cont(0.5).within_group(value)

    def latest(value: Any) -> ColumnElement[Any]:
        return sa.func.array_agg(postgresql.aggregate_order_by(value, newest), type_=postgresql.ARRAY(value.type))[1]

    columns = (
        cann,
        target,
        Performance.batch_size,
        sa.func.count(),
        sa.func.min(Run.started_at),
        sa.func.max(Run.started_at),
        sa.func.max(fps),
        median(fps),
        latest(fps),
        sa.func.max(acc.miou),
        median(acc.miou),
        latest(acc.miou),
        latest(Run.id),
    )
    return cells_with_miou(acc, filters, *columns).group_by(cann, target, Performance.batch_size)


def _portable_summary(filters: list[ColumnElement[bool]], dialect: str) -> sa.Select[Any]:
    """SQLite (and any SQL with window functions): ranks from windows, medians and latest from them."""
    r = _ranked(filters, dialect)
    latest = r.c.recent == 1
    return sa.select(
        r.c.cann,
        r.c.target,
        r.c.batch,
        sa.func.count().label("runs"),
        sa.func.min(r.c.started).label("first"),
        sa.func.max(r.c.started).label("last"),
        sa.func.max(r.c.fps),
        _median(r, "fps", "fps_rank", "fps_n"),
        sa.func.max(sa.case((latest, r.c.fps))),
        sa.func.max(r.c.miou),
        _median(r, "miou", "miou_rank", "miou_n"),
        sa.func.max(sa.case((latest, r.c.miou))),
        sa.func.max(sa.case((latest, r.c.run_id))),
    ).group_by(r.c.cann, r.c.target, r.c.batch)


def _ranked(filters: list[ColumnElement[bool]], dialect: str) -> sa.Subquery:
    """Every measured cell with its rank by fps, by mIoU and by recency within (version, target, batch)."""
    acc = sa.orm.aliased(Accuracy)
    fps = _ok_fps()
    group = (_bytewise(Run.cann_version, dialect), _bytewise(Performance.target, dialect), Performance.batch_size)
    rank = sa.func.row_number().over
    columns = (
        group[0].label("cann"),
        group[1].label("target"),
        Performance.batch_size.label("batch"),
        Run.id.label("run_id"),
        Run.started_at.label("started"),
        fps.label("fps"),
        acc.miou.label("miou"),
        rank(partition_by=group, order_by=_nulls_last(fps)).label("fps_rank"),
        sa.func.count(fps).over(partition_by=group).label("fps_n"),
        rank(partition_by=group, order_by=_nulls_last(acc.miou)).label("miou_rank"),
        sa.func.count(acc.miou).over(partition_by=group).label("miou_n"),
        rank(partition_by=group, order_by=(Run.started_at.desc(), Run.id.desc())).label("recent"),
    )
    return cells_with_miou(acc, filters, *columns).subquery()


def _median(r: sa.Subquery, value: str, rank: str, n: str) -> ColumnElement[Any]:
    """The middle value (or the mean of the two middle ones) from a rank and a count: integer division
    of (n+1)/2 and (n+2)/2 means the same in both dialects."""
    middle = sa.or_(r.c[rank] == (r.c[n] + 1) // 2, r.c[rank] == (r.c[n] + 2) // 2)
    return sa.func.avg(sa.case((sa.and_(r.c[value].is_not(None), middle), r.c[value])))
