"""The regression rules that gate a run.

- accuracy_below_reference: mIoU below the reference (72.20) minus the tolerance (1 point, the
  guide's acceptance criterion).
- throughput_drop: fps more than ``throughput_drop`` below the baseline.
- cell_failed: a cell that was ok in the baseline and now is a failed result (oom, compile refusal).
- cell_not_measured: a cell that never reached a device (model_load_failed, device_open_failed,
  infer_failed). It needs no baseline: such a run is incomplete, and the gate fails it with the reason.

The baseline of a (target, batch) cell is the latest complete run, started before this one, that measured
the same target and batch on a different CANN version: the gate asks "did the new CANN make things
worse?". The CANN version compared is the cell's own (a fleet's hosts are upgraded one at a time, so each
chip has its own), else its run's (cells published before cells recorded one). Findings are stored per run
(replacing earlier ones) and returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..errors import BadInput
from ..records import INFRASTRUCTURE_FAILURES, CellStatus, LabelMode, RunStatus
from .document import validate_run_id
from .models import Accuracy, Finding, Performance, Run
from .reference import GUIDE_MIOU, GUIDE_TOLERANCE

FAILED_RESULTS = (CellStatus.OOM, CellStatus.COMPILE_FAILED)


@dataclass(frozen=True)
class Rules:
    reference_miou: float = GUIDE_MIOU
    tolerance: float = GUIDE_TOLERANCE
    throughput_drop: float = 0.05

    def __post_init__(self) -> None:
        for name in ("reference_miou", "tolerance", "throughput_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BadInput(f"regression rule {name} must be a fraction between 0 and 1, got {value}")

    @property
    def miou_threshold(self) -> float:
        return self.reference_miou - self.tolerance


def rules_from_params(params: dict[str, Any] | None) -> Rules:
    """Rules from a run's params, which speak the trigger form's units: percent and mIoU points.

    ``reference_miou`` 72.20 and ``tolerance`` 1.0 (the guide's criterion), ``throughput_drop`` 5 (%)
    become the fractions the rules compare (0.722, 0.01, 0.05). Units never depend on the value, so a
    tolerance of half a point (0.5) means 0.005, not 50 points.
    """
    params = params or {}
    values = {}
    for name in ("reference_miou", "tolerance", "throughput_drop"):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            raise BadInput(f"run param {name} must be a number, got {value!r}")
        try:
            values[name] = float(value) / 100.0
        except (TypeError, ValueError) as exc:
            raise BadInput(f"run param {name} must be a number, got {value!r}") from exc
    return Rules(**values)


Cell = tuple[str, int]  # (target, batch size)


def find_regressions(
    session: Session, run_id: str, rules: Rules | None = None, cell: Cell | None = None
) -> list[dict[str, Any]]:
    """Apply ``rules`` to run ``run_id`` (or only to one ``cell`` of it, as the cell is stored), store the
    findings (replacing the run's, or the cell's, earlier ones; a finding found again keeps the time it was
    first notified), return them."""
    rules = rules or Rules()
    validate_run_id(run_id)
    run = session.get(Run, run_id)
    if run is None:
        raise BadInput(f"no run {run_id!r} in the results database")
    found = _accuracy_findings(session, run_id, rules, cell)
    perf = session.scalars(
        sa.select(Performance)
        .where(Performance.run_id == run_id, *_in_cell(Performance, cell))
        .order_by(Performance.target, Performance.batch_size)
    ).all()
    found += [_not_measured(p) for p in perf if p.status in INFRASTRUCTURE_FAILURES]
    baselines = _baselines(session, run, {(p.target, p.batch_size): _cann(p, run) for p in perf})
    for p in perf:
        baseline = baselines.get((p.target, p.batch_size))
        if baseline is not None:
            found += _perf_findings(p, baseline, run, rules)
    _replace_findings(session, run_id, found, cell)
    return found


def claim_unnotified(session: Session, run_id: str, cell: Cell | None = None) -> list[dict[str, Any]]:
    """The run's (or cell's) findings that no notification has carried yet, marked notified now: a retried
    store, or two stores at once, never notify one finding twice (the rows are locked until commit)."""
    rows = session.scalars(
        sa.select(Finding)
        .where(Finding.run_id == run_id, Finding.notified_at.is_(None), *_in_cell(Finding, cell))
        .order_by(Finding.target, Finding.batch_size, Finding.rule)
        .with_for_update()
    ).all()
    now = datetime.now(UTC)
    for row in rows:
        row.notified_at = now
    session.flush()
    return [_as_finding(row) for row in rows]


def _in_cell(model: Any, cell: Cell | None) -> list[ColumnElement[bool]]:
    return [] if cell is None else [model.target == cell[0], model.batch_size == cell[1]]


def _replace_findings(session: Session, run_id: str, found: list[dict[str, Any]], cell: Cell | None) -> None:
    scope = [Finding.run_id == run_id, *_in_cell(Finding, cell)]
    notified = {
        (f.rule, f.target, f.batch_size): f.notified_at for f in session.scalars(sa.select(Finding).where(*scope))
    }
    session.execute(sa.delete(Finding).where(*scope))
    session.add_all(
        Finding(run_id=run_id, notified_at=notified.get((f["rule"], f["target"], f["batch_size"])), **f) for f in found
    )
    session.flush()


def _as_finding(row: Finding) -> dict[str, Any]:
    return _finding(row.rule, row.target, row.batch_size, row.message, row.value, row.threshold, row.baseline_run_id)


def _accuracy_findings(session: Session, run_id: str, rules: Rules, cell: Cell | None) -> list[dict[str, Any]]:
    rows = session.scalars(
        sa.select(Accuracy)
        .where(
            Accuracy.run_id == run_id,
            Accuracy.miou.is_not(None),
            Accuracy.miou < rules.miou_threshold,
            *_in_cell(Accuracy, cell),
        )
        .order_by(Accuracy.target, Accuracy.batch_size)
    )
    return [
        _finding(
            "accuracy_below_reference",
            row.target,
            row.batch_size,
            f"{row.target} batch {row.batch_size}: mIoU {row.miou * 100:.2f} is below "
            f"{rules.reference_miou * 100:.2f} - {rules.tolerance * 100:.2f} = "
            f"{rules.miou_threshold * 100:.2f}",
            row.miou,
            rules.miou_threshold,
            None,
        )
        for row in rows
        if row.miou is not None
    ]


def _perf_findings(cell: Performance, baseline: Baseline, run: Run, rules: Rules) -> list[dict[str, Any]]:
    base_id, base_cann, base_fps = baseline
    where = f"{cell.target} batch {cell.batch_size}"
    versus = f"run {base_id} (CANN {base_cann or 'unknown'}), now CANN {_cann(cell, run) or 'unknown'}"
    if cell.status in FAILED_RESULTS:
        return [
            _finding(
                "cell_failed",
                cell.target,
                cell.batch_size,
                f"{where}: {cell.status} now, ok in {versus}",
                None,
                None,
                base_id,
            )
        ]
    # A baseline is an ok cell with its fps (the queries select only those).
    if cell.status == CellStatus.OK and cell.throughput_fps is not None and base_fps is not None:
        threshold = base_fps * (1.0 - rules.throughput_drop)
        if cell.throughput_fps < threshold:
            drop = 1.0 - cell.throughput_fps / base_fps
            return [
                _finding(
                    "throughput_drop",
                    cell.target,
                    cell.batch_size,
                    f"{where}: {cell.throughput_fps:.2f} fps is {drop:.1%} below {base_fps:.2f} fps "
                    f"of {versus} (allowed {rules.throughput_drop:.0%})",
                    cell.throughput_fps,
                    threshold,
                    base_id,
                )
            ]
    return []


def _not_measured(cell: Performance) -> dict[str, Any]:
    detail = f": {cell.error[:300]}" if cell.error else ""
    return _finding(
        "cell_not_measured",
        cell.target,
        cell.batch_size,
        f"{cell.target} batch {cell.batch_size}: {cell.status}, never reached a device{detail}",
        None,
        None,
        None,
    )


def _cann(cell: Performance, run: Run) -> str | None:
    return cell.cann_version or run.cann_version


def _label_modes(session: Session, run_id: str) -> dict[tuple[str, int], str]:
    rows = session.execute(
        sa.select(Accuracy.target, Accuracy.batch_size, Accuracy.label_mode).where(Accuracy.run_id == run_id)
    )
    return {(t, b): mode or LabelMode.LOGITS.value for t, b, mode in rows}


# A baseline: (run id, CANN version, fps) of the cell in an earlier run.
Baseline = tuple[str, str | None, float | None]


def _baselines(session: Session, run: Run, cells: dict[tuple[str, int], str | None]) -> dict[tuple[str, int], Baseline]:
    """(target, batch) -> (run id, CANN version, fps) of the latest earlier complete run that measured it
    on another CANN than ``cells`` gives for it now, in the same label mode (logits or labels_on_device:
    never compared across modes).

    Bounded, so that an import costs the same on the first night and after five years: the newest
    ``RECENT_RUNS`` earlier complete runs (the runs.started_at index) are read first, only their cells
    that are wanted (by primary key). With CANN changing monthly they hold nearly every baseline. A cell
    still without one (a new target, a cell that is never ok, a CANN kept for months) gets one query of
    its own, ``LIMIT 1`` along the (target, batch_size) index.
    """
    modes = _label_modes(session, run.id)
    wanted = {key: (cann, modes.get(key, LabelMode.LOGITS.value)) for key, cann in cells.items()}
    recent = _earlier_complete_runs(session, run, RECENT_RUNS)
    found = _first_on_other_cann(session, recent, wanted) if recent else {}
    if len(recent) == RECENT_RUNS:  # there may be older runs
        for key, want in wanted.items():
            if key not in found:
                older = _latest_older_on_other_cann(session, run, recent[-1], key, want)
                if older is not None:
                    found[key] = older
    return found


RECENT_RUNS = 32  # a month of nightlies: the usual distance back to the previous CANN version


def _earlier_complete_runs(session: Session, run: Run, limit: int) -> list[str]:
    """The ids of the complete runs started before ``run``, newest first."""
    return list(
        session.scalars(
            sa.select(Run.id)
            .where(Run.status == RunStatus.COMPLETE.value, Run.id != run.id, Run.started_at < run.started_at)
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(limit)
        )
    )


def _ok_cells_with_cann_and_mode() -> tuple[
    sa.Select[str, str, int, str, str, float | None], ColumnElement[str], ColumnElement[str]
]:
    """Ok, measured cells with the CANN they ran on (the cell's, else the run's) and their label mode."""
    same_cell = sa.and_(
        Accuracy.run_id == Performance.run_id,
        Accuracy.target == Performance.target,
        Accuracy.batch_size == Performance.batch_size,
    )
    cann = sa.func.coalesce(Performance.cann_version, Run.cann_version)
    mode = sa.func.coalesce(Accuracy.label_mode, LabelMode.LOGITS.value)
    stmt = (
        sa.select(
            Performance.run_id, Performance.target, Performance.batch_size, cann, mode, Performance.throughput_fps
        )
        .join(Run, Run.id == Performance.run_id)
        .outerjoin(Accuracy, same_cell)
        .where(Performance.status == CellStatus.OK.value, Performance.throughput_fps.is_not(None))
    )
    return stmt, cann, mode


def _first_on_other_cann(
    session: Session, run_ids: list[str], wanted: dict[tuple[str, int], tuple[str | None, str]]
) -> dict[tuple[str, int], Baseline]:
    """Of ``run_ids`` (newest first), per wanted (target, batch): the first run whose cell there was ok
    on a CANN other than the wanted one, in the wanted label mode."""
    stmt, _cann, _mode = _ok_cells_with_cann_and_mode()
    stmt = stmt.where(
        Performance.run_id.in_(run_ids),
        Performance.target.in_(sorted({t for t, _b in wanted})),
        Performance.batch_size.in_(sorted({b for _t, b in wanted})),
    )
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    found: dict[tuple[str, int], Baseline] = {}
    for run_id, target, batch, cann, mode, fps in sorted(session.execute(stmt), key=lambda row: order[row[0]]):
        want = wanted.get((target, batch))
        if want is not None and (target, batch) not in found and cann != want[0] and mode == want[1]:
            found[(target, batch)] = (run_id, cann, fps)
    return found


def _latest_older_on_other_cann(
    session: Session, run: Run, oldest_read: str, key: tuple[str, int], want: tuple[str | None, str]
) -> Baseline | None:
    """The baseline of one cell among the complete runs older than ``oldest_read`` (already read)."""
    edge = session.get(Run, oldest_read)
    assert edge is not None, oldest_read  # read by the caller in this session
    stmt, cann, mode = _ok_cells_with_cann_and_mode()
    stmt = (
        stmt.where(
            Performance.target == key[0],
            Performance.batch_size == key[1],
            Run.status == RunStatus.COMPLETE.value,
            Run.id != run.id,
            sa.or_(Run.started_at < edge.started_at, sa.and_(Run.started_at == edge.started_at, Run.id < edge.id)),
            cann.is_distinct_from(want[0]),
            mode == want[1],
        )
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(1)
    )
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[3], row[5])


def _finding(
    rule: str,
    target: str,
    batch_size: int,
    message: str,
    value: float | None,
    threshold: float | None,
    baseline_run_id: str | None,
) -> dict[str, Any]:
    return {
        "rule": rule,
        "target": target,
        "batch_size": batch_size,
        "message": message,
        "value": value,
        "threshold": threshold,
        "baseline_run_id": baseline_run_id,
    }
