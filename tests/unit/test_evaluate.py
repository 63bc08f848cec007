"""ErfNet_postprocess.py's semantics: iouEval corners by hand, PIL nearest parity, both summary eras,
FP16/FP32 logits and label maps, and the errors that name a missing file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from erfnet_tasks import evaluate
from erfnet_tasks.cli import main
from erfnet_tasks.errors import ErfnetError

H, W = 512, 1024


def erfnet_ioueval(preds: list[np.ndarray], labels: list[np.ndarray]):
    """erfnet_pytorch's iouEval (20 classes, ignore 19) as it is written upstream: one-hot tensors,
    tp/fp/fn sums in double, accumulated over the set."""
    tp = torch.zeros(19).double()
    fp = torch.zeros(19).double()
    fn = torch.zeros(19).double()
    for pred, label in zip(preds, labels, strict=True):
        x = torch.from_numpy(pred.astype(np.int64))[None, None]
        y = torch.from_numpy(label.astype(np.int64))[None, None]
        x_onehot = torch.zeros(1, 20, *pred.shape).scatter_(1, x, 1).float()
        y_onehot = torch.zeros(1, 20, *label.shape).scatter_(1, y, 1).float()
        ignores = y_onehot[:, 19].unsqueeze(1)
        x_onehot, y_onehot = x_onehot[:, :19], y_onehot[:, :19]
        tp += (x_onehot * y_onehot).sum(dim=(0, 2, 3)).double()
        fp += (x_onehot * (1 - y_onehot - ignores)).sum(dim=(0, 2, 3)).double()
        fn += ((1 - x_onehot) * y_onehot).sum(dim=(0, 2, 3)).double()
    iou = tp / (tp + fp + fn + 1e-15)
    return float(torch.mean(iou)), iou.tolist()


# ----------------------------------------------------------------------------------- iouEval corners


def test_iou_corners_by_hand():
    # label row / prediction row, one pixel each
    label = np.array([0, 0, 0, 1, 19, 19, 2, 5], dtype=np.uint8)
    pred = np.array([0, 0, 19, 0, 1, 3, 2, 4], dtype=np.uint8)
    #  class 0: tp 2, fp 1 (the pixel labelled 1), fn 1 (predicted 19 on a valid label) -> 2/4
    #  class 1: tp 0, fp 0 (its prediction sits on an ignored pixel), fn 1 -> 0
    #  class 2: 1/1; class 3: predicted only on an ignored pixel -> 0/(0+1e-15) = 0
    #  class 4: fp 1 -> 0; class 5: fn 1 -> 0; the other 13 classes are absent from both -> 0
    miou, per_class = evaluate.iou_from_confusion(evaluate.confusion(pred, label))
    expected = [0.5, 0.0, 1.0] + [0.0] * 16
    assert per_class == pytest.approx(expected, abs=1e-12)
    assert miou == pytest.approx(1.5 / 19, abs=1e-15)


def test_iou_sums_over_the_set_not_a_mean_of_images():
    a_label, a_pred = np.zeros(4, np.uint8), np.zeros(4, np.uint8)  # class 0: 4/4
    b_label, b_pred = np.zeros(4, np.uint8), np.array([0, 1, 1, 1], np.uint8)  # class 0: 1/4
    total = evaluate.confusion(a_pred, a_label) + evaluate.confusion(b_pred, b_label)
    miou, per_class = evaluate.iou_from_confusion(total)
    assert per_class[0] == pytest.approx(5 / 8) and per_class[1] == 0.0
    assert miou == pytest.approx((5 / 8) / 19)


def test_iou_matches_erfnet_ioueval_on_random_maps():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 20, (37, 53), dtype=np.uint8) for _ in range(3)]
    labels = [rng.choice(np.r_[np.arange(12), 19], (37, 53)).astype(np.uint8) for _ in range(3)]
    total = sum(evaluate.confusion(p, label) for p, label in zip(preds, labels, strict=True))
    miou, per_class = evaluate.iou_from_confusion(total)
    ref_miou, ref_per_class = erfnet_ioueval(preds, labels)
    assert miou == pytest.approx(ref_miou, abs=1e-12)
    assert per_class == pytest.approx(ref_per_class, abs=1e-12)


# ------------------------------------------------------------------------------------ per image


def test_label_resize_keeps_odd_rows_and_columns(tmp_path):
    """One-pixel stripes at full size: PIL's nearest samples the centres of rows/columns 1, 3, 5, ..."""
    label = np.full((1024, 2048), 255, dtype=np.uint8)
    label[0::2, :] = 3  # even rows: would survive a[::2, ::2]
    label[1::2, 1::2] = 7  # odd rows, odd columns
    label[1::2, 0::2] = 255
    label[5, 11] = 18
    Image.fromarray(label).save(tmp_path / "x_gtFine_labelTrainIds.png")
    got = evaluate.read_label(tmp_path / "x_gtFine_labelTrainIds.png")
    assert got.shape == (H, W)
    expected = np.full((H, W), 7, dtype=np.uint8)
    expected[2, 5] = 18  # row 5 -> 2, column 11 -> 5
    assert np.array_equal(got, expected)
    # 255 becomes 19
    label2 = label.copy()
    label2[1, 1] = 255
    Image.fromarray(label2).save(tmp_path / "y_gtFine_labelTrainIds.png")
    assert evaluate.read_label(tmp_path / "y_gtFine_labelTrainIds.png")[0, 0] == 19


