"""The shapes of what passes between the DAG's tasks, and the one status vocabulary.

Airflow hands task results over through XCom as plain JSON, so the records are ``TypedDict``s (plain
dicts at run time, checked shapes for readers and type checkers) and the statuses are ``StrEnum``s
(their members are strings, so they serialise as themselves). Later fields (host, device, CANN per
cell; a confusion matrix) are added here once, with ``NotRequired`` where older documents lack them.

The flow (docs/architecture.md draws it)::

    Params -> Environment -> PlannedCell -> CompiledCell -> InferredCell -> EvaluatedCell
                 |-> Model (export, fix_bn)     Prepared (preprocess) -^        |-> PerfRow
"""

from __future__ import annotations

from enum import StrEnum
from typing import NotRequired, TypedDict


class RunStatus(StrEnum):
    COMPLETE = "complete"      # every cell is a result (measured, or refused as the guide's table shows)
    INCOMPLETE = "incomplete"  # at least one cell never reached a device: not a result, the gate fails it
    FAILED = "failed"          # nothing was measured


class CellStatus(StrEnum):
    """The status of a (target, batch) cell. ``oom`` and ``compile_failed`` are results (the guide's
    table has a 310 cell that ran out of memory); the others say the cell was never measured."""

    OK = "ok"
    OOM = "oom"
    COMPILE_FAILED = "compile_failed"
    MODEL_LOAD_FAILED = "model_load_failed"
    DEVICE_OPEN_FAILED = "device_open_failed"
    INFER_FAILED = "infer_failed"
    NO_SPACE = "no_space"  # the output folder could not hold the cell's outputs: nothing was written
    TIMED_OUT = "timed_out"  # the tool ran past its deadline (deadlines.py) and was stopped: incomplete


class LabelMode(StrEnum):
    """What a cell's outputs held, so what its mIoU was computed from (the gate never compares across)."""

    LOGITS = "logits"  # the guide's FP16 logits, argmax on the host
    LABELS = "labels"  # labels_on_device: ArgMax in the compiled model, integer label maps


class CompileStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # the backend builds nothing (PyTorch runs the checkpoint)


# What a backend's InferFailed may carry, and which cell statuses are infrastructure failures.
INFER_FAILURES = frozenset({CellStatus.OOM, CellStatus.MODEL_LOAD_FAILED, CellStatus.DEVICE_OPEN_FAILED,
                            CellStatus.INFER_FAILED, CellStatus.NO_SPACE, CellStatus.TIMED_OUT})
INFRASTRUCTURE_FAILURES = frozenset({CellStatus.MODEL_LOAD_FAILED, CellStatus.DEVICE_OPEN_FAILED,
                                     CellStatus.INFER_FAILED, CellStatus.NO_SPACE, CellStatus.TIMED_OUT})


def is_result(status: str) -> bool:
    """A measurement or a refusal the guide would table; False for a cell that never reached a device."""
    return status not in INFRASTRUCTURE_FAILURES


def run_status(cell_statuses: list[str]) -> RunStatus:
    if any(not is_result(s) for s in cell_statuses):
        return RunStatus.INCOMPLETE
    return RunStatus.COMPLETE if CellStatus.OK in cell_statuses else RunStatus.FAILED


class Params(TypedDict):
    """The validated trigger form (``params.RUN_PARAMS`` defines each field once)."""

    weights: str
    dataset_root: str
    targets: list[str]
    batch_sizes: list[int]
    aoe: bool
    image_limit: int
    reference_miou: float
    tolerance: float
    force: bool
    keep_outputs: bool           # keep the logits after the cell is evaluated (default: deleted)
    labels_on_device: bool       # ArgMax compiled into the model: the device outputs label maps


class TargetRecord(TypedDict):
    name: str
    backend: str
    device: str
    chip: str | None
    aoe: bool


class HostRecord(TypedDict):
    """What an NPU worker's probe found: its name, CANN, driver and devices, for one chip it serves."""
    chip: str
    host: str
    cann_version: str | None
    driver_version: str | None
    devices: list[int]            # the ids of this chip's devices on that host


class Environment(TypedDict):
    run_id: str
    dag_id: str
    started_at: str
    params: Params
    cann_version: str | None      # the fleet's CANN versions, comma-separated (each cell records its own)
    driver_version: str | None
    host: str                     # where the run was planned (the central worker)
    backends: dict[str, str]
    weights_sha256: str
    targets: list[TargetRecord]
    work_dir: str
    npu_chips: list[str]          # the chips the run's NPU targets need, each on its queue npu-<chip>
    hosts: NotRequired[list[HostRecord]]  # one per chip, from that chip's probe


class Model(TypedDict):
    origin: str
    max_abs_error: float
    max_rel_error: float
    cache_hit: bool
    path: str
    sha256: str
    bn_values_changed: int


class Prepared(TypedDict):
    prep_dir: str
    gt_dir: str
    images: int
    fingerprint: str
    synthetic: bool
    dataset: str                 # a module of erfnet_tasks.datasets
    class_names: list[str]       # stored with the run, so readers need no dataset module


class PlannedCell(TargetRecord):
    target: str
    batch_size: int


class CompiledCell(PlannedCell):
    model_path: str | None
    sha256: str | None
    seconds: float | None
    cache_hit: bool
    status: CellStatus
    error: str | None
    compile_host: NotRequired[str]             # the worker that compiled it (NPU cells)
    compile_cann_version: NotRequired[str | None]


class InferredCell(CompiledCell):
    summary: str | None
    host: NotRequired[str]                     # where it ran: worker, device id, its CANN and driver
    device: NotRequired[str | None]
    cann_version: NotRequired[str | None]
    driver_version: NotRequired[str | None]
    throughput_fps: NotRequired[float]
    compute_ms: NotRequired[dict]
    h2d_ms: NotRequired[dict]
    d2h_ms: NotRequired[dict]


class EvaluatedCell(InferredCell):
    miou: float | None
    per_class: list[float] | None
    images: int
    confusion: list[list[int]] | None  # channels x channels pixel counts, rows = label, columns = prediction
    label_mode: LabelMode | None      # what the mIoU was computed from (None: not measured)
    outputs_deleted: int              # output files deleted once the result was stored (0 with keep_outputs)


class PerfRow(TypedDict):
    target: str
    batch_size: int
    throughput_fps: float | None
    compute_min_ms: float | None
    compute_mean_ms: float | None
    compute_median_ms: float | None
    compute_p99_ms: float | None
    h2d_mean_ms: float | None
    d2h_mean_ms: float | None
    status: CellStatus
    error: str | None
    host: str | None
    device: str | None
    cann_version: str | None
    driver_version: str | None
