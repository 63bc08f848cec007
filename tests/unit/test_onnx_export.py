"""The guide's export (ErfNet_pth2onnx.py) and BN fix (modify_bn_weights.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from erfnet_tasks.cli import main
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.model import load_erfnet
from erfnet_tasks.onnx_export import export_onnx, fix_bn


def test_export_has_the_guides_interface(exported_onnx):
    model = onnx.load(str(exported_onnx))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [11]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "actual_input_1" and out.name == "output1"
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims[1:] == [3, 512, 1024] and isinstance(in_dims[0], str)
    assert out_dims[1:] == [20, 512, 1024] and isinstance(out_dims[0], str)
    # TorchScript exporter in eval mode: BN fused into convs except after the concat and the upsamplers.
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 5


def test_export_matches_pytorch_at_two_batch_sizes(exported_onnx, random_checkpoint):
    session = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    net = load_erfnet(random_checkpoint)
    rng = np.random.default_rng(7)
    for batch in (1, 2):
        x = rng.random((batch, 3, 512, 1024), dtype=np.float32)
        ours = session.run(["output1"], {"actual_input_1": x})[0]
        with torch.inference_mode():
            ref = net(torch.from_numpy(x)).numpy()
        assert ours.shape == (batch, 20, 512, 1024)
        assert np.max(np.abs(ours - ref)) <= 1e-3 * np.max(np.abs(ref))
        assert np.mean(ours.argmax(1) == ref.argmax(1)) >= 0.999


def test_cli_export_prints_the_largest_error_and_fix_bn_the_count(tmp_path, random_checkpoint, capsys):
    out = tmp_path / "ErfNet_origin.onnx"
    assert main(["export", str(random_checkpoint), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs error" in printed and "batch 1, 2" in printed
    assert main(["fix-bn", str(out), str(tmp_path / "ErfNet.onnx")]) == 0
    # write_random_checkpoint puts 0.004 and -0.003 into every BN; 5 BN nodes survive the export.
    assert "10 BatchNorm weight value(s)" in capsys.readouterr().out


def test_failed_export_leaves_nothing_behind(tmp_path, random_checkpoint):
    out = tmp_path / "out.onnx"
    with pytest.raises(ErfnetError):
        export_onnx(random_checkpoint, out, opset=3)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ErfnetError):
        export_onnx(bad, out)
    assert list(tmp_path.iterdir()) == [bad]


def _toy_model(bn_weight: np.ndarray) -> onnx.ModelProto:
    """A graph whose initializers exercise the regex: one BN scale, plus lookalikes that must not change."""
    inits = [
        numpy_helper.from_array(bn_weight, "encoder.layers.0.bn.weight"),
        numpy_helper.from_array(np.array([0.001, -0.002], np.float32), "encoder.layers.0.bn.bias"),
        numpy_helper.from_array(np.array([0.001, 0.0], np.float32), "conv.weight"),
        numpy_helper.from_array(np.array([0.005], np.float32), "decoder.weight_bn"),
    ]
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_bn_rule_exactly(tmp_path):
    weights = np.array([0.5, 0.01, -0.01, 0.009, -0.5, 0.0, -0.02, 1e-8], np.float32)
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(_toy_model(weights), str(src))
    changed = fix_bn(src, out)
    fixed = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    # |v| > 0.01 keeps v (negative ones too); everything else, small negatives included, becomes 0.01.
    np.testing.assert_array_equal(
        fixed["encoder.layers.0.bn.weight"], np.array([0.5, 0.01, 0.01, 0.01, -0.5, 0.01, -0.02, 0.01], np.float32)
    )
    assert changed == 4
    assert fixed["encoder.layers.0.bn.weight"].dtype == np.float32
    np.testing.assert_array_equal(fixed["encoder.layers.0.bn.bias"], np.array([0.001, -0.002], np.float32))
    np.testing.assert_array_equal(fixed["conv.weight"], np.array([0.001, 0.0], np.float32))
    # 'bn' after 'weight': no match
    np.testing.assert_array_equal(fixed["decoder.weight_bn"], np.array([0.005], np.float32))


def test_bn_fix_changes_only_bn_scales_of_the_exported_model(exported_onnx, fixed_onnx):
    before = onnx.load(str(exported_onnx))
    after = onnx.load(str(fixed_onnx))
    assert [n.SerializeToString() for n in before.graph.node] == [n.SerializeToString() for n in after.graph.node]
    b = {i.name: numpy_helper.to_array(i) for i in before.graph.initializer}
    a = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    assert list(a) == list(b)
    differing = {name for name in b if not np.array_equal(a[name], b[name])}
    bn_scales = {name for name in b if "bn" in name and name.endswith("weight")}
    assert differing and differing <= bn_scales
    for name in differing:
        small = np.abs(b[name]) <= 0.01
        np.testing.assert_array_equal(a[name][small], np.float32(0.01))
        np.testing.assert_array_equal(a[name][~small], b[name][~small])


def test_fix_bn_rejects_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_text("hello")
    with pytest.raises(ErfnetError, match="not an ONNX model"):
        fix_bn(bad, tmp_path / "y.onnx")
    with pytest.raises(ErfnetError, match="not found"):
        fix_bn(tmp_path / "nope.onnx", tmp_path / "y.onnx")
    assert not (tmp_path / "y.onnx").exists()
