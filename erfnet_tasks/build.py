"""The build: export (3.1), fix_bn, preprocess (4) and compile (3.2), each behind the content-addressed store.

A cell that fails to compile is *recorded* (``Compilation.status`` ``failed``) and the other cells go on,
because the guide's own table has such a cell; a bad input raises BadInput.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from .backends import Backend, CompileResult, get_backend
from .backends.ascend import detect_cann_version, detect_driver_version
from .datasets.cityscapes import LABEL_SPEC, dataset_dirs, preprocess, source_digest
from .devices import Claim, hold_device
from .errors import CompileFailed, ErfnetError, InferFailed
from .fsutil import atomic_path, sha256_file
from .onnx_export import DEFAULT_OPSET, append_argmax, export_onnx, fix_bn
from .plan import as_target
from .records import Compilation, CompiledCell, CompileStatus, Environment, ExportedModel, Model, PlannedCell, Prepared
from .settings import host_name, load_settings, resolve_under_roots
from .store import Store, content_key

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when a cache's layout or key changes (2: the store's entry.json)


# ----------------------------------------------------------------------------------- 3.1 export


def export_step(env: Environment) -> ExportedModel:
    """ErfNet_pth2onnx.py, verified against PyTorch; reused while the weights and the exporter are the same."""
    import torch  # heavy: only the export needs its version

    weights = env.params["weights"]
    key = content_key([env.weights_sha256, torch.__version__, DEFAULT_OPSET, CACHE_FORMAT])

    def build(staging: Path) -> tuple[Path, dict[str, Any]]:
        report = export_onnx(weights, staging / "ErfNet_origin.onnx")
        return Path(report.path), {"max_abs_error": report.max_abs_error, "max_rel_error": report.max_rel_error}

    entry = Store(load_settings().export_cache, "the export cache").fetch_or_build(key, build)
    return ExportedModel(
        origin=str(entry.artifact),
        origin_sha256=entry.sha256,
        max_abs_error=entry.meta["max_abs_error"],
        max_rel_error=entry.meta["max_rel_error"],
        cache_hit=entry.hit,
        labels_on_device=bool(env.params.get("labels_on_device")),
    )


def fix_bn_step(exported: ExportedModel) -> Model:
    """modify_bn_weights.py: the model every target compiles; with labels_on_device it ends in ArgMax."""
    fixed = Path(exported.origin).with_name("ErfNet.onnx")  # a function of the export, so kept beside it
    changed = fix_bn(exported.origin, fixed)
    if exported.labels_on_device:
        fixed = _with_argmax(fixed)
    return Model(exported=exported, path=str(fixed), sha256=sha256_file(fixed), bn_values_changed=changed)


def _with_argmax(fixed: Path) -> Path:
    """labels_on_device (beyond the guide): the fixed model + ArgMax over the channels -> int32 label map."""
    out = fixed.with_name("ErfNet_argmax.onnx")
    with atomic_path(out) as tmp:
        shutil.copyfile(fixed, tmp)
        append_argmax(tmp)
    return out


# ------------------------------------------------------------------------------- 4 preprocessing


def preprocess_dataset(env: Environment) -> Prepared:
    """Preprocess into a store entry keyed by the content of the selected images and labels (and the
    limit), so a corrected image, whatever its mtime, gets a fresh entry. The entry is filled in place
    under its lock: the dataset's manifest verifies (and resumes) it item by item, by content."""
    settings = load_settings()
    img_dir, gt_dir = dataset_dirs(env.params["dataset_root"])
    for folder, what in ((img_dir, "leftImg8bit/val"), (gt_dir, "gtFine/val")):
        resolve_under_roots(str(folder), settings.data_roots, what)  # a linked split must stay inside the roots
    limit = env.params["image_limit"] or None
    store = Store(settings.prep_cache, "the preprocessing cache")
    with store.locked(source_digest(img_dir, gt_dir, limit)[:24]) as entry:
        prep_dir, gt_out = entry / "prep_dataset", entry / "gt_label"
        manifest = preprocess(img_dir, prep_dir, gt_dir, gt_out, limit=limit, progress=False)
    return Prepared(
        prep_dir=str(prep_dir),
        gt_dir=str(gt_out),
        images=manifest["images"],
        fingerprint=manifest["fingerprint"],
        synthetic=bool(manifest.get("synthetic")),
        dataset=LABEL_SPEC.name,
        class_names=tuple(LABEL_SPEC.class_names),
    )


