"""A run while it goes on: its row opened as ``running``, each cell's progress, each cell stored as measured.

Every write here is idempotent: opening a run again (a retried or cleared task) starts its record over,
storing a cell again replaces that cell's rows, and marking a cell's progress overwrites the last mark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..records import CellState, RunStatus
from .document import normalize_document, parse_time
from .models import Accuracy, CellDiagnosis, CellProgress, CompiledModel, Finding, OpProfile, Performance, Run

_CELL_TABLES = (
    (CompiledModel, "compiled"),
    (Accuracy, "accuracy"),
    (Performance, "perf"),
    (OpProfile, "op_profiles"),
    (CellDiagnosis, "diagnoses"),
)


@dataclass(frozen=True)
class MatrixCell:
    """One planned cell as the progress table records it."""

    target: str
    batch_size: int
    chip: str | None
    backend: str
    aoe: bool


def open_run(session: Session, run: dict[str, Any], matrix: Iterable[MatrixCell]) -> None:
    """Create (or start over) the run as ``running`` with one ``queued`` progress row per planned cell."""
    doc = normalize_document({"run": {**run, "status": RunStatus.RUNNING.value, "finished_at": None}})
    values = {"class_names": None, **doc["run"]}
    values["started_at"] = parse_time(values["started_at"], "started_at")
    values["finished_at"] = None
    values["published_at"] = now = datetime.now(UTC)
    run_id = values["id"]
    for model in (CompiledModel, Accuracy, Performance, Finding, CellProgress):
        session.execute(sa.delete(model).where(model.run_id == run_id))
    existing = session.get(Run, run_id)
    if existing is None:
        session.add(Run(**values))
    else:
        for name, value in values.items():
            setattr(existing, name, value)
    session.flush()
    rows = [
        {
            "run_id": run_id,
            "target": cell.target,
            "batch_size": cell.batch_size,
            "chip": cell.chip,
            "backend": cell.backend,
            "aoe": cell.aoe,
            "state": CellState.QUEUED.value,
            "updated_at": now,
        }
        for cell in matrix
    ]
    if rows:
        session.execute(sa.insert(CellProgress), rows)


def discard_run(session: Session, run_id: str) -> None:
    for model in (CompiledModel, Accuracy, Performance, Finding, CellProgress):
        session.execute(sa.delete(model).where(model.run_id == run_id))
    session.execute(sa.delete(Run).where(Run.id == run_id))


def is_running(session: Session, run_id: str) -> bool:
    return session.scalar(sa.select(Run.status).where(Run.id == run_id)) == RunStatus.RUNNING


def mark(
    session: Session,
    run_id: str,
    target: str,
    batch_size: int,
    state: CellState,
    *,
    host: str | None = None,
    try_number: int | None = None,
) -> bool:
    """Record that the cell entered ``state`` (clearing an earlier try's error; the host and try are kept
    where not given); False if the run has no such cell (a run never opened, or started over)."""
    values: dict[str, Any] = {"state": state.value, "error": None, "error_kind": None, "updated_at": datetime.now(UTC)}
    if host is not None:
        values["host"] = host
    if try_number is not None:
        values["try_number"] = try_number
    result = session.execute(
        sa.update(CellProgress)
        .where(CellProgress.run_id == run_id, CellProgress.target == target, CellProgress.batch_size == batch_size)
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0))


def record_error(session: Session, run_id: str, target: str, batch_size: int, kind: str, error: str) -> None:
    """The one-line error of the step that raised; the state stays the step's, so the reader knows where."""
    session.execute(
        sa.update(CellProgress)
        .where(CellProgress.run_id == run_id, CellProgress.target == target, CellProgress.batch_size == batch_size)
        .values(error=error, error_kind=kind, updated_at=datetime.now(UTC))
    )


# A plain cell in these states is on its way to a measurement without a device yet (``measuring`` is
# marked once it holds one); an AOE cell is, once tuned (``compiled``): ``queued`` is its wait to tune.
PLAIN_BEFORE_DEVICE = (CellState.QUEUED.value, CellState.COMPILING.value, CellState.COMPILED.value)


def measurements_pending(session: Session, run_id: str, chip: str) -> int:
    """How many measurements of ``chip`` in the run are still to get a device (a try that failed and waits
    for its retry is not counted)."""
    plain = CellProgress.aoe.is_(False) & CellProgress.state.in_(PLAIN_BEFORE_DEVICE)
    tuned = CellProgress.aoe.is_(True) & (CellProgress.state == CellState.COMPILED.value)
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(CellProgress)
            .where(
                CellProgress.run_id == run_id,
                CellProgress.chip == chip,
                plain | tuned,
                CellProgress.error.is_(None),
            )
        )
        or 0
    )


def progress_of(session: Session, run_id: str, target: str, batch_size: int) -> CellProgress | None:
    return session.scalars(
        sa.select(CellProgress).where(
            CellProgress.run_id == run_id, CellProgress.target == target, CellProgress.batch_size == batch_size
        )
    ).one_or_none()


def store_cell(
    session: Session, run_id: str, target: str, batch_size: int, rows: dict[str, list[dict[str, Any]]]
) -> None:
    """Replace the cell's rows (``rows``: "compiled", "accuracy", "perf", "op_profiles", "diagnoses", as a
    run document holds them) and mark it stored. The document is validated as a one-cell run document first."""
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"run {run_id} is not open in the results database")
    doc = normalize_document(
        {"run": {"id": run_id, "started_at": run.started_at.isoformat(), "status": RunStatus.RUNNING.value}, **rows}
    )
    for model, key in _CELL_TABLES:
        session.execute(
            sa.delete(model).where(model.run_id == run_id, model.target == target, model.batch_size == batch_size)
        )
        if doc[key]:
            session.execute(sa.insert(model), [dict(row, run_id=run_id) for row in doc[key]])
    mark(session, run_id, target, batch_size, CellState.STORED)
