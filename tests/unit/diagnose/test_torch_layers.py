"""``erfnet diagnose --backend torch``: the checkpoint itself, layer by layer, against its ONNX golden."""

from __future__ import annotations

from collections import Counter

import harness
import onnx
import pytest

from erfnet_tasks.diagnose import torch_layers
from erfnet_tasks.diagnose.inputs import sample_shape
from erfnet_tasks.diagnose.torch_layers import HookPoint
from erfnet_tasks.model import load_erfnet
from tests.helpers.diagnosis import SMALL, diagnose_json, erfnet_diagnose, perturb_checkpoint, small_erfnet

# ERFNet has 13 non_bottleneck_1d blocks in the encoder and 4 in the decoder, each ending in relu(out + x).
RESIDUAL_BLOCKS = 17


@pytest.fixture(scope="module")
def golden_and_prep(exported_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_diagnose")
    golden = small_erfnet(exported_onnx, root / "golden.onnx")
    prep = harness.write_prep(root / "prep", ["img_0.bin", "img_1.bin"], shape=(3, *SMALL))[0].parent
    return golden, prep


def test_every_node_but_the_residual_adds_is_paired_with_the_hook_that_sees_it(random_checkpoint, golden_and_prep):
    golden, _ = golden_and_prep
    model = onnx.load(str(golden))
    items, pairs = torch_layers.hook_layers(load_erfnet(random_checkpoint), model, sample_shape(model))
    assert [item.node for item in items] == [node.name for node in model.graph.node]
    unpaired = Counter(item.op_type for item in items if item not in pairs)
    assert unpaired == {"Add": RESIDUAL_BLOCKS}
    by_node = {item.node: pairs.get(item) for item in items}
    # bn1 is folded into this Conv by the exporter: the Conv node's output is the BatchNorm module's
    assert by_node["/encoder/layers.3/conv1x3_1/Conv"] == HookPoint("encoder.layers.3.bn1", "output")
    assert by_node["/encoder/layers.3/conv3x1_1/Conv"] == HookPoint("encoder.layers.3.conv3x1_1", "output")
    # a functional ReLU's output is what the next Conv takes
    assert by_node["/encoder/layers.3/Relu"] == HookPoint("encoder.layers.3.conv1x3_1", "input")
    assert by_node["/encoder/layers.3/Relu_3"] == HookPoint("encoder.layers.3", "output")
    assert by_node["/encoder/initial_block/Concat"] == HookPoint("encoder.initial_block.bn", "input")


def test_the_unperturbed_checkpoint_does_not_diverge(random_checkpoint, golden_and_prep):
    golden, prep = golden_and_prep
    doc = diagnose_json(golden, random_checkpoint, prep, backend="torch")
    assert doc["first_diverging"] is None
    assert [layer["node"] for layer in doc["layers"]] == [node.name for node in onnx.load(str(golden)).graph.node]
    compared = [layer for layer in doc["layers"] if layer["op_type"] != "Add"]
    assert all(layer["cosine"] > 0.99999 and layer["note"] is None for layer in compared)
    adds = [layer for layer in doc["layers"] if layer["op_type"] == "Add"]
    assert len(adds) == RESIDUAL_BLOCKS
    assert all(layer["cosine"] is None and "no PyTorch counterpart" in layer["note"] for layer in adds)


@pytest.mark.parametrize(
    ("weight", "node"),
    [
        ("module.encoder.layers.3.conv1x3_1.weight", "/encoder/layers.3/conv1x3_1/Conv"),  # BatchNorm folded in
        ("module.decoder.layers.1.conv3x1_1.weight", "/decoder/layers.1/conv3x1_1/Conv"),  # a plain Conv
    ],
)
def test_a_perturbed_conv_in_the_checkpoint_is_named_first(weight, node, random_checkpoint, golden_and_prep, tmp_path):
    golden, prep = golden_and_prep
    perturbed = perturb_checkpoint(random_checkpoint, tmp_path / "perturbed.pth", weight)
    doc = diagnose_json(golden, perturbed, prep, backend="torch")
    first = doc["first_diverging"]
    assert (first["node"], first["op_type"], first["onnx_nodes"]) == (node, "Conv", [node])
    assert first["cosine"] < 0.99
    names = [layer["node"] for layer in doc["layers"]]
    before = [layer for layer in doc["layers"][: names.index(node)] if layer["op_type"] != "Add"]
    assert before and all(layer["cosine"] == pytest.approx(1.0, abs=1e-5) for layer in before)


def test_the_table_says_which_layer_and_that_the_adds_have_no_hook(random_checkpoint, golden_and_prep, tmp_path):
    golden, prep = golden_and_prep
    perturbed = perturb_checkpoint(random_checkpoint, tmp_path / "p.pth", "module.encoder.layers.3.conv1x3_1.weight")
    done = erfnet_diagnose(
        ["--golden", str(golden), "--model", str(perturbed), "--backend", "torch", "--input", str(prep)]
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("first diverging layer: /encoder/layers.3/conv1x3_1/Conv (Conv")
    assert sum("no PyTorch counterpart" in line for line in lines) == RESIDUAL_BLOCKS


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({"--model": "GOLDEN"}, "is not a PyTorch checkpoint"),
        ({"--model": "NOWHERE"}, "checkpoint not found"),
        ({"--device": "tpu"}, "torch device must be cpu, cuda or cuda:N"),
        ({"--backend": "onnxruntime", "--device": "cpu"}, "--device applies to --backend torch only"),
    ],
)
def test_bad_torch_input_is_one_line(extra, expect, random_checkpoint, golden_and_prep, tmp_path):
    golden, prep = golden_and_prep
    args = {"--golden": str(golden), "--model": str(random_checkpoint), "--backend": "torch", "--input": str(prep)}
    args.update({k: {"GOLDEN": str(golden), "NOWHERE": str(tmp_path / "no.pth")}.get(v, v) for k, v in extra.items()})
    done = erfnet_diagnose([part for pair in args.items() for part in pair])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("erfnet: error: ") and expect in done.stderr