def test_argmax_matches_numpy_with_ties_signed_zero_and_nan():
    rng = np.random.default_rng(2)
    for dtype in (np.float16, np.float32):
        x = rng.standard_normal((20, 64, 128)).astype(dtype)
        x[7, :4] = x[3, :4] = 50  # ties: the first index wins
        x[:, 10, 0] = 0
        x[2, 10, 0] = -0.0  # -0 == +0: index 0 wins, as np.argmax / torch.max say
        x[:, 11, 0] = -np.inf
        x[5, 12, 0] = np.nan
        x[9, 13, 0] = -np.nan
        got = evaluate.argmax_channels(x)
        assert np.array_equal(got, np.argmax(x, axis=0)), dtype
        assert np.array_equal(got, torch.from_numpy(x.astype(np.float32)).max(0)[1].numpy())


# ---------------------------------------------------------------------------------- whole summaries


def make_case(root: Path, n: int = 2, seed: int = 0):
    """Labels (2048x1024, nested under a city folder) and random FP16 logits biased toward the truth."""
    rng = np.random.default_rng(seed)
    gt_dir = root / "gtFine" / "val"
    names, logits, small_labels = [], [], []
    for i in range(n):
        name = f"city_000000_{i:06d}"
        label = rng.choice(np.r_[np.arange(19), 255], (1024, 2048), p=np.r_[np.full(19, 0.9 / 19), 0.1]).astype(
            np.uint8
        )
        (gt_dir / "city").mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(gt_dir / "city" / f"{name}_gtFine_labelTrainIds.png", compress_level=1)
        small = label[1::2, 1::2].copy()  # what PIL's nearest keeps, by hand
        small[small == 255] = 19
        out = rng.standard_normal((20, H, W)).astype(np.float16)
        truth = np.where(small == 19, 0, small)
        hit = rng.random((H, W)) < 0.6
        np.put_along_axis(out, truth[None].astype(np.int64), np.where(hit, 9.0, -9.0)[None].astype(np.float16), axis=0)
        out[19, :, :8] = 20  # some pixels predicted 19
        names.append(name)
        logits.append(out)
        small_labels.append(small)
    return gt_dir, names, logits, small_labels


