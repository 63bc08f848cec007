"""The DAG's tasks as plain functions (the guide's table of contents, step by step).

Each function takes and returns JSON-serialisable dicts, because that is what Airflow passes between
tasks through XCom; none of them imports Airflow, so each is testable on its own and the DAG file only
wires them. A cell is one (target, batch size) pair of the guide's tables.

Failure policy: a bad parameter or input raises BadInput (deterministic: the DAG does not retry it);
a cell that fails to compile or infer is *recorded* with its status and the other cells go on, because
the guide's own table has such a cell (the 310 at batch 64: memory allocation failed).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

from . import params as params_module
from .backends import all_backends, get_backend
from .backends.environment import describe_toolchain
from .deployment import DAG_ID
from .errors import BadInput, CompileFailed, ErfnetError, InferFailed, RegressionDetected, Transient
from .fsutil import read_json, sha256_file, write_json_atomic
from .records import (CellStatus, CompiledCell, CompileStatus, Environment, EvaluatedCell, HostRecord,
                      InferredCell, LabelMode, Model, Params, PerfRow, PlannedCell, Prepared, RunStatus, is_result,
                      run_status)
from .devices import devices_of_chip, hold_device
from .fleet import check_configured, live_chips, queue_for
from .settings import Settings, host_name, load_settings, resolve_under_roots
from .targets import Target, expand_targets, parse_target

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the compile cache's layout or key changes
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
CELL_GROUPS = ("npu", "npu_aoe", "host")


# --------------------------------------------------------------------------------------- params

def validate_params(raw: dict, settings: Settings) -> Params:
    """The trigger form, checked against ``params.RUN_PARAMS``; paths must lie under the data roots."""
    return params_module.validate_params(raw, settings.data_roots)




def check_params(raw_params: dict) -> None:
    """The form alone, on any worker: a run without usable defaults ends here in seconds."""
    validate_params(raw_params, load_settings())


# --------------------------------------------------------------------------------- environment

def _safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "run"


def run_folder_name(run_id: str) -> str:
    """The run's work folder under the runs directory (retention finds a run's folder by it)."""
    return _safe_name(run_id)


def backend_versions(targets: list[Target], cann_version: str | None) -> dict[str, str]:
    """Every host backend's release (without a local build tag such as ``+cpu``); an NPU backend's
    version is the CANN version, recorded only when the run has NPU targets."""
    used = {t.backend for t in targets}
    versions = {}
    for backend in all_backends():
        if backend.RUNS_ON == "host":
            if backend.available():  # an optional host backend that is not installed records nothing
                versions[backend.NAME] = backend.version().split("+")[0]
        elif backend.NAME in used:
            versions[backend.NAME] = cann_version or "unknown"
    return versions


def resolve_environment(raw_params: dict, run_id: str, broker_url: str | None = None) -> Environment:
    """Validate the form, resolve the targets against the fleet, and fix the work folder (on any worker:
    each chip's own CANN, driver and host come from its probe on that chip's queue)."""
    from .results.document import validate_run_id

    settings = load_settings()
    validate_run_id(run_id)  # it keys the results database: refused here, not at publish time
    params = validate_params(raw_params, settings)
    live = live_chips(broker_url)
    targets = expand_targets(params["targets"], aoe=params["aoe"], detected_chips=fleet_chips(live))
    chips = list(dict.fromkeys(t.chip for t in targets if t.on_npu))
    check_configured(chips)
    idle = [c for c in chips if live is not None and c not in live]
    if idle:
        raise Transient(f"no live NPU worker consumes {', '.join(queue_for(c) for c in idle)}: start one on a "
                        f"host with that card (its worker runs `celery worker --queues $(erfnet worker-queues)`)")
    work_dir = settings.runs_dir / run_folder_name(run_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    return {
        "run_id": run_id, "dag_id": DAG_ID, "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "params": params, "cann_version": None, "driver_version": None, "host": host_name(),
        "backends": backend_versions(targets, None), "weights_sha256": sha256_file(params["weights"]),
        "targets": [t.as_dict() for t in targets], "work_dir": str(work_dir), "npu_chips": chips,
    }


def fleet_chips(live: list[str] | None) -> list[str]:
    """What ``auto`` means: ``live``, every chip a live NPU worker of the fleet serves; outside Celery
    (``airflow dags test``, the demo: ``live`` is None) the chips of this host."""
    if live is not None:
        return live
    from .backends.ascend import detect_chips

    try:
        return list(dict.fromkeys(detect_chips()))
    except ErfnetError as exc:  # a broken npu-smi does not stop a CPU-only run
        log.info("environment: %s", exc)
        return []


def chips_to_probe(env: Environment, chip: str) -> list[str]:
    """``[chip]`` when the run needs it, else ``[]`` (the DAG's probe of that chip is then skipped)."""
    return [chip] if chip in env["npu_chips"] else []


def probe_host(chip: str) -> HostRecord:
    """On a worker of queue npu-<chip>: this host's CANN, driver and devices of ``chip``."""
    from .backends.ascend import detect_chips

    ascend = describe_toolchain()
    for note in ascend["notes"]:
        log.info("environment: %s", note)
    if not (ascend["cann_version"] or ascend["atc"]):
        raise BadInput(f"{host_name()} serves {queue_for(chip)} but has no Ascend CANN toolkit (no atc on "
                       f"PATH, no version.cfg; source CANN's set_env.sh or set ASCEND_TOOLKIT_HOME)")
    if not ascend["cann_version"]:
        log.warning("atc is on PATH but no CANN version file was found: %s records CANN as unknown", host_name())
    devices = devices_of_chip(chip, detect_chips())
    if not devices:  # its cells are then recorded as device_open_failed: the run is incomplete, not lost
        log.warning("%s serves %s but npu-smi info lists no %s: start its worker with --queues "
                    "$(erfnet worker-queues)", host_name(), queue_for(chip), chip)
    return {"chip": chip, "host": host_name(), "cann_version": ascend["cann_version"],
            "driver_version": ascend["driver_version"], "devices": devices}


def with_hosts(env: Environment, probes: list[list[HostRecord] | None]) -> Environment:
    """The environment with each chip's probe; the run's CANN and driver list the fleet's versions."""
    hosts = sorted((h for found in probes for h in (found or [])), key=lambda h: h["chip"])

    def joined(key: str) -> str | None:
        return ", ".join(sorted({h[key] or "unknown" for h in hosts})) or None

    cann = joined("cann_version")
    targets = [parse_target(t["name"]) for t in env["targets"]]
    return {**env, "hosts": hosts, "cann_version": cann, "driver_version": joined("driver_version"),
            "backends": backend_versions(targets, cann)}


def plan_cells(env: Environment, group: str, chip: str | None = None) -> list[PlannedCell]:
    """One group of the target x batch matrix: ``host``, or ``npu`` (atc) / ``npu_aoe`` (AOE holds a
    device) of one ``chip``, whose work runs on that chip's queue."""
    def group_of(target: dict) -> str:
        if get_backend(target["backend"]).RUNS_ON == "host":
            return "host"
        return "npu_aoe" if target["aoe"] else "npu"

    if group not in CELL_GROUPS:
        raise ValueError(f"unknown cell group {group!r}")
    return [
        {**target, "target": target["name"], "batch_size": batch}
        for target in env["targets"] if group_of(target) == group and (group == "host" or target["chip"] == chip)
        for batch in env["params"]["batch_sizes"]
    ]


# ----------------------------------------------------------------------------------- 3.1 export

def export_step(env: Environment) -> dict:
    """ErfNet_pth2onnx.py, verified against PyTorch; reused while the weights and the exporter are the same."""
    import torch

    from .onnx_export import DEFAULT_OPSET, export_onnx

    key = hashlib.sha256(f"{env['weights_sha256']}\n{torch.__version__}\n{DEFAULT_OPSET}\n{CACHE_FORMAT}".encode())
    folder = load_settings().export_cache / key.hexdigest()[:24]
    record = folder / "export.json"
    cached = _verified_record(record, "origin", "an export cache record")
    labels = bool(env["params"].get("labels_on_device"))
    if cached is not None:
        return {**cached, "cache_hit": True, "labels_on_device": labels}
    report = export_onnx(env["params"]["weights"], folder / "ErfNet_origin.onnx")
    exported = {"origin": str(report.path), "sha256": sha256_file(report.path),
                "max_abs_error": report.max_abs_error, "max_rel_error": report.max_rel_error}
    write_json_atomic(record, exported)  # written last: its presence means the export above is whole
    return {**exported, "cache_hit": False, "labels_on_device": labels}


def _verified_record(record: Path, path_key: str, what: str) -> dict | None:
    """A cache record whose file still hashes to the sha256 it recorded, else None (rebuild)."""
    if not record.is_file():
        return None
    data = read_json(record, what)
    path = data.get(path_key) if isinstance(data, dict) else None
    if not path or not data.get("sha256") or not Path(path).is_file() or sha256_file(path) != data["sha256"]:
        log.warning("cache entry %s does not match its recorded sha256: rebuilding it", record.parent)
        return None
    return data


def fix_bn_step(exported: dict) -> Model:
    """modify_bn_weights.py: the model every target compiles; with labels_on_device it ends in ArgMax."""
    from .onnx_export import fix_bn

    fixed = Path(exported["origin"]).with_name("ErfNet.onnx")  # a function of the export, so kept beside it
    changed = fix_bn(exported["origin"], fixed)
    if exported.get("labels_on_device"):
        fixed = _with_argmax(fixed)
    return {**exported, "origin_sha256": exported.get("sha256"), "path": str(fixed), "sha256": sha256_file(fixed),
            "bn_values_changed": changed}


def _with_argmax(fixed: Path) -> Path:
    """labels_on_device (beyond the guide): the fixed model + ArgMax over the channels -> int32 label map."""
    from .fsutil import atomic_path
    from .onnx_export import append_argmax

    out = fixed.with_name("ErfNet_argmax.onnx")
    with atomic_path(out) as tmp:
        shutil.copyfile(fixed, tmp)
        append_argmax(tmp)
    return out


# ------------------------------------------------------------------------------- 4 preprocessing

def preprocess_dataset(env: Environment) -> Prepared:
    """Preprocess into a folder keyed by the content of the selected images and labels (and the limit), so
    a corrected image, whatever its mtime, gets a fresh folder; resumable within the folder by content."""
    from .datasets.cityscapes import LABEL_SPEC, dataset_dirs, preprocess, source_digest

    settings = load_settings()
    img_dir, gt_dir = dataset_dirs(env["params"]["dataset_root"])
    for folder, what in ((img_dir, "leftImg8bit/val"), (gt_dir, "gtFine/val")):
        resolve_under_roots(str(folder), settings.data_roots, what)  # a linked split must stay inside the roots
    limit = env["params"]["image_limit"] or None
    key = source_digest(img_dir, gt_dir, limit)[:24]
    prep_dir, gt_out = settings.prep_cache / key / "prep_dataset", settings.prep_cache / key / "gt_label"
    manifest = preprocess(img_dir, prep_dir, gt_dir, gt_out, limit=limit, progress=False)
    return {"prep_dir": str(prep_dir), "gt_dir": str(gt_out), "images": manifest["images"],
            "fingerprint": manifest["fingerprint"], "synthetic": bool(manifest.get("synthetic")),
            "dataset": LABEL_SPEC.name, "class_names": list(LABEL_SPEC.class_names)}


# ------------------------------------------------------------------------------ the nightly skip

def previous_complete_run(url: str | None = None) -> dict | None:
    """The newest run whose every cell is a result: an incomplete run is never a reason to skip."""
    from .results import db, queries

    if db.current_revision(url) is None:  # a results database nobody has published to yet
        return None
    with db.session_scope(url) as session:
        newest_complete = next((r for r in queries.list_runs(session, limit=100)
                                if r["status"] == RunStatus.COMPLETE), None)
        return queries.run_document(session, newest_complete["id"]) if newest_complete else None


def unchanged_since_last_run(env: Environment, model: Model, prep: Prepared, url: str | None = None) -> str | None:
    """The id of the last complete run with the same weights, dataset and matrix, whose cells of each chip
    ran on the CANN version that chip has now (``changed_chips``), or None.

    A results database that cannot be read gives None: the run measures (as a forced run does) and its
    results.json waits for `erfnet results import`; skipping needs proof that nothing changed."""
    from sqlalchemy import exc as sa_exc

    from .errors import first_line
    if env["params"]["force"]:
        return None
    try:
        previous = previous_complete_run(url)
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DatabaseError) as exc:
        log.warning("results database unreachable (%s): measuring anyway; import results.json later with "
                    "`erfnet results import`", first_line(exc))
        return None
    if not previous:
        return None
    run = previous["run"]
    planned = sorted((t["name"], b) for t in env["targets"] for b in env["params"]["batch_sizes"])
    measured = sorted((c["target"], c["batch_size"]) for c in previous.get("perf", []))
    same = (all(is_result(c["status"]) for c in previous.get("perf", []))
            and run.get("weights_sha256") == env["weights_sha256"]
            and run.get("dataset_fingerprint") == prep["fingerprint"]
            and planned == measured
            and not changed_chips(env, previous))
    return run["id"] if same else None


