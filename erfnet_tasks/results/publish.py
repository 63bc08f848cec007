"""Publishing a run document: idempotent, retried while the database is down, never lost.

A re-published run replaces its own rows (one transaction: delete the run's cells, write the new
ones), so publishing twice or importing a file later is always safe. The DAG also writes the
document as a JSON file beside the run's outputs (``write_run_file``); ``import_file`` loads it
once the database is back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ..errors import BadInput, PublishFailed, first_line
from ..fsutil import atomic_path
from ..records import CellState, RunStatus
from . import cann_summary, db
from .document import normalize_document, parse_time
from .models import Accuracy, CellProgress, CompiledModel, Finding, Performance, Run

log = logging.getLogger(__name__)

_CHILD_MODELS = ((CompiledModel, "compiled"), (Accuracy, "accuracy"), (Performance, "perf"), (Finding, "findings"))


def publish_run(
    doc: dict[str, Any],
    url: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    *,
    keep_findings: bool = False,
) -> str:
    """Write ``doc`` into the results database at ``url`` (default: db.resolve_url()); returns the run id.

    ``keep_findings``: the run's stored findings stay (the DAG's cells were gated as they were stored; the
    closing gate recomputes them), instead of being replaced by the document's.
    """
    doc = normalize_document(doc)
    with_database(lambda session: replace_run(session, doc, keep_findings=keep_findings), url, retries, backoff)
    run_id: str = doc["run"]["id"]
    return run_id


T = TypeVar("T")


def with_database(
    write: Callable[[Session], T],
    url: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    *,
    migrate: bool = True,
) -> T:
    """Run ``write`` in one transaction on the results database, migrated to the current schema first (an
    empty database works) unless ``migrate`` is False (the run's own first write migrated it). Connection
    failures are retried ``retries`` times, waiting backoff, 2*backoff, 4*backoff, ... seconds; then
    PublishFailed (transient: the task is retried)."""
    url = db.normalize_url(url) if url else db.resolve_url()
    for attempt in range(retries + 1):
        try:
            if migrate:
                db.upgrade(url)
            with db.session_scope(url) as session:
                return write(session)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            if attempt == retries:
                raise PublishFailed(
                    f"results database {db.masked(url)} unreachable after {retries + 1} "
                    f"attempts ({_first_line(exc)}); load the run's JSON file later with "
                    f"`erfnet results import`"
                ) from exc
            delay = backoff * 2**attempt
            log.warning(
                "results database %s unreachable (%s); retrying in %.1f s", db.masked(url), _first_line(exc), delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def replace_run(session: Session, doc: dict[str, Any], *, new: bool = False, keep_findings: bool = False) -> None:
    """Replace everything stored for the document's run with the document (``doc`` is normalised).

    ``new`` says the caller has just seen (under its lock) that the run is not stored, so there is
    nothing to delete first.
    """
    run_id = doc["run"]["id"]
    children = [(m, k) for m, k in _CHILD_MODELS if not (keep_findings and m is Finding)]
    if not new:
        for model, _key in children:
            session.execute(sa.delete(model).where(model.run_id == run_id))
    values = {"class_names": None, **doc["run"]}  # optional fields: a re-publish clears what the document lacks
    values["started_at"] = parse_time(values["started_at"], "started_at")
    values["finished_at"] = parse_time(values["finished_at"], "finished_at")
    values["published_at"] = datetime.now(UTC)
    run = None if new else session.get(Run, run_id)
    versions = {values["cann_version"]} | ({run.cann_version} if run is not None else set())
    if run is None:
        session.add(Run(**values))
    else:
        for name, value in values.items():
            setattr(run, name, value)
    session.flush()
    for model, key in children:
        if doc[key]:
            # Core executemany, not ORM objects: nothing needs the generated ids back, and without
            # RETURNING the driver sends one short cached statement (a run's cells, 4x faster).
            session.execute(sa.insert(model), [dict(cell, run_id=run_id) for cell in doc[key]])
    session.flush()
    if values["status"] != RunStatus.RUNNING:  # a closed run has no cell left in progress
        session.execute(
            sa.update(CellProgress).where(CellProgress.run_id == run_id).values(state=CellState.STORED.value)
        )
    cann_summary.refresh(session, versions)  # the run's old CANN version too, when a re-publish changed it


def write_run_file(doc: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the (validated) document as JSON, atomically: the copy that survives a database outage."""
    doc = normalize_document(doc)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_run_file(path: str | os.PathLike[str]) -> list[Any]:
    """The run documents in ``path``: one document, or ``{"runs": [...]}`` as `erfnet results export` writes."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInput(f"no such file: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read run document {path}: {_first_line(exc)}") from exc
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        runs: list[Any] = data["runs"]
        return runs
    return [data]


def import_file(
    path: str | os.PathLike[str], url: str | None = None, retries: int = 2, backoff: float = 1.0
) -> list[str]:
    """Publish every run document in ``path``; returns their run ids."""
    docs = [normalize_document(doc) for doc in read_run_file(path)]  # all valid before any is written
    return [publish_run(doc, url, retries=retries, backoff=backoff) for doc in docs]


def _first_line(exc: BaseException) -> str:
    """The driver's own message where SQLAlchemy wraps one."""
    return first_line(getattr(exc, "orig", None) or exc)
