"""The DAG's tasks as plain functions (the guide's table of contents, step by step).

Each function takes and returns JSON-serialisable dicts, because that is what Airflow passes between
tasks through XCom; none of them imports Airflow, so each is testable on its own and the DAG file only
wires them. A cell is one (target, batch size) pair of the guide's tables.

Failure policy: a bad parameter or input raises ErfnetError (deterministic: the DAG does not retry it);
a cell that fails to compile or infer is *recorded* with its status and the other cells go on, because
the guide's own table has such a cell (the 310 at batch 64: memory allocation failed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import re
import shutil
import socket
from pathlib import Path

from .errors import ErfnetError
from .fsutil import read_json, sha256_file, write_json_atomic
from .settings import Settings, load_settings, resolve_under_roots
from .targets import Target, expand_targets, parse_target

log = logging.getLogger(__name__)

DAG_ID = "erfnet_offline_inference"
DEFAULT_BATCH_SIZES = [1, 4, 8, 16, 32, 64]
GUIDE_MIOU_PERCENT = 72.20
GUIDE_TOLERANCE_POINTS = 1.0
CACHE_FORMAT = 1  # bump when the compile cache's layout or key changes
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
STATUS_OF_INFER_FAILURE = {"oom": "oom"}  # every other backend failure is an infer_failed cell


# --------------------------------------------------------------------------------------- params

def default_params() -> dict:
    """The trigger form's defaults; deployments set them through the environment."""
    data = load_settings().data_dir
    return {
        "weights": os.environ.get("ERFNET_WEIGHTS", str(data / "models" / "erfnet_pretrained.pth")),
        "dataset_root": os.environ.get("ERFNET_DATASET_ROOT", str(data / "cityscapes")),
        "targets": [t for t in os.environ.get("ERFNET_TARGETS", "auto").split(",") if t],
        "batch_sizes": list(DEFAULT_BATCH_SIZES),
        "aoe": False,
        "image_limit": 0,
        "reference_miou": GUIDE_MIOU_PERCENT,
        "tolerance": GUIDE_TOLERANCE_POINTS,
        "force": False,
    }


def validate_params(raw: dict, settings: Settings) -> dict:
    """Check every trigger-form value; paths must resolve under the configured data roots."""
    params = {**default_params(), **(raw or {})}
    unknown = sorted(set(params) - set(default_params()))
    if unknown:
        raise ErfnetError(f"unknown parameter(s): {', '.join(unknown)}")
    batch_sizes = params["batch_sizes"]
    if (not isinstance(batch_sizes, list) or not batch_sizes
            or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in batch_sizes)):
        raise ErfnetError(f"batch_sizes must be a non-empty list of positive integers, got {batch_sizes!r}")
    targets = params["targets"]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise ErfnetError(f"targets must be a non-empty list of names, got {targets!r}")
    for name in targets:
        if name != "auto":
            parse_target(name)  # refuses anything that is not a known target or a clean chip name
    limit = params["image_limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ErfnetError(f"image_limit must be 0 (all) or a positive integer, got {limit!r}")
    for key in ("reference_miou", "tolerance"):
        if isinstance(params[key], bool) or not isinstance(params[key], (int, float)) or not 0 <= params[key] <= 100:
            raise ErfnetError(f"{key} must be a number of mIoU points between 0 and 100, got {params[key]!r}")
    for key in ("aoe", "force"):
        if not isinstance(params[key], bool):
            raise ErfnetError(f"{key} must be true or false, got {params[key]!r}")
    return {
        **params,
        "weights": _resolve_path_param(params, "weights", settings),
        "dataset_root": _resolve_path_param(params, "dataset_root", settings),
        "batch_sizes": sorted(set(batch_sizes)),
        "reference_miou": float(params["reference_miou"]),
        "tolerance": float(params["tolerance"]),
    }


# The settings behind the form's path defaults: a scheduled run (unpausing starts one at once) uses them.
PATH_PARAM_SETTINGS = {"weights": "ERFNET_WEIGHTS", "dataset_root": "ERFNET_DATASET_ROOT"}


def _resolve_path_param(params: dict, key: str, settings: Settings) -> str:
    try:
        return str(resolve_under_roots(params[key], settings.data_roots, key))
    except ErfnetError as exc:
        raise ErfnetError(f"{exc}; give `{key}` in the trigger form, or set {PATH_PARAM_SETTINGS[key]} for the "
                          f"scheduler and dag-processor (the form's default, used by scheduled runs)") from None


def check_params(raw_params: dict) -> None:
    """The form alone, on any worker: a run without usable defaults ends here in seconds."""
    validate_params(raw_params, load_settings())


# --------------------------------------------------------------------------------- environment

def _safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "run"


def detect_ascend() -> dict:
    """CANN version, chips and driver of this worker; None / [] for what is not installed."""
    from .backends import ascend

    try:
        cann = ascend.detect_cann_version()
    except ErfnetError:
        cann = None
    return {"cann_version": cann, "chips": ascend.detect_chips(),
            "driver_version": ascend.detect_driver_version(), "atc": shutil.which("atc")}


def backend_versions(targets: list[Target], cann_version: str | None) -> dict:
    import onnxruntime
    import torch

    versions = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0]}
    if any(t.on_npu for t in targets):
        versions["ascend"] = cann_version or "unknown"
    return versions


