"""The measure stage's diagnosis of a cell whose mIoU fails the rule (erfnet_tasks/cell_diagnosis.py): the
cell's own model against the golden it was compiled from, on the host for ONNX Runtime, through msprobe on
a leased device of the chip for Ascend; a diagnosis that fails costs the cell nothing."""

from __future__ import annotations

import logging
import os
import sys

import harness
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from erfnet_tasks import cell_diagnosis, devices
from erfnet_tasks.backends import get_backend
from erfnet_tasks.records import MeasuredCell, from_xcom, to_xcom

SMALL = (64, 128)  # ERFNet is fully convolutional: a small input keeps the tests fast
PERTURBED_CONV = "/encoder/layers.3/conv1x3_1/Conv"
FAILING, PASSING = 0.30, 0.75  # against the guide's 72.20 - 1.00


def small_erfnet(exported, out):
    model = onnx.load(str(exported))
    for io in [*model.graph.input, *model.graph.output]:
        dims = io.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = SMALL
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out


def perturbed(src, out, node_name):
    model = onnx.load(str(src))
    node = next(n for n in model.graph.node if n.name == node_name)
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    value = numpy_helper.to_array(weight)
    noisy = value + np.random.default_rng(1).normal(0, 2 * value.std(), value.shape).astype(value.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def golden(exported_onnx, tmp_path_factory):
    return small_erfnet(exported_onnx, tmp_path_factory.mktemp("cell_diagnosis") / "golden.onnx")


@pytest.fixture
def prep(make, tmp_path):
    harness.write_prep(tmp_path / "prep", ["img_0.bin", "img_1.bin", "img_2.bin"], shape=(3, *SMALL))
    return make.prep(prep_dir=str(tmp_path / "prep"), images=3)


def cell_of(make, target, model, golden_path, miou, batch=1) -> MeasuredCell:
    cell = make.measured(target, batch, miou=miou)
    compilation = cell.compiled.compilation.model_copy(update={"path": str(model)})
    compiled = cell.compiled.model_copy(update={"compilation": compilation, "golden": str(golden_path)})
    return cell.model_copy(update={"compiled": compiled})


def test_a_failing_host_cell_is_diagnosed_against_its_golden(make, golden, prep, tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "2")
    bad = perturbed(golden, tmp_path / "bad.onnx", PERTURBED_CONV)
    model = get_backend("onnxruntime").compile(bad, tmp_path, chip="cpu", batch_size=2).path
    cell = cell_of(make, "cpu", model, golden, FAILING, batch=2)
    diagnosed = cell_diagnosis.diagnose_failing_cell(cell, prep, tmp_path / "out", make.env())
    diagnosis = diagnosed.diagnosis
    assert diagnosis.images == 2 and diagnosis.first_diverging["node"] == PERTURBED_CONV
    assert PERTURBED_CONV in diagnosis.first_diverging["onnx_nodes"] and diagnosis.first_diverging["cosine"] < 0.99
    nodes = [layer["node"] for layer in diagnosis.layers]
    assert nodes.index(PERTURBED_CONV) > 0 and all(
        layer["cosine"] == pytest.approx(1.0, abs=1e-5) for layer in diagnosis.layers[: nodes.index(PERTURBED_CONV)]
    )
    assert from_xcom(MeasuredCell, to_xcom(diagnosed)) == diagnosed


def test_only_a_cell_that_fails_the_runs_rule_is_diagnosed(make, golden, prep, tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "2")
    monkeypatch.setattr(cell_diagnosis, "compare_with_golden", lambda *a: pytest.fail("diagnosed"))
    passing = cell_of(make, "cpu", golden, golden, PASSING)
    assert cell_diagnosis.diagnose_failing_cell(passing, prep, tmp_path, make.env()) is passing
    # The run's own rule: a reference of 40 points and a tolerance of 5 pass an mIoU of 0.36.
    lenient = make.env(params={"reference_miou": 40.0, "tolerance": 5.0})
    low = cell_of(make, "cpu", golden, golden, 0.36)
    assert cell_diagnosis.diagnose_failing_cell(low, prep, tmp_path, lenient) is low
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "0")  # turned off
    failing = cell_of(make, "cpu", golden, golden, FAILING)
    assert cell_diagnosis.diagnose_failing_cell(failing, prep, tmp_path, make.env()) is failing


def test_a_diagnosis_that_fails_keeps_the_cell_as_it_was(make, golden, prep, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "2")
    cell = cell_of(make, "cpu", tmp_path / "missing.onnx", golden, FAILING)
    with caplog.at_level(logging.WARNING, logger="erfnet_tasks.cell_diagnosis"):
        assert cell_diagnosis.diagnose_failing_cell(cell, prep, tmp_path, make.env()) is cell
    assert "cpu batch 1: the diagnosis failed, none is stored" in caplog.text and "not found" in caplog.text


def test_a_failing_npu_cell_is_diagnosed_by_msprobe_on_a_device_of_its_chip(make, golden, prep, tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "2")
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3,Ascend310P3")
    # the stand-in msprobe is a python3 script needing onnx: this interpreter's python3 first on PATH
    monkeypatch.setenv("PATH", os.pathsep.join([str(harness.BIN), os.path.dirname(sys.executable), os.environ["PATH"]]))
    monkeypatch.setenv("STANDIN_CANN_PERTURB_NODE", PERTURBED_CONV)
    om = get_backend("ascend").compile(golden, tmp_path, chip="Ascend310P3", batch_size=1).path
    cell = cell_of(make, "Ascend310P3", om, golden, FAILING)
    busy = devices._try_lock(0)  # device 0 is taken: the diagnosis leases device 1
    try:
        diagnosed = cell_diagnosis.diagnose_failing_cell(cell, prep, tmp_path / "out", make.env(["Ascend310P3"]))
    finally:
        os.close(busy)
    first = diagnosed.diagnosis.first_diverging
    assert first["node"] == PERTURBED_CONV and PERTURBED_CONV in first["onnx_nodes"]
    calls = [c["argv"] for c in harness.invocations(record) if c["tool"] == "msprobe"]
    assert len(calls) == 2 and all(argv[argv.index("--rank") + 1] == "1" for argv in calls)
    assert not list((tmp_path / "out").glob(".diagnose-*"))  # msprobe's dumps are gone with their folder
