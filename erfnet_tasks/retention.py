"""Retention: old run folders and compile-cache entries unused for a while are removed (`erfnet runs prune`,
the daily maintenance DAG).

It never removes the latest complete run's folder for each target, a cache entry that such a run used, or
a database row (prune only reads the database). A dry run and the real prune share one plan, so the dry
run lists exactly what the real one removes. Without the database the plan cannot know what is protected:
prune refuses rather than guess.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
DEFAULT_OLDER_THAN = "30d"


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``12h`` or ``90m``."""
    match = _DURATION.match(str(text))
    if not match:
        raise BadInput(f"expected an age such as 30d, 12h or 90m, got {str(text)[:40]!r}")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class Removal:
    kind: str  # "run" | "cache"
    path: Path
    bytes: int
    last_used: dt.datetime


@dataclass(frozen=True)
class PrunePlan:
    removals: tuple[Removal, ...]
    protected: tuple[tuple[Path, str], ...]  # (folder, why) for old folders kept by a rule

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


def _tree_stats(folder: Path) -> tuple[int, float]:
    """(bytes, newest mtime) over the folder and everything in it; links are not followed."""
    total, newest = 0, folder.lstat().st_mtime
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = (Path(base) / name).lstat()
            newest = max(newest, st.st_mtime)
            total += st.st_size if name in files else 0
    return total, newest


def protected_folders(url: str | None, runs_dir: Path) -> dict[Path, str]:
    """Folders no prune removes: each target's latest complete run and the cache entries it used, and every
    running run (its cells are still being measured)."""
    import sqlalchemy as sa

    from .plan import run_folder_name
    from .records import RunStatus
    from .results import db
    from .results.models import CompiledModel, Performance, Run

    keep: dict[Path, str] = {}
    with db.session_scope(url) as session:
        rows = session.execute(
            sa.select(Performance.target, Run.id)
            .join(Run, Run.id == Performance.run_id)
            .where(Run.status == RunStatus.COMPLETE.value)
            .order_by(Run.started_at.desc(), Run.id.desc())
        ).all()
        latest: dict[str, str] = {}
        for target, run_id in rows:
            latest.setdefault(target, run_id)
        for target, run_id in sorted(latest.items()):
            keep.setdefault((runs_dir / run_folder_name(run_id)).resolve(), f"latest complete run for {target}")
        for run_id in session.scalars(sa.select(Run.id).where(Run.status == RunStatus.RUNNING.value)):
            keep.setdefault((runs_dir / run_folder_name(run_id)).resolve(), "a running run")
        used = session.execute(
            sa.select(CompiledModel.path, CompiledModel.run_id).where(
                CompiledModel.run_id.in_(sorted(set(latest.values()))), CompiledModel.path.is_not(None)
            )
        ).all()
    for path, run_id in used:
        if path is None:  # excluded by the query; narrows the column's type
            continue
        keep.setdefault(Path(path).resolve().parent, f"compile cache entry used by run {run_id}")
    return keep


def _candidates(folder: Path, kind: str) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    return [(kind, p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink()]


def plan_prune(
    older_than: dt.timedelta,
    *,
    runs_dir: Path,
    compile_cache: Path,
    url: str | None = None,
    now: dt.datetime | None = None,
) -> PrunePlan:
    """What a prune removes: run folders and cache entries with nothing newer than ``older_than``, less
    the protected ones."""
    if older_than <= dt.timedelta(0):
        raise BadInput("the age must be positive")
    now = now or dt.datetime.now(dt.UTC)
    keep = protected_folders(url, runs_dir)
    removals, protected = [], []
    for kind, path in _candidates(runs_dir, "run") + _candidates(compile_cache, "cache"):
        size, newest = _tree_stats(path)
        last_used = dt.datetime.fromtimestamp(newest, dt.UTC)
        if now - last_used < older_than:
            continue
        why = keep.get(path.resolve())
        if why:
            protected.append((path, why))
        else:
            removals.append(Removal(kind, path, size, last_used))
    return PrunePlan(tuple(removals), tuple(protected))


def apply_plan(plan: PrunePlan) -> int:
    """Remove what the plan lists; returns the bytes freed."""
    for removal in plan.removals:
        shutil.rmtree(removal.path)
    return plan.bytes


def format_plan(plan: PrunePlan, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [
        f"{verb} {r.kind} {r.path} ({r.bytes / 2**20:.1f} MiB, last used {r.last_used:%Y-%m-%d %H:%M} UTC)"
        for r in plan.removals
    ]
    lines += [f"kept {path} ({why})" for path, why in plan.protected]
    freed = "would free" if dry_run else "freed"
    lines.append(f"{verb} {len(plan.removals)} folder(s); {freed} {plan.bytes / 2**20:.1f} MiB ({plan.bytes} bytes)")
    return "\n".join(lines)


def prune(
    older_than: str = DEFAULT_OLDER_THAN, dry_run: bool = False, url: str | None = None, now: dt.datetime | None = None
) -> tuple[PrunePlan, str]:
    """Plan (and unless ``dry_run`` apply) a prune over this installation's data directory."""
    from .settings import load_settings

    settings = load_settings()
    plan = plan_prune(
        parse_duration(older_than), runs_dir=settings.runs_dir, compile_cache=settings.compile_cache, url=url, now=now
    )
    if not dry_run:
        apply_plan(plan)
    return plan, format_plan(plan, dry_run)
