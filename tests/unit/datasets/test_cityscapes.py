"""Preprocessing as the guide does it, trainIds as cityscapesScripts draws them, every bad-input case,
resumability, and the synthetic sample tree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from erfnet_tasks.cli import main
from erfnet_tasks.datasets import cityscapes, synthetic
from erfnet_tasks.errors import ErfnetError

SMALL = (512, 256)  # 2:1, so the guide's resize still makes 1024x512


def guide_transform(path) -> np.ndarray:
    """ErfNet_preprocess.py written out the plain way: PIL open/convert/resize, then torchvision's
    ToTensor code (from_numpy, permute to CHW, float, div 255) in torch."""
    img = Image.open(path).convert("RGB").resize((1024, 512), Image.BILINEAR)
    tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous().float().div(255)
    return tensor.numpy()


def make_tree(root: Path, images: int = 2, size=SMALL, seed: int = 0):
    synthetic.write_sample_data(root, images, size=size, seed=seed)
    return cityscapes.dataset_dirs(root)


def run_preprocess(tmp_path, img_dir, gt_dir, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return cityscapes.preprocess(img_dir, tmp_path / "prep", gt_dir, tmp_path / "gt_out", **kw)


# ------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("size", [(2048, 1024), (640, 320), (1024, 512)])
def test_bin_is_bit_exact_to_the_guide_transform(tmp_path, size):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=1, size=size, seed=3)
    manifest = run_preprocess(tmp_path, img_dir, gt_dir)
    (name,) = manifest["names"]
    source = next(img_dir.rglob("*.png"))
    expected = guide_transform(source)
    written = np.fromfile(tmp_path / "prep" / f"{name}.bin", dtype=np.float32)
    assert written.nbytes == 6_291_456
    assert np.array_equal(written.view(np.uint32), expected.reshape(-1).view(np.uint32))
    # the photo must be natural enough that bilinear weights matter: not constant, many distinct levels
    assert len(np.unique(expected)) > 200


def test_preprocess_one_handles_rgba_and_grey_like_convert_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (300, 600, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (300, 600), dtype=np.uint8)
    for arr, name in ((rgba, "a.png"), (grey, "g.png")):
        Image.fromarray(arr).save(tmp_path / name)
        got = cityscapes.preprocess_one(tmp_path / name)
        assert got.dtype == np.float32 and got.shape == (3, 512, 1024)
        assert np.array_equal(got, guide_transform(tmp_path / name))


# -------------------------------------------------------------------------------------- trainIds


def test_train_ids_match_cityscapesscripts_drawing(tmp_path):
    """Draw one polygon of every label with cityscapesScripts as ids and as trainIds; our table must
    turn the ids image into exactly its trainIds image."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.helpers.labels import labels
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    objects = []
    for i, label in enumerate(labels):
        x0, y0 = (i % 7) * 20, (i // 7) * 20
        objects.append({"label": label.name, "polygon": [[x0, y0], [x0 + 30, y0], [x0 + 15, y0 + 30]]})
    objects.append({"label": "cargroup", "polygon": [[100, 100], [139, 100], [139, 139]]})
    (tmp_path / "a.json").write_text(json.dumps({"imgHeight": 140, "imgWidth": 140, "objects": objects}))
    annotation = Annotation()
    annotation.fromJsonFile(str(tmp_path / "a.json"))
    ids = np.asarray(createLabelImage(annotation, "ids"))
    train_ids = np.asarray(createLabelImage(annotation, "trainIds"))
    assert len(np.unique(ids)) > 30
    assert np.array_equal(cityscapes.label_ids_to_train_ids(ids), train_ids)


def test_every_uint8_label_id_maps_like_the_labels_table():
    from cityscapesscripts.helpers.labels import id2label

    known = [v for v in range(256) if v in id2label]
    got = cityscapes.label_ids_to_train_ids(np.array(known, dtype=np.uint8))
    for value, train in zip(known, got, strict=True):
        label = id2label[value]
        want = label.trainId if label.trainId not in (-1, 255) else 255
        assert train == want, value
    for value in (v for v in range(256) if v not in id2label):  # issue 15: never silently "ignore"
        with pytest.raises(ValueError, match=f"labelIds value\\(s\\) {value} "):
            cityscapes.label_ids_to_train_ids(np.array([7, value], dtype=np.uint8))
    got = cityscapes.label_ids_to_train_ids(np.arange(34, dtype=np.uint8))
    train_label_ids = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
    assert [got[i] for i in train_label_ids] == list(range(19))


def test_class_names_are_the_19_train_classes_in_order():
    assert cityscapes.CLASS_NAMES[0] == "road" and cityscapes.CLASS_NAMES[18] == "bicycle"
    assert len(cityscapes.CLASS_NAMES) == 19 and "traffic sign" in cityscapes.CLASS_NAMES


def test_train_ids_are_derived_where_only_label_ids_exist(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    derived_from = sorted(gt_dir.rglob("*_gtFine_labelTrainIds.png"))[0]
    reference = np.asarray(Image.open(derived_from))
    derived_from.unlink()
    run_preprocess(tmp_path, img_dir, gt_dir)
    out = tmp_path / "gt_out" / derived_from.name
    ids = np.asarray(Image.open(str(derived_from).replace("labelTrainIds", "labelIds")))
    assert np.array_equal(np.asarray(Image.open(out)), reference)
    assert np.array_equal(np.asarray(Image.open(out)), cityscapes.label_ids_to_train_ids(ids))
    expected = sorted(p.name.replace("labelIds", "labelTrainIds") for p in gt_dir.rglob("*_gtFine_labelIds.png"))
    assert sorted(p.name for p in (tmp_path / "gt_out").iterdir()) == expected


# ------------------------------------------------------------------------------ manifest, resume


def test_manifest_names_count_and_fingerprint(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=3)
    manifest = run_preprocess(tmp_path, img_dir, gt_dir, workers=2)
    on_disk = cityscapes.read_manifest(tmp_path / "prep")
    assert on_disk["images"] == 3 and on_disk["bad"] == [] and on_disk["synthetic"] is True
    assert on_disk["names"] == sorted(p.name[:-4] for p in img_dir.rglob("*.png"))
    assert on_disk["fingerprint"] == manifest["fingerprint"]
    assert sorted(p.stem for p in (tmp_path / "prep").glob("*.bin")) == on_disk["names"]

    # an independent computation of the documented fingerprint
    import hashlib

    lines = "".join(
        f"{n}\t{hashlib.sha256((tmp_path / 'prep' / f'{n}.bin').read_bytes()).hexdigest()}\t"
        f"{hashlib.sha256((tmp_path / 'gt_out' / (n[:-11] + 'gtFine_labelTrainIds.png')).read_bytes()).hexdigest()}\n"
        for n in on_disk["names"]
    )
    assert on_disk["fingerprint"] == hashlib.sha256(lines.encode()).hexdigest()

    # another image content -> another fingerprint
    first = sorted(img_dir.rglob("*.png"))[0]
    arr = np.asarray(Image.open(first)).copy()
    arr[0, 0] ^= 0xFF
    Image.fromarray(arr).save(first)
    os.utime(first, (os.stat(first).st_atime, os.stat(first).st_mtime + 5))
    assert run_preprocess(tmp_path, img_dir, gt_dir)["fingerprint"] != manifest["fingerprint"]


def test_rerun_redoes_a_truncated_bin_and_skips_complete_ones(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=3)
    first = run_preprocess(tmp_path, img_dir, gt_dir)
    bins = sorted((tmp_path / "prep").glob("*.bin"))
    before = {p.name: os.stat(p).st_mtime_ns for p in bins}
    with open(bins[1], "r+b") as fh:
        fh.truncate(1000)
    second = run_preprocess(tmp_path, img_dir, gt_dir)
    assert second["written"] == 1
    assert bins[1].stat().st_size == 6_291_456
    assert second["fingerprint"] == first["fingerprint"]
    for p in (bins[0], bins[2]):
        assert os.stat(p).st_mtime_ns == before[p.name]
    source = next(p for p in img_dir.rglob("*.png") if p.stem == bins[1].stem)
    assert np.array_equal(np.fromfile(bins[1], dtype=np.float32), guide_transform(source).reshape(-1))


def test_limit_and_workers_give_the_same_bins(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=3)
    one = cityscapes.preprocess(img_dir, tmp_path / "p1", gt_dir, tmp_path / "g1", workers=1, progress=False)
    two = cityscapes.preprocess(img_dir, tmp_path / "p2", gt_dir, tmp_path / "g2", workers=2, progress=False)
    assert one["fingerprint"] == two["fingerprint"]
    limited = cityscapes.preprocess(
        img_dir, tmp_path / "p1", gt_dir, tmp_path / "g1", workers=1, limit=2, progress=False
    )
    assert limited["images"] == 2 and limited["names"] == one["names"][:2]
    # the third .bin would otherwise be fed to inference by an ais_bench run over the folder
    assert sorted(p.stem for p in (tmp_path / "p1").glob("*.bin")) == one["names"][:2]


# -------------------------------------------------------------------------------------- bad input


def _expect_bad(tmp_path, img_dir, gt_dir, bad_path: Path, reason_part: str):
    with pytest.raises(ErfnetError) as info:
        run_preprocess(tmp_path, img_dir, gt_dir)
    message = str(info.value)
    assert "\n" not in message and str(bad_path) in message and reason_part in message
    manifest = run_preprocess(tmp_path, img_dir, gt_dir, skip_bad=True)
    assert [b["path"] for b in manifest["bad"]] == [str(bad_path)]
    assert cityscapes.read_manifest(tmp_path / "prep")["bad"] == manifest["bad"]
    return manifest


def test_truncated_image_png(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=3)
    victim = sorted(img_dir.rglob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    manifest = _expect_bad(tmp_path, img_dir, gt_dir, victim, "truncated")
    assert manifest["images"] == 2 and victim.name[:-4] not in manifest["names"]
    assert not (tmp_path / "prep" / f"{victim.name[:-4]}.bin").exists()


def test_unreadable_image_and_label(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    victim = sorted(gt_dir.rglob("*_gtFine_labelTrainIds.png"))[0]
    victim.write_bytes(b"not a png at all")
    _expect_bad(tmp_path, img_dir, gt_dir, victim, "unreadable")


def test_image_without_label(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    image = sorted(img_dir.rglob("*.png"))[0]
    stem = image.name[: -len("_leftImg8bit.png")]
    for label in gt_dir.rglob(f"{stem}_gtFine_*"):
        label.unlink()
    _expect_bad(tmp_path, img_dir, gt_dir, image, "no label")


def test_label_without_image(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    image = sorted(img_dir.rglob("*.png"))[0]
    image.unlink()
    orphan = next(gt_dir.rglob(image.name.replace("leftImg8bit", "gtFine_labelTrainIds")))
    manifest = _expect_bad(tmp_path, img_dir, gt_dir, orphan, "without an image")
    assert manifest["images"] == 1


def test_image_of_unexpected_size(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    victim = sorted(img_dir.rglob("*.png"))[0]
    Image.new("RGB", (600, 400), (10, 20, 30)).save(victim)
    _expect_bad(tmp_path, img_dir, gt_dir, victim, "600x400")


def test_empty_img_dir_fails_even_with_skip_bad(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    for skip in (False, True):
        with pytest.raises(ErfnetError, match="no \\*png"):
            cityscapes.preprocess(
                tmp_path / "img", tmp_path / "p", tmp_path / "gt", tmp_path / "g", skip_bad=skip, progress=False
            )


def test_cli_lists_bad_files_on_one_line_and_exits_2(tmp_path, capsys):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    images = sorted(img_dir.rglob("*.png"))
    for image in images:
        image.write_bytes(image.read_bytes()[:500])
    code = main(
        ["preprocess", str(img_dir), str(tmp_path / "p"), str(gt_dir), str(tmp_path / "g"), "--workers", "1", "--quiet"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("erfnet: error: 2 bad input file(s)") and "\n" not in err
    assert all(str(image) in err for image in images)
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------ sample data


def test_sample_data_tree(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "s"), "--images", "4", "--size", "256x128"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    img_dir, gt_dir = cityscapes.dataset_dirs(tmp_path / "s")
    images = sorted(img_dir.rglob("*_leftImg8bit.png"))
    assert len(images) == 4 and len({p.parent.name for p in images}) >= 2
    for image in images:
        city = image.parent.name
        assert image.name.startswith(f"{city}_") and image.relative_to(img_dir).parts[0] == city
        stem = image.name[: -len("_leftImg8bit.png")]
        ids = np.asarray(Image.open(gt_dir / city / f"{stem}_gtFine_labelIds.png"))
        train = np.asarray(Image.open(gt_dir / city / f"{stem}_gtFine_labelTrainIds.png"))
        photo = np.asarray(Image.open(image))
        assert photo.shape == (128, 256, 3) and ids.shape == train.shape == (128, 256)
        assert photo.std() > 10 and len(np.unique(photo)) > 100
        assert len(np.unique(train)) >= 3
        assert np.array_equal(train, cityscapes.label_ids_to_train_ids(ids))
    # deterministic for a seed
    synthetic.write_sample_data(tmp_path / "t", 4, size=(256, 128))
    again = sorted((tmp_path / "t" / "leftImg8bit" / "val").rglob("*.png"))
    assert [
        np.asarray(Image.open(a)).tobytes() == np.asarray(Image.open(b)).tobytes()
        for a, b in zip(images, again, strict=True)
    ] == [True] * 4


def test_sample_data_help_says_synthetic(capsys):
    with pytest.raises(SystemExit):
        main(["sample-data", "--help"])
    assert "SYNTHETIC" in capsys.readouterr().out


def test_dataset_dirs_rejects_a_non_cityscapes_tree(tmp_path):
    with pytest.raises(ErfnetError, match="leftImg8bit"):
        cityscapes.dataset_dirs(tmp_path)


def test_preprocess_cli_end_to_end(tmp_path, capsys):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    argv = ["preprocess", str(img_dir), str(tmp_path / "p"), str(gt_dir), str(tmp_path / "g"), "--quiet"]
    assert main([*argv, "--workers", "2"]) == 0
    assert "2 written" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 written, 2 already complete" in capsys.readouterr().out


def test_label_spec_and_the_results_frozen_class_names_match_the_dataset():
    from erfnet_tasks.datasets import label_spec
    from erfnet_tasks.results.document import LEGACY_CLASS_NAMES

    spec = label_spec("cityscapes")
    assert spec.class_names == cityscapes.CLASS_NAMES == LEGACY_CLASS_NAMES
    assert (spec.channels, spec.ignore_index, spec.void_value, spec.size) == (20, 19, 255, (1024, 512))
    assert (
        spec.label_name("x/frankfurt_000000_000294_leftImg8bit.bin")
        == "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    )
