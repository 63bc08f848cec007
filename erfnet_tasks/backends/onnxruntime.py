"""The embedded default backend: ONNX Runtime on CPU (CUDA where onnxruntime-gpu is installed).

compile: the ONNX with its batch dimension fixed to N, passed through ORT's graph optimiser and saved
(``ErfNet_bs{N}_{cpu|cuda}.onnx``), so that the compile stage has a real artefact off Ascend. The saved
level is EXTENDED: ORT warns that ALL (layout transforms such as NCHWc) may tie the file to the CPU that
wrote it; ALL is still applied at load time by ``infer``.

infer: ais_bench's layout and semantics (see ``_local``). Timings, in ms:
- compute: wall time around ``session.run`` (CPU) or ``run_with_iobinding`` (CUDA), one per batch and loop;
- H2D / D2H: on CPU there is no device copy, so both lists are empty (statistics 0.0, count 0); on CUDA
  the input is copied to a device OrtValue and the outputs back with IOBinding, each copy timed on its own.
Warmup runs are not timed. fp16 outputs (the default, like the guide's om) come from a Cast appended to
the graph when the session is made, so the compute time includes it as the NPU's does. Outputs are written
by a background thread with O_DIRECT (see ``_local``): a thread writing through the page cache would
preempt one of ORT's intra-op threads on a small host and stall every parallel op behind it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .. import settings
from ..errors import BadInput, ErfnetError, InferFailed, first_line
from ..fsutil import StrPath, atomic_path
from ..profiles import OpTime, read_ort_trace
from . import CompileResult, InferResult, _local, check_batch_size, check_output_type, check_runs
from ._local import device_for  # noqa: F401  (Backend protocol)

if TYPE_CHECKING:
    import onnx

NAME = "onnxruntime"
RUNS_ON = "host"
BUILDS_ARTIFACT = True
TARGETS = {"cpu": "cpu", "cuda": "cuda"}
PROFILE_WARMUP = 1  # batches run before the profiled ones, not counted


def version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _parse_device(device: str | int | None) -> tuple[str, int]:
    return _local.parse_device(
        device,
        NAME,
        cuda_available,
        "device 'cuda' requested but this ONNX Runtime has no CUDAExecutionProvider "
        "(install onnxruntime-gpu on a host with an NVIDIA GPU)",
    )


def _providers(kind: str, index: int) -> list[Any]:
    if kind == "cuda":
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session_options(level: Any = None) -> Any:  # onnxruntime ships no types: its objects are Any
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = level if level is not None else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One inference at a time: intra-op threads on every physical core (ORT's default, 0), no inter-op
    # pool competing; ERFNET_ORT_THREADS caps it where the host is shared.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = settings.ort_threads()
    options.log_severity_level = 3
    return options


def _fix_batch(model: onnx.ModelProto, batch_size: int) -> None:
    """Set dim 0 of every graph input and output to ``batch_size``; other symbolic shapes are dropped."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = batch_size
    del model.graph.value_info[:]  # stale '-1' batch dims would contradict the fixed ones


