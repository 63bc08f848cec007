"""The run parameters, defined once: the trigger form's defaults, its JSON schema (the DAG's ``Param``s)
and the library's validation all come from ``RUN_PARAMS``.

The form's schema refuses what it can (types, ranges, the target pattern) before a run starts; the
library checks again, because a run can also come from the CLI, the REST API or ``dags test``, and
only the library can resolve paths under the data roots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from . import settings
from .chips import GUIDE_CHIPS
from .errors import BadInput, ErfnetError
from .records import Params
from .results.models import CHIP_MAX, INT_MAX, TARGET_MAX
from .results.reference import GUIDE_MIOU_PERCENT, GUIDE_TOLERANCE
from .targets import AOE_SUFFIX, AUTO, Target, form_pattern, host_target_labels, parse_target

DEFAULT_BATCH_SIZES = [1, 4, 8, 16, 32, 64]
MAX_BATCH_SIZE = 1024  # beyond any device's memory at 3x512x1024 inputs: refused in the form, not after compiling
GUIDE_TOLERANCE_POINTS = round(GUIDE_TOLERANCE * 100, 2)


# The settings behind the form's path defaults: a scheduled run (unpausing starts one at once) uses them.
PATH_PARAM_SETTINGS = {"weights": "ERFNET_WEIGHTS", "dataset_root": "ERFNET_DATASET_ROOT"}


def _configured_path(name: str, value: object, roots: tuple[Path, ...]) -> Path:
    try:
        return settings.resolve_under_roots(value, roots, name)
    except ErfnetError as exc:
        raise BadInput(
            f"{exc}; give `{name}` in the trigger form, or set {PATH_PARAM_SETTINGS[name]} for the "
            f"scheduler and dag-processor (the form's default, used by scheduled runs)"
        ) from exc


def _weights_file(name: str, value: object, roots: tuple[Path, ...]) -> str:
    path = _configured_path(name, value, roots)
    if not path.is_file():
        raise BadInput(f"{name} {path} is not a file (expected the .pth checkpoint)")
    return str(path)


def _dataset_dir(name: str, value: object, roots: tuple[Path, ...]) -> str:
    path = _configured_path(name, value, roots)
    if not path.is_dir():
        raise BadInput(f"{name} {path} is not a directory")
    return str(path)


def _storable_target(target: Target) -> None:
    """The target's name and chip fit the results database's columns (with the +AOE column AOE adds)."""
    longest = target.name if target.aoe or not target.on_npu else target.name + AOE_SUFFIX
    if len(longest) > TARGET_MAX or (target.chip and len(target.chip) > CHIP_MAX):
        raise BadInput(
            f"target {target.name[:60]!r}: chip names are at most {CHIP_MAX} characters (the results database's limit)"
        )


def _targets(name: str, value: object, roots: tuple[Path, ...]) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise BadInput(f"{name} must be a non-empty list of names, got {value!r}")
    for target in value:
        if target != AUTO:
            _storable_target(parse_target(target))  # a known target or a clean chip name the database holds
    return value


def _batch_size(value: object) -> int | None:
    """An integer, or the digits the form's multi-select sends (it passes every choice as a string)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_BATCH_SIZE:
        return None
    return value


def _batch_sizes(name: str, value: object, roots: tuple[Path, ...]) -> list[int]:
    sizes = [_batch_size(b) for b in value] if isinstance(value, list) else []
    if not sizes or None in sizes:
        raise BadInput(
            f"{name} must be a non-empty list of integers from 1 to {MAX_BATCH_SIZE}, got {str(value)[:200]}"
        )
    return sorted({size for size in sizes if size is not None})


