"""Reading runs back: the run document, the list of runs, a running run's progress, findings.

Every query is built with SQLAlchemy; values from outside only ever travel as bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import BadInput
from ..records import ACCURACY_FIELDS, COMPILED_FIELDS, PERF_FIELDS, CellState, CellStatus, RunStatus
from .document import (
    FINDING_FIELDS,
    LATEST,
    RUN_FIELDS,
    format_time,
    validate_run_id,
)
from .models import Accuracy, CellProgress, CompiledModel, Finding, Performance, ReferenceFigure, Run


def resolve_run_id(session: Session, run_ref: str) -> str:
    """``run_ref`` as a stored run id: 'latest' is the newest run (by start)."""
    if run_ref == LATEST:
        run_id = session.scalar(sa.select(Run.id).order_by(Run.started_at.desc(), Run.id.desc()).limit(1))
        if run_id is None:
            raise BadInput("the results database holds no runs yet")
        return run_id
    validate_run_id(run_ref)
    if session.get(Run, run_ref) is None:
        raise BadInput(f"no run {run_ref!r} in the results database")
    return run_ref


def run_document(session: Session, run_ref: str) -> dict[str, Any]:
    """The run document of docs/architecture.md for ``run_ref`` ('latest' or a run id)."""
    run_id = resolve_run_id(session, run_ref)
    run = session.get(Run, run_id)
    assert run is not None, run_id  # resolve_run_id found it
    run_dict = {name: getattr(run, name) for name in RUN_FIELDS}
    if run_dict["class_names"] is None:  # optional (document.normalize_document): read back as written
        del run_dict["class_names"]
    run_dict["started_at"] = format_time(run.started_at)
    run_dict["finished_at"] = format_time(run.finished_at)
    return {
        "run": run_dict,
        "compiled": _cells(session, CompiledModel, COMPILED_FIELDS, run_id),
        "accuracy": _cells(session, Accuracy, ACCURACY_FIELDS, run_id),
        "perf": _cells(session, Performance, PERF_FIELDS, run_id),
        "findings": findings(session, run_id),
    }


def _cells(
    session: Session, model: type[CompiledModel | Accuracy | Performance], fields: tuple[str, ...], run_id: str
) -> list[dict[str, Any]]:
    rows = session.scalars(sa.select(model).where(model.run_id == run_id))
    # Sorted here, not by the database: PostgreSQL's collation would order targets differently from SQLite.
    return sorted(
        ({name: getattr(row, name) for name in fields} for row in rows),
        key=lambda cell: (cell["target"], cell["batch_size"]),
    )


def findings(session: Session, run_id: str) -> list[dict[str, Any]]:
    validate_run_id(run_id)
    rows = session.scalars(sa.select(Finding).where(Finding.run_id == run_id))
    return sorted(
        ({name: getattr(row, name) for name in FINDING_FIELDS} for row in rows),
        key=lambda f: (f["rule"], f["target"], f["batch_size"]),
    )


def notified_findings(session: Session, run_id: str) -> set[tuple[str, str, int]]:
    """(rule, target, batch size) of the run's findings a notification already carried (early, as each
    cell was stored)."""
    rows = session.execute(
        sa.select(Finding.rule, Finding.target, Finding.batch_size).where(
            Finding.run_id == run_id, Finding.notified_at.is_not(None)
        )
    )
    return {(rule, target, batch) for rule, target, batch in rows}


def list_runs(session: Session, limit: int = 50, *, counts: bool = True) -> list[dict[str, Any]]:
    """The newest runs first, with their cell counts (perf cells that did not come out ok, findings).

    The counts cover only the returned runs, and only when asked for: a page that needs one run
    must not count the whole performance table.
    """
    page = sa.select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(max(1, int(limit)))
    runs = session.scalars(page).all()
    running = [run.id for run in runs if run.status == RunStatus.RUNNING]
    tallies = run_counts(session, [run.id for run in runs], running) if counts else {}
    return [
        {
            "id": run.id,
            "dag_id": run.dag_id,
            "started_at": format_time(run.started_at),
            "finished_at": format_time(run.finished_at),
            "status": run.status,
            "cann_version": run.cann_version,
            "host": run.host,
            "images": run.images,
            "synthetic": run.synthetic,
            **tallies.get(run.id, {}),
        }
        for run in runs
    ]


def run_counts(session: Session, run_ids: list[str], running: Sequence[str] = ()) -> dict[str, dict[str, int | None]]:
    """Per run id: perf cells, those that did not come out ok, findings, and for the ``running`` ones the
    cells planned (``planned_cells``; None for the others, whose cells are all stored). Two grouped
    queries for the given runs only, a third when some of them are running."""
    tallies: dict[str, dict[str, int | None]] = {
        run_id: {"perf_cells": 0, "failed_cells": 0, "findings": 0, "planned_cells": None} for run_id in run_ids
    }
    if not run_ids:
        return tallies
    failed = sa.func.sum(sa.case((Performance.status != CellStatus.OK.value, 1), else_=0))
    for run_id, total, bad in session.execute(
        sa.select(Performance.run_id, sa.func.count(), failed)
        .where(Performance.run_id.in_(run_ids))
        .group_by(Performance.run_id)
    ):
        tallies[run_id].update(perf_cells=total, failed_cells=int(bad or 0))
    for run_id, found in session.execute(
        sa.select(Finding.run_id, sa.func.count()).where(Finding.run_id.in_(run_ids)).group_by(Finding.run_id)
    ):
        tallies[run_id]["findings"] = found
    if running:
        for run_id in running:
            tallies[run_id]["planned_cells"] = tallies[run_id]["perf_cells"]
        for run_id, planned in session.execute(
            sa.select(CellProgress.run_id, sa.func.count())
            .where(CellProgress.run_id.in_(list(running)))
            .group_by(CellProgress.run_id)
        ):
            tallies[run_id]["planned_cells"] = max(planned, tallies[run_id]["perf_cells"] or 0)
    return tallies


PENDING_FIELDS = ("target", "batch_size", "state", "chip", "aoe", "host", "try_number", "error", "updated_at")


def run_progress(session: Session, run_ref: str) -> dict[str, Any]:
    """How far run ``run_ref`` ('latest' or a run id) has come: its status and start, ``done`` of
    ``total`` cells stored, and each planned cell not stored yet with its state (records.CellState),
    host and last update, in (target, batch) order.

    A cell is done once its perf row is stored. ``total`` counts the planned cells (one cell_progress
    row each) and any stored cell beside them, so a run published whole, without progress rows, reads
    as all of its cells done."""
    run_id = resolve_run_id(session, run_ref)
    run = session.get(Run, run_id)
    assert run is not None, run_id  # resolve_run_id found it
    stored = {
        (target, batch)
        for target, batch in session.execute(
            sa.select(Performance.target, Performance.batch_size).where(Performance.run_id == run_id)
        )
    }
    planned = {
        (p.target, p.batch_size): p
        for p in session.scalars(sa.select(CellProgress).where(CellProgress.run_id == run_id))
    }
    pending = [_pending_cell(planned[key]) for key in sorted(planned) if key not in stored]
    updates = [p.updated_at for p in planned.values()]
    return {
        "run_id": run.id,
        "status": run.status,
        "running": run.status == RunStatus.RUNNING,
        "started_at": format_time(run.started_at),
        "finished_at": format_time(run.finished_at),
        "updated_at": format_time(max(updates)) if updates else None,
        "done": len(stored),
        "total": len(stored | planned.keys()),
        "states": _state_counts(pending),
        "pending": pending,
    }


def _pending_cell(row: CellProgress) -> dict[str, Any]:
    cell = {name: getattr(row, name) for name in PENDING_FIELDS}
    cell["updated_at"] = format_time(row.updated_at)
    return cell


def _state_counts(pending: list[dict[str, Any]]) -> dict[str, int]:
    """How many pending cells are in each state, in the order a cell goes through them (all states listed)."""
    counts = {state.value: 0 for state in CellState}
    for cell in pending:
        counts[cell["state"]] = counts.get(cell["state"], 0) + 1
    return counts


def has_runs(session: Session) -> bool:
    return session.scalar(sa.select(Run.id).limit(1)) is not None


def reference_figures(session: Session, source: str = "guide") -> list[dict[str, Any]]:
    rows = session.scalars(
        sa.select(ReferenceFigure)
        .where(ReferenceFigure.source == source)
        .order_by(ReferenceFigure.metric, ReferenceFigure.column_name, ReferenceFigure.batch_size)
    )
    return [
        {
            "metric": r.metric,
            "column": r.column_name,
            "batch_size": r.batch_size,
            "value": r.value,
            "status": r.status,
            "note": r.note,
        }
        for r in rows
    ]
