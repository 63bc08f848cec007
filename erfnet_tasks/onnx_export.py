"""Step 3.1 of the guide: ErfNet_pth2onnx.py and modify_bn_weights.py.

The export is verified before it is trusted: the ONNX checker, then ONNX Runtime against PyTorch on a
random input at batch 1 and 2. Output files are written atomically, so a failed step leaves nothing.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .errors import BadInput, first_line
from .fsutil import StrPath, atomic_path

if TYPE_CHECKING:
    import torch

INPUT_NAME = "actual_input_1"
OUTPUT_NAME = "output1"
DEFAULT_OPSET = 11
# modify_bn_weights.py's rule, verbatim: every initializer whose name matches, |v| <= 0.01 -> 0.01.
BN_WEIGHT_PATTERN = ".*bn.*weight"
BN_FLOOR = 0.01
# A pixel may flip class between ORT and PyTorch only where its two best logits tie to float rounding.
ARGMAX_TIE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportReport:
    path: Path
    opset: int
    max_abs_error: float
    max_rel_error: float
    batch_sizes: tuple[int, ...]
    argmax: bool = False  # then the errors are logit gaps at pixels whose label differs (near-ties)


def export_onnx(
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    verify_batches: tuple[int, ...] = (1, 2),
    seed: int = 0,
    argmax: bool = False,
) -> ExportReport:
    """Export the checkpoint as the guide does (TorchScript exporter, dynamic batch) and verify it.

    ``argmax``: the model ends in ArgMax over the channels, so ``output1`` is the int32 label map
    [-1, 512, 1024] (2 MiB per image instead of 20 MiB of FP16 logits); verified against PyTorch's argmax.
    """
    import torch

    from .model import INPUT_SHAPE, load_erfnet

    if opset < 7:
        raise BadInput(f"--opset must be 7 or more, got {opset}")
    model = load_erfnet(weights)
    dummy = torch.randn(1, *INPUT_SHAPE)
    out = Path(out)
    with atomic_path(out) as tmp:
        trace_to_onnx(model, dummy, tmp, opset)
        if argmax:
            append_argmax(tmp)
        check_onnx(tmp)
        compare = compare_argmax_with_torch if argmax else compare_with_torch
        abs_err, rel_err = compare(model, tmp, verify_batches, seed=seed)
    return ExportReport(out, opset, abs_err, rel_err, tuple(verify_batches), argmax)


def trace_to_onnx(model: torch.nn.Module, dummy: torch.Tensor, path: StrPath, opset: int = DEFAULT_OPSET) -> None:
    """The guide's exporter call (TorchScript, dynamic batch): ``erfnet diagnose --backend torch`` exports
    the checkpoint with it too, so that its nodes bear the golden's names."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "-1"}, OUTPUT_NAME: {0: "-1"}},
                opset_version=opset,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many types; the user needs one line
            raise BadInput(f"ONNX export failed at opset {opset}: {first_line(exc)}") from exc


def check_onnx(path: str | os.PathLike[str]) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise BadInput(f"ONNX checker rejected {path}: {first_line(exc)}") from exc


def _side_by_side(
    model: torch.nn.Module, onnx_path: StrPath, batch_sizes: Iterable[int], seed: int
) -> Iterator[tuple[int, NDArray[Any], NDArray[Any]]]:
    """Yield (batch, ONNX Runtime's output, PyTorch's logits) on the same random inputs."""
    import onnxruntime as ort
    import torch

    from .model import INPUT_SHAPE

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    for batch in batch_sizes:
        x = rng.random((batch, *INPUT_SHAPE), dtype=np.float32)
        ours = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)).numpy()
        yield batch, ours, logits


def compare_with_torch(
    model: torch.nn.Module, onnx_path: StrPath, batch_sizes: Iterable[int], *, seed: int = 0
) -> tuple[float, float]:
    """Largest absolute and relative (to the largest |logit|) difference between ORT and PyTorch."""
    max_abs = max_rel = 0.0
    for batch, ours, ref in _side_by_side(model, onnx_path, batch_sizes, seed):
        if ours.shape != ref.shape:
            raise BadInput(f"exported model gives shape {ours.shape} at batch {batch}, PyTorch {ref.shape}")
        require_finite(ref, f"PyTorch's output at batch {batch}")
        require_finite(ours, f"ONNX Runtime's output of the exported model at batch {batch}")
        diff = float(np.max(np.abs(ours - ref)))
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / max(float(np.max(np.abs(ref))), 1e-12))
    return max_abs, max_rel


