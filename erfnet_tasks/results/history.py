"""History over any date range, and the summary of every CANN version, sized to what a page shows.

- ``points``: one row per run, target and batch in a range, with only the numbers a chart draws
  (mIoU and fps, never the per-class JSON), in one query.
- ``cann_summary``: one SQL aggregate over all runs: per CANN version, target and batch the best,
  median and latest fps and mIoU. Window functions (no ``percentile_cont``) so that PostgreSQL and
  SQLite run the same statement.
- ``findings_between`` and ``runs_between``: the range's findings and runs, one query each.

"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from ..records import CellStatus
from .document import FINDING_FIELDS, format_time
from .models import Accuracy, Finding, Performance, Run
from .queries import run_counts

def span(session: Session) -> tuple[datetime | None, datetime | None]:
    """The start of the first and of the newest run (index-only on runs.started_at)."""
    first, last = session.execute(sa.select(sa.func.min(Run.started_at), sa.func.max(Run.started_at))).one()
    return first, last


def _in_range(stmt, since: datetime | None, until: datetime | None):
    if since is not None:
        stmt = stmt.where(Run.started_at >= since)
    if until is not None:
        stmt = stmt.where(Run.started_at < until)
    return stmt


def _cells_with_miou(acc, batch_size: int | None, *columns):
    """SELECT ``columns`` over every run's perf cells, each with its accuracy row (``acc``) where it has one."""
    stmt = (sa.select(*columns).join(Performance, Performance.run_id == Run.id)
            .outerjoin(acc, sa.and_(acc.run_id == Performance.run_id, acc.target == Performance.target,
                                    acc.batch_size == Performance.batch_size)))
    return stmt if batch_size is None else stmt.where(Performance.batch_size == batch_size)


def points(session: Session, since: datetime | None = None, until: datetime | None = None,
           batch_size: int | None = None) -> list[dict]:
    """Per run, target and batch in [since, until): fps, status and mIoU, oldest run first."""
    acc = sa.orm.aliased(Accuracy)
    stmt = _cells_with_miou(acc, batch_size, Run.id, Run.started_at, Run.cann_version, Performance.target,
                            Performance.batch_size, Performance.throughput_fps, Performance.status, acc.miou)
    started: dict[str, str | None] = {}  # one isoformat per run, not per cell
    out = []
    for run_id, at, cann, target, batch, fps, status, miou in session.execute(_in_range(stmt, since, until)):
        if run_id not in started:
            started[run_id] = format_time(at)
        out.append({"run_id": run_id, "started_at": started[run_id], "cann_version": cann, "target": target,
                    "batch_size": batch, "throughput_fps": fps, "status": status, "miou": miou})
    # Sorted here: the database would sort every cell by locale-aware text; ISO times in UTC sort as text.
    out.sort(key=lambda p: (p["started_at"], p["run_id"], p["target"], p["batch_size"]))
    return out


RECENT_RUNS = 30


def batch_sizes(session: Session) -> list[int]:
    """The batch sizes of the newest runs (a bounded read: the selector offers what the nightlies measure)."""
    recent = sa.select(Run.id).order_by(Run.started_at.desc()).limit(RECENT_RUNS).scalar_subquery()
    return list(session.scalars(sa.select(Performance.batch_size).where(Performance.run_id.in_(recent))
                                .distinct().order_by(Performance.batch_size)))


def runs_between(session: Session, since: datetime | None, until: datetime | None,
                 limit: int) -> tuple[list[dict], bool]:
    """The newest ``limit`` runs in the range, with
    their cell counts, and whether the range holds more."""
    stmt = (sa.select(Run.id, Run.started_at, Run.status, Run.cann_version, Run.host)
            .order_by(Run.started_at.desc(), Run.id.desc()).limit(limit + 1))
    rows = session.execute(_in_range(stmt, since, until)).all()
    counts = run_counts(session, [row.id for row in rows[:limit]])
    return ([{"id": run_id, "started_at": format_time(started), "status": status, "cann_version": cann,
              "host": host, **counts[run_id]} for run_id, started, status, cann, host in rows[:limit]],
            len(rows) > limit)


def findings_between(session: Session, since: datetime | None, until: datetime | None,
                     limit: int = 500) -> list[dict]:
    """The range's regression findings, newest run first, in one query (no query per run)."""
    stmt = (sa.select(Finding, Run.started_at).join(Run, Run.id == Finding.run_id)
            .order_by(Run.started_at.desc(), Finding.run_id.desc(), Finding.rule, Finding.target,
                      Finding.batch_size).limit(limit))
    return [{"run_id": f.run_id, "started_at": format_time(started), **{k: getattr(f, k) for k in FINDING_FIELDS}}
            for f, started in session.execute(_in_range(stmt, since, until))]


def _bytewise(column, dialect: str):
    """``column`` compared byte by byte on PostgreSQL (COLLATE "C"): grouping and ranking need equality,
    not language order, and a locale-aware sort of every cell costs several times more. SQLite
    compares bytes already."""
    return column.collate("C") if dialect == "postgresql" else column


