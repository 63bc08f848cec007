"""PyTorch "online" inference, the guide's T4 column: the checkpoint itself, eager, CPU or CUDA.

compile: there is nothing to build for eager PyTorch, so it returns the ``.pth`` it was given (checked to
load) with ``seconds`` 0; the pipeline passes that path straight to ``infer``.

infer: ``--model`` is the ``.pth`` (loaded with ``erfnet_tasks.model.load_erfnet``), run under
``torch.inference_mode`` with ais_bench's layout and batching. Timings, in ms: compute is the forward
pass (with ``torch.cuda.synchronize`` on CUDA); H2D / D2H are the timed tensor copies on CUDA and empty
on CPU (no device copy). On CUDA the fp16 conversion happens on the GPU, halving the D2H copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import BadInput, InferFailed, first_line
from ..fsutil import StrPath
from . import CompileResult, InferResult, _local, check_batch_size, check_output_type, check_runs
from ._local import device_for  # noqa: F401  (Backend protocol)

if TYPE_CHECKING:
    import torch

NAME = "torch"
RUNS_ON = "host"
BUILDS_ARTIFACT = False  # eager PyTorch runs the checkpoint itself
TARGETS = {"torch-cpu": "cpu", "torch-cuda": "cuda"}


def version() -> str:
    import torch

    return torch.__version__


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def torch_device(device: str | int | None) -> torch.device:
    """The torch device for a device argument (cpu, cuda, cuda:N); BadInput if this PyTorch has no CUDA."""
    import torch

    kind, index = _local.parse_device(
        device, NAME, _cuda_available, "device 'cuda' requested but this PyTorch sees no CUDA device"
    )
    return torch.device(f"cuda:{index}" if kind == "cuda" and ":" in str(device) else kind)


def _load(model_path: StrPath) -> torch.nn.Module:
    from ..model import load_erfnet

    path = Path(model_path)
    if not path.is_file():
        raise InferFailed(f"checkpoint not found: {path}", status="model_load_failed")
    return load_erfnet(path)


def compile(
    onnx_path: StrPath,
    out_dir: StrPath,
    *,
    chip: str = "cpu",
    batch_size: int,
    aoe: bool = False,
    weights: StrPath | None = None,
) -> CompileResult:
    """Nothing to compile for eager PyTorch: returns the checkpoint (``weights``, else ``onnx_path`` when
    it is a ``.pth``) after checking that it loads."""
    check_batch_size(batch_size)
    if aoe:
        raise BadInput("--aoe is Ascend's tuner; the torch backend has no equivalent")
    source = Path(weights if weights is not None else onnx_path)
    if source.suffix != ".pth":
        raise BadInput(f"the torch backend runs the checkpoint, not {source.name}: pass the .pth")
    _load(source)
    return CompileResult(path=source, seconds=0.0, log_path=None)


class _Runner:
    """One forward pass per batch; the tensor shares the buffer's memory, so filling it fills the input."""

    def __init__(self, net: torch.nn.Module, buffer: NDArray[Any], dev: torch.device, output_type: str) -> None:
        import torch

        self.net, self.dev = net, dev
        self.host = torch.from_numpy(buffer)
        self.out_dtype = torch.float16 if output_type == "fp16" else torch.float32
        self.on_cuda = dev.type == "cuda"

    def take(self) -> list[NDArray[Any]] | None:
        return None

    def give_back(self, arrays: list[NDArray[Any]] | None) -> None:
        pass

    def _sync(self) -> None:
        import torch

        if self.on_cuda:
            torch.cuda.synchronize(self.dev)

    def run(
        self, batch: NDArray[Any], timings: _local.Timings | None, into: list[NDArray[Any]] | None = None
    ) -> list[NDArray[Any]]:
        t0 = time.perf_counter()
        x = self.host.to(self.dev, non_blocking=False) if self.on_cuda else self.host
        self._sync()
        t1 = time.perf_counter()
        y = self.net(x).to(self.out_dtype)
        self._sync()
        t2 = time.perf_counter()
        result = y.cpu().numpy() if self.on_cuda else y.numpy()
        t3 = time.perf_counter()
        if timings is not None:
            timings.compute_ms.append((t2 - t1) * 1000.0)
            if self.on_cuda:
                timings.h2d_ms.append((t1 - t0) * 1000.0)
                timings.d2h_ms.append((t3 - t2) * 1000.0)
        return [result]


def _failure(exc: Exception) -> InferFailed:
    status = "oom" if "out of memory" in str(exc).lower() else "infer_failed"
    return InferFailed(f"PyTorch inference failed: {first_line(exc)}", status=status)


def infer(
    model: StrPath,
    input_dir: StrPath,
    output_dir: StrPath,
    *,
    batch_size: int,
    device: str | int | None = None,
    loop: int = 1,
    warmup: int = 1,
    output_type: str = "fp16",
) -> InferResult:
    import torch

    from ..model import INPUT_SHAPE

    check_batch_size(batch_size)
    check_output_type(output_type)
    check_runs(loop, warmup)
    dev = torch_device(device)
    files = _local.list_inputs(input_dir)
    net = _load(model).to(dev)
    buffer = np.zeros((batch_size, *INPUT_SHAPE), dtype=np.float32)
    with torch.inference_mode():
        folder, filesinfo, timings = _local.run_batches(
            _Runner(net, buffer, dev, output_type),
            _local.batches(files, batch_size),
            buffer,
            output_dir=output_dir,
            output_type=output_type,
            loop=loop,
            warmup=warmup,
            desc="infer (torch)",
            on_error=_failure,
        )
    args = _local.infer_args("torch", model, input_dir, output_dir, batch_size, str(dev), loop, warmup, output_type)
    return _local.finish(folder, filesinfo, timings, batch_size=batch_size, args=args)
