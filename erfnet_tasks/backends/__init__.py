"""Compile and inference backends behind one protocol, all writing ais_bench's output layout.

A backend is a module of this package that satisfies ``Backend`` (below) and has one line in
``REGISTRY``. Everything that lists backends — the CLI's ``--backend`` choices, the targets and the
trigger form's target pattern (``targets.py``), the versions a run records, the pipeline's compile and
device choices — reads this registry, so adding a host backend is one module plus one registry line.

``compute_ms``, ``h2d_ms`` and ``d2h_ms`` are ais_bench statistics blocks (``min``, ``max``, ``mean``,
``median``, ``percentile(99%)``, ``count``; milliseconds), exactly as in the summary JSON, so callers
take ``compute_ms["mean"]`` and friends. ``output_dir`` is the ``OUTPUT/<timestamp>`` folder of outputs.
``profile`` gives each op's time in one shape (``profiles.OpTime``) from each tool's own profiler: msprof's
op summary (ais_bench ``--profiler 1``), ONNX Runtime's trace, ``torch.profiler``.

Backends: ``onnxruntime`` (embedded default, CPU or CUDA), ``torch`` (PyTorch online inference, the
guide's T4 column), ``ascend`` (alias ``ais_bench``: atc, AOE and ``python3 -m ais_bench``).

How fast each backend is on this machine, against a bare ONNX Runtime loop and PyTorch eager: BENCHMARKS.md,
written by ``make bench``. The Ascend backend has only run against the stand-ins here; their timings are
ONNX Runtime's, not an NPU's.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

# Re-exported (the redundant aliases say so): backends and their callers raise and catch them from here.
from ..errors import BadInput as BadInput
from ..errors import CompileFailed as CompileFailed
from ..errors import ErfnetError as ErfnetError
from ..errors import InferFailed as InferFailed
from ..fsutil import StrPath
from ..profiles import OpTime

# One line per backend: its name -> its module in this package. Aliases name a registered backend.
REGISTRY = {
    "onnxruntime": "onnxruntime",
    "torch": "torch",
    "ascend": "ascend",
}
ALIASES = {"ais_bench": "ascend"}
OUTPUT_TYPES = ("fp16", "fp32")


@dataclass(frozen=True)
class CompileResult:
    path: Path
    seconds: float
    log_path: Path | None = None


@dataclass(frozen=True)
class InferResult:
    summary_path: Path
    output_dir: Path
    throughput_fps: float
    compute_ms: dict[str, Any]
    h2d_ms: dict[str, Any]
    d2h_ms: dict[str, Any]


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides (a module satisfies a Protocol through its attributes)."""

    NAME: str
    RUNS_ON: Literal["npu", "host"]  # npu: the NPU worker's queue and a device slot; host: any worker
    BUILDS_ARTIFACT: bool  # False: compile only checks its input, and infer runs the weights
    TARGETS: Mapping[str, str]  # host targets it measures: target name -> device (npu: {}, chips are targets)

    # ``options``: what one backend alone takes (ascend: AOE's leased ``device``, atc's ``integer_output``).
    def compile(
        self, onnx_path: StrPath, out_dir: StrPath, *, chip: str, batch_size: int, aoe: bool = False, **options: object
    ) -> CompileResult: ...

    def infer(
        self,
        model: StrPath,
        input_dir: StrPath,
        output_dir: StrPath,
        *,
        batch_size: int,
        device: str | int | None = None,
        loop: int = 1,
        warmup: int = 1,
        output_type: str = "fp16",
    ) -> InferResult: ...

    def profile(
        self,
        model: StrPath,
        input_dir: StrPath,
        work_dir: StrPath,
        *,
        batch_size: int,
        images: int,
        device: str | int | None = None,
    ) -> list[OpTime]:
        """Each op's time over the first ``images`` inputs (at least one batch), after one warm-up batch:
        a pass of its own, after the measured one (profiling perturbs timing). ``work_dir`` holds the
        profiler's files (the caller removes it)."""

    def version(self) -> str: ...

    def available(self) -> bool: ...

    def device_for(self, target: Mapping[str, Any]) -> str | int:
        """The ``device`` argument of ``infer`` for a planned target (``Target.as_dict()``)."""


def backend_names(*, aliases: bool = True) -> list[str]:
    """The names ``get_backend`` accepts (the CLI's ``--backend`` choices)."""
    return [*REGISTRY, *(ALIASES if aliases else ())]


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (or an alias of it)."""
    module = REGISTRY.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if module is None:
        raise BadInput(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    return importlib.import_module(f"{__name__}.{module}")


def all_backends() -> list[Backend]:
    return [get_backend(name) for name in REGISTRY]


def npu_backend() -> Backend:
    """The backend that measures chip targets (``Ascend310P3``...)."""
    return next(b for b in all_backends() if b.RUNS_ON == "npu")


def host_targets() -> dict[str, tuple[str, str]]:
    """Every host target: name -> (backend name, device), in registry order."""
    return {target: (b.NAME, device) for b in all_backends() for target, device in b.TARGETS.items()}


def check_batch_size(batch_size: object) -> int:
    """Batch sizes are positive ints; bools and strings are refused, not coerced."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise BadInput(f"batch size must be a positive integer, got {batch_size!r}")
    return batch_size


def check_output_type(output_type: str) -> str:
    if output_type not in OUTPUT_TYPES:
        raise BadInput(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    return output_type


def check_runs(loop: object, warmup: object) -> None:
    if isinstance(loop, bool) or not isinstance(loop, int) or loop <= 0:
        raise BadInput(f"loop must be a positive integer, got {loop!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise BadInput(f"warmup must be a non-negative integer, got {warmup!r}")
