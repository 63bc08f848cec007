"""The report's per-cell row builders for the op profile and the diagnosis, and their way into the run
document and the results database."""

from __future__ import annotations

import pytest

from erfnet_tasks import report
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.records import OP_PROFILE_FIELDS, Diagnosis, ProfiledOp
from erfnet_tasks.results import db, publish, queries

LAYERS = (
    {"node": "conv1", "op_type": "Conv", "onnx_nodes": ["conv1"], "cosine": 1.0, "precision_error": False},
    {"node": "conv2", "op_type": "Conv", "onnx_nodes": ["conv2"], "cosine": 0.42, "precision_error": True},
)


def profiled(make, target="Ascend310P3", batch=1, **kwargs):
    cell = make.measured(target, batch, **kwargs)
    ops = (
        ProfiledOp(op_name="conv2", op_type="Conv", calls=4, total_us=400.0, mean_us=100.0, share=0.8),
        ProfiledOp(op_name="relu1", op_type="Relu", calls=4, total_us=100.0, mean_us=25.0, share=0.2),
    )
    diagnosis = Diagnosis(images=2, first_diverging=LAYERS[1], layers=LAYERS)
    return cell.model_copy(update={"op_profile": ops, "diagnosis": diagnosis})


def test_the_row_builders_copy_the_cells_profile_and_diagnosis(make):
    cell = profiled(make, batch=8)
    rows = report.op_profile_rows(cell)
    assert [(r.target, r.batch_size, r.op_name, r.calls, r.mean_us) for r in rows] == [
        ("Ascend310P3", 8, "conv2", 4, 100.0),
        ("Ascend310P3", 8, "relu1", 4, 25.0),
    ]
    row = report.diagnosis_row(cell)
    assert (row.images, row.first_diverging["node"], [la["node"] for la in row.layers]) == (
        2,
        "conv2",
        ["conv1", "conv2"],
    )
    plain = make.measured("cpu", 1)
    assert report.op_profile_rows(plain) == [] and report.diagnosis_row(plain) is None


def test_profiles_and_diagnoses_are_published_and_read_back(make, results_url):
    cells = [profiled(make), make.measured("cpu", 1)]
    doc = report.build_run_document(make.env(), make.model(), make.prep(), cells, report.collect_perf(cells))
    assert [list(r) for r in doc["op_profiles"]] == [list(OP_PROFILE_FIELDS)] * 2
    publish.publish_run(doc, url=results_url)
    with db.session_scope(results_url) as session:
        stored = queries.run_document(session, doc["run"]["id"])
        one = queries.op_profiles(session, doc["run"]["id"], "Ascend310P3", 1)
    assert stored["op_profiles"] == doc["op_profiles"] == one
    assert stored["diagnoses"] == doc["diagnoses"]
    assert stored["diagnoses"][0]["layers"][1]["cosine"] == 0.42
    publish.publish_run({**doc, "op_profiles": doc["op_profiles"][:1], "diagnoses": []}, url=results_url)
    with db.session_scope(results_url) as session:  # a re-publish replaces the run's rows
        again = queries.run_document(session, doc["run"]["id"])
    assert [r["op_name"] for r in again["op_profiles"]] == ["conv2"] and again["diagnoses"] == []


@pytest.mark.parametrize(
    "section, change, message",
    [
        ("op_profiles", {"calls": -1}, "calls must be a count"),
        ("op_profiles", {"mean_us": float("nan")}, "mean_us must be a finite number"),
        ("op_profiles", {"op_name": ""}, "op_name must be a non-empty string"),
        ("diagnoses", {"layers": "conv2"}, "layers must be a list of layer objects"),
        ("diagnoses", {"images": 0}, "images must be a positive number"),
    ],
)
def test_bad_profile_or_diagnosis_rows_are_refused_in_one_line(make, sqlite_url, section, change, message):
    cells = [profiled(make)]
    doc = report.build_run_document(make.env(), make.model(), make.prep(), cells, report.collect_perf(cells))
    doc[section] = [{**doc[section][0], **change}, *doc[section][1:]]
    with pytest.raises(ErfnetError, match=message) as info:
        publish.publish_run(doc, url=sqlite_url)
    assert "\n" not in str(info.value)


def test_an_op_listed_twice_in_a_cell_is_refused(make, sqlite_url):
    cells = [profiled(make)]
    doc = report.build_run_document(make.env(), make.model(), make.prep(), cells, report.collect_perf(cells))
    doc["op_profiles"].append(dict(doc["op_profiles"][0]))
    with pytest.raises(ErfnetError, match="lists op 'conv2' of target Ascend310P3 batch 1 twice"):
        publish.publish_run(doc, url=sqlite_url)


def test_a_cell_stored_as_measured_takes_its_profile_and_diagnosis_with_it(make, results_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", results_url)
    env = make.env(targets=("Ascend310P3",), work_dir=str(tmp_path))
    report.open_run(env)
    cell = profiled(make, miou=0.5)
    found = report.store_cell(cell, env)
    # Gated as it is stored: its accuracy finding already names the diagnosis's first diverging layer.
    assert [(f["rule"], f["where"]["first_diverging"]["node"]) for f in found] == [
        ("accuracy_below_reference", "conv2")
    ]
    [claimed] = report.claim_new_findings(env, cell.planned)
    assert claimed["where"]["first_diverging"]["node"] == "conv2"  # what the early notification carries
    report.store_cell(cell.model_copy(update={"op_profile": cell.op_profile[:1], "diagnosis": None}), env)
    with db.session_scope(results_url) as session:  # a retried cell replaces its rows
        doc = queries.run_document(session, env.run_id)
    assert [r["op_name"] for r in doc["op_profiles"]] == ["conv2"] and doc["diagnoses"] == []