def _nulls_last(column):
    # ``NULLS LAST`` spelled portably: SQLite sorts NULL first, PostgreSQL last.
    return (sa.case((column.is_(None), 1), else_=0), column)


def _ranked(batch_size: int | None, dialect: str):
    """Every measured cell with its rank by fps, by mIoU and by recency within (version, target, batch)."""
    acc = sa.orm.aliased(Accuracy)
    fps = sa.case((Performance.status == CellStatus.OK.value, Performance.throughput_fps))
    group = (_bytewise(Run.cann_version, dialect), _bytewise(Performance.target, dialect), Performance.batch_size)
    rank = sa.func.row_number().over
    columns = (group[0].label("cann"), group[1].label("target"), Performance.batch_size.label("batch"),
               Run.id.label("run_id"), Run.started_at.label("started"), fps.label("fps"), acc.miou.label("miou"),
               rank(partition_by=group, order_by=_nulls_last(fps)).label("fps_rank"),
               sa.func.count(fps).over(partition_by=group).label("fps_n"),
               rank(partition_by=group, order_by=_nulls_last(acc.miou)).label("miou_rank"),
               sa.func.count(acc.miou).over(partition_by=group).label("miou_n"),
               rank(partition_by=group, order_by=(Run.started_at.desc(), Run.id.desc())).label("recent"))
    return _cells_with_miou(acc, batch_size, *columns).subquery()


def _median(r, value: str, rank: str, n: str):
    """The middle value (or the mean of the two middle ones) from a rank and a count: integer division
    of (n+1)/2 and (n+2)/2 means the same in both dialects."""
    middle = sa.or_(r.c[rank] == (r.c[n] + 1) // 2, r.c[rank] == (r.c[n] + 2) // 2)
    return sa.func.avg(sa.case((sa.and_(r.c[value].is_not(None), middle), r.c[value])))


def _postgres_summary(batch_size: int | None):
    """PostgreSQL: ordered-set aggregates in one GROUP BY pass (about twice as fast as three windows)."""
    acc = sa.orm.aliased(Accuracy)
    fps = sa.case((Performance.status == CellStatus.OK.value, Performance.throughput_fps))
    cann, target = Run.cann_version.collate("C"), Performance.target.collate("C")
    newest = Run.started_at.desc()

    def median(value):
        return sa.func.percentile_cont(0.5).within_group(value)

    def latest(value):
        return sa.func.array_agg(postgresql.aggregate_order_by(value, newest), type_=postgresql.ARRAY(value.type))[1]

    columns = (cann, target, Performance.batch_size, sa.func.count(), sa.func.min(Run.started_at),
               sa.func.max(Run.started_at), sa.func.max(fps), median(fps), latest(fps),
               sa.func.max(acc.miou), median(acc.miou), latest(acc.miou), latest(Run.id))
    return _cells_with_miou(acc, batch_size, *columns).group_by(cann, target, Performance.batch_size)


def _portable_summary(batch_size: int | None, dialect: str):
    """SQLite (and any SQL with window functions): ranks from windows, medians and latest from them."""
    r = _ranked(batch_size, dialect)
    latest = r.c.recent == 1
    return (sa.select(r.c.cann, r.c.target, r.c.batch, sa.func.count().label("runs"),
                      sa.func.min(r.c.started).label("first"), sa.func.max(r.c.started).label("last"),
                      sa.func.max(r.c.fps), _median(r, "fps", "fps_rank", "fps_n"),
                      sa.func.max(sa.case((latest, r.c.fps))),
                      sa.func.max(r.c.miou), _median(r, "miou", "miou_rank", "miou_n"),
                      sa.func.max(sa.case((latest, r.c.miou))),
                      sa.func.max(sa.case((latest, r.c.run_id))))
            .group_by(r.c.cann, r.c.target, r.c.batch))


def cann_summary(session: Session, batch_size: int | None = None) -> list[dict]:
    """Per CANN version (in order of its first run), target and batch: best, median and latest fps and
    mIoU over all runs, the number of runs and the first and last run's start. One statement; the
    tests hold both dialects' statements to the same answers."""
    dialect = session.get_bind().dialect.name
    stmt = _postgres_summary(batch_size) if dialect == "postgresql" else _portable_summary(batch_size, dialect)
    rows = [{"cann_version": cann, "target": target, "batch_size": batch, "runs": runs,
             "first_started_at": format_time(first), "last_started_at": format_time(last),
             "fps_best": fps_best, "fps_median": fps_median, "fps_latest": fps_latest,
             "miou_best": miou_best, "miou_median": miou_median, "miou_latest": miou_latest, "latest_run_id": run_id}
            for cann, target, batch, runs, first, last, fps_best, fps_median, fps_latest, miou_best, miou_median,
            miou_latest, run_id in session.execute(stmt)]
    # Ordered here (24 x versions rows, not the runs): PostgreSQL and SQLite collate targets differently.
    first_seen: dict[str | None, str] = {}
    for row in rows:
        key = row["cann_version"]
        first_seen[key] = min(first_seen.get(key, row["first_started_at"]), row["first_started_at"])
    return sorted(rows, key=lambda row: (first_seen[row["cann_version"]], row["cann_version"] or "",
                                         row["target"], row["batch_size"]))
