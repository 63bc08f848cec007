"""Op profiles: msprof's op summary (written by the stand-in ais_bench --profiler 1), ONNX Runtime's trace,
torch.profiler's averages, and the comparison that says which op types got slower."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import harness
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from erfnet_tasks import profiles
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.profile_compare import compare_profiles
from erfnet_tasks.profiles import OpTime

SHAPE = (2, 32, 32)


def small_graph(path):
    """conv -> relu -> conv -> add(relu) -> maxpool: several op types, each node named."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 2, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(8, 8, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["actual_input_1", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "r"], ["s"], name="add1"),
        helper.make_node("MaxPool", ["s"], ["output1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("actual_input_1", TensorProto.FLOAT, [1, *SHAPE])],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture
def om(tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path)
    model = small_graph(tmp_path / "small.onnx")
    done = subprocess.run(
        [
            "atc",
            "--framework=5",
            f"--model={model}",
            f"--output={tmp_path / 'small'}",
            "--soc_version=Ascend310P3",
            "--input_format=NCHW",
            "--log=error",
            f"--input_shape=actual_input_1:1,{','.join(map(str, SHAPE))}",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    return tmp_path / "small.om"


def profiled_pass(om, prep, out, loop=3, **env) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ais_bench",
            "--model",
            str(om),
            "--input",
            str(prep),
            "--output",
            str(out),
            "--profiler",
            "1",
            "--loop",
            str(loop),
            "--warmup_count",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_standin_profiler_writes_msprofs_op_summary_and_it_is_read_by_column_name(om, tmp_path):
    prep = harness.write_prep(tmp_path / "prep", ["a.bin", "b.bin"], shape=SHAPE)[0].parent
    profiled_pass(om, prep, tmp_path / "out")
    (path,) = (tmp_path / "out" / "profiler").glob("PROF_*/mindstudio_profiler_output/op_summary_*.csv")
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    for column in (
        "Device_id",
        "Model Name",
        "Op Name",
        "OP Type",
        "Task Type",
        "Task Start Time(us)",
        "Task Duration(us)",
        "Input Shapes",
        "Output Shapes",
        "aicore_time(us)",
    ):
        assert column in header
    ops = {op.op_name: op for op in profiles.read_msprof_op_summary(tmp_path / "out")}
    assert set(ops) == {"conv1", "relu1", "conv2", "add1", "pool1"}
    assert ops["conv2"].op_type == "Conv" and ops["pool1"].op_type == "MaxPool"
    assert all(op.calls == 2 * 3 for op in ops.values())  # 2 images x loop 3; the warm-up run is not counted
    assert sum(op.share for op in ops.values()) == pytest.approx(1.0)
    assert all(op.mean_us == pytest.approx(op.total_us / op.calls) and op.total_us > 0 for op in ops.values())


def rewrite_without(path, column, out):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    drop = rows[0].index(column)
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows([[v for i, v in enumerate(row) if i != drop] for row in rows])
    return out


def test_op_summary_without_a_needed_column_is_one_line(om, tmp_path):
    prep = harness.write_prep(tmp_path / "prep", ["a.bin"], shape=SHAPE)[0].parent
    profiled_pass(om, prep, tmp_path / "out", loop=1)
    (path,) = (tmp_path / "out").rglob("op_summary_*.csv")
    reordered = tmp_path / "op_summary_2.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    with open(reordered, "w", newline="") as fh:  # columns in another order still read by name
        csv.writer(fh).writerows([row[::-1] for row in rows])
    assert {op.op_name for op in profiles.read_msprof_op_summary(reordered)} == {
        "conv1",
        "relu1",
        "conv2",
        "add1",
        "pool1",
    }
    broken = rewrite_without(path, "OP Type", tmp_path / "op_summary_3.csv")
    with pytest.raises(ErfnetError, match=r"no column OP Type") as err:
        profiles.read_msprof_op_summary(broken)
    assert "\n" not in str(err.value)
    with pytest.raises(ErfnetError, match="no op_summary"):
        profiles.read_msprof_op_summary(tmp_path / "prep")


def test_onnx_runtime_trace_reader(tmp_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "ort")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(small_graph(tmp_path / "g.onnx")), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)
    for _ in range(4):
        session.run(None, {"actual_input_1": x})
    ops = {op.op_name: op for op in profiles.read_ort_trace(session.end_profiling())}
    assert {name: op.op_type for name, op in ops.items()} == {
        "conv1": "Conv",
        "relu1": "Relu",
        "conv2": "Conv",
        "add1": "Add",
        "pool1": "MaxPool",
    }
    assert all(op.calls == 4 for op in ops.values())
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ErfnetError, match="not an ONNX Runtime trace"):
        profiles.read_ort_trace(bad)


def test_torch_profiler_averages():
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU())
    x = torch.rand(1, *SHAPE)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, torch.inference_mode():
        for _ in range(3):
            net(x)
    ops = profiles.read_torch_averages(prof.key_averages())
    names = {op.op_name for op in ops}
    assert "aten::relu" in names or "aten::clamp_min" in names
    assert any("conv" in name for name in names)
    assert sum(op.share for op in ops) == pytest.approx(1.0)
    assert all(op.calls >= 1 and op.total_us > 0 for op in ops)


def op(name, op_type, mean, calls=10):
    return OpTime(name, op_type, calls, mean * calls, mean, 0.0)


def test_comparison_names_the_grown_type_first_and_ops_that_appear_or_vanish():
    baseline = [op("c1", "Conv", 100), op("c2", "Conv", 50), op("r1", "Relu", 10), op("fused", "BNRelu", 5)]
    current = [
        op("c1", "Conv", 100),
        op("c2", "Conv", 52),
        op("r1", "Relu", 40),
        op("bn", "BatchNorm", 4),
        op("r2", "Relu", 3),
    ]
    ops = compare_profiles(baseline, current)["ops"]
    types = [e for e in ops if e["op_name"] is None]
    assert types[0] == {
        "op_type": "Relu",
        "op_name": None,
        "baseline_us": 10.0,
        "current_us": 43.0,
        "share": pytest.approx(33 / 34),
        "change": "grew",
    }
    assert [e["op_type"] for e in types] == ["Relu", "BatchNorm", "Conv", "BNRelu"]
    named = {e["op_name"]: e for e in ops if e["op_name"]}
    assert next(iter(named)) == "r1" and named["r1"]["share"] == pytest.approx(30 / 34)
    assert named["bn"]["change"] == "appeared" and named["bn"]["baseline_us"] is None
    assert named["fused"]["change"] == "vanished" and named["fused"]["current_us"] is None
    assert "c1" not in named  # unchanged


def test_slowed_standin_op_type_is_named_first(om, tmp_path):
    prep = harness.write_prep(tmp_path / "prep", ["a.bin", "b.bin"], shape=SHAPE)[0].parent
    profiled_pass(om, prep, tmp_path / "base")
    profiled_pass(om, prep, tmp_path / "slow", STANDIN_CANN_SLOW_OP_TYPE="MaxPool", STANDIN_CANN_SLOW_FACTOR="50")
    result = compare_profiles(
        profiles.read_msprof_op_summary(tmp_path / "base"), profiles.read_msprof_op_summary(tmp_path / "slow")
    )
    first = result["ops"][0]
    assert (first["op_type"], first["op_name"]) == ("MaxPool", None)
    assert first["current_us"] > 10 * first["baseline_us"]
    assert next(e for e in result["ops"] if e["op_name"])["op_name"] == "pool1"


def test_standin_cann_switches_slow_the_compute_time_and_perturb_the_outputs(om, tmp_path):
    import json

    prep = harness.write_prep(tmp_path / "prep", ["a.bin"], shape=SHAPE)[0].parent

    def run(out, **env):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ais_bench",
                "--model",
                str(om),
                "--input",
                str(prep),
                "--output",
                str(out),
                "--output_dirname",
                "o",
                "--loop",
                "20",
                "--outfmt",
                "BIN",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads((out / "o_summary.json").read_text())
        return summary["NPU_compute_time"]["median"], np.fromfile(out / "o" / "a_0.bin", dtype=np.float32)

    base_ms, base_out = run(tmp_path / "base")
    slow_ms, slow_out = run(tmp_path / "slow", STANDIN_CANN_SLOW_OP_TYPE="Conv", STANDIN_CANN_SLOW_FACTOR="4")
    assert slow_ms > 1.5 * base_ms
    np.testing.assert_array_equal(slow_out, base_out)
    _, bad_out = run(tmp_path / "perturbed", STANDIN_CANN_PERTURB_NODE="conv2", STANDIN_CANN_PERTURB_FACTOR="0.5")
    assert not np.allclose(bad_out, base_out, atol=1e-3)
    (tmp_path / "toolkit").mkdir()
    (tmp_path / "toolkit" / "standin_behaviour.json").write_text(json.dumps({"perturb_node": "conv2"}))
    _, file_out = run(tmp_path / "from_file", ASCEND_TOOLKIT_HOME=str(tmp_path / "toolkit"))
    assert not np.allclose(file_out, base_out, atol=1e-3)
