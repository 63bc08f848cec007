"""``erfnet results import FILE...``: load a backlog of run documents in one process.

Files and directories (searched for ``*.json``) are read, every document validated, and each run
written in its own transaction together with its regression findings, oldest run first (so each
finds its baseline among the runs before it). A run already in the database is skipped and said so,
unless ``replace`` asks to overwrite it; a file or document that cannot be used is refused with the
reason, and the others still go in.

Two imports of the same run at the same time are safe: each run's transaction first takes a lock
named after the run (an advisory lock on PostgreSQL; SQLite's database write lock), then looks
whether the run is there. The loser waits, sees the run and reports it as already present. A unique
violation that gets through anyway (another writer not using this lock) is reported the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ..errors import BadInput, ErfnetError, Transient
from . import db
from .document import normalize_document, parse_time
from .models import Run
from .publish import read_run_file, replace_run
from .regression import find_regressions, rules_from_params

IMPORTED, PRESENT, REFUSED = "imported", "already present", "refused"


@dataclass(frozen=True)
class Outcome:
    source: str
    status: str
    run_id: str | None = None
    detail: str = ""

    def line(self) -> str:
        what = f"run {self.run_id}" if self.run_id else self.source
        detail = f": {self.detail}" if self.detail else ""
        origin = f" ({self.source})" if self.run_id else ""
        return f"{self.status} {what}{origin}{detail}"


def collect_files(paths: list[str]) -> tuple[list[Path], list[Outcome]]:
    """The JSON files named or found under directories (sorted, each once), and paths refused."""
    files: dict[Path, None] = {}
    refused = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not found:
                refused.append(Outcome(name, REFUSED, detail="directory holds no *.json files"))
            files.update(dict.fromkeys(p.resolve() for p in found))
        elif path.is_file():
            files[path.resolve()] = None
        else:
            refused.append(Outcome(name, REFUSED, detail="no such file or directory"))
    return list(files), refused


def read_documents(files: list[Path]) -> tuple[list[tuple[str, dict[str, Any]]], list[Outcome]]:
    """Every valid run document as (source file, document), oldest run first; the rest refused."""
    docs, refused = [], []
    for path in files:
        try:
            raw = read_run_file(path)
        except ErfnetError as exc:
            refused.append(Outcome(str(path), REFUSED, detail=str(exc)))
            continue
        for doc in raw:
            try:
                docs.append((str(path), normalize_document(doc)))
            except ErfnetError as exc:
                has_run = isinstance(doc, dict) and isinstance(doc.get("run"), dict)
                run_id = doc.get("run", {}).get("id") if has_run else None
                refused.append(Outcome(str(path), REFUSED, run_id if isinstance(run_id, str) else None, str(exc)))
    docs.sort(key=lambda item: (parse_time(item[1]["run"]["started_at"], "started_at"), item[1]["run"]["id"]))
    return docs, refused


def _lock_run(session: Session, run_id: str) -> None:
    """Serialise writers of one run for the rest of this transaction."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big", signed=True)
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    else:
        # A write (that changes nothing) makes SQLite take its database write lock now, before the
        # presence check below, instead of at the first real insert.
        session.execute(sa.update(Run).where(Run.id == run_id).values(id=Run.id))


def import_document(url: str, source: str, doc: dict[str, Any], replace: bool = False) -> Outcome:
    """Write one run and its findings in one transaction; a run already stored is skipped unless ``replace``."""
    run_id = doc["run"]["id"]
    try:
        with db.session_scope(url) as session:
            _lock_run(session, run_id)
            present = session.get(Run, run_id) is not None
            if present and not replace:
                return Outcome(source, PRESENT, run_id)
            replace_run(session, doc, new=not present)
            found = find_regressions(session, run_id, rules_from_params(doc["run"].get("params")))
    except sa_exc.IntegrityError:
        return Outcome(source, PRESENT, run_id, "written by another import at the same time")
    return Outcome(source, IMPORTED, run_id, f"{len(found)} regression finding(s)")


def plan(paths: list[str]) -> tuple[list[tuple[str, dict[str, Any]]], list[Outcome]]:
    """What an import of ``paths`` would write (oldest run first) and what it refuses; nothing is written.

    When nothing at all can be imported, that is one error line rather than a report.
    """
    files, refused = collect_files(paths)
    docs, bad = read_documents(files)
    refused += bad
    if not docs:
        first = refused[0] if refused else Outcome(", ".join(paths), REFUSED, detail="no run documents")
        more = f" (and {len(refused) - 1} more refused)" if len(refused) > 1 else ""
        raise BadInput(f"nothing to import: {first.detail}: {first.source}{more}")
    return docs, refused


def import_paths(
    paths: list[str], url: str, replace: bool = False, report: Callable[[str], object] = print
) -> list[Outcome]:
    """Import every run document under ``paths`` into ``url``; ``report`` gets each outcome as it happens."""
    docs, outcomes = plan(paths)
    for outcome in outcomes:
        report(outcome.line())
    try:
        db.upgrade(url)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise Transient(
            f"results database {db.masked(url)} unavailable ({_first_line(exc)}); nothing imported"
        ) from exc
    for source, doc in docs:
        try:
            outcome = import_document(url, source, doc, replace)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise Transient(
                f"results database {db.masked(url)} failed while importing run {doc['run']['id']} "
                f"({_first_line(exc)}); runs reported above as imported are stored, run the same "
                f"import again for the rest"
            ) from exc
        outcomes.append(outcome)
        report(outcome.line())
    if sum(o.status == IMPORTED for o in outcomes) >= BULK:
        _analyze(url)
    return outcomes


BULK = 50  # runs; from this many on, the planner's statistics are refreshed after the import


def _analyze(url: str) -> None:
    """Refresh the planner's statistics: after a backlog import they describe the tables before it, and
    PostgreSQL then picks nested loops that make the history pages several times slower until
    autovacuum gets round to it."""
    with db.get_engine(url).begin() as connection:
        connection.execute(sa.text("ANALYZE"))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def summary(outcomes: list[Outcome]) -> str:
    counts = {status: sum(o.status == status for o in outcomes) for status in (IMPORTED, PRESENT, REFUSED)}
    return f"{counts[IMPORTED]} imported, {counts[PRESENT]} already present, {counts[REFUSED]} refused"
