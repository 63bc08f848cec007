"""The records that pass between the DAG's stages, the rows a run publishes, and the status vocabulary.

Each stage's record is a frozen pydantic v2 model (``frozen=True, extra="forbid"``), chosen over frozen
dataclasses because what a task reads back from XCom is plain JSON written by another process (or
another release): pydantic validates it on the way in (a misspelt or missing key is a one-line error,
not a ``KeyError`` three stages later) and writes it back as JSON without a hand-written encoder. A
later stage *holds* the earlier one (``CompiledCell.planned``, ``MeasuredCell.compiled``) instead of
merging dicts, so no key changes its meaning or its name between stages.

The flow (docs/architecture.md draws it)::

    Params -> Environment --> PlannedCell (+ OutputFormat) -> CompiledCell -> MeasuredCell -> PerfRow
                  |-> ExportedModel -> Model                       Prepared -^        |-> CompiledRow, AccuracyRow

``to_xcom`` and ``from_xcom`` are the one place records become plain dicts and back (the façade in
``pipeline.py`` calls them at each task's entry and exit). The published rows (``CompiledRow``,
``AccuracyRow``, ``PerfRow``) define the run document's cell fields: ``results.document`` and the CSV
export read their field lists from these classes, so a new field is added here (plus its migration
and ORM column) and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypedDict

from .datasets import LabelSpec
from .errors import BadInput


class RunStatus(StrEnum):
    COMPLETE = "complete"  # every cell is a result (measured, or refused as the guide's table shows)
    INCOMPLETE = "incomplete"  # at least one cell never reached a device: not a result, the gate fails it
    FAILED = "failed"  # nothing was measured
    RUNNING = "running"  # opened at the run's start, its cells stored as they are measured; not a result yet


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
    HOST_LOST = "host_lost"  # the cell's worker died or vanished mid-task, or none of its chip was left
    TASK_FAILED = "task_failed"  # the task failed for good with an error of ours or of the tool's


class CellState(StrEnum):
    """Where an unfinished cell of a running run is (the plugin shows it; `progress` records it)."""

    QUEUED = "queued"  # planned, its compile not started
    COMPILING = "compiling"  # atc (or the host backend's build)
    TUNING = "tuning"  # AOE, holding a device
    COMPILED = "compiled"  # waiting for a device of its chip
    MEASURING = "measuring"  # inference and evaluation
    STORED = "stored"  # its rows are in the results database


class LabelMode(StrEnum):
    """What a cell's outputs held, so what its mIoU was computed from (the gate never compares across)."""

    LOGITS = "logits"  # the guide's FP16 logits, argmax on the host
    LABELS = "labels"  # labels_on_device: ArgMax in the compiled model, integer label maps


class CompileStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # the backend builds nothing (PyTorch runs the checkpoint)


# What a backend's InferFailed may carry, and which cell statuses are infrastructure failures.
INFER_FAILURES = frozenset(
    {
        CellStatus.OOM,
        CellStatus.MODEL_LOAD_FAILED,
        CellStatus.DEVICE_OPEN_FAILED,
        CellStatus.INFER_FAILED,
        CellStatus.NO_SPACE,
        CellStatus.TIMED_OUT,
    }
)
INFRASTRUCTURE_FAILURES = frozenset(
    {
        CellStatus.MODEL_LOAD_FAILED,
        CellStatus.DEVICE_OPEN_FAILED,
        CellStatus.INFER_FAILED,
        CellStatus.NO_SPACE,
        CellStatus.TIMED_OUT,
        CellStatus.HOST_LOST,
        CellStatus.TASK_FAILED,
    }
)


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
    keep_outputs: bool  # keep the logits after the cell is evaluated (default: deleted)
    labels_on_device: bool  # ArgMax compiled into the model: the device outputs label maps


class Record(BaseModel):
    """A stage's record: immutable, no unknown keys, validated whenever it is built or read back."""

    model_config = ConfigDict(frozen=True, extra="forbid")


R = TypeVar("R", bound=Record)


