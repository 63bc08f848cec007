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

import numpy as np

from .. import outputs
from ..errors import ErfnetError
from . import CompileResult, InferFailed, check_batch_size, check_output_type, check_runs
from . import _local


def version() -> str:
    import torch

    return torch.__version__


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _device(device):
    import torch

    text = "cpu" if device is None else str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ErfnetError(f"torch device must be cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ErfnetError("device 'cuda' requested but this PyTorch sees no CUDA device")
    return torch.device(text)


def _load(model_path) -> "torch.nn.Module":
    from ..model import load_erfnet

    path = Path(model_path)
    if not path.is_file():
        raise InferFailed(f"checkpoint not found: {path}", status="model_load_failed")
    return load_erfnet(path)


def compile(onnx_path, out_dir, *, chip: str = "cpu", batch_size: int, aoe: bool = False,
            weights=None) -> CompileResult:
    """Nothing to compile for eager PyTorch: returns the checkpoint (``weights``, else ``onnx_path`` when
    it is a ``.pth``) after checking that it loads."""
    check_batch_size(batch_size)
    if aoe:
        raise ErfnetError("--aoe is Ascend's tuner; the torch backend has no equivalent")
    source = Path(weights if weights is not None else onnx_path)
    if source.suffix != ".pth":
        raise ErfnetError(f"the torch backend runs the checkpoint, not {source.name}: pass the .pth")
    _load(source)
    return CompileResult(path=source, seconds=0.0, log_path=None)


def infer(model, input_dir, output_dir, *, batch_size: int, device=None, loop: int = 1, warmup: int = 1,
          output_type: str = "fp16"):
    import torch

    check_batch_size(batch_size)
    check_output_type(output_type)
    check_runs(loop, warmup)
    dev = _device(device)
    files = _local.list_inputs(input_dir)
    net = _load(model).to(dev)
    from ..model import INPUT_SHAPE

    buffer = np.zeros((batch_size, *INPUT_SHAPE), dtype=np.float32)
    host = torch.from_numpy(buffer)  # shares memory: filling the buffer fills the tensor
    out_dtype = torch.float16 if output_type == "fp16" else torch.float32
    on_cuda = dev.type == "cuda"

    def sync():
        if on_cuda:
            torch.cuda.synchronize(dev)

    def run(timings):
        t0 = time.perf_counter()
        x = host.to(dev, non_blocking=False) if on_cuda else host
        sync()
        t1 = time.perf_counter()
        y = net(x).to(out_dtype)
        sync()
        t2 = time.perf_counter()
        result = y.cpu().numpy() if on_cuda else y.numpy()
        t3 = time.perf_counter()
        if timings is not None:
            timings.compute_ms.append((t2 - t1) * 1000.0)
            if on_cuda:
                timings.h2d_ms.append((t1 - t0) * 1000.0)
                timings.d2h_ms.append((t3 - t2) * 1000.0)
        return [result]

    groups = _local.batches(files, batch_size)
    timings = _local.Timings([], [], [])
    filesinfo = []
    with torch.inference_mode():
        _local.fill_batch(groups[0], buffer)
        for _ in range(warmup):
            run(None)
        folder = outputs.make_output_folder(output_dir)
        writer = _local.OutputWriter(folder, np.float16 if output_type == "fp16" else np.float32)
        try:
            for group in _local.with_progress(groups, "infer (torch)"):
                _local.fill_batch(group, buffer)
                for _ in range(loop):
                    result = run(timings)
                names = writer.submit(group, result)
                filesinfo.extend(outputs.SummaryEntry(f, tuple(n)) for f, n in zip(group, names))
        except Exception as exc:
            if isinstance(exc, ErfnetError):
                raise
            status = "oom" if "out of memory" in str(exc).lower() else "infer_failed"
            raise InferFailed(f"PyTorch inference failed: {str(exc).splitlines()[0]}", status=status) from None
        finally:
            writer.close()
    args = _local.infer_args("torch", model, input_dir, output_dir, batch_size, str(dev), loop, warmup, output_type)
    return _local.finish(folder, filesinfo, timings, batch_size=batch_size, args=args)