def changed_chips(env: Environment, previous: dict) -> list[str]:
    """The chips whose CANN differs from their cells' in ``previous`` (each cell's own version, else, for
    cells published before cells recorded one, its run's): a CANN upgrade on one host measures again."""
    chip_of = {t["name"]: t["chip"] for t in env["targets"]}
    was: dict[str, set] = {}
    for cell in previous.get("perf", []):
        chip = chip_of.get(cell["target"])
        if chip:
            was.setdefault(chip, set()).add(cell.get("cann_version") or previous["run"].get("cann_version"))
    now = {h["chip"]: h["cann_version"] for h in env.get("hosts", [])}
    return sorted(chip for chip in env["npu_chips"] if was.get(chip) != {now.get(chip)})


# ------------------------------------------------------------------------------ 3.2 compilation

def cache_key(model: Model, cann_version: str | None, cell: PlannedCell) -> str:
    output_type = "INT32" if model.get("labels_on_device") else "FP16"  # the model's sha256 differs too
    flags = {"aoe": cell["aoe"], "output_type": output_type, "format": CACHE_FORMAT}
    text = "\n".join(map(str, [model["sha256"], cann_version, cell["backend"],
                               cell.get("chip") or cell["device"], cell["batch_size"], sorted(flags.items())]))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _on_this_npu_host(backend, detect) -> str | None:
    """What ``detect`` reads on this host for an NPU backend (hosts are upgraded one by one), else None."""
    if backend.RUNS_ON != "npu":
        return None
    try:
        return detect()
    except ErfnetError:
        return None


