"""The PyTorch checkpoint (what the torch backend runs) against its FP32 ONNX golden, layer by layer.

Every layer's output is taken with module hooks named after the exported ONNX nodes. Which hook sees
which node is found by value, never guessed from names, because the export is not one module per node:
the exporter folds a BatchNorm into the Conv before it (the Conv node's output is the BatchNorm module's
output, not the Conv module's), drops eval-mode Dropout, and names functional ops (ReLU, Concat) after
the module whose ``forward`` calls them, where a module's *input* is what holds their output (a ReLU's
is the next Conv's input). So, once per diagnosis, on a small random input (ERFNet is fully
convolutional; the pairing does not depend on the size):

1. the checkpoint is exported with the golden's exporter call (``onnx_export.trace_to_onnx``, the
   golden's opset), so its nodes bear the golden's names, and ONNX Runtime gives every node output;
2. the checkpoint runs with a pre-hook and a forward hook on every module, recording each distinct
   tensor a module takes or gives, in execution order;
3. each node output takes the first hook point whose tensor has its shape and equals it to float
   rounding (relative euclidean distance at most ``SAME_VALUE``: on ERFNet pairs differ by at most
   5e-7 and the nearest other tensor by 0.2 or more).

This runs on the CPU in FP32 whatever the diagnosed device (TF32 convolutions on a GPU differ by more
than the pairing's tolerance). The golden's nodes are then matched to the export's as the ONNX Runtime
path matches a model's (``golden_counterparts``), and on each image only the paired hooks record.
A node no hook sees (ERFNet's residual Add: inside a block's ``forward``, read only by a functional
ReLU) is listed with the note ``no PyTorch counterpart`` and NaN metrics, as msprobe lists an op
without a counterpart; the ReLU right after it is compared.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnx

from ..errors import BadInput
from .inputs import first_inputs, read_sample, sample_shape
from .metrics import Metrics
from .onnx_layers import EveryOutputRunner, NodeOutput, compare_outputs, golden_counterparts, layer_row, load_model
from .onnx_layers import node_outputs as onnx_node_outputs
from .report import Layer

if TYPE_CHECKING:
    import torch

SAME_VALUE = 1e-4
MAPPING_SIZE = (64, 128)  # (height, width) of the pairing pass's random input
MAPPING_SEED = 0
NO_HOOK = "no PyTorch counterpart: no module hook sees this output"

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HookPoint:
    """A tensor a module hook sees: the module's qualified name ('' is the model), its input or output, which one."""

    module: str
    kind: str  # "input" | "output"
    index: int = 0

    def __str__(self) -> str:
        return f"{self.module or '<model>'} {self.kind} {self.index}"