# ------------------------------------------------------------------------------ 3.2 compilation


def cache_key(model: Model, cann_version: str | None, cell: PlannedCell) -> str:
    """The compile-cache key: the model's content, the compiling host's CANN and the cell's build flags."""
    target = cell.target
    flags = {
        "aoe": target.aoe,
        "output_type": "INT32" if cell.output.integer_output else "FP16",
        "format": CACHE_FORMAT,
    }
    return content_key(
        [
            model.sha256,
            cann_version,
            target.backend,
            target.chip or target.device_type,
            cell.batch_size,
            sorted(flags.items()),
        ]
    )


def local_cann(backend: Backend) -> str | None:
    """The CANN version of the host compiling or measuring an NPU cell (hosts are upgraded one by one)."""
    return _on_this_npu_host(backend, detect_cann_version)


def local_driver(backend: Backend) -> str | None:
    return _on_this_npu_host(backend, detect_driver_version)


def _on_this_npu_host(backend: Backend, detect: Any) -> str | None:
    if backend.RUNS_ON != "npu":
        return None
    try:
        return str(detect())
    except ErfnetError:
        return None


def compile_cell(cell: PlannedCell, model: Model, env: Environment, claim: Claim | None = None) -> CompiledCell:
    """Compile one cell, or take it from the content-addressed store; a refusal is recorded, not raised.
    ``claim``: how an AOE tuning asks for its device (devices.Claim)."""
    backend = get_backend(cell.target.backend)
    if not backend.BUILDS_ARTIFACT:  # e.g. PyTorch runs the checkpoint itself: nothing to build
        return CompiledCell(
            planned=cell,
            golden=model.path,
            compilation=Compilation(
                status=CompileStatus.SKIPPED,
                path=env.params["weights"],
                sha256=env.weights_sha256,
                seconds=0.0,
                cache_hit=False,
                error=None,
            ),
        )
    cann = local_cann(backend)
    where = {"host": host_name(), "cann_version": cann} if backend.RUNS_ON == "npu" else {}
    store = Store(load_settings().compile_cache, "the compile cache")
    try:
        entry = store.fetch_or_build(
            cache_key(model, cann, cell), lambda staging: _build(backend, cell, model, staging, claim)
        )
    except (CompileFailed, InferFailed) as exc:  # InferFailed: AOE found no device of its chip
        log.error("compile failed for %s at batch %s: %s", cell.target.name, cell.batch_size, exc)
        return CompiledCell(
            planned=cell,
            golden=model.path,
            compilation=Compilation(
                status=CompileStatus.FAILED,
                path=None,
                sha256=None,
                seconds=None,
                cache_hit=False,
                error=str(exc),
                **where,
            ),
        )
    return CompiledCell(
        planned=cell,
        golden=model.path,
        compilation=Compilation(
            status=CompileStatus.OK,
            path=str(entry.artifact),
            sha256=entry.sha256,
            seconds=0.0 if entry.hit else entry.meta["seconds"],
            cache_hit=entry.hit,
            error=None,
            **where,
        ),
    )


def _build(
    backend: Backend, cell: PlannedCell, model: Model, staging: Path, claim: Claim | None
) -> tuple[Path, dict[str, Any]]:
    """Compile into the store's staging folder; AOE tunes on a leased device of its chip."""
    target = cell.target
    chip = target.chip or target.device_type
    # Only atc takes the output type (the other backends' artifacts output what the model does).
    extra: dict[str, Any] = {"integer_output": cell.output.integer_output} if backend.RUNS_ON == "npu" else {}
    result: CompileResult
    if target.aoe:
        with hold_device(as_target(target).as_dict(), backend, claim) as device:
            result = backend.compile(
                model.path, staging, chip=chip, batch_size=cell.batch_size, aoe=True, device=device, **extra
            )
    else:
        result = backend.compile(model.path, staging, chip=chip, batch_size=cell.batch_size, aoe=False, **extra)
    return Path(result.path), {"seconds": round(result.seconds, 3)}