def require_finite(array: NDArray[Any], where: str) -> None:
    """NaN/Inf is an error, never a result: ``max(0.0, nan)`` is 0.0, so a NaN would read as a perfect match."""
    if not np.isfinite(array).all():
        raise BadInput(
            f"{where} holds NaN or Inf values ({int(np.count_nonzero(~np.isfinite(array)))} "
            f"of {array.size}): the checkpoint or the model is broken"
        )


def append_argmax(path: str | os.PathLike[str]) -> None:
    """End the graph in ArgMax(axis=1, keepdims=0) -> Cast(int32); the output keeps its name ``output1``.

    ONNX's ArgMax yields int64; int32 halves the bytes and still holds the 20 class ids. ArgMax keeps the
    first index on ties (select_last_index=0), like torch.max and np.argmax.
    """
    import onnx
    from onnx import TensorProto, helper

    from .model import INPUT_SHAPE

    model = onnx.load(str(path))
    graph = model.graph
    logits = OUTPUT_NAME + "_logits"
    for node in graph.node:
        node.output[:] = [logits if name == OUTPUT_NAME else name for name in node.output]
    graph.node.extend(
        [
            helper.make_node("ArgMax", [logits], [OUTPUT_NAME + "_argmax"], axis=1, keepdims=0),
            helper.make_node("Cast", [OUTPUT_NAME + "_argmax"], [OUTPUT_NAME], to=TensorProto.INT32),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.INT32, ["-1", *INPUT_SHAPE[1:]]))
    onnx.save(model, str(path))


def compare_argmax_with_torch(
    model: torch.nn.Module, onnx_path: StrPath, batch_sizes: Iterable[int], *, seed: int = 0
) -> tuple[float, float]:
    """The ArgMax model's labels against PyTorch's argmax. Float rounding may flip a pixel whose two best
    logits (nearly) tie, so a differing pixel is accepted only where PyTorch's logit for ORT's class is
    within the tolerance of its best; returned: the largest such logit gap, absolute and relative."""
    max_abs = max_rel = 0.0
    for batch, ours, logits in _side_by_side(model, onnx_path, batch_sizes, seed):
        require_finite(logits, f"PyTorch's output at batch {batch}")
        ref = logits.argmax(axis=1)
        if ours.shape != ref.shape or ours.dtype != np.int32:
            raise BadInput(
                f"exported ArgMax model gives {ours.dtype} {ours.shape} at batch {batch}, expected int32 {ref.shape}"
            )
        chosen = np.take_along_axis(logits, ours[:, None].astype(np.int64), axis=1)[:, 0]
        gap = float(np.max(logits.max(axis=1) - chosen))
        scale = max(float(np.max(np.abs(logits))), 1e-12)
        if gap / scale > ARGMAX_TIE_TOLERANCE:
            raise BadInput(
                f"exported ArgMax model disagrees with PyTorch's argmax at batch {batch} "
                f"(logit gap {gap:.3g}, beyond a near-tie)"
            )
        max_abs, max_rel = max(max_abs, gap), max(max_rel, gap / scale)
    return max_abs, max_rel


def fix_bn(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Apply modify_bn_weights.py; return how many values changed. Nothing else in the model changes."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(src))
    except FileNotFoundError as exc:
        raise BadInput(f"ONNX model not found: {src}") from exc
    except Exception as exc:
        raise BadInput(f"{src} is not an ONNX model ({first_line(exc)})") from exc
    changed = 0
    for init in model.graph.initializer:
        if not re.search(BN_WEIGHT_PATTERN, init.name):
            continue
        value = numpy_helper.to_array(init)
        fixed = np.where(np.abs(value) > BN_FLOOR, value, BN_FLOOR).astype(value.dtype)
        changed += int(np.count_nonzero(fixed != value))
        init.CopyFrom(numpy_helper.from_array(fixed, init.name))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise BadInput(f"ONNX checker rejected the fixed model: {first_line(exc)}") from exc
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return changed