def compile(
    onnx_path: StrPath, out_dir: StrPath, *, chip: str = "cpu", batch_size: int, aoe: bool = False
) -> CompileResult:
    """A fixed-batch, ORT-optimised copy of ``onnx_path`` in ``out_dir``; ``chip`` is cpu or cuda."""
    import onnx
    import onnxruntime as ort

    check_batch_size(batch_size)
    if aoe:
        raise BadInput("--aoe is Ascend's tuner; the onnxruntime backend has no equivalent")
    kind, index = _parse_device(chip or "cpu")
    src = Path(onnx_path)
    if not src.is_file():
        raise BadInput(f"ONNX model not found: {src}")
    out = Path(out_dir) / f"ErfNet_bs{batch_size}_{kind}.onnx"
    started = time.perf_counter()
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise BadInput(f"{src} is not an ONNX model ({exc})") from exc
    _fix_batch(model, batch_size)
    with atomic_path(out) as tmp:
        fixed = tmp.with_name(tmp.name + ".fixed.onnx")
        try:
            onnx.save(model, str(fixed))
            options = _session_options(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
            options.optimized_model_filepath = str(tmp)
            try:
                ort.InferenceSession(str(fixed), options, providers=_providers(kind, index))
            except Exception as exc:
                raise BadInput(f"ONNX Runtime could not optimise {src}: {first_line(exc)}") from exc
        finally:
            fixed.unlink(missing_ok=True)
    return CompileResult(path=out, seconds=time.perf_counter() - started, log_path=None)


def _with_fp16_outputs(model: Path) -> bytes:
    """The model with a Cast to float16 on each float32 output, like atc's ``--output_type=FP16``.

    ORT's Cast is vectorised and threaded (about 9x faster than numpy's astype here), so fp16 outputs
    cost about 1% of the forward pass instead of 10%."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(model))
    for output in proto.graph.output:
        tensor_type = output.type.tensor_type
        if tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{output.name}__fp32"
        for node in proto.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        proto.graph.node.append(
            helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT16, name=f"{output.name}__to_fp16")
        )
        tensor_type.elem_type = TensorProto.FLOAT16
    serialized: bytes = proto.SerializeToString()
    return serialized


def _open_session(model: Path, kind: str, index: int, output_type: str, profile_prefix: Path | None = None) -> Any:
    import onnxruntime as ort

    if not model.is_file():
        raise InferFailed(f"model file not found: {model}", status="model_load_failed")
    options = _session_options()
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    try:
        source = _with_fp16_outputs(model) if output_type == "fp16" else str(model)
        return ort.InferenceSession(source, options, providers=_providers(kind, index))
    except Exception as exc:
        raise InferFailed(
            f"ONNX Runtime could not load {model}: {first_line(exc)}", status="model_load_failed"
        ) from exc


def _model_batch(session: Any, batch_size: int) -> int:
    first = session.get_inputs()[0].shape[0]
    if isinstance(first, int) and first > 0 and first != batch_size:
        raise BadInput(f"the model's batch size is {first}, but --batchsize {batch_size} was given")
    return batch_size


def _sample_shape(session: Any) -> tuple[int, ...]:
    from ..model import INPUT_SHAPE

    dims = session.get_inputs()[0].shape[1:]
    return tuple(d if isinstance(d, int) and d > 0 else INPUT_SHAPE[i] for i, d in enumerate(dims))


_NUMPY_TYPES = {
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
}


def _static_outputs(session: Any) -> list[tuple[tuple[int, ...], npt.DTypeLike]] | None:
    """(shape, dtype) of every output, or None where a shape is symbolic or a type unusual."""
    specs: list[tuple[tuple[int, ...], npt.DTypeLike]] = []
    for out in session.get_outputs():
        if out.type not in _NUMPY_TYPES or not all(isinstance(d, int) and d > 0 for d in out.shape):
            return None
        specs.append((tuple(out.shape), _NUMPY_TYPES[out.type]))
    return specs


class _CpuRunner:
    """Where every output shape is static (a compiled model), IOBinding writes the outputs into reused
    page-aligned buffers that the writer thread puts on disk without a copy; otherwise ``session.run``."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.feed_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        specs = _static_outputs(session)
        self.buffers = _local.OutputBuffers(specs) if specs else None

    def take(self) -> list[NDArray[Any]] | None:
        return self.buffers.take() if self.buffers else None

    def give_back(self, arrays: list[NDArray[Any]] | None) -> None:
        if self.buffers and arrays is not None:
            self.buffers.give_back(arrays)

    def run(
        self, batch: NDArray[Any], timings: _local.Timings | None, into: list[NDArray[Any]] | None = None
    ) -> list[NDArray[Any]]:
        if into is None:
            started = time.perf_counter()
            result: list[NDArray[Any]] = self.session.run(None, {self.feed_name: batch})
        else:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.feed_name, batch)
            for name, array in zip(self.output_names, into, strict=True):
                binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
            started = time.perf_counter()
            self.session.run_with_iobinding(binding)
            result = into
        if timings is not None:
            timings.compute_ms.append((time.perf_counter() - started) * 1000.0)
        return result


