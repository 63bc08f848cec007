"""The profiled pass (erfnet_tasks/profiled_pass.py, called by measure.infer_cell): after the measured pass,
on the same device lease, each op's time travels on the measured cell; a profiled pass that fails costs
the cell nothing but its profile."""

from __future__ import annotations

import logging
import os

import harness
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from erfnet_tasks import devices, measure
from erfnet_tasks.backends import InferFailed, get_backend
from erfnet_tasks.records import Compilation, CompiledCell, MeasuredCell, from_xcom, to_xcom


def tiny_model(path, chw):
    """conv (3 -> 20 channels) -> relu, each node named."""
    weight = np.random.default_rng(0).normal(size=(20, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["actual_input_1", "w"], ["c"], name="conv1"),
            helper.make_node("Relu", ["c"], ["output1"], name="relu1"),
        ],
        "tiny",
        [helper.make_tensor_value_info("actual_input_1", TensorProto.FLOAT, ["-1", *chw])],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, ["-1", 20, *chw[1:]])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def compiled(make, target, path) -> CompiledCell:
    compilation = Compilation(status="ok", path=str(path), sha256=None, seconds=0.0, cache_hit=False, error=None)
    return CompiledCell(planned=make.planned(target, 1), compilation=compilation)


@pytest.fixture
def host_cell(make, tmp_path):
    chw = (3, 8, 16)
    model = get_backend("onnxruntime").compile(tiny_model(tmp_path / "t.onnx", chw), tmp_path, batch_size=1).path
    harness.write_prep(tmp_path / "prep", ["a.bin", "b.bin", "c.bin"], shape=chw)
    prep = make.prep(prep_dir=str(tmp_path / "prep"), images=3)
    return compiled(make, "cpu", model), prep, make.env(work_dir=str(tmp_path / "work"))


def test_the_profile_travels_on_the_measured_cell(host_cell, monkeypatch):
    monkeypatch.setenv("ERFNET_PROFILE_IMAGES", "2")
    cell, prep, env = host_cell
    measured = measure.infer_cell(cell, prep, env)
    assert measured.status == "ok" and measured.inference.throughput_fps > 0
    ops = {op.op_name: op for op in measured.op_profile}
    assert "output1__to_fp16" in ops and {op.calls for op in ops.values()} == {2}
    assert sum(op.share for op in ops.values()) == pytest.approx(1.0)
    assert from_xcom(MeasuredCell, to_xcom(measured)) == measured
    # The profiler's files were the pass's alone: nothing of it is left beside the cell's outputs.
    assert not list((measure.output_dir(cell.planned, env)).glob(".profile-*"))


@pytest.mark.parametrize("failure", [InferFailed("profiler: device lost"), RuntimeError("trace is not JSON")])
def test_a_failed_profiled_pass_keeps_the_measurement(host_cell, monkeypatch, caplog, failure):
    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(get_backend("onnxruntime"), "profile", broken)
    cell, prep, env = host_cell
    with caplog.at_level(logging.WARNING, logger="erfnet_tasks.profiled_pass"):
        measured = measure.infer_cell(cell, prep, env)
    assert measured.status == "ok" and measured.inference.throughput_fps > 0 and measured.inference.summary
    assert measured.op_profile is None
    assert "cpu batch 1: the profiled pass failed" in caplog.text and str(failure) in caplog.text


def test_no_profiled_pass_when_turned_off(host_cell, monkeypatch):
    monkeypatch.setenv("ERFNET_PROFILE_IMAGES", "0")
    monkeypatch.setattr(get_backend("onnxruntime"), "profile", lambda *a, **k: pytest.fail("profiled"))
    cell, prep, env = host_cell
    assert measure.infer_cell(cell, prep, env).op_profile is None


def test_an_npu_cell_is_profiled_after_its_measurement_on_the_device_it_holds(make, tmp_path, monkeypatch):
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3,Ascend310P3")
    chw = (3, 512, 1024)
    om = get_backend("ascend").compile(tiny_model(tmp_path / "t.onnx", chw), tmp_path, chip="Ascend310P3", batch_size=1)
    harness.write_prep(tmp_path / "prep", ["a.bin", "b.bin"], shape=chw)
    leases = []
    real_lease = devices.lease

    def counted(chip, **kwargs):
        leases.append(chip)
        return real_lease(chip, **kwargs)

    monkeypatch.setattr(devices, "lease", counted)
    busy = devices._try_lock(0)  # device 0 is taken: the cell leases device 1
    try:
        measured = measure.infer_cell(
            compiled(make, "Ascend310P3", om.path),
            make.prep(prep_dir=str(tmp_path / "prep"), images=2),
            make.env(targets=["Ascend310P3"], work_dir=str(tmp_path / "work")),
        )
    finally:
        os.close(busy)
    assert measured.status == "ok" and measured.inference.device == "1"
    assert {op.op_name for op in measured.op_profile} == {"conv1", "relu1"}
    runs = [c["argv"] for c in harness.invocations(record) if c["tool"] == "ais_bench"]
    assert ["--profiler" in argv for argv in runs] == [False, True]  # measured first, then profiled
    assert {argv[argv.index("--device") + 1] for argv in runs} == {"1"}
    assert leases == ["Ascend310P3"]  # one lease for both passes
