"""Every node's output of an ONNX model on ONNX Runtime, and the layer table of a model against its golden.

Each node output becomes a graph output (typed by ONNX shape inference where it can be); graph
optimisations are off, as msprobe's ``--onnx_fusion_switch False``, so every node's output exists as
the model states it. Unnamed nodes are named ``<op_type>_<index>``, as msprobe names them.
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
        self.feed = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, sample: Sample) -> dict[str, npt.NDArray[np.generic]]:
        try:
            return dict(zip(self.names, self.session.run(self.names, {self.feed: sample}), strict=True))
        except Exception as exc:  # as above
            raise BadInput(f"ONNX Runtime could not run the model: {first_line(exc)}") from exc


def golden_counterparts(golden: onnx.ModelProto, items: list[NodeOutput]) -> list[NodeOutput | None]:
    """The golden's output for each of the model's: same node name and output index, else same tensor name
    and op type (an ArgMax model renames the logits tensor, keeps the node's name, and gives the name
    ``output1`` to a Cast that has no counterpart)."""
    by_node = {(g.node, g.index): g for g in node_outputs(golden)}
    by_tensor = {g.tensor: g for g in by_node.values()}
    found: list[NodeOutput | None] = []
    for item in items:
        same_tensor = by_tensor.get(item.tensor)
        if same_tensor is not None and same_tensor.op_type != item.op_type:
            same_tensor = None
        found.append(by_node.get((item.node, item.index)) or same_tensor)
    return found


def _compare_one(
    target: npt.NDArray[np.generic] | None, golden: npt.NDArray[np.generic] | None
) -> tuple[Metrics, str | None]:
    if golden is None:
        return compare_tensors([], []), "no ONNX counterpart"
    assert target is not None
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
    golden, model = load_model(golden_path, "golden"), load_model(model_path, "model")
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
                _compare_one(target_values.get(item.tensor), golden_values.get(twin.tensor) if twin else None)
                for item, twin in pairs
            ]
        )
        del golden_values, target_values
    return [
        _layer(item, [row[k] for row in per_image], twin.node if twin else None) for k, (item, twin) in enumerate(pairs)
    ]


def _layer(item: NodeOutput, results: list[tuple[Metrics, str | None]], golden_node: str | None) -> Layer:
    notes = sorted({note for _, note in results if note})
    return Layer(
        item.node,
        item.op_type,
        [golden_node] if golden_node else [],
        worst_of([m for m, _ in results]),
        item.index,
        "; ".join(notes) or None,
    )
