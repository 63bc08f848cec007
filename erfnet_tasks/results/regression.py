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
chip has its own), else its run's (cells published before cells recorded one). Findings are stored per run (replacing earlier ones) and returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import ErfnetError
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

    def __post_init__(self):
        for name in ("reference_miou", "tolerance", "throughput_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ErfnetError(f"regression rule {name} must be a fraction between 0 and 1, got {value}")

    @property
    def miou_threshold(self) -> float:
        return self.reference_miou - self.tolerance


def rules_from_params(params: dict | None) -> Rules:
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
            raise ErfnetError(f"run param {name} must be a number, got {value!r}")
        try:
            values[name] = float(value) / 100.0
        except (TypeError, ValueError):
            raise ErfnetError(f"run param {name} must be a number, got {value!r}") from None
    return Rules(**values)


def find_regressions(session: Session, run_id: str, rules: Rules | None = None) -> list[dict]:
    """Apply ``rules`` to run ``run_id``, store the findings (replacing the run's earlier ones), return them."""
    rules = rules or Rules()
    validate_run_id(run_id)
    run = session.get(Run, run_id)
    if run is None:
        raise ErfnetError(f"no run {run_id!r} in the results database")
    found = _accuracy_findings(session, run_id, rules)
    perf = session.scalars(sa.select(Performance).where(Performance.run_id == run_id)
                           .order_by(Performance.target, Performance.batch_size)).all()
    found += [_not_measured(cell) for cell in perf if cell.status in INFRASTRUCTURE_FAILURES]
    baselines = _baselines(session, run, {(p.target, p.batch_size): _cann(p, run) for p in perf})
    for cell in perf:
        baseline = baselines.get((cell.target, cell.batch_size))
        if baseline is not None:
            found += _perf_findings(cell, baseline, run, rules)
    session.execute(sa.delete(Finding).where(Finding.run_id == run_id))
    session.add_all(Finding(run_id=run_id, **f) for f in found)
    session.flush()
    return found


def _accuracy_findings(session: Session, run_id: str, rules: Rules) -> list[dict]:
    rows = session.scalars(sa.select(Accuracy).where(Accuracy.run_id == run_id, Accuracy.miou.is_not(None),
                                                     Accuracy.miou < rules.miou_threshold)
                           .order_by(Accuracy.target, Accuracy.batch_size))
    return [_finding("accuracy_below_reference", row.target, row.batch_size,
                     f"{row.target} batch {row.batch_size}: mIoU {row.miou * 100:.2f} is below "
                     f"{rules.reference_miou * 100:.2f} - {rules.tolerance * 100:.2f} = {rules.miou_threshold * 100:.2f}",
                     row.miou, rules.miou_threshold, None) for row in rows]


def _perf_findings(cell: Performance, baseline: tuple[str, str | None, float], run: Run,
                   rules: Rules) -> list[dict]:
    base_id, base_cann, base_fps = baseline
    where = f"{cell.target} batch {cell.batch_size}"
    versus = f"run {base_id} (CANN {base_cann or 'unknown'}), now CANN {_cann(cell, run) or 'unknown'}"
    if cell.status in FAILED_RESULTS:
        return [_finding("cell_failed", cell.target, cell.batch_size,
                         f"{where}: {cell.status} now, ok in {versus}", None, None, base_id)]
    if cell.status == CellStatus.OK and cell.throughput_fps is not None:
        threshold = base_fps * (1.0 - rules.throughput_drop)
        if cell.throughput_fps < threshold:
            drop = 1.0 - cell.throughput_fps / base_fps
            return [_finding("throughput_drop", cell.target, cell.batch_size,
                             f"{where}: {cell.throughput_fps:.2f} fps is {drop:.1%} below {base_fps:.2f} fps "
                             f"of {versus} (allowed {rules.throughput_drop:.0%})",
                             cell.throughput_fps, threshold, base_id)]
    return []


def _not_measured(cell: Performance) -> dict:
    detail = f": {cell.error[:300]}" if cell.error else ""
    return _finding("cell_not_measured", cell.target, cell.batch_size,
                    f"{cell.target} batch {cell.batch_size}: {cell.status}, never reached a device{detail}",
                    None, None, None)


def _cann(cell: Performance, run: Run) -> str | None:
    return cell.cann_version or run.cann_version


def _label_modes(session: Session, run_id: str) -> dict[tuple[str, int], str]:
    rows = session.execute(sa.select(Accuracy.target, Accuracy.batch_size, Accuracy.label_mode)
                           .where(Accuracy.run_id == run_id))
    return {(t, b): mode or LabelMode.LOGITS.value for t, b, mode in rows}


def _baselines(session: Session, run: Run, cells: dict[tuple[str, int], str | None]) -> dict[tuple[str, int], tuple]:
    """(target, batch) -> (run id, CANN version, fps) of the latest earlier complete run that measured it
    on another CANN than ``cells`` gives for it now, in the same label mode (logits or labels_on_device:
    never compared across modes).

    Bounded: one query per (CANN version, label mode) of this run (a handful), in which a window function
    ranks the candidates of each (target, batch) by recency and only the first comes back. ROW_NUMBER
    works in PostgreSQL and SQLite alike, where DISTINCT ON would not.
    """
    modes = _label_modes(session, run.id)
    groups: dict[tuple[str | None, str], set[tuple[str, int]]] = {}
    for key, cann in cells.items():
        groups.setdefault((cann, modes.get(key, LabelMode.LOGITS.value)), set()).add(key)
    baselines: dict[tuple[str, int], tuple] = {}
    for (cann, mode), keys in groups.items():
        baselines.update(_latest_on_other_cann(session, run, cann, mode, keys))
    return baselines


def _latest_on_other_cann(session: Session, run: Run, cann: str | None, mode: str,
                          cells: set[tuple[str, int]]) -> dict:
    cell_cann = sa.func.coalesce(Performance.cann_version, Run.cann_version)
    cell_mode = sa.func.coalesce(Accuracy.label_mode, LabelMode.LOGITS.value)
    same_cell = sa.and_(Accuracy.run_id == Performance.run_id, Accuracy.target == Performance.target,
                        Accuracy.batch_size == Performance.batch_size)
    recency = sa.func.row_number().over(partition_by=(Performance.target, Performance.batch_size),
                                        order_by=(Run.started_at.desc(), Run.id.desc()))
    ranked = (sa.select(Performance.target, Performance.batch_size, Run.id.label("run_id"),
                        cell_cann.label("cann_version"), Performance.throughput_fps, recency.label("recency"))
              .join(Run, Run.id == Performance.run_id)
              .outerjoin(Accuracy, same_cell)
              .where(Run.status == RunStatus.COMPLETE.value, Run.id != run.id, Run.started_at < run.started_at,
                     cell_cann.is_distinct_from(cann), cell_mode == mode,
                     Performance.status == CellStatus.OK.value, Performance.throughput_fps.is_not(None),
                     Performance.target.in_(sorted({t for t, _b in cells})),
                     Performance.batch_size.in_(sorted({b for _t, b in cells})))
              .subquery())
    stmt = sa.select(ranked.c.target, ranked.c.batch_size, ranked.c.run_id, ranked.c.cann_version,
                     ranked.c.throughput_fps).where(ranked.c.recency == 1)
    return {(target, batch): (run_id, base_cann, fps)
            for target, batch, run_id, base_cann, fps in session.execute(stmt) if (target, batch) in cells}


def _finding(rule, target, batch_size, message, value, threshold, baseline_run_id) -> dict:
    return {"rule": rule, "target": target, "batch_size": batch_size, "message": message, "value": value,
            "threshold": threshold, "baseline_run_id": baseline_run_id}
