"""Compile and inference backends behind one small interface, all writing ais_bench's output layout.

Every backend module exposes::

    compile(onnx_path, out_dir, *, chip, batch_size, aoe=False) -> CompileResult(path, seconds, log_path)
    infer(model, input_dir, output_dir, *, batch_size, device=None, loop=1, warmup=1, output_type="fp16")
        -> InferResult(summary_path, output_dir, throughput_fps, compute_ms, h2d_ms, d2h_ms)
    version() -> str
    available() -> bool

``compute_ms``, ``h2d_ms`` and ``d2h_ms`` are ais_bench statistics blocks (``min``, ``max``, ``mean``,
``median``, ``percentile(99%)``, ``count``; milliseconds), exactly as in the summary JSON, so callers
take ``compute_ms["mean"]`` and friends. ``output_dir`` is the ``OUTPUT/<timestamp>`` folder of outputs.

Backends: ``onnxruntime`` (embedded default, CPU or CUDA), ``torch`` (PyTorch online inference, the
guide's T4 column), ``ascend`` (alias ``ais_bench``: atc, AOE and ``python3 -m ais_bench``).

How fast each backend is on this machine, against a bare ONNX Runtime loop and PyTorch eager: BENCHMARKS.md,
written by ``make bench``. The Ascend backend has only run against the stand-ins here; their timings are
ONNX Runtime's, not an NPU's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import ErfnetError

BACKEND_MODULES = {"onnxruntime": "onnxruntime", "torch": "torch", "ascend": "ascend", "ais_bench": "ascend"}
DEFAULT_BACKEND = "onnxruntime"
INFER_STATUSES = ("oom", "model_load_failed", "device_open_failed", "infer_failed")
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
    compute_ms: dict
    h2d_ms: dict
    d2h_ms: dict


class CompileFailed(ErfnetError):
    """The compiler ran and refused; ``code`` is its error code (atc's ``E10007``...) when it gave one."""

    def __init__(self, message: str, *, code: str | None = None, log_path: Path | None = None):
        super().__init__(message)
        self.code = code
        self.log_path = log_path


class InferFailed(ErfnetError):
    """Inference ran and failed; ``status`` tells the cause apart (one of INFER_STATUSES)."""

    def __init__(self, message: str, *, status: str = "infer_failed", log_path: Path | None = None):
        if status not in INFER_STATUSES:
            raise ValueError(f"unknown infer status {status!r}")
        super().__init__(message)
        self.status = status
        self.log_path = log_path


def backend_names() -> list[str]:
    return list(BACKEND_MODULES)


def get_backend(name: str) -> ModuleType:
    """The backend module for ``name`` (``onnxruntime``, ``torch``, ``ascend`` or its alias ``ais_bench``)."""
    try:
        module = BACKEND_MODULES[name]
    except KeyError:
        raise ErfnetError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_MODULES)}") from None
    return importlib.import_module(f"{__name__}.{module}")


def check_batch_size(batch_size) -> int:
    """Batch sizes are positive ints; bools and strings are refused, not coerced."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ErfnetError(f"batch size must be a positive integer, got {batch_size!r}")
    return batch_size


def check_output_type(output_type: str) -> str:
    if output_type not in OUTPUT_TYPES:
        raise ErfnetError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    return output_type


def check_runs(loop, warmup) -> None:
    if isinstance(loop, bool) or not isinstance(loop, int) or loop <= 0:
        raise ErfnetError(f"loop must be a positive integer, got {loop!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ErfnetError(f"warmup must be a non-negative integer, got {warmup!r}")
