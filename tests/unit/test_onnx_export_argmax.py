"""The ArgMax export option: int32 label maps that score exactly what the logits score."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from erfnet_tasks.backends import get_backend
from erfnet_tasks.datasets.cityscapes import preprocess
from erfnet_tasks.datasets.synthetic import write_sample_data
from erfnet_tasks.evaluate import evaluate_summary
from erfnet_tasks.onnx_export import OUTPUT_NAME, export_onnx, fix_bn
from erfnet_tasks.outputs import read_summary

# Every test here exports (or runs) the full-size ERFNet with ArgMax at 512x1024.
pytestmark = pytest.mark.slow

PIXELS = 512 * 1024


@pytest.fixture(scope="module")
def argmax_onnx(random_checkpoint, tmp_path_factory):
    """Exported with ArgMax, then through the guide's BN fix like the logits model it is compared with."""
    folder = tmp_path_factory.mktemp("argmax")
    report = export_onnx(random_checkpoint, folder / "ErfNet_argmax_origin.onnx", argmax=True)
    assert report.argmax and report.path == folder / "ErfNet_argmax_origin.onnx"
    fix_bn(report.path, folder / "ErfNet_argmax.onnx")
    return folder / "ErfNet_argmax.onnx"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # 1024x512 is already the model's size (the resize is skipped), which keeps the test quick.
    write_sample_data(root / "cs", 3, size=(1024, 512), seed=3)
    preprocess(
        root / "cs/leftImg8bit/val", root / "prep", root / "cs/gtFine/val", root / "gt", workers=1, progress=False
    )
    return root


def _infer(model, dataset, name, output_type="fp16"):
    backend = get_backend("onnxruntime")
    compiled = backend.compile(model, dataset / f"om_{name}", chip="cpu", batch_size=1)
    return backend.infer(
        compiled.path, dataset / "prep", dataset / f"out_{name}", batch_size=1, output_type=output_type
    )


def test_graph_ends_in_argmax_with_int32_output(argmax_onnx):
    model = onnx.load(str(argmax_onnx))
    output = model.graph.output
    assert [o.name for o in output] == [OUTPUT_NAME]
    assert output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    dims = [d.dim_value or d.dim_param for d in output[0].type.tensor_type.shape.dim]
    assert dims == ["-1", 512, 1024]
    argmax = [n for n in model.graph.node if n.op_type == "ArgMax"]
    assert len(argmax) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in argmax[0].attribute}
    assert attrs["axis"] == 1 and attrs["keepdims"] == 0


def test_labels_score_exactly_like_logits(argmax_onnx, fixed_onnx, dataset):
    """Through the evaluator (which tells int32 label maps apart by their size) the ArgMax model scores
    exactly what the FP32 logits score. Against the guide's FP16 logits it may differ on pixels whose two
    best logits round to the same FP16 value (the first channel then wins): random weights make such
    near-ties common, so there the bound is a hundredth of a percentage point, not equality."""
    labels = _infer(argmax_onnx, dataset, "labels")
    logits16 = _infer(fixed_onnx, dataset, "fp16")
    logits32 = _infer(fixed_onnx, dataset, "fp32", output_type="fp32")

    label_files = [e.outfiles[0] for e in read_summary(labels.summary_path)]
    assert len(label_files) == 3
    for path in label_files:  # written unconverted: int32, 4 bytes a pixel, not 20 FP16 channels
        assert path.stat().st_size == PIXELS * 4
    fp32_files = [e.outfiles[0] for e in read_summary(logits32.summary_path)]
    for lab, log in zip(label_files, fp32_files, strict=True):
        ours = np.fromfile(lab, dtype=np.int32)
        expected = np.fromfile(log, dtype=np.float32).reshape(20, PIXELS).argmax(axis=0)
        np.testing.assert_array_equal(ours, expected)
        assert len(np.unique(ours)) > 1  # a constant map would make the comparison weak

    # The backend's FP16 files (converted by ORT's Cast for speed) hold exactly numpy's conversion.
    fp16_files = [e.outfiles[0] for e in read_summary(logits16.summary_path)]
    for half, full in zip(fp16_files, fp32_files, strict=True):
        expected16 = np.fromfile(full, dtype=np.float32).astype(np.float16)
        assert half.read_bytes() == expected16.tobytes()

    gt = dataset / "gt"
    from_labels = evaluate_summary(labels.summary_path, gt, workers=1, progress=False)
    from_fp32 = evaluate_summary(logits32.summary_path, gt, workers=1, progress=False)
    from_fp16 = evaluate_summary(logits16.summary_path, gt, workers=1, progress=False)
    assert from_labels.images == from_fp32.images == 3
    assert from_labels.miou == from_fp32.miou
    assert from_labels.per_class == from_fp32.per_class
    assert from_fp32.miou > 0  # random weights still hit some pixels: the equality is not 0 == 0
    assert abs(from_labels.miou - from_fp16.miou) < 1e-4


def test_export_cli_argmax_flag(random_checkpoint, tmp_path, capsys):
    from erfnet_tasks.cli import build_parser

    args = build_parser().parse_args(["export", str(random_checkpoint), str(tmp_path / "m.onnx"), "--argmax"])
    assert args.argmax is True
    args = build_parser().parse_args(["export", str(random_checkpoint), str(tmp_path / "m.onnx")])
    assert args.argmax is False
