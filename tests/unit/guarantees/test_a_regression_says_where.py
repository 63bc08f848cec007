"""Done when (issue 27): with the stand-ins, a run after a CANN upgrade in which one op type got 30% slower
and one conv's output is perturbed enough to fail the mIoU rule: the throughput finding names that op type
first, the accuracy finding names that conv as the first diverging layer, and the notification carries
both. Driven through erfnet_tasks.pipeline as the DAG calls it (dicts in and out), on the stand-in NPU
host (atc, ais_bench with --profiler 1, msprobe: tests/standins), not on an Airflow cluster.

The labels are the FP32 golden's own predictions and the run's reference mIoU the golden's own score on
them (its classes over the 19: a random checkpoint predicts only a few), so the stand-in om (FP16 outputs)
passes before the upgrade and the perturbed conv is what makes the mIoU fail after it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import harness
import numpy as np
import pytest
from PIL import Image

from erfnet_tasks import notify, pipeline
from erfnet_tasks.datasets import label_spec
from erfnet_tasks.errors import RegressionDetected
from erfnet_tasks.results import db, queries

pytestmark = pytest.mark.slow  # full-size ERFNet on the stand-in device, twice, and a diagnosis

CHIP = "Ascend310P3"
SLOW_OP_TYPE = "Conv"
PERTURBED_CONV = "/decoder/layers.2/conv1x3_1/Conv"  # its sign flipped: the mIoU falls 0.368 -> 0.32
IMAGES = 8  # the measured pass's mean over 8 images: steadier on a shared 2-core machine


def golden_labels(model: Path, prep: dict, out: Path) -> float:
    """Label files holding the golden model's own argmax, named as the dataset names them; returns the
    golden's mIoU on them in points (each class it predicts scores 1, the others 0, as the evaluator counts)."""
    import onnxruntime as ort

    spec = label_spec(prep["dataset"])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    out.mkdir(parents=True)
    classes: set[int] = set()
    for path in sorted(Path(prep["prep_dir"]).glob("*.bin")):
        x = np.fromfile(path, dtype=np.float32).reshape(1, 3, 512, 1024)
        labels = np.argmax(session.run(None, {feed: x})[0][0], axis=0).astype(np.uint8)
        Image.fromarray(labels, mode="L").save(out / spec.label_name(path))
        classes |= set(np.unique(labels).tolist()) - {spec.ignore_index}
    return 100.0 * len(classes) / len(spec.class_names)


def first_steps(run_id: str, params: dict) -> tuple[dict, dict, dict]:
    """The DAG's tasks up to the plan: the environment with its probed host, the model, the prepared data."""
    env = pipeline.resolve_environment(params, run_id)
    probes = [[pipeline.probe_host(chip)] for chip in pipeline.chips_to_probe(env, CHIP)]
    env = pipeline.with_hosts(env, probes)
    model = pipeline.fix_bn_step(pipeline.export_step(env))
    return env, model, pipeline.preprocess_dataset(env)


