"""The measure: infer (5) on a device held only for that call, then a short profiled pass on the same lease,
evaluate (6), diagnose a cell whose mIoU fails the rule, store the result, delete outputs.

A device failure is recorded with its own status: ``oom`` is a result; ``model_load_failed``,
``device_open_failed``, ``infer_failed`` and ``no_space`` make the run incomplete. The cell records
where it ran: host, device, CANN and driver.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

from .backends import get_backend
from .build import local_cann, local_driver
from .cell_diagnosis import diagnose_failing_cell
from .datasets import label_spec
from .devices import Claim, hold_device
from .errors import BadInput, InferFailed
from .evaluate import evaluate_summary
from .fsutil import write_json_atomic
from .outputs import OLD_SUMMARY_NAME, summary_path_for
from .plan import as_target, safe_name
from .profiled_pass import profile_cell
from .records import (
    CellStatus,
    CompiledCell,
    CompileStatus,
    Environment,
    Evaluation,
    Inference,
    MeasuredCell,
    PlannedCell,
    Prepared,
)
from .settings import host_name
from .storage import check_space, delete_counted_outputs

log = logging.getLogger(__name__)


def cell_dir_name(cell: PlannedCell) -> str:
    return f"{safe_name(cell.target.name)}_bs{cell.batch_size}"


def output_dir(cell: PlannedCell, env: Environment) -> Path:
    return Path(env.work_dir) / "outputs" / cell_dir_name(cell)


def remove_unfinished_outputs(out_dir: Path) -> int:
    """Delete output folders that have no summary: a killed attempt's (this cell's folder is its own)."""
    removed = 0
    if out_dir.is_dir():
        for folder in out_dir.iterdir():
            if (
                folder.is_dir()
                and not folder.is_symlink()
                and not summary_path_for(folder).is_file()
                and not (folder / OLD_SUMMARY_NAME).is_file()
            ):
                shutil.rmtree(folder)
                removed += 1
    return removed


def _not_run(cell: CompiledCell, status: CellStatus, error: str | None) -> MeasuredCell:
    return MeasuredCell(compiled=cell, inference=Inference(status=status, error=error))


def infer_cell(cell: CompiledCell, prep: Prepared, env: Environment, claim: Claim | None = None) -> MeasuredCell:
    """Run one compiled cell over the preprocessed set on a device it holds alone, and only inside this call."""
    planned = cell.planned
    if cell.compilation.status == CompileStatus.FAILED:
        return _not_run(cell, CellStatus.COMPILE_FAILED, cell.compilation.error)
    assert cell.compilation.path is not None  # build.compile_cell gives every cell that did not fail a path
    out_dir = output_dir(planned, env)
    remove_unfinished_outputs(out_dir)
    shortage = check_space(out_dir, prep.images, planned.output.bytes_per_image)
    if shortage is not None:  # checked before anything is written: the other cells go on
        log.error("%s at batch %s: %s", planned.target.name, planned.batch_size, shortage.message)
        return _not_run(cell, CellStatus.NO_SPACE, shortage.message)
    backend = get_backend(planned.target.backend)
    host, device = host_name(), None
    where = Inference(
        status=CellStatus.OK, host=host, cann_version=local_cann(backend), driver_version=local_driver(backend)
    )
    try:
        with hold_device(as_target(planned.target).as_dict(), backend, claim) as held:
            device = None if held is None else str(held)
            log.info("%s batch %s on %s device %s", planned.target.name, planned.batch_size, host, held)
            result = backend.infer(
                cell.compilation.path, prep.prep_dir, out_dir, batch_size=planned.batch_size, device=held
            )
            # Here, after the measured pass and on its lease: profiling never perturbs the measurement, and
            # the profile is of the very device that was measured, without queueing again for one.
            op_profile = profile_cell(
                backend,
                cell.compilation.path,
                prep.prep_dir,
                out_dir,
                batch_size=planned.batch_size,
                device=held,
                what=f"{planned.target.name} batch {planned.batch_size}",
            )
    except (InferFailed, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOSPC:
            raise
        status = CellStatus(exc.status) if isinstance(exc, InferFailed) else CellStatus.NO_SPACE
        remove_unfinished_outputs(out_dir)  # a half-written folder is never evaluated
        log.error(
            "inference failed for %s at batch %s (%s): %s", planned.target.name, planned.batch_size, status.value, exc
        )
        failed = where.model_copy(update={"status": status, "error": f"{status.value}: {exc}", "device": device})
        return MeasuredCell(compiled=cell, inference=failed)
    return MeasuredCell(
        compiled=cell,
        inference=where.model_copy(
            update={
                "summary": str(result.summary_path),
                "device": device,
                "throughput_fps": result.throughput_fps,
                "compute_ms": result.compute_ms,
                "h2d_ms": result.h2d_ms,
                "d2h_ms": result.d2h_ms,
            }
        ),
        op_profile=op_profile,
    )


def evaluate_cell(cell: MeasuredCell, prep: Prepared) -> MeasuredCell:
    """mIoU, per-class IoU and the confusion matrix; the outputs must hold what the cell planned."""
    if cell.status != CellStatus.OK or cell.inference.summary is None:
        return cell
    result = evaluate_summary(cell.inference.summary, prep.gt_dir, progress=False, spec=label_spec(prep.dataset))
    planned = cell.planned.output.label_mode
    if result.label_mode != planned:
        raise BadInput(
            f"{cell.planned.target.name} at batch {cell.planned.batch_size}: the outputs hold "
            f"{result.label_mode}, the cell planned {planned.value}"
        )
    evaluation = Evaluation(
        images=result.images,
        miou=result.miou,
        per_class=tuple(result.per_class),
        confusion=result.confusion,
        label_mode=planned,
    )
    return cell.model_copy(update={"evaluation": evaluation})


def store_cell_result(cell: MeasuredCell, env: Environment) -> Path:
    """The cell's result on disk, beside its summary, written atomically before any output is deleted:
    what the outputs counted survives them (publish reads the same record from the task's return)."""
    evaluation = cell.evaluation.model_dump(mode="json") if cell.evaluation is not None else {}
    path = output_dir(cell.planned, env) / "result.json"
    write_json_atomic(
        path,
        {
            "target": cell.planned.target.name,
            "batch_size": cell.planned.batch_size,
            "summary": cell.inference.summary,
            **evaluation,
        },
    )
    return path


def measure_cell(cell: CompiledCell, prep: Prepared, env: Environment, claim: Claim | None = None) -> MeasuredCell:
    """Infer (and profile), evaluate where the outputs are, store the result, diagnose a failing mIoU, then
    delete the counted outputs (unless ``keep_outputs``). The device is held inside ``infer_cell`` (the
    measured and the profiled pass) and, for an NPU cell whose mIoU fails, again for its diagnosis.
    A failure before the result is stored raises with every output still on disk. ``claim``: how the
    measurement asks for its device (devices.Claim; the diagnosis, after the result is stored, always waits
    for one in-process: a reschedule then would measure the cell again)."""
    evaluated = evaluate_cell(infer_cell(cell, prep, env, claim), prep)
    if evaluated.status != CellStatus.OK or evaluated.inference.summary is None:
        return evaluated
    summary = evaluated.inference.summary
    store_cell_result(evaluated, env)
    # A failing mIoU is diagnosed here, not in a task of its own: this worker has the cell's compiled model,
    # its inputs and (for an NPU cell) a device of its chip, and the DAG's shape stays the same. After the
    # result is stored: a diagnosis that goes wrong cannot cost it.
    evaluated = diagnose_failing_cell(evaluated, prep, output_dir(evaluated.planned, env), env)
    if env.params.get("keep_outputs"):
        return evaluated
    return evaluated.model_copy(update={"outputs_deleted": delete_counted_outputs(summary)})