def write_outputs(folder: Path, names, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(names, arrays, strict=True):
        arr.tofile(folder / f"{name}_leftImg8bit_0.bin")


def summary_doc(names, infile_dir: str, outfile_dir: str) -> dict:
    return {
        "filesinfo": {
            str(i): {
                "infiles": [f"{infile_dir}/{n}_leftImg8bit.bin"],
                "outfiles": [f"{outfile_dir}/{n}_leftImg8bit_0.bin"],
            }
            for i, n in enumerate(names)
        },
        "NPU_compute_time": {"min": 1.0, "max": 1.0, "mean": 1.0, "median": 1.0, "percentile(99%)": 1.0},
        "throughput": 1000.0,
    }


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    gt_dir, names, logits, small_labels = make_case(root)
    preds = [np.argmax(x, axis=0) for x in logits]
    expected = erfnet_ioueval(preds, small_labels)
    return root, gt_dir, names, logits, preds, expected


def test_new_summary_format_fp16(case):
    root, _gt_dir, names, logits, _, (miou, per_class) = case
    folder = root / "out_new" / "2024_01_02-03_04_05"
    write_outputs(folder, names, logits)
    summary = root / "out_new" / "2024_01_02-03_04_05_summary.json"
    summary.write_text(json.dumps(summary_doc(names, "prep", "out_new/2024_01_02-03_04_05")))
    result = evaluate.evaluate_summary(summary, root, workers=2, progress=False)  # labels nested deep
    assert result.images == 2
    assert result.miou == pytest.approx(miou, abs=1e-9) and 0.2 < result.miou < 0.9
    assert result.per_class == pytest.approx(per_class, abs=1e-9)


def test_old_sumary_json_format_fp32_and_label_maps(case):
    root, gt_dir, names, logits, preds, (miou, per_class) = case
    variants = {
        "fp32": [x.astype(np.float32) for x in logits],
        "int64": [p.astype(np.int64) for p in preds],
        "int32": [p.astype(np.int32) for p in preds],
    }
    for kind, arrays in variants.items():
        folder = root / f"out_{kind}" / "2022_07_15-14_16_46"
        write_outputs(folder, names, arrays)
        (folder / "sumary.json").write_text(json.dumps(summary_doc(names, "/somewhere/prep", "/elsewhere/out")))
        result = evaluate.evaluate_summary(folder / "sumary.json", gt_dir, workers=1, progress=False)
        assert result.miou == pytest.approx(miou, abs=1e-9), kind
        assert result.per_class == pytest.approx(per_class, abs=1e-9), kind


def test_cli_text_and_json(case, capsys):
    root, gt_dir, names, logits, _, (miou, per_class) = case
    folder = root / "out_cli" / "2024_01_02-03_04_05"
    write_outputs(folder, names, logits)
    summary = root / "out_cli" / "2024_01_02-03_04_05_summary.json"
    summary.write_text(json.dumps(summary_doc(names, "prep", str(folder))))
    assert main(["evaluate", str(summary), str(gt_dir), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"iou is  {miou:.4f}"
    assert "road" in text and "motorcycle" in text and f"{100 * per_class[13]:.2f}" in text
    assert main(["evaluate", str(summary), str(gt_dir), "--json", "--quiet", "--workers", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"miou", "per_class", "images"} and doc["images"] == 2
    assert doc["miou"] == pytest.approx(miou, abs=1e-9) and len(doc["per_class"]) == 19


def test_labels_given_as_label_ids_are_mapped(tmp_path):
    ids = np.full((1024, 2048), 7, dtype=np.uint8)  # road
    ids[:, :100] = 0  # unlabeled -> 255 -> 19
    ids[:200, :] = 23  # sky -> 10
    Image.fromarray(ids).save(tmp_path / "c_000000_000000_gtFine_labelIds.png")
    label = evaluate.read_label(tmp_path / "c_000000_000000_gtFine_labelIds.png")
    assert label[0, 60] == 10 and label[300, 0] == 19 and label[300, 60] == 0


def test_missing_output_and_missing_label_are_named(case, tmp_path, capsys):
    _root, gt_dir, names, logits, _, _ = case
    folder = tmp_path / "out" / "2024_01_02-03_04_05"
    write_outputs(folder, names[:1], logits[:1])
    summary = tmp_path / "out" / "2024_01_02-03_04_05_summary.json"
    summary.write_text(json.dumps(summary_doc(names, "prep", str(folder))))
    with pytest.raises(ErfnetError, match=f"{names[1]}_leftImg8bit_0.bin"):
        evaluate.evaluate_summary(summary, gt_dir, workers=1, progress=False)

    write_outputs(folder, names, logits)
    summary.write_text(json.dumps(summary_doc([*names, "city_000000_000099"], "prep", str(folder))))
    (folder / "city_000000_000099_leftImg8bit_0.bin").write_bytes(logits[0].tobytes())
    code = main(["evaluate", str(summary), str(gt_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "city_000000_000099_gtFine_labelTrainIds.png" in err and "\n" not in err.strip()


def test_output_of_unknown_size_is_an_error(case, tmp_path):
    _root, gt_dir, names, _logits, _, _ = case
    folder = tmp_path / "o" / "2024_01_02-03_04_05"
    folder.mkdir(parents=True)
    (folder / f"{names[0]}_leftImg8bit_0.bin").write_bytes(b"\0" * 1000)
    summary = tmp_path / "o" / "2024_01_02-03_04_05_summary.json"
    summary.write_text(json.dumps(summary_doc(names[:1], "prep", str(folder))))
    with pytest.raises(ErfnetError, match="1000 bytes"):
        evaluate.evaluate_summary(summary, gt_dir, workers=1, progress=False, limit=1)