def _tensors(value: object) -> list[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []


@contextmanager
def hooked(model: torch.nn.Module, modules: set[str] | None, record: Any) -> Iterator[None]:
    """``record(point, tensor)`` for every input and output of the named modules (None: all), in execution order."""
    handles = []

    def pre(name: str) -> Any:
        def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            for i, tensor in enumerate(_tensors(args)):
                record(HookPoint(name, "input", i), tensor)

        return hook

    def post(name: str) -> Any:
        def hook(_module: torch.nn.Module, _args: tuple[Any, ...], output: object) -> None:
            for i, tensor in enumerate(_tensors(output)):
                record(HookPoint(name, "output", i), tensor)

        return hook

    try:
        for name, module in model.named_modules():
            if modules is None or name in modules:
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def every_hook_tensor(model: torch.nn.Module, sample: Array) -> list[tuple[HookPoint, Array]]:
    """Each distinct tensor any module takes or gives, at its first hook point in execution order."""
    import torch

    seen: dict[int, torch.Tensor] = {}  # kept alive, so that an id is never reused within the pass
    found: list[tuple[HookPoint, Array]] = []

    def record(point: HookPoint, tensor: torch.Tensor) -> None:
        if id(tensor) not in seen:
            seen[id(tensor)] = tensor
            found.append((point, tensor.detach().float().cpu().numpy()))

    with torch.inference_mode(), hooked(model, None, record):
        model(torch.from_numpy(sample))
    return found


def _relative_distance(a: Array, b: Array) -> float:
    scale = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / scale if scale > 0 else float(np.linalg.norm(a))


def pair_nodes_with_hooks(
    items: list[NodeOutput], node_values: dict[str, npt.NDArray[np.generic]], hooks: list[tuple[HookPoint, Array]]
) -> dict[NodeOutput, HookPoint]:
    """Each node output -> the first hook point holding the same value (shape, and float rounding)."""
    pairs: dict[NodeOutput, HookPoint] = {}
    for item in items:
        value = node_values.get(item.tensor)
        if value is None or not np.issubdtype(value.dtype, np.floating):
            continue
        golden = np.asarray(value, dtype=np.float32)
        for point, tensor in hooks:
            if tensor.shape == golden.shape and _relative_distance(tensor, golden) <= SAME_VALUE:
                pairs[item] = point
                break
    return pairs


def export_checkpoint(model: torch.nn.Module, golden: onnx.ModelProto, dummy: Array) -> onnx.ModelProto:
    """The checkpoint through the golden's exporter call, at the golden's opset."""
    import torch

    from ..onnx_export import DEFAULT_OPSET, trace_to_onnx

    opset = next((o.version for o in golden.opset_import if o.domain in ("", "ai.onnx")), DEFAULT_OPSET)
    with tempfile.TemporaryDirectory(prefix="erfnet-diagnose-torch-") as work:
        path = Path(work) / "checkpoint.onnx"
        trace_to_onnx(model, torch.from_numpy(dummy), path, int(opset))
        return onnx.load(str(path))


def mapping_input(shape: tuple[int, ...]) -> Array:
    """A random image-like input (values in [0, 1), as preprocessing writes) of the golden's channels."""
    height, width = (min(s, m) for s, m in zip(shape[1:3], MAPPING_SIZE, strict=True))
    generator = np.random.default_rng(MAPPING_SEED)
    return generator.random((1, shape[0], height, width), dtype=np.float32)


def hook_layers(
    model: torch.nn.Module, golden: onnx.ModelProto, shape: tuple[int, ...]
) -> tuple[list[NodeOutput], dict[NodeOutput, HookPoint]]:
    """The export's node outputs in execution order and the hook point paired with each."""
    dummy = mapping_input(shape)
    exported = export_checkpoint(model, golden, dummy)
    items = onnx_node_outputs(exported)
    node_values = EveryOutputRunner(exported).run(dummy)
    return items, pair_nodes_with_hooks(items, node_values, every_hook_tensor(model, dummy))


def record_at(
    model: torch.nn.Module, sample: Array, pairs: dict[NodeOutput, HookPoint], device: torch.device
) -> dict[NodeOutput, Array]:
    """One forward pass with hooks only where a node was paired; each node's value, copied to the host
    (copied: a later in-place op must not change what a hook saw)."""
    import torch

    wanted: dict[HookPoint, list[NodeOutput]] = {}
    for item, point in pairs.items():
        wanted.setdefault(point, []).append(item)
    values: dict[NodeOutput, Array] = {}

    def record(point: HookPoint, tensor: torch.Tensor) -> None:
        items = wanted.get(point)
        if items and items[0] not in values:
            array = np.array(tensor.detach().float().cpu().numpy(), copy=True)
            values.update(dict.fromkeys(items, array))

    with torch.inference_mode(), hooked(model, {p.module for p in wanted}, record):
        model(torch.from_numpy(sample).to(device))
    return values


def compare_checkpoint(
    golden_path: str | os.PathLike[str],
    checkpoint_path: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
    images: int,
    device: str | None = None,
) -> list[Layer]:
    """Every node output of the checkpoint's export, as its paired hook sees it, against the golden's."""
    from ..backends.torch import torch_device
    from ..model import load_erfnet

    dev = torch_device(device or "cpu")
    golden = load_model(golden_path, "golden")
    files = first_inputs(prep_dir, images)
    shape = sample_shape(golden)
    model = load_erfnet(checkpoint_path)
    items, pairs = hook_layers(model, golden, shape)
    twins = golden_counterparts(golden, items)
    if not any(twins):
        raise BadInput(f"the golden {golden_path} shares no node with the checkpoint's export: not its golden")
    model = model.to(dev)
    golden_runner = EveryOutputRunner(golden)
    per_image: list[list[tuple[Metrics, str | None]]] = []
    for path in files:
        sample = read_sample(Path(path), shape)
        golden_values = golden_runner.run(sample)
        hooked_values = record_at(model, sample, pairs, dev)
        per_image.append(
            [
                _compare(item in pairs, hooked_values.get(item), golden_values.get(twin.tensor) if twin else None)
                for item, twin in zip(items, twins, strict=True)
            ]
        )
        del golden_values, hooked_values
    return [
        layer_row(item, [row[k] for row in per_image], twin)
        for k, (item, twin) in enumerate(zip(items, twins, strict=True))
    ]


def _compare(paired: bool, target: Array | None, golden: npt.NDArray[np.generic] | None) -> tuple[Metrics, str | None]:
    metrics, note = compare_outputs(target, golden)
    return (metrics, note) if paired or golden is None else (metrics, NO_HOOK)