def run_nightly(run_id: str, params: dict, gt_dir: Path) -> dict:
    """The DAG's tasks in order, for the one NPU chip, scored against the labels in ``gt_dir``: the run
    opened, each cell compiled, measured, stored and gated (its new findings claimed for the early
    notification), the run closed."""
    env, model, prep = first_steps(run_id, params)
    prep = {**prep, "gt_dir": str(gt_dir)}
    assert pipeline.unchanged_since_last_run(env, model, prep) is None  # a new CANN: measured
    pipeline.open_run(env)
    stored, early = [], []
    for cell in pipeline.plan_cells(env, "npu", CHIP):
        compiled = pipeline.compile_cell(cell, model, env)
        measured = pipeline.measure_cell(compiled, prep, env)
        stored.append(pipeline.store_cell(cell, compiled, measured, env))
        early += pipeline.new_findings(cell, env)
    published = pipeline.close_run(env, model, prep, True, stored)
    return {"env": env, "cells": stored, "early": early, "published": published}


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A data root with a synthetic set and a random checkpoint, the stand-in NPU host, a results database."""
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint

    root = tmp_path / "data"
    write_sample_data(root / "cityscapes", IMAGES)
    write_random_checkpoint(root / "w.pth", seed=3)
    harness.use_standins(monkeypatch, tmp_path, chip=CHIP)
    # the stand-in msprobe is a python3 script needing onnx: this interpreter's python3 first on PATH
    monkeypatch.setenv("PATH", os.pathsep.join([str(harness.BIN), os.path.dirname(sys.executable), os.environ["PATH"]]))
    toolkit = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    harness.write_cann_version(toolkit, "8.0.RC2")
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(toolkit))
    for name, value in {
        "ERFNET_DATA_DIR": str(root),
        "ERFNET_DATA_ROOTS": str(root),
        "ERFNET_RESULTS_DB_URL": f"sqlite:///{tmp_path / 'results.sqlite'}",
        "ERFNET_NPU_CHIPS": CHIP,
        "ERFNET_PROFILE_IMAGES": "2",
        "ERFNET_DIAGNOSE_IMAGES": "2",
    }.items():
        monkeypatch.setenv(name, value)
    params = {
        "weights": str(root / "w.pth"),
        "dataset_root": str(root / "cityscapes"),
        "targets": [CHIP],
        "batch_sizes": [1],
    }
    return {"root": root, "toolkit": toolkit, "params": params, "url": os.environ["ERFNET_RESULTS_DB_URL"]}


def upgrade_cann(toolkit: Path, version: str, behaviour: dict) -> None:
    """What the lab's upgrade does to the stand-in toolkit: a new version file and the new CANN's behaviour."""
    harness.write_cann_version(toolkit, version)
    (toolkit / "standin_behaviour.json").write_text(json.dumps(behaviour))


def test_after_a_cann_upgrade_the_findings_say_which_op_type_and_which_layer(lab, tmp_path):
    _, model, prep = first_steps("manual__labels", lab["params"])
    gt_dir = tmp_path / "golden_labels"
    reference = golden_labels(Path(model["path"]), prep, gt_dir)
    params = {**lab["params"], "reference_miou": round(reference, 2), "tolerance": 1.0}
    # The baseline: it passes the run's rule (so it is not diagnosed), and it has its op profile.
    before = run_nightly("scheduled__2026-12-01T02:00:00+00:00", params, gt_dir)
    [baseline] = before["cells"]
    threshold = (round(reference, 2) - 1.0) / 100
    assert baseline["evaluation"]["miou"] > threshold and baseline["diagnosis"] is None
    assert {op["op_type"] for op in baseline["op_profile"]} >= {SLOW_OP_TYPE, "Relu"}
    assert before["early"] == []
    pipeline.regression_gate(before["published"], before["env"]["params"])  # no finding: it passes

    upgrade_cann(
        lab["toolkit"],
        "8.0.RC3",
        {"slow_op_type": SLOW_OP_TYPE, "slow_factor": 1.3, "perturb_node": PERTURBED_CONV, "perturb_factor": -1.0},
    )
    after = run_nightly("asset_triggered__2026-12-02T09:00:00+00:00", params, gt_dir)
    run_id = after["published"]["run_id"]
    [cell] = after["cells"]
    assert cell["inference"]["cann_version"] == "8.0.RC3" and cell["evaluation"]["miou"] < threshold
    with pytest.raises(RegressionDetected) as gate:
        pipeline.regression_gate(after["published"], after["env"]["params"])
    assert "2 regression(s)" in str(gate.value)

    with db.session_scope(lab["url"]) as session:
        findings = {f["rule"]: f for f in queries.run_document(session, run_id)["findings"]}
    drop = findings["throughput_drop"]
    first_type, *_ = drop["where"]["ops"]
    assert (first_type["op_type"], first_type["op_name"]) == (SLOW_OP_TYPE, None)
    assert first_type["current_us"] > 1.15 * first_type["baseline_us"] and first_type["share"] > 0.5
    layer = findings["accuracy_below_reference"]["where"]["first_diverging"]
    assert layer["node"] == PERTURBED_CONV and PERTURBED_CONV in layer["onnx_nodes"] and layer["cosine"] < 0.99

    doc, baselines = notify.load_run(run_id, lab["url"])
    links = notify.Links("http://airflow.lab.example:8080")
    # The early notification (as the cell was stored) and the final one both say where.
    early = notify.early_findings_message(doc, baselines, after["early"], links).text
    assert f"  where: slower op types: {SLOW_OP_TYPE} " in early and f"first diverging layer {PERTURBED_CONV}" in early
    lines = notify.regression_message(doc, baselines, links).text.splitlines()
    drop_at = next(i for i, line in enumerate(lines) if "rule throughput_drop" in line)
    assert lines[drop_at + 1].startswith(f"  where: slower op types: {SLOW_OP_TYPE} ")
    accuracy_at = next(i for i, line in enumerate(lines) if "rule accuracy_below_reference" in line)
    assert lines[accuracy_at + 1].startswith(f"  where: first diverging layer {PERTURBED_CONV} (")
    assert max(drop_at, accuracy_at) + 1 < lines.index(next(line for line in lines if line.startswith("Results page")))
