"""The diagnosis of a cell whose mIoU fails the rule: its own model compared, layer by layer on a few
images, with the FP32 ONNX golden it was compiled from (erfnet_tasks.diagnose, msprobe's metrics and
rule), so that the accuracy finding can name the first diverging layer.

It runs in the measure stage, on the cell's own worker, where its compiled model and its inputs are: an
Ascend cell's comparison runs msprobe on a device of the cell's chip (held for it, each image under its
deadline). It can only add to a cell: a diagnosis that fails is logged, and the cell keeps its result.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from . import deadlines, settings
from .backends import get_backend
from .devices import hold_device
from .diagnose.report import Layer, first_diverging
from .errors import ErfnetError, first_line
from .plan import as_target
from .records import Diagnosis, Environment, MeasuredCell, Prepared
from .results.regression import rules_from_params

log = logging.getLogger(__name__)
# erfnet diagnose's --backend for each pipeline backend that runs on the host.
HOST_DIAGNOSE_BACKENDS = {"onnxruntime": "onnxruntime", "torch": "torch"}


def fails_accuracy_rule(cell: MeasuredCell, env: Environment) -> bool:
    """The gate's accuracy rule (Rules.miou_threshold from the run's params), on the cell alone."""
    evaluation = cell.evaluation
    return evaluation is not None and evaluation.miou < rules_from_params(dict(env.params)).miou_threshold


def diagnose_failing_cell(cell: MeasuredCell, prep: Prepared, out_dir: Path, env: Environment) -> MeasuredCell:
    """The cell with its diagnosis when its mIoU fails the rule; the cell unchanged otherwise."""
    images = min(settings.diagnose_images(), prep.images)
    if not fails_accuracy_rule(cell, env) or images == 0:
        return cell
    what = f"{cell.planned.target.name} batch {cell.planned.batch_size}"
    if cell.compiled.golden is None or cell.compiled.compilation.path is None:
        log.warning("%s: its mIoU fails the rule, but the cell names no golden model to diagnose it against", what)
        return cell
    try:
        layers = compare_with_golden(cell, prep.prep_dir, images, out_dir)
    except ErfnetError as exc:
        log.warning("%s: the diagnosis failed, none is stored (the result stands): %s", what, exc)
        return cell
    except Exception as exc:  # a comparison's own failure, whatever its type, must not cost the result
        log.warning("%s: the diagnosis failed (%s), none is stored", what, first_line(exc), exc_info=True)
        return cell
    first = first_diverging(layers)
    log.info("%s: first diverging layer %s", what, first.node if first else "none")
    diagnosis = Diagnosis(
        images=images,
        first_diverging=first.as_dict() if first else None,
        layers=tuple(layer.as_dict() for layer in layers),
    )
    return cell.model_copy(update={"diagnosis": diagnosis})


def compare_with_golden(cell: MeasuredCell, prep_dir: str, images: int, out_dir: Path) -> list[Layer]:
    """Every layer of the cell's model against its golden: msprobe on a leased device of the chip for an
    NPU cell, our own comparison on the host for the others."""
    golden, model = str(cell.compiled.golden), str(cell.compiled.compilation.path)
    backend = get_backend(cell.planned.target.backend)
    if backend.RUNS_ON == "npu":
        from .diagnose.msprobe import compare_om

        out_dir.mkdir(parents=True, exist_ok=True)
        with (
            hold_device(as_target(cell.planned.target).as_dict(), backend) as device,
            tempfile.TemporaryDirectory(prefix=".diagnose-", dir=out_dir) as work,
        ):
            held = int(device) if device is not None else None
            deadline = deadlines.diagnosis_deadline()
            return compare_om(golden, model, prep_dir, images, work, device=held, deadline=deadline)
    from .diagnose.cli import diagnose

    kind = HOST_DIAGNOSE_BACKENDS.get(backend.NAME, backend.NAME)
    device = cell.inference.device if kind == "torch" else None  # where the checkpoint ran (cpu, cuda[:N])
    return diagnose(golden, model, kind, prep_dir, images, device)
