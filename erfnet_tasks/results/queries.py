"""Reading runs back: the run document, the list of runs, history across CANN versions, findings.

Every query is built with SQLAlchemy; values from outside only ever travel as bound parameters.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import BadInput
from ..records import ACCURACY_FIELDS, COMPILED_FIELDS, PERF_FIELDS, CellStatus
from .document import (
    FINDING_FIELDS,
    LATEST,
    RUN_FIELDS,
    format_time,
    validate_run_id,
)
from .models import Accuracy, CompiledModel, Finding, Performance, ReferenceFigure, Run


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


def list_runs(session: Session, limit: int = 50, *, counts: bool = True) -> list[dict[str, Any]]:
    """The newest runs first, with their cell counts (perf cells that did not come out ok, findings).

    The counts cover only the returned runs, and only when asked for: a page that needs one run
    must not count the whole performance table.
    """
    page = sa.select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(max(1, int(limit)))
    runs = session.scalars(page).all()
    tallies = run_counts(session, [run.id for run in runs]) if counts else {}
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


def run_counts(session: Session, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per run id: perf cells, those that did not come out ok, findings. Two grouped queries for the
    given runs only."""
    tallies = {run_id: {"perf_cells": 0, "failed_cells": 0, "findings": 0} for run_id in run_ids}
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
    return tallies


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