def resolve_environment(raw_params: dict, run_id: str) -> dict:
    """Validate the form, detect the toolchain, plan the target x batch matrix, and fix the work folder."""
    settings = load_settings()
    params = validate_params(raw_params, settings)
    ascend = detect_ascend()
    targets = expand_targets(params["targets"], aoe=params["aoe"], detected_chips=ascend["chips"])
    if any(t.on_npu for t in targets) and not (ascend["cann_version"] or ascend["atc"]):
        names = ", ".join(t.name for t in targets if t.on_npu)
        raise ErfnetError(f"targets {names} need the Ascend CANN toolkit, which is not installed on this "
                          f"worker (no atc on PATH, no version.cfg; source CANN's set_env.sh or set "
                          f"ASCEND_TOOLKIT_HOME)")
    if any(t.on_npu for t in targets) and not ascend["cann_version"]:
        log.warning("atc is on PATH but no CANN version file was found: the run records CANN as unknown")
    work_dir = settings.runs_dir / _safe_name(run_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    return {
        "run_id": run_id,
        "dag_id": DAG_ID,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "params": params,
        **{k: v for k, v in ascend.items() if k != "atc"},
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "backends": backend_versions(targets, ascend["cann_version"]),
        "weights_sha256": sha256_file(params["weights"]),
        "targets": [t.as_dict() for t in targets],
        "work_dir": str(work_dir),
        "data_dir": str(settings.data_dir),
    }


def plan_cells(env: dict, group: str) -> list[dict]:
    """One group of the target x batch matrix: ``npu`` (atc), ``npu_aoe`` (AOE holds the device), ``host``."""
    def group_of(target: dict) -> str:
        if target["backend"] != "ascend":
            return "host"
        return "npu_aoe" if target["aoe"] else "npu"

    if group not in ("npu", "npu_aoe", "host"):
        raise ValueError(f"unknown cell group {group!r}")
    return [
        {**target, "target": target["name"], "batch_size": batch}
        for target in env["targets"] if group_of(target) == group
        for batch in env["params"]["batch_sizes"]
    ]


# ----------------------------------------------------------------------------------- 3.1 export

def export_step(env: dict) -> dict:
    """ErfNet_pth2onnx.py, verified against PyTorch; reused while the weights and the exporter are the same."""
    import torch

    from .onnx_export import DEFAULT_OPSET, export_onnx

    key = hashlib.sha256(f"{env['weights_sha256']}\n{torch.__version__}\n{DEFAULT_OPSET}\n{CACHE_FORMAT}".encode())
    folder = load_settings().export_cache / key.hexdigest()[:24]
    record = folder / "export.json"
    if record.is_file() and (folder / "ErfNet_origin.onnx").is_file():
        return {**read_json(record, "an export cache record"), "cache_hit": True}
    report = export_onnx(env["params"]["weights"], folder / "ErfNet_origin.onnx")
    exported = {"origin": str(report.path), "max_abs_error": report.max_abs_error,
                "max_rel_error": report.max_rel_error}
    write_json_atomic(record, exported)  # written last: its presence means the export above is whole
    return {**exported, "cache_hit": False}


def fix_bn_step(exported: dict) -> dict:
    """modify_bn_weights.py: the model every target compiles."""
    from .onnx_export import fix_bn

    fixed = Path(exported["origin"]).with_name("ErfNet.onnx")  # a function of the export, so kept beside it
    changed = fix_bn(exported["origin"], fixed)
    return {**exported, "path": str(fixed), "sha256": sha256_file(fixed), "bn_values_changed": changed}


# ------------------------------------------------------------------------------- 4 preprocessing

def preprocess_dataset(env: dict) -> dict:
    """Preprocess into a folder shared by every run over the same dataset and limit (resumable)."""
    from .cityscapes import dataset_dirs, preprocess

    settings = load_settings()
    img_dir, gt_dir = dataset_dirs(env["params"]["dataset_root"])
    limit = env["params"]["image_limit"] or None
    key = hashlib.sha256(f"{img_dir}\n{limit}".encode()).hexdigest()[:16]
    prep_dir, gt_out = settings.prep_cache / key / "prep_dataset", settings.prep_cache / key / "gt_label"
    manifest = preprocess(img_dir, prep_dir, gt_dir, gt_out, limit=limit, progress=False)
    return {"prep_dir": str(prep_dir), "gt_dir": str(gt_out), "images": manifest["images"],
            "fingerprint": manifest["fingerprint"], "synthetic": bool(manifest.get("synthetic"))}


# ------------------------------------------------------------------------------ the nightly skip

def previous_complete_run(url: str | None = None) -> dict | None:
    from .results import db, queries

    if db.current_revision(url) is None:  # a results database nobody has published to yet
        return None
    with db.session_scope(url) as session:
        newest_complete = next((r for r in queries.list_runs(session, limit=100) if r["status"] == "complete"), None)
        return queries.run_document(session, newest_complete["id"]) if newest_complete else None


def unchanged_since_last_run(env: dict, model: dict, prep: dict, url: str | None = None) -> str | None:
    """The id of the last complete run with the same CANN, weights and dataset, or None."""
    if env["params"]["force"]:
        return None
    previous = previous_complete_run(url)
    if not previous:
        return None
    run = previous["run"]
    planned = sorted((t["name"], b) for t in env["targets"] for b in env["params"]["batch_sizes"])
    measured = sorted((c["target"], c["batch_size"]) for c in previous.get("perf", []))
    same = (run.get("cann_version") == env["cann_version"]
            and run.get("weights_sha256") == env["weights_sha256"]
            and run.get("dataset_fingerprint") == prep["fingerprint"]
            and planned == measured)
    return run["id"] if same else None


# ------------------------------------------------------------------------------ 3.2 compilation

def cache_key(model: dict, env: dict, cell: dict) -> str:
    flags = {"aoe": cell["aoe"], "output_type": "FP16", "format": CACHE_FORMAT}
    text = "\n".join(map(str, [model["sha256"], env.get("cann_version"), cell["backend"],
                               cell.get("chip") or cell["device"], cell["batch_size"], sorted(flags.items())]))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def compile_cell(cell: dict, model: dict, env: dict) -> dict:
    """Compile one cell, or take it from the content-addressed cache; a refusal is recorded, not raised."""
    from .backends import CompileFailed, get_backend

    if cell["backend"] == "torch":  # PyTorch runs the checkpoint itself: nothing to build
        return {**cell, "model_path": env["params"]["weights"], "sha256": env["weights_sha256"],
                "seconds": 0.0, "cache_hit": False, "status": "ok", "error": None}
    cache_dir = load_settings().compile_cache / cache_key(model, env, cell)
    done = cache_dir / "compiled.json"
    if done.is_file():
        record = read_json(done, "a compile cache record")
        if Path(record["model_path"]).is_file():
            return {**cell, **record, "seconds": 0.0, "cache_hit": True, "status": "ok", "error": None}
    backend = get_backend(cell["backend"])
    chip = cell.get("chip") or cell["device"]
    staging = cache_dir.with_name(cache_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = backend.compile(model["path"], staging, chip=chip, batch_size=cell["batch_size"], aoe=cell["aoe"])
    except CompileFailed as exc:
        log.error("compile failed for %s at batch %s: %s", cell["target"], cell["batch_size"], exc)
        return {**cell, "model_path": None, "sha256": None, "seconds": None, "cache_hit": False,
                "status": "compile_failed", "error": str(exc)}
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.replace(staging, cache_dir)  # the cache entry appears whole or not at all
    record = {"model_path": str(cache_dir / Path(result.path).name),
              "sha256": sha256_file(cache_dir / Path(result.path).name)}
    write_json_atomic(done, record)
    return {**cell, **record, "seconds": round(result.seconds, 3), "cache_hit": False, "status": "ok", "error": None}


# ---------------------------------------------------------------------------------- 5 inference

def cell_dir_name(cell: dict) -> str:
    return f"{_safe_name(cell['target'])}_bs{cell['batch_size']}"


def infer_cell(cell: dict, prep: dict, env: dict) -> dict:
    """Run one compiled cell over the preprocessed set; a device failure is recorded with its status."""
    from .backends import InferFailed, get_backend

    if cell["status"] != "ok":
        return {**cell, "summary": None}
    out_dir = Path(env["work_dir"]) / "outputs" / cell_dir_name(cell)
    device = 0 if cell["backend"] == "ascend" else cell["device"]
    try:
        result = get_backend(cell["backend"]).infer(
            cell["model_path"], prep["prep_dir"], out_dir, batch_size=cell["batch_size"], device=device)
    except InferFailed as exc:
        log.error("inference failed for %s at batch %s (%s): %s", cell["target"], cell["batch_size"], exc.status, exc)
        return {**cell, "summary": None, "status": STATUS_OF_INFER_FAILURE.get(exc.status, "infer_failed"),
                "error": f"{exc.status}: {exc}"}
    return {**cell, "summary": str(result.summary_path), "throughput_fps": result.throughput_fps,
            "compute_ms": result.compute_ms, "h2d_ms": result.h2d_ms, "d2h_ms": result.d2h_ms}


# --------------------------------------------------------------------------------- 6 evaluation

def evaluate_cell(cell: dict, prep: dict) -> dict:
    from .evaluate import evaluate_summary

    if cell["status"] != "ok":
        return {**cell, "miou": None, "per_class": None, "images": 0}
    result = evaluate_summary(cell["summary"], prep["gt_dir"], progress=False)
    return {**cell, "miou": result.miou, "per_class": list(result.per_class), "images": result.images}


# --------------------------------------------------------------------------------- 7 performance

def perf_row(cell: dict) -> dict:
    compute = cell.get("compute_ms") or {}
    ok = cell["status"] == "ok"
    return {
        "target": cell["target"], "batch_size": cell["batch_size"],
        "throughput_fps": cell.get("throughput_fps") if ok else None,
        "compute_min_ms": compute.get("min"), "compute_mean_ms": compute.get("mean"),
        "compute_median_ms": compute.get("median"), "compute_p99_ms": compute.get("percentile(99%)"),
        "h2d_mean_ms": (cell.get("h2d_ms") or {}).get("mean"), "d2h_mean_ms": (cell.get("d2h_ms") or {}).get("mean"),
        "status": cell["status"], "error": cell.get("error"),
    }


def collect_perf(cells: list[dict]) -> list[dict]:
    return sorted((perf_row(c) for c in cells), key=lambda r: (r["target"], r["batch_size"]))


# ------------------------------------------------------------------------------------- publish

def build_run_document(env: dict, model: dict, prep: dict, cells: list[dict], perf: list[dict]) -> dict:
    # A recorded cell failure (the 310's batch 64) is a result; the run failed only if nothing measured.
    status = "complete" if any(c["status"] == "ok" for c in cells) else "failed"
    return {
        "run": {
            "id": env["run_id"], "dag_id": env["dag_id"], "started_at": env["started_at"],
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(), "status": status,
            "params": env["params"], "cann_version": env["cann_version"],
            "driver_version": env["driver_version"], "host": env["host"], "backends": env["backends"],
            "model_sha256": model["sha256"], "weights_sha256": env["weights_sha256"],
            "dataset_fingerprint": prep["fingerprint"], "images": prep["images"],
            "synthetic": prep["synthetic"],
        },
        "compiled": [
            {k: c.get(k) for k in ("target", "batch_size", "backend", "chip", "seconds", "cache_hit", "error")}
            | {"path": c.get("model_path"), "sha256": c.get("sha256"),
               "status": "failed" if c["status"] == "compile_failed" else ("skipped" if c["backend"] == "torch" else "ok")}
            for c in cells
        ],
        "accuracy": [
            {"target": c["target"], "batch_size": c["batch_size"], "images": c["images"], "miou": c["miou"],
             "per_class": c["per_class"]}
            for c in sorted(cells, key=lambda c: (c["target"], c["batch_size"])) if c["status"] == "ok"
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


class RegressionDetected(ErfnetError):
    """The gate's verdict: at least one regression rule fired."""


def regression_gate(run_id: str, params: dict, url: str | None = None) -> list[dict]:
    findings = regression_findings(run_id, params, url)
    if findings:
        listed = "; ".join(f["message"] for f in findings[:5])
        more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
        raise RegressionDetected(f"{len(findings)} regression(s) in run {run_id}: {listed}{more}")
    return findings