def _local_cann(backend) -> str | None:
    """The CANN version of the host compiling or measuring an NPU cell."""
    from .backends.ascend import detect_cann_version

    return _on_this_npu_host(backend, detect_cann_version)


def compile_cell(cell: PlannedCell, model: Model, env: Environment) -> CompiledCell:
    """Compile one cell, or take it from the content-addressed cache; a refusal is recorded, not raised."""
    backend = get_backend(cell["backend"])
    if not backend.BUILDS_ARTIFACT:  # e.g. PyTorch runs the checkpoint itself: nothing to build
        return {**cell, "model_path": env["params"]["weights"], "sha256": env["weights_sha256"],
                "seconds": 0.0, "cache_hit": False, "status": CellStatus.OK.value, "error": None}
    cann = _local_cann(backend)
    where = {"compile_host": host_name(), "compile_cann_version": cann} if backend.RUNS_ON == "npu" else {}
    cache_dir = load_settings().compile_cache / cache_key(model, cann, cell)
    record = _verified_record(cache_dir / "compiled.json", "model_path", "a compile cache record")
    if record is not None:
        os.utime(cache_dir / "compiled.json")  # marks the entry used now: retention removes only unused ones
        return {**cell, **record, **where, "seconds": 0.0, "cache_hit": True, "status": CellStatus.OK.value,
                "error": None}
    try:
        result = _build(backend, cell, model, cache_dir)
    except (CompileFailed, InferFailed) as exc:  # InferFailed: AOE found no device of its chip
        log.error("compile failed for %s at batch %s: %s", cell["target"], cell["batch_size"], exc)
        return {**cell, **where, "model_path": None, "sha256": None, "seconds": None, "cache_hit": False,
                "status": CellStatus.COMPILE_FAILED.value, "error": str(exc)}
    record = {"model_path": str(cache_dir / Path(result.path).name),
              "sha256": sha256_file(cache_dir / Path(result.path).name)}
    write_json_atomic(cache_dir / "compiled.json", record)
    return {**cell, **record, **where, "seconds": round(result.seconds, 3), "cache_hit": False,
            "status": CellStatus.OK.value, "error": None}