class _CudaRunner:
    """IOBinding so that the copies are separate steps that can be timed honestly."""

    def __init__(self, session: Any, index: int) -> None:
        self.session = session
        self.index = index
        self.feed_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]

    def take(self) -> list[NDArray[Any]] | None:
        return None  # copy_outputs_to_cpu makes fresh arrays

    def give_back(self, arrays: list[NDArray[Any]] | None) -> None:
        pass

    def run(
        self, batch: NDArray[Any], timings: _local.Timings | None, into: list[NDArray[Any]] | None = None
    ) -> list[NDArray[Any]]:
        import onnxruntime as ort

        t0 = time.perf_counter()
        device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.index)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.feed_name, device_input)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.index)
        binding.synchronize_inputs()
        t1 = time.perf_counter()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = time.perf_counter()
        result: list[NDArray[Any]] = binding.copy_outputs_to_cpu()
        t3 = time.perf_counter()
        if timings is not None:
            timings.h2d_ms.append((t1 - t0) * 1000.0)
            timings.compute_ms.append((t2 - t1) * 1000.0)
            timings.d2h_ms.append((t3 - t2) * 1000.0)
        return result


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
    """Run ``model`` (.onnx) over ``input_dir`` in ais_bench's layout; see the module doc for the timings."""
    check_batch_size(batch_size)
    check_output_type(output_type)
    check_runs(loop, warmup)
    kind, index = _parse_device(device)
    files = _local.list_inputs(input_dir)
    session = _open_session(Path(model), kind, index, output_type)
    batch_size = _model_batch(session, batch_size)
    runner = _CudaRunner(session, index) if kind == "cuda" else _CpuRunner(session)
    buffer = np.zeros((batch_size, *_sample_shape(session)), dtype=np.float32)

    folder, filesinfo, timings = _local.run_batches(
        runner,
        _local.batches(files, batch_size),
        buffer,
        output_dir=output_dir,
        output_type=output_type,
        loop=loop,
        warmup=warmup,
        desc="infer (onnxruntime)",
        on_error=lambda exc: InferFailed(f"ONNX Runtime inference failed: {first_line(exc)}"),
    )
    args = _local.infer_args(
        "onnxruntime",
        model,
        input_dir,
        output_dir,
        batch_size,
        f"{kind}:{index}" if kind == "cuda" else kind,
        loop,
        warmup,
        output_type,
    )
    return _local.finish(folder, filesinfo, timings, batch_size=batch_size, args=args)


def profile(
    model: StrPath,
    input_dir: StrPath,
    work_dir: StrPath,
    *,
    batch_size: int,
    images: int,
    device: str | int | None = None,
) -> list[OpTime]:
    """ONNX Runtime's own profiler over a session made as ``infer`` makes it (same optimisations, same
    fp16 outputs), so its nodes are the ones measured; the warm-up batch is not counted."""
    check_batch_size(batch_size)
    kind, index = _parse_device(device)
    groups = _local.profile_batches(input_dir, batch_size, images)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    session = _open_session(Path(model), kind, index, "fp16", profile_prefix=Path(work_dir) / "onnxruntime_profile")
    batch_size = _model_batch(session, batch_size)
    runner = _CudaRunner(session, index) if kind == "cuda" else _CpuRunner(session)
    buffer = np.zeros((batch_size, *_sample_shape(session)), dtype=np.float32)
    try:
        _local.run_untimed(runner, groups, buffer, warmup=PROFILE_WARMUP)
    except Exception as exc:
        if isinstance(exc, ErfnetError):
            raise
        raise InferFailed(f"ONNX Runtime profiled pass failed: {first_line(exc)}") from exc
    return read_ort_trace(session.end_profiling(), skip_runs=PROFILE_WARMUP)
