"""``erfnet diagnose --run RUN --target T --batch-size B``: a published run's cell, found by content."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import harness
import pytest

from erfnet_tasks.cli import main
from erfnet_tasks.fsutil import sha256_file, write_json_atomic
from erfnet_tasks.results import publish
from tests.helpers.diagnosis import SMALL, erfnet_diagnose, perturb_checkpoint, perturb_weights, small_erfnet
from tests.helpers.run_documents import make_doc

RUN_ID = "scheduled__2026-12-01"
PERTURBED_CONV = "/encoder/layers.3/conv1x3_1/Conv"
PERTURBED_WEIGHT = "module.encoder.layers.3.conv1x3_1.weight"
FINGERPRINT = "f" * 64


@dataclass
class StoredRun:
    url: str
    golden: Path
    prep_dir: Path
    ort_model: Path
    checkpoint: Path


def compiled_row(target, batch_size, backend, path, status="ok"):
    return {
        "target": target,
        "batch_size": batch_size,
        "backend": backend,
        "chip": "cpu",
        "path": str(path),
        "sha256": sha256_file(path),
        "seconds": 0.5,
        "cache_hit": False,
        "status": status,
        "error": None,
    }


@pytest.fixture
def stored_run(results_url, exported_onnx, fixed_onnx, random_checkpoint, tmp_path, monkeypatch) -> StoredRun:
    """A published run whose artifacts lie where the pipeline leaves them: the fixed model beside its
    export in the export cache, the inputs in the preprocessing cache, the cell's model in the compile
    cache; its ``cpu`` (ONNX Runtime, batch 2) and ``torch-cpu`` cells ran a model with one perturbed conv."""
    data = tmp_path / "data"
    monkeypatch.setenv("ERFNET_DATA_DIR", str(data))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(data))
    export_entry = data / "cache" / "onnx" / "0123456789abcdef01234567"
    export_entry.mkdir(parents=True)
    small_erfnet(exported_onnx, export_entry / "ErfNet_origin.onnx")  # beside the golden, not it (before fix_bn)
    golden = small_erfnet(fixed_onnx, export_entry / "ErfNet.onnx")
    prep_entry = data / "cache" / "prep" / "abcdef0123456789abcdef01"
    prep_dir = harness.write_prep(prep_entry / "prep_dataset", ["a_1.bin", "a_2.bin"], shape=(3, *SMALL))[0].parent
    write_json_atomic(prep_dir / "manifest.json", {"images": 2, "names": ["a_1", "a_2"], "fingerprint": FINGERPRINT})
    other_prep = harness.write_prep(data / "cache" / "prep" / "other" / "prep_dataset", ["z.bin"], shape=(3, *SMALL))
    write_json_atomic(other_prep[0].parent / "manifest.json", {"fingerprint": "another dataset"})
    compile_entry = data / "cache" / "compiled" / "fedcba9876543210fedcba98"
    compile_entry.mkdir(parents=True)
    from erfnet_tasks.backends import onnxruntime as ort_backend

    perturbed = perturb_weights(golden, tmp_path / "perturbed.onnx", PERTURBED_CONV)
    ort_model = ort_backend.compile(perturbed, compile_entry, chip="cpu", batch_size=2).path
    checkpoint = perturb_checkpoint(random_checkpoint, data / "weights.pth", PERTURBED_WEIGHT)

    doc = make_doc(
        RUN_ID, "2026-12-01T00:00:00+00:00", None, [("cpu", 2, 0.5, 10.0, "ok"), ("torch-cpu", 1, 0.5, 1.0, "ok")]
    )
    doc["compiled"] = [
        compiled_row("cpu", 2, "onnxruntime", ort_model),
        compiled_row("torch-cpu", 1, "torch", checkpoint),
    ]
    doc["compiled"][1]["status"] = "skipped"  # the torch backend runs the checkpoint: nothing compiled
    doc["run"].update(model_sha256=sha256_file(golden), dataset_fingerprint=FINGERPRINT)
    publish.publish_run(doc, results_url)
    return StoredRun(results_url, golden, prep_dir, ort_model, checkpoint)


def diagnose_cell(stored: StoredRun, target: str, batch_size: int, *extra: str) -> dict:
    done = erfnet_diagnose(
        ["--run", RUN_ID, "--target", target, "--batch-size", str(batch_size), "--db", stored.url, "--json", *extra]
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("target", "batch_size"), [("cpu", 2), ("torch-cpu", 1)])
def test_a_stored_cell_names_the_conv_its_model_perturbed(stored_run, target, batch_size):
    doc = diagnose_cell(stored_run, target, batch_size)
    first = doc["first_diverging"]
    assert first["node"] == PERTURBED_CONV and first["onnx_nodes"][0] == PERTURBED_CONV
    assert first["cosine"] < 0.99


def test_the_cell_is_found_in_the_latest_run_too(stored_run, capsys):
    assert main(["diagnose", "--run", "latest", "--target", "cpu", "--batch-size", "2", "--db", stored_run.url]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"first diverging layer: {PERTURBED_CONV} ")


def _gone(stored: StoredRun, what: str) -> None:
    if what == "model":
        stored.ort_model.unlink()
    elif what == "changed model":
        shutil.copyfile(stored.golden, stored.ort_model)
    elif what == "golden":
        stored.golden.unlink()
    elif what == "inputs":
        shutil.rmtree(stored.prep_dir)


@pytest.mark.parametrize(
    ("args", "what", "expect"),
    [
        (["--run", "manual__nope", "--target", "cpu", "--batch-size", "2"], None, "no run 'manual__nope'"),
        (["--run", RUN_ID, "--target", "cpu", "--batch-size", "8"], None, "has no cell cpu at batch 8 (its cells:"),
        (["--run", RUN_ID, "--target", "Ascend310", "--batch-size", "2"], None, "has no cell Ascend310 at batch 2"),
        (["--run", RUN_ID, "--target", "cpu", "--batch-size", "2"], "model", "compiled model"),
        (["--run", RUN_ID, "--target", "cpu", "--batch-size", "2"], "changed model", "no longer the model it ran"),
        (["--run", RUN_ID, "--target", "cpu", "--batch-size", "2"], "golden", "golden ONNX (sha256"),
        (["--run", RUN_ID, "--target", "torch-cpu", "--batch-size", "1"], "inputs", "preprocessed inputs"),
        (["--run", RUN_ID, "--target", "cpu"], None, "give either --golden"),
        (["--run", RUN_ID, "--target", "cpu", "--batch-size", "2", "--backend", "torch"], None, "give either"),
        (["--run", RUN_ID, "--target", "torch-cpu", "--batch-size", "1", "--device", "cpu"], None, "own device"),
    ],
)
def test_an_unknown_or_vanished_cell_is_one_line(stored_run, capsys, args, what, expect):
    _gone(stored_run, what)
    assert main(["diagnose", *args, "--db", stored_run.url]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("erfnet: error: ") and expect in captured.err