def _build(backend, cell: PlannedCell, model: Model, cache_dir: Path):
    """Compile into a staging folder renamed into the cache; AOE tunes on a leased device of its chip."""
    chip = cell.get("chip") or cell["device"]
    staging = cache_dir.with_name(cache_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    if cell["aoe"]:
        with hold_device(cell, backend) as device:
            result = backend.compile(model["path"], staging, chip=chip, batch_size=cell["batch_size"], aoe=True,
                                     device=device)
    else:
        result = backend.compile(model["path"], staging, chip=chip, batch_size=cell["batch_size"], aoe=False)
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.replace(staging, cache_dir)  # the cache entry appears whole or not at all
    return result


# ---------------------------------------------------------------------------------- 5 inference

def cell_dir_name(cell: PlannedCell) -> str:
    return f"{_safe_name(cell['target'])}_bs{cell['batch_size']}"


def remove_unfinished_outputs(out_dir: Path) -> int:
    """Delete output folders that have no summary: a killed attempt's (this cell's folder is its own)."""
    from .outputs import OLD_SUMMARY_NAME, summary_path_for

    removed = 0
    if out_dir.is_dir():
        for folder in out_dir.iterdir():
            if folder.is_dir() and not folder.is_symlink() and not summary_path_for(folder).is_file() \
                    and not (folder / OLD_SUMMARY_NAME).is_file():
                shutil.rmtree(folder)
                removed += 1
    return removed


def label_mode(cell: PlannedCell, env: Environment) -> LabelMode:
    """What a cell outputs: label maps where labels_on_device compiled ArgMax into its model, else the
    guide's logits (a backend that builds nothing, such as PyTorch, runs the checkpoint: logits)."""
    on_device = env["params"].get("labels_on_device") and get_backend(cell["backend"]).BUILDS_ARTIFACT
    return LabelMode.LABELS if on_device else LabelMode.LOGITS


def _space_shortage(cell: CompiledCell, prep: Prepared, env: Environment, out_dir: Path):
    from .datasets import DEFAULT_DATASET, label_spec
    from .storage import bytes_per_image, check_space

    spec = label_spec(prep.get("dataset", DEFAULT_DATASET))
    return check_space(out_dir, prep["images"], bytes_per_image(spec, label_mode(cell, env)))


def infer_cell(cell: CompiledCell, prep: Prepared, env: Environment) -> InferredCell:
    """Run one compiled cell over the preprocessed set on a device it holds alone, and only inside this
    call; a device failure is recorded with its own status (oom is a result; model_load_failed,
    device_open_failed, infer_failed and no_space make the run incomplete). The cell records where it
    ran: host, device, CANN and driver."""
    if cell["status"] != CellStatus.OK:
        return {**cell, "summary": None}
    out_dir = Path(env["work_dir"]) / "outputs" / cell_dir_name(cell)
    remove_unfinished_outputs(out_dir)
    shortage = _space_shortage(cell, prep, env, out_dir)
    if shortage is not None:  # checked before anything is written: the other cells go on
        log.error("%s at batch %s: %s", cell["target"], cell["batch_size"], shortage.message)
        return {**cell, "summary": None, "status": CellStatus.NO_SPACE.value, "error": shortage.message}
    backend = get_backend(cell["backend"])
    where = {"host": host_name(), "device": None, "cann_version": _local_cann(backend),
             "driver_version": _local_driver(backend)}
    try:
        with hold_device(cell, backend) as device:
            where["device"] = None if device is None else str(device)
            log.info("%s batch %s on %s device %s", cell["target"], cell["batch_size"], where["host"], device)
            result = backend.infer(cell["model_path"], prep["prep_dir"], out_dir, batch_size=cell["batch_size"],
                                   device=device)
    except (InferFailed, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOSPC:
            raise
        status = exc.status if isinstance(exc, InferFailed) else CellStatus.NO_SPACE.value
        remove_unfinished_outputs(out_dir)  # a half-written folder is never evaluated
        log.error("inference failed for %s at batch %s (%s): %s", cell["target"], cell["batch_size"], status, exc)
        return {**cell, **where, "summary": None, "status": CellStatus(status).value, "error": f"{status}: {exc}"}
    return {**cell, **where, "summary": str(result.summary_path), "throughput_fps": result.throughput_fps,
            "compute_ms": result.compute_ms, "h2d_ms": result.h2d_ms, "d2h_ms": result.d2h_ms}


def _local_driver(backend) -> str | None:
    from .backends.ascend import detect_driver_version

    return _on_this_npu_host(backend, detect_driver_version)


# --------------------------------------------------------------------------------- 6 evaluation

def evaluate_cell(cell: InferredCell, prep: Prepared) -> EvaluatedCell:
    """mIoU, per-class IoU and the confusion matrix; the label mode is what the outputs turned out to hold."""
    from .datasets import DEFAULT_DATASET, label_spec
    from .evaluate import evaluate_summary

    if cell["status"] != CellStatus.OK:
        return {**cell, "miou": None, "per_class": None, "images": 0, "confusion": None, "label_mode": None,
                "outputs_deleted": 0}
    spec = label_spec(prep.get("dataset", DEFAULT_DATASET))
    result = evaluate_summary(cell["summary"], prep["gt_dir"], progress=False, spec=spec)
    return {**cell, "miou": result.miou, "per_class": list(result.per_class), "images": result.images,
            "confusion": [list(row) for row in result.confusion], "label_mode": result.label_mode,
            "outputs_deleted": 0}


def store_cell_result(cell: EvaluatedCell, env: Environment) -> Path:
    """The cell's result on disk, beside its summary, written atomically before any output is deleted:
    what the outputs counted survives them (publish reads the same record from the task's return)."""
    path = Path(env["work_dir"]) / "outputs" / cell_dir_name(cell) / "result.json"
    write_json_atomic(path, {k: cell.get(k) for k in (
        "target", "batch_size", "summary", "images", "miou", "per_class", "confusion", "label_mode")})
    return path


def measure_cell(cell: CompiledCell, prep: Prepared, env: Environment) -> EvaluatedCell:
    """Infer, evaluate where the outputs are, store the result, then delete the counted outputs (unless
    ``keep_outputs``). The device is held only inside ``infer_cell``: the one call a device lease wraps.
    A failure before the result is stored raises with every output still on disk."""
    inferred = infer_cell(cell, prep, env)
    evaluated = evaluate_cell(inferred, prep)
    if evaluated["status"] != CellStatus.OK:
        return evaluated
    store_cell_result(evaluated, env)
    if env["params"].get("keep_outputs"):
        return evaluated
    from .storage import delete_counted_outputs

    return {**evaluated, "outputs_deleted": delete_counted_outputs(evaluated["summary"])}


# --------------------------------------------------------------------------------- 7 performance

def perf_row(cell: InferredCell) -> PerfRow:
    compute = cell.get("compute_ms") or {}
    ok = cell["status"] == CellStatus.OK
    return {
        "target": cell["target"], "batch_size": cell["batch_size"],
        "throughput_fps": cell.get("throughput_fps") if ok else None,
        "compute_min_ms": compute.get("min"), "compute_mean_ms": compute.get("mean"),
        "compute_median_ms": compute.get("median"), "compute_p99_ms": compute.get("percentile(99%)"),
        "h2d_mean_ms": (cell.get("h2d_ms") or {}).get("mean"), "d2h_mean_ms": (cell.get("d2h_ms") or {}).get("mean"),
        "status": cell["status"], "error": cell.get("error"),
        "host": cell.get("host"), "device": cell.get("device"), "cann_version": cell.get("cann_version"),
        "driver_version": cell.get("driver_version"),
    }


def collect_perf(cells: list[InferredCell]) -> list[PerfRow]:
    return sorted((perf_row(c) for c in cells), key=lambda r: (r["target"], r["batch_size"]))


# ------------------------------------------------------------------------------------- publish

def _compile_status(cell: EvaluatedCell) -> CompileStatus:
    if cell["status"] == CellStatus.COMPILE_FAILED:
        return CompileStatus.FAILED
    return CompileStatus.OK if get_backend(cell["backend"]).BUILDS_ARTIFACT else CompileStatus.SKIPPED


def build_run_document(env: Environment, model: Model, prep: Prepared, cells: list[EvaluatedCell],
                       perf: list[PerfRow]) -> dict:
    # A recorded refusal (the 310's batch 64 oom) is a result; a cell that never reached a device makes
    # the run incomplete; the run failed only if nothing was measured.
    status = run_status([c["status"] for c in cells]).value
    return {
        "run": {
            "id": env["run_id"], "dag_id": env["dag_id"], "started_at": env["started_at"],
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(), "status": status,
            "params": env["params"], "cann_version": env["cann_version"],
            "driver_version": env["driver_version"], "host": env["host"], "backends": env["backends"],
            "model_sha256": model["sha256"], "weights_sha256": env["weights_sha256"],
            "dataset_fingerprint": prep["fingerprint"], "images": prep["images"],
            "synthetic": prep["synthetic"], "class_names": prep.get("class_names"),
        },
        "compiled": [
            {k: c.get(k) for k in ("target", "batch_size", "backend", "chip", "seconds", "cache_hit", "error")}
            | {"path": c.get("model_path"), "sha256": c.get("sha256"), "status": _compile_status(c).value,
               "host": c.get("compile_host"), "cann_version": c.get("compile_cann_version")}
            for c in cells
        ],
        "accuracy": [
            {"target": c["target"], "batch_size": c["batch_size"], "images": c["images"], "miou": c["miou"],
             "per_class": c["per_class"], "confusion": c.get("confusion"),
             "label_mode": c.get("label_mode") or LabelMode.LOGITS.value}
            for c in sorted(cells, key=lambda c: (c["target"], c["batch_size"])) if c["status"] == CellStatus.OK
        ],
        "perf": perf,
        "findings": [],
    }


def publish(doc: dict, env: dict, url: str | None = None) -> dict:
    """Write the run's JSON beside its outputs first (it survives a database outage), then the database."""
    from .results import publish as results_publish

    path = Path(env["work_dir"]) / "results.json"
    results_publish.write_run_file(doc, path)
    results_publish.publish_run(doc, url=url)
    return {"run_id": doc["run"]["id"], "results_file": str(path), "status": doc["run"]["status"]}


def regression_findings(run_id: str, params: dict, url: str | None = None) -> list[dict]:
    from .results import db, regression

    with db.session_scope(url) as session:
        return regression.find_regressions(session, run_id, regression.rules_from_params(params))


def regression_gate(run_id: str, params: dict, url: str | None = None) -> list[dict]:
    findings = regression_findings(run_id, params, url)
    if findings:
        listed = "; ".join(f["message"] for f in findings[:5])
        more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
        unmeasured = sum(f["rule"] == "cell_not_measured" for f in findings)
        verdict = f"run {run_id} is incomplete ({unmeasured} cell(s) never reached a device)" if unmeasured             else f"{len(findings)} regression(s) in run {run_id}"
        raise RegressionDetected(f"{verdict}: {listed}{more}")
    return findings
