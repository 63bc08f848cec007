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

Measured (2026-11-25, the 2-core AVX2 dev VM shared with ~4 other jobs, load 3-4, so +-30% noise;
ErfNet 512x1024, random weights, ORT 1.32 / torch 2.13 CPU, median compute per batch, images/s):
  batch 1: bare ``session.run`` loop 0.950, ONNX Runtime backend (fp16) 0.949, PyTorch eager 0.259;
  batch 4: ONNX Runtime backend and bare loop interleaved run for run: 3.1-5.0 s vs 3.3-5.5 s per batch
  (parity; ~1.1 images/s), PyTorch eager 0.356. One-thread CPU time, less noisy: ORT 1.29 / 1.13 images
  per CPU-second at batch 1 / 4, eager 0.74 / 0.53 (ORT 1.7-2.1x faster). The backend's cost outside
  ``session.run`` per batch of 4: 4.5 ms reading inputs, 31 ms writing fp16 outputs on the writer thread
  (<1% of a 3.5 s batch); the fp16 Cast runs in-graph (27 ms per 4 images vs 240 ms for numpy's astype).
  The Ascend backend has only run against the stand-ins here; their timings are ONNX Runtime's, not an NPU's.
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
