"""The CANN version history of each NPU host: what the probe saw, and the upgrades it implies.

A host's history is a list of stretches (``HostVersion`` rows, ``seq`` 1, 2, ...): a new stretch starts
when the CANN version, the driver or the chips differ from the host's latest one; otherwise the probe
only moves the latest stretch's ``last_seen_at``. An upgrade event is the boundary between two stretches.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, aliased

from ..errors import BadInput
from . import db
from .document import format_time
from .models import HostVersion

VERSION_FIELDS = ("cann_version", "driver_version", "chips")


def _observed(observed: dict[str, Any]) -> dict[str, Any]:
    chips = observed.get("chips") or []
    if not isinstance(chips, list) or not all(isinstance(c, str) for c in chips):
        raise BadInput(f"chips must be a list of chip names, got {chips!r}")
    return {
        "cann_version": observed.get("cann_version"),
        "driver_version": observed.get("driver_version"),
        "chips": sorted(chips),
    }


def _as_dict(row: HostVersion | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "cann_version": row.cann_version,
        "driver_version": row.driver_version,
        "chips": list(row.chips or []),
        "first_seen_at": format_time(row.first_seen_at),
        "last_seen_at": format_time(row.last_seen_at),
    }


def latest(session: Session, host: str) -> HostVersion | None:
    return session.scalars(
        sa.select(HostVersion).where(HostVersion.host == host).order_by(HostVersion.seq.desc()).limit(1)
    ).first()


def record_observation(
    host: str, observed: dict[str, Any], url: str | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Store what the probe saw on ``host``; ``changed`` is True only when it differs from the last seen.

    The first sight of a host is recorded but is no change: deploying the probe must not start the
    whole matrix on every host. When two probes of one host race to record the same change, the
    unique (host, seq) lets one win; the other reports no change, so the change is announced once.
    """
    if not isinstance(host, str) or not host.strip():
        raise BadInput(f"host must be a non-empty name, got {host!r}")
    current = _observed(observed)
    now = now or dt.datetime.now(dt.UTC)
    url = db.normalize_url(url) if url else db.resolve_url()
    db.upgrade(url)  # a no-op at head; makes a fresh results database usable by the probe alone
    try:
        with db.session_scope(url) as session:
            previous = latest(session, host)
            _refuse_vanished_cann(host, previous, current)
            if previous is not None and all(getattr(previous, k) == current[k] for k in VERSION_FIELDS):
                previous.last_seen_at = now
                return {"host": host, "changed": False, "first_seen": False, "previous": None, "current": current}
            before = _as_dict(previous)
            session.add(
                HostVersion(
                    host=host, seq=(previous.seq + 1) if previous else 1, **current, first_seen_at=now, last_seen_at=now
                )
            )
            session.flush()
    except sa_exc.IntegrityError:
        return {"host": host, "changed": False, "first_seen": False, "previous": None, "current": current}
    return {
        "host": host,
        "changed": before is not None,
        "first_seen": before is None,
        "previous": before,
        "current": current,
    }


def _refuse_vanished_cann(host: str, previous: HostVersion | None, current: dict[str, Any]) -> None:
    # A host that had a CANN version and shows none now is mid-upgrade (the toolkit's files are being
    # replaced) or broken: no run should start against a half-installed toolkit, so this is an error,
    # not a change; the next probe records the version that is there then.
    if previous is not None and previous.cann_version is not None and current["cann_version"] is None:
        raise BadInput(
            f"host {host} had CANN {previous.cann_version} but no CANN version can be read now "
            f"(upgrade in progress, or ASCEND_TOOLKIT_HOME wrong); not recorded"
        )


def upgrade_events(
    session: Session,
    host: str | None = None,
    limit: int = 500,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Each change of a host's CANN version, driver or chips in [since, until), oldest first: time, host,
    old -> new (the newest ``limit`` of them)."""
    old = aliased(HostVersion)
    new = aliased(HostVersion)
    stmt = (
        sa.select(new, old)
        .join(old, sa.and_(old.host == new.host, old.seq == new.seq - 1))
        .order_by(new.first_seen_at.desc(), new.id.desc())
        .limit(max(1, int(limit)))
    )
    if host is not None:
        stmt = stmt.where(new.host == host)
    if since is not None:
        stmt = stmt.where(new.first_seen_at >= since)
    if until is not None:
        stmt = stmt.where(new.first_seen_at < until)
    events = [
        {
            "time": format_time(n.first_seen_at),
            "host": n.host,
            "old_cann_version": o.cann_version,
            "new_cann_version": n.cann_version,
            "old_driver_version": o.driver_version,
            "new_driver_version": n.driver_version,
            "old_chips": list(o.chips or []),
            "new_chips": list(n.chips or []),
        }
        for n, o in session.execute(stmt)
    ]
    return list(reversed(events))


def host_versions(session: Session) -> list[dict[str, Any]]:
    """Every host's current CANN version, driver and chips, and since when (hosts sorted by name)."""
    newest = (
        sa.select(HostVersion.host, sa.func.max(HostVersion.seq).label("seq")).group_by(HostVersion.host).subquery()
    )
    rows = session.scalars(
        sa.select(HostVersion).join(newest, sa.and_(newest.c.host == HostVersion.host, newest.c.seq == HostVersion.seq))
    )
    return sorted(({"host": row.host, **(_as_dict(row) or {})} for row in rows), key=lambda r: r["host"])
