"""``erfnet diagnose``: the first diverging layer, on ONNX Runtime for real and through the stand-in msprobe."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import harness
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from erfnet_tasks.diagnose import metrics, msprobe
from erfnet_tasks.diagnose.report import Layer, first_diverging
from erfnet_tasks.errors import ErfnetError
from tests.helpers.diagnosis import SMALL, diagnose_json, perturb_weights, small_erfnet
from tests.helpers.diagnosis import erfnet_diagnose as erfnet

PERTURBED_CONV = "/encoder/layers.3/conv1x3_1/Conv"


# ------------------------------------------------------------------------------------- models


def tiny_graph(path, w2_scale: float = 1.0, *, neg_relu: bool = False):
    """X -> conv_a -> relu_a -> conv_b -> (unnamed Sqrt of |.|) -> Y; conv_b's weights scaled by ``w2_scale``."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    w2 = (rng.normal(size=(4, 4, 3, 3)) * w2_scale).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["X", "w1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Neg" if neg_relu else "Relu", ["a"], ["r"], name="relu_a"),
        helper.make_node("Conv", ["r", "w2"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Abs", ["b"], ["m"], name="abs_b"),
        helper.make_node("Sqrt", ["m" if not neg_relu else "r"], ["Y"]),
    ]  # unnamed: Sqrt_4
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture
def tiny_prep(tmp_path):
    return harness.write_prep(tmp_path / "prep", ["b_1.bin", "a_2.bin", "c_10.bin"], shape=(2, 8, 8))[0].parent


@pytest.fixture(scope="module")
def small_models(exported_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("small_erfnet")
    golden = small_erfnet(exported_onnx, root / "golden.onnx")
    perturbed = perturb_weights(golden, root / "perturbed.onnx", PERTURBED_CONV)
    prep = harness.write_prep(root / "prep", ["img_0.bin", "img_1.bin"], shape=(3, *SMALL))[0].parent
    return golden, perturbed, prep


# ------------------------------------------------------------------------------------ metrics


def test_metrics_follow_the_definitions():
    b = np.array([1.0, 2.0, 0.0, -4.0])
    a = np.array([1.0, 2.5, 0.5, -4.0])
    m = metrics.compare_tensors(a, b)
    assert m["max_abs_error"] == pytest.approx(0.5)
    assert m["relative_euclidean"] == pytest.approx(math.sqrt(0.5) / math.sqrt(21))
    assert m["cosine"] == pytest.approx(float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert m["mean_relative_error"] == pytest.approx(0.25 / 4)  # the zero golden element counts as 0
    assert m["rmse"] == pytest.approx(math.sqrt(0.5 / 4))
    assert metrics.compare_tensors(b, b)["kl_divergence"] == 0.0
    assert metrics.compare_tensors(-b, b)["cosine"] == pytest.approx(-1.0)
    assert math.isnan(metrics.compare_tensors([np.nan, 1.0], [1.0, 1.0])["cosine"])


def test_the_precision_error_rule_is_msprobes():
    ok = {"cosine": 0.995, "relative_euclidean": 0.01, "kl_divergence": 0.001, "rmse": 0.1, "mean_relative_error": 0.1}
    assert not metrics.is_precision_error("Conv", ok)
    for key, bad in (
        ("cosine", 0.989),
        ("relative_euclidean", 0.051),
        ("kl_divergence", 0.0051),
        ("rmse", 1.01),
        ("mean_relative_error", 1.01),
    ):
        assert metrics.is_precision_error("Conv", {**ok, key: bad}), key
    for never in ("Data", "TransData", "PartitionCall"):
        assert not metrics.is_precision_error(never, {**ok, "cosine": 0.1})
    assert not metrics.is_precision_error("Conv", {**ok, "cosine": math.nan, "rmse": 50.0})


def test_first_diverging_is_the_first_precision_error_in_order():
    good = {"cosine": 1.0, "relative_euclidean": 0.0}
    bad = {"cosine": 0.5, "relative_euclidean": 0.9}
    layers = [
        Layer("in", "Data", [], bad),
        Layer("a", "Conv", ["a"], good),
        Layer("b", "Conv", ["b"], bad),
        Layer("c", "Relu", ["c"], bad),
    ]
    assert first_diverging(layers).node == "b"
    assert first_diverging(layers[:2]) is None


# -------------------------------------------------------------------- ONNX Runtime, for real


def test_tiny_graph_names_the_perturbed_conv(tmp_path, tiny_prep):
    golden = tiny_graph(tmp_path / "g.onnx")
    model = tiny_graph(tmp_path / "m.onnx", w2_scale=-0.5)
    doc = diagnose_json(golden, model, tiny_prep)
    assert [layer["node"] for layer in doc["layers"]] == ["conv_a", "relu_a", "conv_b", "abs_b", "Sqrt_4"]
    assert doc["first_diverging"]["node"] == "conv_b"
    assert doc["first_diverging"]["op_type"] == "Conv"
    assert doc["first_diverging"]["onnx_nodes"] == ["conv_b"]
    assert doc["first_diverging"]["cosine"] == pytest.approx(-1.0)
    assert doc["layers"][0]["cosine"] == pytest.approx(1.0) and doc["layers"][0]["max_abs_error"] == 0.0
    assert diagnose_json(golden, golden, tiny_prep)["first_diverging"] is None


def test_nan_in_a_layer_is_said_on_that_layer(tmp_path, tiny_prep):
    golden = tiny_graph(tmp_path / "g.onnx")
    model = tiny_graph(tmp_path / "m.onnx", neg_relu=True)  # relu_a negates; the Sqrt then reads it: NaN
    doc = diagnose_json(golden, model, tiny_prep)
    by_node = {layer["node"]: layer for layer in doc["layers"]}
    assert doc["first_diverging"]["node"] == "relu_a"
    assert by_node["Sqrt_4"]["cosine"] is None and "NaN/Inf" in by_node["Sqrt_4"]["note"]


def test_table_marks_the_first_diverging_layer(tmp_path, tiny_prep):
    golden, model = tiny_graph(tmp_path / "g.onnx"), tiny_graph(tmp_path / "m.onnx", w2_scale=-0.5)
    done = erfnet(
        ["--golden", str(golden), "--model", str(model), "--backend", "onnxruntime", "--input", str(tiny_prep)]
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    marked = [line for line in lines if "FIRST DIVERGING" in line]
    assert len(marked) == 1 and "conv_b" in marked[0]
    assert lines[-1].startswith("first diverging layer: conv_b (Conv")


def test_real_erfnet_with_one_perturbed_conv(small_models):
    golden, perturbed, prep = small_models
    doc = diagnose_json(golden, perturbed, prep)
    assert len(doc["layers"]) == len(onnx.load(str(golden)).graph.node)
    first = doc["first_diverging"]
    assert (first["node"], first["op_type"], first["onnx_nodes"]) == (PERTURBED_CONV, "Conv", [PERTURBED_CONV])
    assert first["cosine"] < 0.99
    before = doc["layers"][: [layer["node"] for layer in doc["layers"]].index(PERTURBED_CONV)]
    assert before and all(layer["cosine"] == pytest.approx(1.0) for layer in before)
    assert diagnose_json(golden, golden, prep)["first_diverging"] is None


# ------------------------------------------------------------------------ msprobe (stand-in)


def standin_om(monkeypatch, tmp_path, golden):
    record = harness.use_standins(monkeypatch, tmp_path)
    # the stand-in msprobe is a python3 script needing onnx: this interpreter's python3 first on PATH
    monkeypatch.setenv("PATH", os.pathsep.join([str(harness.BIN), os.path.dirname(sys.executable), os.environ["PATH"]]))
    done = subprocess.run(
        [
            "atc",
            "--framework=5",
            f"--model={golden}",
            f"--output={tmp_path / 'model'}",
            "--soc_version=Ascend310P3",
            f"--input_shape=actual_input_1:1,3,{SMALL[0]},{SMALL[1]}",
            "--input_format=NCHW",
            "--output_type=FP16",
            "--log=error",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    return tmp_path / "model.om", record


def test_msprobe_standin_names_the_perturbed_conv(small_models, tmp_path, monkeypatch):
    golden, _, prep = small_models
    om, record = standin_om(monkeypatch, tmp_path, golden)
    assert diagnose_json(golden, om, prep, backend="ais_bench")["first_diverging"] is None  # FP16 rounding only
    monkeypatch.setenv("STANDIN_CANN_PERTURB_NODE", PERTURBED_CONV)
    doc = diagnose_json(golden, om, prep, backend="ais_bench")
    first = doc["first_diverging"]
    assert first["node"] == PERTURBED_CONV and PERTURBED_CONV in first["onnx_nodes"]
    assert doc["layers"][0]["op_type"] == "Data" and doc["layers"][0]["onnx_nodes"] == []
    calls = [c["argv"] for c in harness.invocations(record) if c["tool"] == "msprobe"]
    assert len(calls) == 4  # one run per image, two diagnoses
    argv = calls[-1]
    assert argv[:8] == ["compare", "-m", "offline_model", "-gp", str(golden), "-tp", str(om), "-i"]
    assert argv[8] == str(prep / "img_1.bin") and argv[9] == "-o" and argv[-2:] == ["--onnx_fusion_switch", "False"]


def write_result(path, rows, drop: str | None = None):
    header = [
        "Index",
        "OpType",
        "NPUDump",
        "DataType",
        "Address",
        "GroundTruth",
        "DataType",
        "Address",
        "TensorIndex",
        "Shape",
        *metrics.METRIC_COLUMNS,
        "CompareFailReason",
        "IsNpuOps",
        "IsOutputNode",
        "IsPrecisionError",
    ]
    keep = [i for i, name in enumerate(header) if name != drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([[header[i] for i in keep], *[[row[i] for i in keep] for row in rows]])
    return path


def result_row(index, op_type, op, truth, tensor, cosine, rel_euc, reason=""):
    values = [cosine, "0.5", "1.0", rel_euc, "NaN", "(0.1;0.2),(0.1;0.2)", "0.1", "0.2", "0.3", "0.01"]
    return [
        str(index),
        op_type,
        op,
        "float16",
        "0x1",
        truth,
        "float32",
        "0x2",
        tensor,
        "[1,4]",
        *values,
        reason,
        "YES" if truth == "*" else "NO",
        "NO",
        "NO",
    ]


def test_msprobe_result_is_read_by_column_name(tmp_path):
    rows = [
        result_row(0, "Data", "input", "*", "input:output:0", "NaN", "NaN"),
        result_row(1, "Conv2D", "conv1", "conv1,relu1", "conv1:input:0", "0.2", "0.9"),
        result_row(1, "Conv2D", "conv1", "conv1,relu1", "conv1:output:0", "0.9999", "0.001"),
        result_row(2, "Add", "add1", "add1", "add1:output:0", "0.95", "0.2"),
        result_row(3, "Relu", "relu2", "relu2", "relu2:output:0", "NaN", "NaN", "NaN or Inf in the data"),
    ]
    path = write_result(tmp_path / "20260101120000" / "result_20260101120000.csv", rows)
    assert msprobe.find_result_csv(tmp_path) == path
    layers = msprobe.read_result(path)
    assert [(la.node, la.op_type, la.onnx_nodes) for la in layers] == [
        ("input", "Data", []),
        ("conv1", "Conv2D", ["conv1", "relu1"]),
        ("add1", "Add", ["add1"]),
        ("relu2", "Relu", ["relu2"]),
    ]
    assert layers[1].metrics["cosine"] == 0.9999 and layers[1].metrics["standard_deviation"] == "(0.1;0.2),(0.1;0.2)"
    assert first_diverging(layers).node == "add1"
    assert layers[3].note == "NaN or Inf in the data" and not layers[3].precision_error


def test_msprobe_result_without_a_column_is_one_line(tmp_path):
    path = write_result(
        tmp_path / "result_1.csv",
        [result_row(1, "Add", "a", "a", "a:output:0", "1", "0")],
        drop="RelativeEuclideanDistance",
    )
    with pytest.raises(ErfnetError, match="no column RelativeEuclideanDistance"):
        msprobe.read_result(path)


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["missing_golden", "too_many_images", "missing_input_dir", "torch", "no_msprobe"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, tiny_prep, monkeypatch):
    golden = tiny_graph(tmp_path / "g.onnx")
    args = {
        "golden": str(golden),
        "model": str(golden),
        "backend": "onnxruntime",
        "input": str(tiny_prep),
        "images": "2",
    }
    expect = {
        "missing_golden": "golden model not found",
        "too_many_images": "--images 4 but",
        "missing_input_dir": "input folder not found",
        "torch": "is not a PyTorch checkpoint",  # an ONNX file given as the checkpoint
        "no_msprobe": "not found",
    }[case]
    if case == "missing_golden":
        args["golden"] = str(tmp_path / "nope.onnx")
    elif case == "too_many_images":
        args["images"] = "4"
    elif case == "missing_input_dir":
        args["input"] = str(tmp_path / "nowhere")
    elif case == "torch":
        args["backend"] = "torch"
    else:
        args["backend"] = "ais_bench"
        monkeypatch.setenv(msprobe.MSPROBE_ENV, str(tmp_path / "no-such-msprobe"))
    done = erfnet([part for key, value in args.items() for part in (f"--{key}", value)])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("erfnet: error: ") and expect in done.stderr
    assert done.stdout == ""


def compiled_for_cpu(model, out_dir, batch_size):
    """What a cell of target ``cpu`` runs: the ORT backend's optimised model (FusedConv...) at a fixed batch."""
    from erfnet_tasks.backends import onnxruntime as ort_backend

    out_dir.mkdir(parents=True, exist_ok=True)
    return ort_backend.compile(model, out_dir, chip="cpu", batch_size=batch_size).path


def test_a_cells_compiled_model_is_compared_through_its_fusions(small_models, tmp_path):
    golden, perturbed, prep = small_models
    compiled = compiled_for_cpu(golden, tmp_path, batch_size=2)
    fused = [n for n in onnx.load(str(compiled)).graph.node if n.op_type == "FusedConv"]
    assert fused, "ONNX Runtime's optimiser no longer fuses Conv and Relu: this test lost its subject"
    doc = diagnose_json(golden, compiled, prep)
    assert doc["first_diverging"] is None
    by_node = {layer["node"]: layer for layer in doc["layers"]}
    # /encoder/layers.1/conv3x1_1/Conv -> /encoder/layers.1/Relu in the golden: one FusedConv in the model
    conv_relu = by_node["/encoder/layers.1/conv3x1_1/Conv"]
    assert conv_relu["op_type"] == "FusedConv"
    assert conv_relu["onnx_nodes"] == ["/encoder/layers.1/conv3x1_1/Conv", "/encoder/layers.1/Relu"]
    assert conv_relu["cosine"] == pytest.approx(1.0) and conv_relu["note"] is None
    doc = diagnose_json(golden, compiled_for_cpu(perturbed, tmp_path / "perturbed", batch_size=2), prep)
    first = doc["first_diverging"]
    assert first["node"] == PERTURBED_CONV and first["onnx_nodes"][0] == PERTURBED_CONV


def test_argmax_model_matches_the_golden_by_node_name(small_models, tmp_path):
    import shutil

    from erfnet_tasks.onnx_export import append_argmax

    golden, _, prep = small_models
    model = shutil.copy(golden, tmp_path / "argmax.onnx")
    append_argmax(model)
    doc = diagnose_json(golden, model, prep)
    assert doc["first_diverging"] is None
    by_node = {layer["node"]: layer for layer in doc["layers"]}
    last_conv = by_node["/decoder/output_conv/ConvTranspose"]
    assert last_conv["onnx_nodes"] == ["/decoder/output_conv/ConvTranspose"]
    assert last_conv["cosine"] == pytest.approx(1.0)
    added = [layer for layer in doc["layers"] if layer["op_type"] in ("ArgMax", "Cast")]
    assert len(added) == 2 and all(la["onnx_nodes"] == [] and la["note"] == "no ONNX counterpart" for la in added)


def test_an_argmax_golden_keeps_its_logits_as_the_counterpart_of_a_plain_model(small_models, tmp_path):
    """A labels-on-device run's golden ends in ArgMax -> Cast to ``output1``; a model without them (a
    PyTorch cell's export) is compared at the logits, not through the ArgMax."""
    import shutil

    from erfnet_tasks.diagnose.onnx_layers import golden_counterparts, node_outputs
    from erfnet_tasks.onnx_export import append_argmax

    plain, _, _ = small_models
    golden = shutil.copy(plain, tmp_path / "argmax.onnx")
    append_argmax(golden)
    items = node_outputs(onnx.load(str(plain)))
    twins = dict(zip([i.node for i in items], golden_counterparts(onnx.load(str(golden)), items), strict=True))
    last = twins["/decoder/output_conv/ConvTranspose"]
    assert last.nodes == ("/decoder/output_conv/ConvTranspose",) and last.tensor == "output1_logits"
    assert all(twin is not None and twin.nodes == (node,) for node, twin in twins.items())
