"""The plan: the form checked, the targets resolved against the fleet, each chip probed, the cells planned.

A planned cell carries its ``OutputFormat``: whether it outputs the guide's FP16 logits or int32 label
maps (labels_on_device) is decided here, once, and every later stage reads it from the cell.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from . import params as params_module
from .backends import all_backends, get_backend
from .backends.ascend import detect_chips
from .backends.environment import describe_toolchain
from .datasets import DEFAULT_DATASET, label_spec
from .deployment import DAG_ID
from .devices import devices_of_chip
from .errors import BadInput, ErfnetError, Transient
from .fleet import check_configured, live_chips, queue_for
from .fsutil import sha256_file
from .records import Environment, HostRecord, LabelMode, Params, PlannedCell, TargetRecord, output_format
from .results.document import validate_run_id
from .settings import Settings, host_name, load_settings
from .targets import Target, expand_targets

log = logging.getLogger(__name__)

CELL_GROUPS = ("npu", "npu_aoe", "host")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "run"


def run_folder_name(run_id: str) -> str:
    """The run's work folder under the runs directory (retention finds a run's folder by it)."""
    return safe_name(run_id)


def validate_params(raw: dict[str, Any], settings: Settings) -> Params:
    """The trigger form, checked against ``params.RUN_PARAMS``; paths must lie under the data roots."""
    return params_module.validate_params(raw, settings.data_roots)


def check_params(raw_params: dict[str, Any]) -> None:
    """The form alone, on any worker: a run without usable defaults ends here in seconds."""
    validate_params(raw_params, load_settings())


def target_record(target: Target) -> TargetRecord:
    return TargetRecord(
        name=target.name, backend=target.backend, device_type=target.device, chip=target.chip, aoe=target.aoe
    )


def as_target(record: TargetRecord) -> Target:
    return Target(record.name, record.backend, record.device_type, record.chip, record.aoe)


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


def fleet_chips(live: list[str] | None) -> list[str]:
    """What ``auto`` means: ``live``, every chip a live NPU worker of the fleet serves; outside Celery
    (``airflow dags test``, the demo: ``live`` is None) the chips of this host."""
    if live is not None:
        return live
    try:
        return list(dict.fromkeys(detect_chips()))
    except ErfnetError as exc:  # a broken npu-smi does not stop a CPU-only run
        log.info("environment: %s", exc)
        return []


def resolve_environment(raw_params: dict[str, Any], run_id: str, broker_url: str | None = None) -> Environment:
    """Validate the form, resolve the targets against the fleet, and fix the work folder (on any worker:
    each chip's own CANN, driver and host come from its probe on that chip's queue)."""
    settings = load_settings()
    validate_run_id(run_id)  # it keys the results database: refused here, not at publish time
    params = validate_params(raw_params, settings)
    live = live_chips(broker_url)
    targets = expand_targets(params["targets"], aoe=params["aoe"], detected_chips=fleet_chips(live))
    chips = list(dict.fromkeys(t.chip for t in targets if t.on_npu and t.chip))
    check_configured(chips)
    idle = [c for c in chips if live is not None and c not in live]
    if idle:
        raise Transient(
            f"no live NPU worker consumes {', '.join(queue_for(c) for c in idle)}: start one on a "
            f"host with that card (its worker runs `celery worker --queues $(erfnet worker-queues)`)"
        )
    work_dir = settings.runs_dir / run_folder_name(run_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    return Environment(
        run_id=run_id,
        dag_id=DAG_ID,
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        params=params,
        cann_version=None,
        driver_version=None,
        host=host_name(),
        backends=backend_versions(targets, None),
        weights_sha256=sha256_file(params["weights"]),
        targets=tuple(target_record(t) for t in targets),
        work_dir=str(work_dir),
        npu_chips=tuple(chips),
    )


def chips_to_probe(env: Environment, chip: str) -> list[str]:
    """``[chip]`` when the run needs it, else ``[]`` (the DAG's probe of that chip is then skipped)."""
    return [chip] if chip in env.npu_chips else []


def probe_host(chip: str) -> HostRecord:
    """On a worker of queue npu-<chip>: this host's CANN, driver and devices of ``chip``."""
    ascend = describe_toolchain()
    for note in ascend["notes"]:
        log.info("environment: %s", note)
    if not (ascend["cann_version"] or ascend["atc"]):
        raise BadInput(
            f"{host_name()} serves {queue_for(chip)} but has no Ascend CANN toolkit (no atc on "
            f"PATH, no version.cfg; source CANN's set_env.sh or set ASCEND_TOOLKIT_HOME)"
        )
    if not ascend["cann_version"]:
        log.warning("atc is on PATH but no CANN version file was found: %s records CANN as unknown", host_name())
    devices = devices_of_chip(chip, detect_chips())
    if not devices:  # its cells are then recorded as device_open_failed: the run is incomplete, not lost
        log.warning(
            "%s serves %s but npu-smi info lists no %s: start its worker with --queues $(erfnet worker-queues)",
            host_name(),
            queue_for(chip),
            chip,
        )
    return HostRecord(
        chip=chip,
        host=host_name(),
        cann_version=ascend["cann_version"],
        driver_version=ascend["driver_version"],
        devices=tuple(devices),
    )


def with_hosts(env: Environment, probes: list[list[HostRecord]]) -> Environment:
    """The environment with each chip's probe; the run's CANN and driver list the fleet's versions."""
    hosts = sorted((h for found in probes for h in found), key=lambda h: h.chip)
    cann = ", ".join(sorted({h.cann_version or "unknown" for h in hosts})) or None
    driver = ", ".join(sorted({h.driver_version or "unknown" for h in hosts})) or None
    targets = [as_target(t) for t in env.targets]
    return env.model_copy(
        update={
            "hosts": tuple(hosts),
            "cann_version": cann,
            "driver_version": driver,
            "backends": backend_versions(targets, cann),
        }
    )


def cell_group(target: TargetRecord) -> str:
    if get_backend(target.backend).RUNS_ON == "host":
        return "host"
    return "npu_aoe" if target.aoe else "npu"


def label_mode(target: TargetRecord, params: Params) -> LabelMode:
    """Label maps where labels_on_device compiles ArgMax into the target's model, else the guide's logits
    (a backend that builds nothing, such as PyTorch, runs the checkpoint: logits)."""
    on_device = params.get("labels_on_device") and get_backend(target.backend).BUILDS_ARTIFACT
    return LabelMode.LABELS if on_device else LabelMode.LOGITS


def plan_cells(env: Environment, group: str, chip: str | None = None) -> list[PlannedCell]:
    """One group of the target x batch matrix: ``host``, or ``npu`` (atc) / ``npu_aoe`` (AOE holds a
    device) of one ``chip``, whose work runs on that chip's queue."""
    if group not in CELL_GROUPS:
        raise ValueError(f"unknown cell group {group!r}")
    spec = label_spec(DEFAULT_DATASET)  # the dataset preprocess_dataset reads (datasets.cityscapes)
    return [
        PlannedCell(target=target, batch_size=batch, output=output_format(label_mode(target, env.params), spec))
        for target in env.targets
        if cell_group(target) == group and (group == "host" or target.chip == chip)
        for batch in env.params["batch_sizes"]
    ]


def matrix(env: Environment) -> list[PlannedCell]:
    """Every cell of the run, in the order of the DAG's groups: what the run opens with."""
    groups = [("host", None)] + [(group, chip) for chip in env.npu_chips for group in ("npu", "npu_aoe")]
    return [cell for group, chip in groups for cell in plan_cells(env, group, chip)]
