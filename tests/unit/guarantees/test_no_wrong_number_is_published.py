"""Issue 15, items 1-7: the cases that used to publish a wrong number with exit code 0.

Each test reproduces the reported case and checks that it now gives the right number, or one error line
and a non-zero exit with nothing lost. README "What we promise" names these tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from erfnet_tasks import build, evaluate, outputs
from erfnet_tasks.backends import InferFailed
from erfnet_tasks.backends._local import OutputWriter
from erfnet_tasks.cli import main
from erfnet_tasks.datasets import cityscapes, synthetic
from erfnet_tasks.errors import ErfnetError

SMALL = (512, 256)  # 2:1, so the guide's resize still makes 1024x512
DAY = 24 * 3600


def guide_transform(path) -> np.ndarray:
    img = Image.open(path).convert("RGB").resize((1024, 512), Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous().float().div(255).numpy()


def make_tree(root: Path, images: int = 3, seed: int = 0):
    synthetic.write_sample_data(root, images, size=SMALL, seed=seed)
    return cityscapes.dataset_dirs(root)


def preprocess(tmp_path, img_dir, gt_dir, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return cityscapes.preprocess(img_dir, tmp_path / "prep", gt_dir, tmp_path / "gt_out", **kw)


def replace_keeping_an_older_mtime(path: Path, arr: np.ndarray) -> None:
    """What ``cp -p`` / ``rsync -t`` / ``tar x`` of a corrected file does: new content, an old mtime."""
    old = path.stat().st_mtime
    Image.fromarray(arr).save(path)
    os.utime(path, (old - DAY, old - DAY))


def preprocess_argv(img_dir: Path, gt_dir: Path, out: Path, *extra: str) -> list[str]:
    """`erfnet preprocess` into ``out``/prep and ``out``/gt_out, on one worker, without a progress bar."""
    return [
        "preprocess",
        str(img_dir),
        str(out / "prep"),
        str(gt_dir),
        str(out / "gt_out"),
        "--workers",
        "1",
        "--quiet",
        *extra,
    ]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("erfnet: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def data_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "erfnet-data"))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------ 1. resume and caches by content


def test_resume_redoes_an_image_replaced_by_an_older_file(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data")
    first = preprocess(tmp_path, img_dir, gt_dir)
    image = sorted(img_dir.rglob("*.png"))[1]
    corrected = np.asarray(Image.open(image)).copy()
    corrected[:, :, 0] = 255 - corrected[:, :, 0]
    replace_keeping_an_older_mtime(image, corrected)
    label = next(gt_dir.rglob(image.name.replace("leftImg8bit", "gtFine_labelTrainIds")))
    labels = np.asarray(Image.open(label)).copy()
    labels[:10, :10] = 0
    replace_keeping_an_older_mtime(label, labels)

    second = preprocess(tmp_path, img_dir, gt_dir)
    assert second["written"] == 1
    assert second["fingerprint"] != first["fingerprint"]
    bin_path = tmp_path / "prep" / f"{image.name[:-4]}.bin"
    assert np.array_equal(np.fromfile(bin_path, dtype=np.float32), guide_transform(image).reshape(-1))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "gt_out" / label.name)), labels)
    # the manifest records what resume compares: the content of each source
    item = cityscapes.read_manifest(tmp_path / "prep")["items"][image.name[:-4]]
    assert item["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()


def test_resume_redoes_a_bin_altered_in_place(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    first = preprocess(tmp_path, img_dir, gt_dir)
    victim = sorted((tmp_path / "prep").glob("*.bin"))[0]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF  # same size, newer mtime: only its content tells
    victim.write_bytes(bytes(data))
    second = preprocess(tmp_path, img_dir, gt_dir)
    assert second["written"] == 1 and second["fingerprint"] == first["fingerprint"]


def test_dag_prep_cache_is_keyed_by_content(data_roots, make):
    img_dir, _gt_dir = make_tree(data_roots / "data")
    env = make.env(params={"dataset_root": str(data_roots / "data"), "image_limit": 0})
    first = build.preprocess_dataset(env)
    image = sorted(img_dir.rglob("*.png"))[0]
    corrected = np.asarray(Image.open(image)).copy()
    corrected[0, 0] = (corrected[0, 0].astype(int) + 1) % 256
    replace_keeping_an_older_mtime(image, corrected)
    second = build.preprocess_dataset(env)
    assert second.prep_dir != first.prep_dir and second.fingerprint != first.fingerprint
    bin_path = Path(second.prep_dir) / f"{image.name[:-4]}.bin"
    assert np.array_equal(np.fromfile(bin_path, dtype=np.float32), guide_transform(image).reshape(-1))


@pytest.mark.slow  # two full-size ERFNet exports, each checked against PyTorch
def test_export_cache_is_verified_by_content(data_roots, random_checkpoint, make):
    weights = data_roots / "w.pth"
    weights.write_bytes(random_checkpoint.read_bytes())
    env = make.env(weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest(), params={"weights": str(weights)})
    first = build.export_step(env)
    origin = Path(first.origin)
    good = origin.read_bytes()
    origin.write_bytes(good[:-8] + b"\0" * 8)  # same size, another content
    os.utime(origin, (origin.stat().st_mtime + DAY,) * 2)
    second = build.export_step(env)
    assert second.cache_hit is False and origin.read_bytes() == good
    assert build.export_step(env).cache_hit is True


def test_compile_cache_is_verified_by_content(data_roots, fixed_onnx, make):
    model = make.model(fixed_onnx, hashlib.sha256(fixed_onnx.read_bytes()).hexdigest())
    env, cell = make.env(), make.planned("cpu", 1)
    first = build.compile_cell(cell, model, env).compilation
    compiled = Path(first.path)
    good = compiled.read_bytes()
    compiled.write_bytes(good[:-4] + b"\xff" * 4)
    second = build.compile_cell(cell, model, env).compilation
    assert second.cache_hit is False and compiled.read_bytes() == good
    assert build.compile_cell(cell, model, env).compilation.cache_hit is True


# ------------------------------------------------------------------------------- 2. symbolic links


def test_symlinked_city_folder_inside_the_roots_is_followed(data_roots, capsys):
    img_dir, gt_dir = make_tree(data_roots / "data")
    city = sorted(p for p in img_dir.iterdir() if p.is_dir())[0]
    other_disk = data_roots / "disk2" / city.name
    other_disk.parent.mkdir()
    city.rename(other_disk)
    city.symlink_to(other_disk, target_is_directory=True)
    assert main(preprocess_argv(img_dir, gt_dir, data_roots)) == 0
    assert "preprocessed 3 image(s)" in capsys.readouterr().out


@pytest.mark.parametrize("skip_bad", [False, True])
def test_symlink_leaving_the_roots_is_refused(tmp_path, monkeypatch, capsys, skip_bad):
    img_dir, gt_dir = make_tree(tmp_path / "data")
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(tmp_path / "data"))
    outside = tmp_path / "elsewhere" / "x_leftImg8bit.png"
    outside.parent.mkdir()
    image = sorted(img_dir.rglob("*.png"))[0]
    image.rename(outside)
    image.symlink_to(outside)
    code = main(preprocess_argv(img_dir, gt_dir, tmp_path, *(["--skip-bad"] if skip_bad else [])))
    assert code == 2 and "outside the data roots" in one_error_line(capsys)
    assert not (tmp_path / "prep" / "manifest.json").exists()


def test_broken_link_is_named_not_dropped(data_roots):
    img_dir, gt_dir = make_tree(data_roots / "data")
    dangling = img_dir / "frankfurt" / "frankfurt_000000_000099_leftImg8bit.png"
    dangling.symlink_to(data_roots / "gone.png")
    with pytest.raises(ErfnetError, match="broken symbolic link"):
        preprocess(data_roots, img_dir, gt_dir)


# -------------------------------------------------------------------------------- 3. NaN and Inf


def _poisoned_checkpoint(src: Path, dst: Path, key_part: str, value: float) -> Path:
    state = torch.load(src, weights_only=True)
    key = next(k for k in state if key_part in k)
    state[key][0] = value
    torch.save(state, dst)
    return dst


def test_nan_in_a_batchnorm_statistic_fails_the_export(tmp_path, random_checkpoint, capsys):
    bad = _poisoned_checkpoint(random_checkpoint, tmp_path / "nan.pth", "running_var", float("nan"))
    assert main(["export", str(bad), str(tmp_path / "out.onnx")]) == 2
    assert "NaN or Inf" in one_error_line(capsys) and not (tmp_path / "out.onnx").exists()


def test_a_finite_checkpoint_that_computes_nan_fails_the_export(tmp_path, random_checkpoint, capsys):
    # a negative variance is finite, but sqrt(var + eps) makes every output NaN
    bad = _poisoned_checkpoint(random_checkpoint, tmp_path / "neg.pth", "running_var", -1.0)
    assert main(["export", str(bad), str(tmp_path / "out.onnx")]) == 2
    assert "output at batch 1 holds NaN or Inf" in one_error_line(capsys)


def test_non_finite_inference_output_fails_naming_the_input(tmp_path):
    writer = OutputWriter(tmp_path, np.float16)
    try:
        logits = np.zeros((2, 20, 4, 4), dtype=np.float32)
        logits[1, 3, 2, 2] = 70000.0  # finite in FP32, Inf once written as FP16
        with pytest.raises(InferFailed, match=r"b\.bin"):
            writer.submit([Path("a.bin"), Path("b.bin")], [logits])
        logits[1, 3, 2, 2] = np.nan
        with pytest.raises(InferFailed, match=r"b\.bin"):
            writer.submit([Path("a.bin"), Path("b.bin")], [logits])
    finally:
        writer.close()


def _evaluation_case(tmp_path, images: int = 3, label_ids_only: bool = False):
    """A preprocessed sample set and an ais_bench output folder of FP16 logits for it (perfect predictions)."""
    img_dir, gt_dir = make_tree(tmp_path / "data", images=images)
    if label_ids_only:
        for path in gt_dir.rglob("*_gtFine_labelTrainIds.png"):
            path.unlink()
    manifest = preprocess(tmp_path, img_dir, gt_dir)
    folder = outputs.make_output_folder(tmp_path / "out")
    entries = []
    for name in manifest["names"]:
        label = evaluate.read_label(tmp_path / "gt_out" / cityscapes.label_name_for(f"{name}.bin"))
        logits = np.zeros((20, 512, 1024), dtype=np.float16)
        np.put_along_axis(logits, label[None].astype(np.int64), 1.0, axis=0)
        infile = tmp_path / "prep" / f"{name}.bin"
        out = folder / outputs.output_file_name(infile)
        logits.tofile(out)
        entries.append(outputs.SummaryEntry(infile, (out,)))
    return folder, entries, tmp_path / "gt_out"


def assert_perfect(per_class) -> None:
    """Perfect predictions: IoU 1 for every class present, 0 for an absent one (erfnet's iouEval)."""
    assert all(v == pytest.approx(1.0) or v == 0.0 for v in per_class) and max(per_class) == pytest.approx(1.0)


def _write_summary(folder, entries) -> Path:
    return outputs.write_summary(
        folder, outputs.build_summary(entries, compute_ms=[1.0], h2d_ms=[], d2h_ms=[], batch_size=1, args=[])
    )


def test_nan_logits_fail_the_evaluation(tmp_path, capsys):
    folder, entries, gt_out = _evaluation_case(tmp_path)
    summary = _write_summary(folder, entries)
    assert_perfect(evaluate.evaluate_summary(summary, gt_out, workers=1, progress=False).per_class)
    np.full((20, 512, 1024), np.nan, dtype=np.float16).tofile(entries[1].outfiles[0])
    assert main(["evaluate", str(summary), str(gt_out), "--quiet", "--workers", "1"]) == 2
    err = one_error_line(capsys)
    assert "NaN/Inf" in err and entries[1].outfiles[0].name in err


# -------------------------------------------------------------------------- 4. labelIds in range


def test_label_id_outside_the_table_is_refused(tmp_path, capsys):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    for path in gt_dir.rglob("*_gtFine_labelTrainIds.png"):
        path.unlink()  # the trainIds are derived from labelIds
    victim = sorted(gt_dir.rglob("*_gtFine_labelIds.png"))[0]
    ids = np.asarray(Image.open(victim)).copy()
    ids[: ids.shape[0] // 2] = 50  # half the pixels: they used to become "ignore"
    Image.fromarray(ids).save(victim)
    code = main(preprocess_argv(img_dir, gt_dir, tmp_path))
    err = one_error_line(capsys)
    assert code == 2 and "labelIds value(s) 50" in err and str(victim) in err
    with pytest.raises(ErfnetError, match="labelIds value"):
        evaluate.read_label(victim)


# ------------------------------------------------------------------ 5. each label counted once


def test_duplicated_summary_entry_is_refused(tmp_path, capsys):
    folder, entries, gt_out = _evaluation_case(tmp_path)
    summary = _write_summary(folder, [*entries, entries[0]])
    assert main(["evaluate", str(summary), str(gt_out), "--quiet", "--workers", "1"]) == 2
    assert "more than once" in one_error_line(capsys)


def test_output_paths_leaving_the_output_folder_are_refused(tmp_path, capsys):
    folder, entries, gt_out = _evaluation_case(tmp_path)
    stray = tmp_path / entries[0].outfiles[0].name
    stray.write_bytes(entries[0].outfiles[0].read_bytes())
    summary = _write_summary(folder, [outputs.SummaryEntry(entries[0].infile, (stray,)), *entries[1:]])
    assert main(["evaluate", str(summary), str(gt_out), "--quiet", "--workers", "1"]) == 2
    assert "outside the output folder" in one_error_line(capsys)


def test_output_that_belongs_to_another_input_is_refused(tmp_path):
    folder, entries, gt_out = _evaluation_case(tmp_path)
    swapped = [outputs.SummaryEntry(entries[0].infile, entries[1].outfiles), *entries[1:]]
    with pytest.raises(ErfnetError, match="does not belong"):
        evaluate.evaluate_summary(_write_summary(folder, swapped), gt_out, workers=1, progress=False)


def test_fewer_outputs_than_labels_needs_the_limit(tmp_path, capsys):
    folder, entries, gt_out = _evaluation_case(tmp_path)
    summary = _write_summary(folder, entries[:2])
    assert main(["evaluate", str(summary), str(gt_out), "--quiet", "--workers", "1"]) == 2
    assert "outputs for 2 image(s) but GT_DIR" in one_error_line(capsys)
    assert main(["evaluate", str(summary), str(gt_out), "--quiet", "--workers", "1", "--limit", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2
    assert_perfect(result["per_class"])


# ------------------------------------------------------------------ 6. a full disk is not a bad image


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_write_failure_stops_the_step_and_no_image_is_called_bad(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "erfnet_tasks.cli",
            *preprocess_argv(img_dir, gt_dir, tmp_path, "--skip-bad"),
        ],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    err = proc.stderr.strip()
    assert proc.returncode != 0 and err.startswith("erfnet: error: I/O error") and "\n" not in err, err
    assert "File too large" in err and "bad" not in err
    assert not (tmp_path / "prep" / "manifest.json").exists()  # nothing recorded as bad, nothing published
    # with room again, the same command completes: both images are good
    assert main(preprocess_argv(img_dir, gt_dir, tmp_path)) == 0
    assert cityscapes.read_manifest(tmp_path / "prep")["images"] == 2
    assert not list((tmp_path / "prep").glob(".*.part"))


# -------------------------------------------------------------------------- 7. 16-bit images


def test_sixteen_bit_image_is_refused_not_clipped(tmp_path, capsys):
    img_dir, gt_dir = make_tree(tmp_path / "data", images=2)
    victim = sorted(img_dir.rglob("*.png"))[0]
    deep = (np.arange(SMALL[0] * SMALL[1], dtype=np.uint32) % 65536).astype(np.uint16).reshape(SMALL[1], SMALL[0])
    Image.fromarray(deep).save(victim)
    assert Image.open(victim).mode.startswith("I;16")
    code = main(preprocess_argv(img_dir, gt_dir, tmp_path))
    err = one_error_line(capsys)
    assert code == 2 and "I;16" in err and str(victim) in err


def test_a_narrower_rerun_leaves_exactly_its_labels_and_keeps_source_labels(tmp_path):
    img_dir, gt_dir = make_tree(tmp_path / "data")
    preprocess(tmp_path, img_dir, gt_dir)
    assert len(list((tmp_path / "gt_out").glob("*.png"))) == 3
    preprocess(tmp_path, img_dir, gt_dir, limit=2)  # the evaluator counts every label in GT_OUT_DIR
    assert len(list((tmp_path / "gt_out").glob("*.png"))) == 2 and len(list((tmp_path / "prep").glob("*.bin"))) == 2
    sources = sorted(gt_dir.rglob("*_gtFine_labelTrainIds.png"))
    city = sources[0].parent  # GT_OUT_DIR inside the source labels: nothing of the user's is removed
    cityscapes.preprocess(img_dir, tmp_path / "p2", gt_dir, city, workers=1, progress=False)
    cityscapes.preprocess(img_dir, tmp_path / "p2", gt_dir, city, workers=1, progress=False, limit=1)
    after = set(gt_dir.rglob("*_gtFine_labelTrainIds.png"))
    assert set(sources) <= after and len(after) == len(sources) + 2  # the two copies written into the city
