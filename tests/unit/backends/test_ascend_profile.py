"""The Ascend backend's profiled pass: ``ais_bench ... --profiler 1`` (the stand-in writes msprof's op
summary from ONNX Runtime's per-node timings), read by column name."""

from __future__ import annotations

import harness
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from erfnet_tasks.backends import InferFailed, get_backend

CHW = (3, 512, 1024)  # what the Ascend backend's atc command fixes


def tiny_model(path):
    """conv -> relu -> maxpool, each node named: a model the stand-in device runs in milliseconds."""
    weight = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["actual_input_1", "w"], ["c"], name="conv1"),
            helper.make_node("Relu", ["c"], ["r"], name="relu1"),
            helper.make_node("MaxPool", ["r"], ["output1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        ],
        "tiny",
        [helper.make_tensor_value_info("actual_input_1", TensorProto.FLOAT, ["-1", *CHW])],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture
def om(tmp_path, monkeypatch):
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3,Ascend310P3")
    path = get_backend("ascend").compile(tiny_model(tmp_path / "t.onnx"), tmp_path, chip="Ascend310P3", batch_size=1)
    return path.path, record


def test_profile_runs_ais_bench_under_msprof_on_the_first_inputs_of_its_device(om, tmp_path):
    model, record = om
    harness.write_prep(tmp_path / "prep", ["img_10.bin", "img_2.bin", "img_1.bin"], shape=CHW)
    ascend = get_backend("ascend")
    ops = ascend.profile(model, tmp_path / "prep", tmp_path / "work", batch_size=1, images=2, device=1)
    assert {op.op_name: op.op_type for op in ops} == {"conv1": "Conv", "relu1": "Relu", "pool1": "MaxPool"}
    assert {op.calls for op in ops} == {2}  # two images, loop 1; msprof's warm-up rows are not in the table
    [call] = [c["argv"] for c in harness.invocations(record) if c["tool"] == "ais_bench"]
    assert call[call.index("--profiler") + 1] == "1" and call[call.index("--device") + 1] == "1"
    linked = sorted(p.name for p in (tmp_path / "work" / "inputs").iterdir())
    assert linked == ["img_1.bin", "img_2.bin"]  # ais_bench's natural order: 1, 2, 10
    [use] = harness.device_uses(record)
    assert use["device"] == 1


def test_a_profiled_pass_that_cannot_open_its_device_is_an_infer_failure(om, tmp_path, monkeypatch):
    model, _ = om
    harness.write_prep(tmp_path / "prep", ["a.bin"], shape=CHW)
    monkeypatch.setenv("STANDIN_NPU_DEVICES", "1")
    with pytest.raises(InferFailed) as info:
        get_backend("ascend").profile(model, tmp_path / "prep", tmp_path / "work", batch_size=1, images=4, device=1)
    assert info.value.status == "device_open_failed" and "--profiler 1 failed" in str(info.value)
