"""Outputs that do not fill the disk: a cell is evaluated where its outputs are, its result (mIoU, per-class
IoU, confusion matrix) stored, then its counted outputs deleted unless keep_outputs; a cell that does not
fit its file system is no_space and the others go on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from erfnet_tasks import build, measure, plan, report, storage
from erfnet_tasks.datasets import label_spec
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.evaluate import iou_from_confusion
from erfnet_tasks.records import CellStatus, LabelMode


@pytest.fixture(autouse=True)
def evaluate_in_this_process(monkeypatch):
    """Evaluation here runs in the test process: a fork pool started after this module's ONNX Runtime
    sessions deadlocked intermittently (a pool child waiting on a futex inherited mid-lock; seen in 1 of 2
    whole-file runs, never in a subset). What these tests guarantee is storage, not the pool, which
    tests/unit/test_parallel.py covers."""
    monkeypatch.setattr("erfnet_tasks.parallel.default_workers", lambda: 1)


@pytest.fixture(scope="module")
def measured_setup(tmp_path_factory):
    """A synthetic two-image dataset, a random checkpoint, its export, preprocessing and ONNX Runtime cells."""
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint

    root = tmp_path_factory.mktemp("storage_data")
    write_sample_data(root / "cityscapes", 2)
    write_random_checkpoint(root / "w.pth", seed=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERFNET_DATA_DIR", str(root))
        mp.setenv("ERFNET_DATA_ROOTS", str(root))
        form = {
            "weights": str(root / "w.pth"),
            "dataset_root": str(root / "cityscapes"),
            "targets": ["cpu"],
            "batch_sizes": [1, 2],
        }
        env = plan.resolve_environment(form, "storage_test")
        model = build.fix_bn_step(build.export_step(env))
        prep = build.preprocess_dataset(env)
        cells = [build.compile_cell(c, model, env) for c in plan.plan_cells(env, "host")]
        yield {"root": root, "env": env, "prep": prep, "cells": cells}


def _env(setup, work_dir: Path, **params):
    env = setup["env"]
    return env.model_copy(update={"work_dir": str(work_dir), "params": {**env.params, **params}})


def _bins(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.bin"))


def test_evaluate_then_delete_keeps_the_result_summary_and_the_same_miou(measured_setup, tmp_path):
    cell, prep = measured_setup["cells"][0], measured_setup["prep"]
    kept = measure.measure_cell(cell, prep, _env(measured_setup, tmp_path / "kept", keep_outputs=True))
    gone = measure.measure_cell(cell, prep, _env(measured_setup, tmp_path / "gone", keep_outputs=False))
    assert kept.status == gone.status == CellStatus.OK
    # keep_outputs: every output stays; default: none does, but the summary and the stored result do.
    assert len(_bins(tmp_path / "kept")) == 2 and kept.outputs_deleted == 0
    assert _bins(tmp_path / "gone") == [] and gone.outputs_deleted == 2
    assert Path(gone.inference.summary).is_file()
    stored = json.loads((tmp_path / "gone" / "outputs" / "cpu_bs1" / "result.json").read_text())
    # The same mIoU to the last digit, and the stored matrix gives it back without the outputs.
    assert gone.evaluation.miou == kept.evaluation.miou == stored["miou"]
    assert gone.evaluation.confusion == kept.evaluation.confusion == tuple(map(tuple, stored["confusion"]))
    spec = label_spec(prep.dataset)
    assert np.array(gone.evaluation.confusion).shape == (spec.channels, spec.channels)
    assert np.array(gone.evaluation.confusion).sum() == 2 * spec.size[0] * spec.size[1]
    assert iou_from_confusion(np.array(stored["confusion"]), spec) == (
        gone.evaluation.miou,
        list(gone.evaluation.per_class),
    )
    assert gone.evaluation.label_mode == LabelMode.LOGITS == gone.planned.output.label_mode


def test_a_failure_before_the_result_is_stored_deletes_nothing(measured_setup, tmp_path):
    cell = measured_setup["cells"][0]
    prep = measured_setup["prep"].model_copy(
        update={"gt_dir": str(tmp_path / "no_labels")}
    )  # evaluation cannot count them
    (tmp_path / "no_labels").mkdir()
    with pytest.raises(ErfnetError, match="label"):
        measure.measure_cell(cell, prep, _env(measured_setup, tmp_path / "work"))
    assert len(_bins(tmp_path / "work")) == 2
    assert not (tmp_path / "work" / "outputs" / "cpu_bs1" / "result.json").exists()


def test_delete_counted_outputs_touches_only_what_the_summary_lists(measured_setup, tmp_path):
    cell = measured_setup["cells"][0]
    inferred = measure.infer_cell(cell, measured_setup["prep"], _env(measured_setup, tmp_path))
    folder = Path(inferred.inference.summary[: -len("_summary.json")])
    stranger = folder / "not_counted_0.bin"
    stranger.write_bytes(b"x")
    assert storage.delete_counted_outputs(inferred.inference.summary) == 2
    assert stranger.is_file() and Path(inferred.inference.summary).is_file()


def test_the_space_needed_is_images_times_bytes_per_image_plus_a_margin(tmp_path):
    spec = label_spec()
    assert storage.bytes_per_image(spec) == 20 * 512 * 1024 * 2
    assert storage.bytes_per_image(spec, LabelMode.LABELS) == 512 * 1024 * 4
    free = shutil.disk_usage(tmp_path).free
    assert storage.check_space(tmp_path / "not" / "yet", 1, 1) is None
    short = storage.check_space(tmp_path, 1, free + 1)
    assert short.free > 0 and short.needed > free + 1 and short.folder == str(tmp_path)
    assert "no_space" in short.message and str(tmp_path) in short.message


@pytest.fixture
def small_tmpfs(tmp_path):
    """An 80 MiB tmpfs: one two-image cell of FP16 logits (42 MB + margin) fits, a second does not."""
    mount = tmp_path / f"tmpfs_{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=80M", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_the_cell_that_does_not_fit_is_no_space_and_nothing_else_is_lost(measured_setup, small_tmpfs, make):
    env = _env(measured_setup, small_tmpfs / "run", keep_outputs=True)
    first, second = (measure.measure_cell(c, measured_setup["prep"], env) for c in measured_setup["cells"])
    assert first.status == CellStatus.OK and first.evaluation is not None
    assert second.status == CellStatus.NO_SPACE and second.evaluation is None and second.inference.summary is None
    assert "need" in second.inference.error and str(small_tmpfs) in second.inference.error
    out = small_tmpfs / "run" / "outputs"
    assert len(_bins(out / "cpu_bs1")) == 2 and (out / "cpu_bs1" / "result.json").is_file()
    assert _bins(out / "cpu_bs2") == []  # nothing half-written, so nothing evaluated
    doc = report.build_run_document(
        env, make.model(), measured_setup["prep"], [first, second], report.collect_perf([first, second])
    )
    assert doc["run"]["status"] == "incomplete"
    assert [(c["batch_size"], c["status"]) for c in doc["perf"]] == [(1, "ok"), (2, "no_space")]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_disk_that_fills_during_the_write_is_no_space_and_leaves_no_half_written_folder(measured_setup, small_tmpfs):
    # The check passes, then another writer takes the space: the write itself fails with ENOSPC.
    env = _env(measured_setup, small_tmpfs / "run", keep_outputs=True)
    cell = measured_setup["cells"][0]
    needed = storage.bytes_needed(2, storage.bytes_per_image(label_spec()))
    filler = small_tmpfs / "filler"
    original = measure.check_space  # what the measure stage calls

    def check_then_fill(folder, images, per_image):
        verdict = original(folder, images, per_image)
        free = shutil.disk_usage(small_tmpfs).free
        filler.write_bytes(b"\0" * (free - needed // 3))  # leaves room for less than one image
        return verdict

    measure.check_space = check_then_fill
    try:
        result = measure.measure_cell(cell, measured_setup["prep"], env)
    finally:
        measure.check_space = original
    assert result.status == CellStatus.NO_SPACE, result.inference.error
    assert _bins(small_tmpfs / "run") == []
    assert [p for p in (small_tmpfs / "run" / "outputs" / "cpu_bs1").iterdir() if p.is_dir()] == []


# ------------------------------------------------------------------------------ labels_on_device


@pytest.fixture(scope="module")
def labels_setup(measured_setup):
    """The same run with labels_on_device: ArgMax appended after fix_bn, compiled for ONNX Runtime."""
    env = _env(measured_setup, Path(measured_setup["env"].work_dir), labels_on_device=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERFNET_DATA_DIR", str(measured_setup["root"]))
        mp.setenv("ERFNET_DATA_ROOTS", str(measured_setup["root"]))
        model = build.fix_bn_step(build.export_step(env))
        cells = [build.compile_cell(c, model, env) for c in plan.plan_cells(env, "host")]
    return {**measured_setup, "env": env, "model": model, "cells": cells}


def test_labels_on_device_writes_label_maps_and_agrees_with_the_logits_within_the_ties(
    measured_setup, labels_setup, tmp_path
):
    from erfnet_tasks.evaluate import prediction_disagreement

    assert labels_setup["model"].path.endswith("ErfNet_argmax.onnx")
    labels_cell = labels_setup["cells"][0]
    assert labels_cell.compilation.path != measured_setup["cells"][0].compilation.path  # own cache entry
    assert labels_cell.planned.output.dtype == "int32"  # planned so: atc and the space check read it
    prep = measured_setup["prep"]
    logits = measure.measure_cell(
        measured_setup["cells"][0], prep, _env(measured_setup, tmp_path / "logits", keep_outputs=True)
    )
    labels = measure.measure_cell(
        labels_setup["cells"][0], prep, _env(labels_setup, tmp_path / "labels", keep_outputs=True)
    )
    assert (logits.evaluation.label_mode, labels.evaluation.label_mode) == ("logits", "labels")
    spec = label_spec(prep.dataset)
    sizes = {p.stat().st_size for p in _bins(tmp_path / "labels")}
    assert sizes == {spec.size[0] * spec.size[1] * 4}  # int32 labels: 10x fewer bytes than FP16 logits
    assert storage.bytes_per_image(spec) // sizes.pop() == 10
    differing, total = prediction_disagreement(labels.inference.summary, logits.inference.summary, spec)
    assert total == 2 * spec.size[0] * spec.size[1] and differing / total < 0.01
    # Each differing pixel moves one count between two columns of the confusion matrix: nothing else moves.
    moved = np.abs(np.array(labels.evaluation.confusion) - np.array(logits.evaluation.confusion)).sum()
    assert moved <= 2 * differing
    if differing == 0:
        assert labels.evaluation.miou == logits.evaluation.miou
