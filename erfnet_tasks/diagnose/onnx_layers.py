"""Every node's output of an ONNX model on ONNX Runtime, and the layer table of a model against its golden.

Each node output becomes a graph output (typed by ONNX shape inference where it can be); graph
optimisations are off, as msprobe's ``--onnx_fusion_switch False``, so every node's output exists as
the model states it. Unnamed nodes are named ``<op_type>_<index>``, as msprobe names them.

A compiled model may have fused golden nodes into one (ONNX Runtime's optimiser turns Conv -> Relu into
one FusedConv that keeps the Conv's name and the Relu's output tensor): such a node stands for the chain
of golden nodes from its namesake to the producer of its output tensor, and is compared with the end of
the chain, as msprobe compares a fused om op with the last ONNX node fused into it. A model compiled at
a fixed batch B > 1 is fed the sample B times and its outputs are read at the first item.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from ..errors import BadInput, first_line
from .inputs import Sample, first_inputs, read_sample, sample_shape
from .metrics import Metrics, compare_tensors, worst_of
from .report import Layer


@dataclass(frozen=True)
class NodeOutput:
    node: str
    op_type: str
    tensor: str
    index: int


@dataclass(frozen=True)
class Counterpart:
    """The golden nodes a model's output stands for (several where a fusion merged them) and the golden
    tensor it is compared with (the last one's)."""

    nodes: tuple[str, ...]
    tensor: str


# The longest chain of golden nodes one compiled node is taken to have fused (Conv, BatchNorm, Add, Relu...),
# and the ops a compiler fuses into the node before them: element-wise ones that keep its shape. Not ArgMax
# or Cast: a golden that ends in ArgMax -> Cast keeps its logits under the ConvTranspose's name.
MAX_FUSED_CHAIN = 6
FUSABLE_FOLLOWERS = frozenset(
    {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "BatchNormalization"}
    | {"Add", "Sum", "Mul", "Sub", "Div"}
)


def load_model(path: str | os.PathLike[str], role: str) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError as exc:
        raise BadInput(f"{role} model not found: {path}") from exc
    except Exception as exc:  # onnx raises DecodeError, ValueError...: the user needs one line
        raise BadInput(f"{role} {path} is not an ONNX model ({first_line(exc)})") from exc


def node_outputs(model: onnx.ModelProto) -> list[NodeOutput]:
    """Every (node, output tensor) in execution (graph) order; nodes keep their names."""
    found = []
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        found += [NodeOutput(name, node.op_type, tensor, i) for i, tensor in enumerate(node.output) if tensor]
    return found


def with_every_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph outputs are every node output (the model's own outputs first, unchanged)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference only types the outputs, never required
        inferred = model
    typed = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for item in node_outputs(model):
        if item.tensor not in present:
            copy.graph.output.append(typed.get(item.tensor) or onnx.ValueInfoProto(name=item.tensor))
            present.add(item.tensor)
    return copy


class EveryOutputRunner:
    """One ONNX Runtime session of the model with every node output; ``run`` gives tensor name -> value."""

    def __init__(self, model: onnx.ModelProto):
        import onnxruntime as ort  # heavy: only this backend needs it

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                with_every_output(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT's errors are many types; the user needs one line
            raise BadInput(f"ONNX Runtime could not load the model: {first_line(exc)}") from exc
        feed = self.session.get_inputs()[0]
        self.feed = feed.name
        # A cell's model is compiled at its batch size: it takes B samples at once, never one.
        self.batch = feed.shape[0] if feed.shape and isinstance(feed.shape[0], int) and feed.shape[0] > 1 else 1
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, sample: Sample) -> dict[str, npt.NDArray[np.generic]]:
        feed = np.repeat(sample, self.batch, axis=0) if self.batch > 1 else sample
        try:
            values = dict(zip(self.names, self.session.run(self.names, {self.feed: feed}), strict=True))
        except Exception as exc:  # as above
            raise BadInput(f"ONNX Runtime could not run the model: {first_line(exc)}") from exc
        if self.batch == 1:
            return values
        # B copies of one sample: the first item of each batched output is that sample's.
        return {name: v[:1] if v.ndim and v.shape[0] == self.batch else v for name, v in values.items()}


def golden_counterparts(golden: onnx.ModelProto, items: list[NodeOutput]) -> list[Counterpart | None]:
    """The golden's counterpart of each of the model's outputs, by the first rule that holds:
    the same node name and output index with the same tensor; a fusion (the golden node of the same name
    starts a chain of single-consumer nodes that ends in the producer of the same tensor); the same node
    name and output index (an ArgMax model renames the logits tensor and keeps the node's name); the same
    tensor name and op type. Else none (the ArgMax model's ``Cast`` to ``output1``)."""
    outputs = node_outputs(golden)
    by_node = {(g.node, g.index): g for g in outputs}
    by_tensor = {g.tensor: g for g in outputs}
    consumers = _consumers(golden)
    found: list[Counterpart | None] = []
    for item in items:
        namesake, producer = by_node.get((item.node, item.index)), by_tensor.get(item.tensor)
        chain = _fused_chain(namesake, producer, consumers) if namesake and producer else None
        if chain:
            found.append(Counterpart(chain, item.tensor))
        elif namesake:
            found.append(Counterpart((namesake.node,), namesake.tensor))
        elif producer and producer.op_type == item.op_type:
            found.append(Counterpart((producer.node,), producer.tensor))
        else:
            found.append(None)
    return found


def _consumers(model: onnx.ModelProto) -> dict[str, list[NodeOutput]]:
    """Tensor -> the first output of each node that reads it."""
    firsts: dict[str, NodeOutput] = {}
    for item in node_outputs(model):
        firsts.setdefault(item.node, item)
    readers: dict[str, list[NodeOutput]] = {}
    for index, node in enumerate(model.graph.node):
        first = firsts.get(node.name or f"{node.op_type}_{index}")
        for tensor in node.input:
            if first is not None:
                readers.setdefault(tensor, []).append(first)
    return readers


def _fused_chain(start: NodeOutput, end: NodeOutput, consumers: dict[str, list[NodeOutput]]) -> tuple[str, ...] | None:
    """The golden node names from ``start`` to ``end`` when each link's output feeds the next node alone
    (a tensor read elsewhere cannot have been fused away) and that node is a fusable one, else None."""
    chain, current = [start.node], start
    while current.tensor != end.tensor:
        readers = consumers.get(current.tensor, [])
        if len(readers) != 1 or len(chain) >= MAX_FUSED_CHAIN or readers[0].op_type not in FUSABLE_FOLLOWERS:
            return None
        current = readers[0]
        chain.append(current.node)
    return tuple(chain)


def compare_outputs(
    target: npt.NDArray[np.generic] | None, golden: npt.NDArray[np.generic] | None
) -> tuple[Metrics, str | None]:
    """The metrics of one output against its golden, or NaNs and why they could not be computed."""
    if golden is None:
        return compare_tensors([], []), "no ONNX counterpart"
    if target is None:
        return compare_tensors([], []), "no output of the model to compare"
    if target.shape != golden.shape:
        return compare_tensors([], []), f"shape {list(target.shape)} vs golden {list(golden.shape)}"
    if not np.isfinite(np.asarray(target, dtype=np.float64)).all():
        return compare_tensors([], []), "NaN/Inf in the model's output"
    if not np.isfinite(np.asarray(golden, dtype=np.float64)).all():
        return compare_tensors([], []), "NaN/Inf in the golden's output"
    return compare_tensors(target, golden), None


def compare_models(
    golden_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
    images: int,
) -> list[Layer]:
    """Every node output of the model against its golden counterpart, over N samples."""
    golden, model = load_model(golden_path, "golden"), load_model(model_path, "compiled")
    files = first_inputs(prep_dir, images)
    shape = sample_shape(golden)
    items = node_outputs(model)
    pairs = list(zip(items, golden_counterparts(golden, items), strict=True))
    golden_runner, target_runner = EveryOutputRunner(golden), EveryOutputRunner(model)
    per_image: list[list[tuple[Metrics, str | None]]] = []
    for path in files:
        sample = read_sample(Path(path), shape)
        golden_values = golden_runner.run(sample)
        target_values = target_runner.run(sample)
        per_image.append(
            [
                compare_outputs(target_values.get(item.tensor), golden_values.get(twin.tensor) if twin else None)
                for item, twin in pairs
            ]
        )
        del golden_values, target_values
    return [layer_row(item, [row[k] for row in per_image], twin) for k, (item, twin) in enumerate(pairs)]


def layer_row(item: NodeOutput, results: list[tuple[Metrics, str | None]], twin: Counterpart | None) -> Layer:
    """One table row from a node output's per-image comparisons: the worst of each metric, every note."""
    notes = sorted({note for _, note in results if note})
    return Layer(
        item.node,
        item.op_type,
        list(twin.nodes) if twin else [],
        worst_of([m for m, _ in results]),
        item.index,
        "; ".join(notes) or None,
    )