def to_xcom(record: Record) -> dict[str, Any]:
    """The record as the plain JSON dict a task returns through XCom."""
    return record.model_dump(mode="json")


def from_xcom(kind: type[R], data: object) -> R:
    """A record read back from XCom (or a test's dict); a record that does not fit is one line."""
    if isinstance(data, kind):
        return data
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(the record)"
        raise BadInput(f"not a {kind.__name__}: {where}: {first['msg']} ({exc.error_count()} error(s))") from exc


# ----------------------------------------------------------------------------------- the plan


class TargetRecord(Record):
    """One target of the matrix (``targets.Target``): where its cells compile and run."""

    name: str
    backend: str
    device_type: str  # cpu | cuda | npu (a cell's device *id* is Inference.device)
    chip: str | None
    aoe: bool


class HostRecord(Record):
    """What an NPU worker's probe found: its name, CANN, driver and devices, for one chip it serves."""

    chip: str
    host: str
    cann_version: str | None
    driver_version: str | None
    devices: tuple[int, ...]  # the ids of this chip's devices on that host


class Environment(Record):
    run_id: str
    dag_id: str
    started_at: str
    params: Params
    cann_version: str | None  # the fleet's CANN versions, comma-separated (each cell records its own)
    driver_version: str | None
    host: str  # where the run was planned (the central worker)
    backends: dict[str, str]
    weights_sha256: str
    targets: tuple[TargetRecord, ...]
    work_dir: str
    npu_chips: tuple[str, ...]  # the chips the run's NPU targets need, each on its queue npu-<chip>
    hosts: tuple[HostRecord, ...] = ()  # one per chip, from that chip's probe (with_hosts)


class OutputFormat(Record):
    """What a cell's outputs hold, decided once when the cell is planned: the compile-cache key, atc's
    ``--output_type``, the space check and the evaluator all read it from here."""

    label_mode: LabelMode
    dtype: Literal["float16", "int32"]
    bytes_per_image: int

    @property
    def integer_output(self) -> bool:
        return self.label_mode == LabelMode.LABELS


LABEL_BYTES = 4  # int32: what atc's ArgMax (and ONNX Runtime's, cast) hands back (docs/reference)


def output_format(mode: LabelMode | str, spec: LabelSpec) -> OutputFormat:
    """The one definition of a mode's output: FP16 logits over every channel, or one int32 label per pixel."""
    pixels = spec.size[0] * spec.size[1]
    if LabelMode(mode) == LabelMode.LABELS:
        return OutputFormat(label_mode=LabelMode.LABELS, dtype="int32", bytes_per_image=pixels * LABEL_BYTES)
    return OutputFormat(label_mode=LabelMode.LOGITS, dtype="float16", bytes_per_image=spec.channels * pixels * 2)


class PlannedCell(Record):
    """One (target, batch size) cell of the guide's tables, as planned."""

    target: TargetRecord
    batch_size: int
    output: OutputFormat


# ---------------------------------------------------------------------------------- the build


class ExportedModel(Record):
    """ErfNet_pth2onnx.py's model, verified against PyTorch."""

    origin: str
    origin_sha256: str
    max_abs_error: float
    max_rel_error: float
    cache_hit: bool
    labels_on_device: bool  # fix_bn appends ArgMax to the model every target compiles


class Model(Record):
    """modify_bn_weights.py's model (with ArgMax where labels_on_device): what every target compiles."""

    exported: ExportedModel
    path: str
    sha256: str
    bn_values_changed: int


class Prepared(Record):
    prep_dir: str
    gt_dir: str
    images: int
    fingerprint: str
    synthetic: bool
    dataset: str  # a module of erfnet_tasks.datasets
    class_names: tuple[str, ...]  # stored with the run, so readers need no dataset module


class Compilation(Record):
    """What compiling a cell gave (``status`` ``skipped``: the backend runs the checkpoint itself)."""

    status: CompileStatus
    path: str | None
    sha256: str | None
    seconds: float | None
    cache_hit: bool
    error: str | None
    host: str | None = None  # the worker that compiled it and its CANN (NPU cells)
    cann_version: str | None = None


