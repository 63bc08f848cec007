"""Where a finding regressed, from what the database stores of its cells.

- ``throughput_drop``: the op types, then the top ops, whose time grew most between the baseline cell's
  op profile and this cell's (``profile_compare``: per-inference times, both sides, each entry's share of
  the growth; ops that appeared or vanished, a fusion that changed, say so);
- ``accuracy_below_reference``: the first diverging layer of the cell's diagnosis (its node, op type,
  ONNX nodes, cosine and the other metrics).

Every such finding gets ``{"ops": [...], "first_diverging": {...} | None}``, with a ``note`` when a side
has nothing stored (a cell measured before profiles existed, a diagnosis that failed); the other rules,
a cell that failed or never ran, have no place to point at: None.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..profile_compare import compare_profiles
from ..profiles import OpTime
from .models import CellDiagnosis, OpProfile

Where = dict[str, Any]


def with_where(session: Session, run_id: str, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finding of run ``run_id`` with its ``where``."""
    return [{**finding, "where": where_of(session, run_id, finding)} for finding in findings]


def where_of(session: Session, run_id: str, finding: dict[str, Any]) -> Where | None:
    if finding["rule"] == "throughput_drop":
        return slower_ops(session, run_id, finding)
    if finding["rule"] == "accuracy_below_reference":
        return diverging_layer(session, run_id, finding)
    return None


def slower_ops(session: Session, run_id: str, finding: dict[str, Any]) -> Where:
    cell = (finding["target"], finding["batch_size"])
    current = stored_profile(session, run_id, *cell)
    baseline_id = finding.get("baseline_run_id")
    baseline = stored_profile(session, baseline_id, *cell) if baseline_id else []
    missing = [name for name, ops in ((f"baseline run {baseline_id}", baseline), ("this run", current)) if not ops]
    if missing:
        return {"ops": [], "first_diverging": None, "note": f"no op profile of the cell in {' or '.join(missing)}"}
    return {"ops": compare_profiles(baseline, current)["ops"], "first_diverging": None}


def diverging_layer(session: Session, run_id: str, finding: dict[str, Any]) -> Where:
    row = session.scalar(
        sa.select(CellDiagnosis).where(
            CellDiagnosis.run_id == run_id,
            CellDiagnosis.target == finding["target"],
            CellDiagnosis.batch_size == finding["batch_size"],
        )
    )
    if row is None:
        return {"ops": [], "first_diverging": None, "note": "the cell was not diagnosed"}
    if row.first_diverging is None:
        note = f"no layer diverges on the {row.images} diagnosed image(s) (msprobe's thresholds)"
        return {"ops": [], "first_diverging": None, "note": note}
    return {"ops": [], "first_diverging": row.first_diverging}


def stored_profile(session: Session, run_id: str, target: str, batch_size: int) -> list[OpTime]:
    rows = session.scalars(
        sa.select(OpProfile).where(
            OpProfile.run_id == run_id, OpProfile.target == target, OpProfile.batch_size == batch_size
        )
    )
    return [OpTime(r.op_name, r.op_type, r.calls, r.total_us, r.mean_us, r.share) for r in rows]