def _count(name: str, value: object, roots: tuple[Path, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
        raise BadInput(f"{name} must be 0 (all) or a positive integer up to {INT_MAX}, got {str(value)[:40]}")
    return value


def _points(name: str, value: object, roots: tuple[Path, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise BadInput(f"{name} must be a number of mIoU points between 0 and 100, got {value!r}")
    return float(value)


def _flag(name: str, value: object, roots: tuple[Path, ...]) -> bool:
    if value is None:  # the form's switches are optional (null in the schema): unset means off
        return False
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class RunParam:
    name: str
    default: Callable[[], object]  # called per use: deployments set some through the environment
    check: Callable[[str, object, tuple[Path, ...]], object]
    title: str
    # The form field's JSON schema, sans default.
    schema: dict[str, object] | Callable[[], dict[str, object]] = field(default_factory=dict)
    description: str | None = None
    # The default as the form's widget holds it (the multi-select holds strings); the library takes both.
    form_value: Callable[[object], object] = lambda value: value


# What the form cannot check: paths resolve on the workers, so check_params, the run's first task, checks
# them within seconds of Trigger. Said in each path's description, where the user reads it.
_PATH_NOTE = (
    "Not checked by this form: the run's first task (check_params) refuses, within seconds, a path "
    "that does not exist or lies outside ERFNET_DATA_ROOTS."
)

# The targets offered by a click; the list lacks no host target. Another chip goes in the run's JSON
# configuration (the form's "Advanced Options"), the REST API or `erfnet demo --targets`.
LISTED_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def _targets_schema() -> dict[str, object]:
    hosts = host_target_labels()
    return {
        "type": "array",
        "items": {"type": "string", "pattern": form_pattern()},
        "minItems": 1,
        "examples": [AUTO, *GUIDE_CHIPS, *hosts],
        "values_display": {
            AUTO: "auto: the chips npu-smi reports, else cpu",
            **{c: f"{c} (atc + ais_bench)" for c in GUIDE_CHIPS},
            **hosts,
        },
    }


BATCH_SIZES_SCHEMA: dict[str, object] = {
    "type": "array",
    "minItems": 1,
    "examples": [str(b) for b in LISTED_BATCH_SIZES],
    # Strings from the multi-select, integers from the API; the library turns both into integers.
    "items": {"type": ["integer", "string"], "pattern": "^[1-9][0-9]{0,3}$", "minimum": 1, "maximum": MAX_BATCH_SIZE},
}
OPTIONAL_SWITCH: dict[str, object] = {"type": ["boolean", "null"]}  # null: the form marks a switch as not required


def _form_strings(sizes: object) -> object:
    """The batch sizes as the form's multi-select holds them (strings)."""
    return [str(b) for b in sizes] if isinstance(sizes, list) else sizes


RUN_PARAMS: tuple[RunParam, ...] = (
    RunParam(
        "weights",
        settings.default_weights,
        _weights_file,
        "Weights (.pth)",
        {"type": "string"},
        "The checkpoint, erfnet_pretrained.pth in the upstream layout (Eromera/erfnet_pytorch); a path under "
        f"ERFNET_DATA_ROOTS. {_PATH_NOTE}",
    ),
    RunParam(
        "dataset_root",
        settings.default_dataset_root,
        _dataset_dir,
        "Cityscapes root",
        {"type": "string"},
        f"The folder holding leftImg8bit/val and gtFine/val; a path under ERFNET_DATA_ROOTS. {_PATH_NOTE}",
    ),
    RunParam(
        "targets",
        settings.default_targets,
        _targets,
        "Targets",
        _targets_schema,
        "Pick one or more columns of the guide's tables: Ascend chips (atc + ais_bench), cpu/cuda (ONNX "
        "Runtime), torch-cpu/torch-cuda (PyTorch, the guide's T4 column); auto = the chips npu-smi reports, "
        "else cpu. A chip the list lacks (AscendXXX): add it to the JSON under Advanced Options.",
    ),
    RunParam(
        "batch_sizes",
        lambda: settings.default_batch_sizes(DEFAULT_BATCH_SIZES),
        _batch_sizes,
        "Batch sizes",
        BATCH_SIZES_SCHEMA,
        "Pick one or more: one compile and one inference per target and batch size. Another size "
        f"(1 to {MAX_BATCH_SIZE}): add it to the JSON under Advanced Options.",
        form_value=_form_strings,
    ),
    RunParam(
        "aoe",
        lambda: False,
        _flag,
        "AOE tuning",
        OPTIONAL_SWITCH,
        "Also compile every Ascend chip with AOE tuning: the guide's 310P-AOE column, target <chip>+AOE. "
        "Slow (tuning runs on the device).",
    ),
    RunParam(
        "image_limit",
        lambda: 0,
        _count,
        "Image limit",
        {"type": "integer", "minimum": 0, "maximum": INT_MAX},
        "How many val images to measure; 0 = the whole val set (500 images).",
    ),
    RunParam(
        "reference_miou",
        lambda: settings.default_reference_miou(GUIDE_MIOU_PERCENT),
        _points,
        "Reference mIoU (%)",
        {"type": "number", "minimum": 0, "maximum": 100},
        f"The mIoU the run must reach, in percent: the guide publishes {GUIDE_MIOU_PERCENT:.2f}.",
    ),
    RunParam(
        "tolerance",
        lambda: GUIDE_TOLERANCE_POINTS,
        _points,
        "Tolerance (mIoU points)",
        {"type": "number", "minimum": 0, "maximum": 100},
        "mIoU points below the reference that still pass: the guide's 1% criterion.",
    ),
    RunParam(
        "force",
        lambda: False,
        _flag,
        "Force",
        OPTIONAL_SWITCH,
        "Measure even if the CANN version, weights and dataset equal the last complete run's (a nightly "
        "run would otherwise end early).",
    ),
    RunParam(
        "keep_outputs",
        lambda: False,
        _flag,
        "Keep the inference outputs",
        OPTIONAL_SWITCH,
        "Off: a cell's logits are deleted once its mIoU and confusion matrix are stored (about 21 MB per "
        "image). On: they stay under the run's folder.",
    ),
    RunParam(
        "labels_on_device",
        lambda: False,
        _flag,
        "Labels on the device (beyond the guide)",
        OPTIONAL_SWITCH,
        "ArgMax compiled into the model, so the device outputs int32 label maps instead of the guide's FP16 "
        "logits (10x fewer bytes); the run records the mode and the gate never compares across modes.",
    ),
)


def default_params() -> Params:
    """The trigger form's defaults; deployments set some of them through the environment (settings.py)."""
    return cast(Params, {p.name: p.default() for p in RUN_PARAMS})  # RUN_PARAMS names each field of Params once


def validate_params(raw: dict[str, object] | None, data_roots: tuple[Path, ...]) -> Params:
    """Check every trigger-form value; paths must resolve under the data roots."""
    given = dict(raw or {})
    unknown = sorted(set(given) - {p.name for p in RUN_PARAMS})
    if unknown:
        raise BadInput(f"unknown parameter(s): {', '.join(unknown)}")
    checked = {
        p.name: p.check(p.name, given[p.name] if p.name in given else p.default(), data_roots) for p in RUN_PARAMS
    }
    return cast(Params, checked)  # each check returns its field's type; RUN_PARAMS names each field once


def form_fields() -> dict[str, dict[str, Any]]:
    """Keyword arguments of the DAG's ``Param`` per parameter (default, title, description, schema)."""
    fields: dict[str, dict[str, Any]] = {}  # Any: Param(**spec) takes each JSON schema keyword as it is
    for p in RUN_PARAMS:
        schema = p.schema() if callable(p.schema) else dict(p.schema)
        extra = {"description": p.description} if p.description else {}
        fields[p.name] = {"default": p.form_value(p.default()), "title": p.title, **extra, **schema}
    return fields