class CompiledCell(Record):
    planned: PlannedCell
    compilation: Compilation
    golden: str | None = None  # the FP32 ONNX model it was compiled from: what a failing cell is diagnosed against


# -------------------------------------------------------------------------------- the measure


class Inference(Record):
    """Where and how a cell ran: its status (``compile_failed`` when it had nothing to run) and timings."""

    status: CellStatus
    error: str | None = None
    summary: str | None = None
    host: str | None = None
    device: str | None = None  # the device id it held
    cann_version: str | None = None
    driver_version: str | None = None
    throughput_fps: float | None = None
    compute_ms: dict[str, float] | None = None
    h2d_ms: dict[str, float] | None = None
    d2h_ms: dict[str, float] | None = None


class Evaluation(Record):
    images: int
    miou: float
    per_class: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]  # channels x channels pixel counts, rows = label, columns = prediction
    label_mode: LabelMode  # what the outputs held, checked against the planned format


class ProfiledOp(Record):
    """One op of a cell's profiled pass (``profiles.OpTime``): the same shape for every backend."""

    op_name: str
    op_type: str
    calls: int
    total_us: float
    mean_us: float
    share: float  # of the profile's total time


class Diagnosis(Record):
    """A failing cell's model against its FP32 ONNX golden, layer by layer (``diagnose.report.as_document``):
    ``layers`` in execution order, ``first_diverging`` the first precision error (None: none diverged)."""

    images: int
    first_diverging: dict[str, Any] | None
    layers: tuple[dict[str, Any], ...]


class MeasuredCell(Record):
    compiled: CompiledCell
    inference: Inference
    evaluation: Evaluation | None = None  # None: the cell was not measured
    outputs_deleted: int = 0  # output files deleted once the result was stored
    op_profile: tuple[ProfiledOp, ...] | None = None  # the profiled pass after the measured one (None: none)
    diagnosis: Diagnosis | None = None  # made only when the cell's mIoU failed the rule

    @property
    def planned(self) -> PlannedCell:
        return self.compiled.planned

    @property
    def status(self) -> CellStatus:
        return self.inference.status


# ---------------------------------------------------------------- the published rows (the run document)


class CompiledRow(Record):
    target: str
    batch_size: int
    backend: str | None
    chip: str | None
    path: str | None
    sha256: str | None
    seconds: float | None
    cache_hit: bool | None
    status: CompileStatus
    error: str | None
    host: str | None
    cann_version: str | None


class AccuracyRow(Record):
    target: str
    batch_size: int
    images: int | None
    miou: float | None
    per_class: list[float] | None
    confusion: list[list[int]] | None
    label_mode: LabelMode


class PerfRow(Record):
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


class OpProfileRow(Record):
    """One op of a cell's profile, as published (table ``op_profiles``)."""

    target: str
    batch_size: int
    op_name: str
    op_type: str
    calls: int
    total_us: float
    mean_us: float
    share: float


class DiagnosisRow(Record):
    """A cell's diagnosis, as published (table ``cell_diagnoses``)."""

    target: str
    batch_size: int
    images: int
    first_diverging: dict[str, Any] | None
    layers: list[dict[str, Any]]


CELL_KEY = ("target", "batch_size")  # what names a cell in every table of a run
COMPILED_FIELDS: tuple[str, ...] = tuple(CompiledRow.model_fields)
ACCURACY_FIELDS: tuple[str, ...] = tuple(AccuracyRow.model_fields)
PERF_FIELDS: tuple[str, ...] = tuple(PerfRow.model_fields)
OP_PROFILE_FIELDS: tuple[str, ...] = tuple(OpProfileRow.model_fields)
DIAGNOSIS_FIELDS: tuple[str, ...] = tuple(DiagnosisRow.model_fields)
PERF_VALUES: tuple[str, ...] = tuple(f for f in PERF_FIELDS if f not in CELL_KEY)  # a cell's perf columns
PERF_METRICS: tuple[str, ...] = tuple(
    name for name, field in PerfRow.model_fields.items() if name not in CELL_KEY and field.annotation == (float | None)
)
