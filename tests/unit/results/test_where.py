"""A finding's "where": the ops that got slower between the baseline cell's stored op profile and this
cell's, and the first diverging layer of a failing cell's stored diagnosis, stored on the finding."""

from __future__ import annotations

import pytest

from erfnet_tasks.results import db, publish, queries, regression
from tests.helpers.run_documents import diagnosis_row, make_doc, profile_rows

FIRST = {"node": "conv2", "op_type": "Conv", "onnx_nodes": ["conv2"], "cosine": 0.41, "relative_euclidean": 0.9}


def publish_runs(url, *, baseline_profile=True, diagnosed=True):
    base = make_doc("base", "2026-05-01T00:00:00+00:00", "8.0.RC1", [("Ascend310P3", 1, 0.72, 100.0, "ok")])
    if baseline_profile:
        base["op_profiles"] = profile_rows(
            "Ascend310P3", 1, conv1=("Conv", 100.0), conv2=("Conv", 60.0), relu=("Relu", 20.0), bnr=("BNRelu", 5.0)
        )
    now = make_doc(
        "now",
        "2026-05-02T00:00:00+00:00",
        "8.0.RC3",
        [("Ascend310P3", 1, 0.50, 80.0, "ok"), ("Ascend310P3", 4, None, None, "oom")],
    )
    now["op_profiles"] = profile_rows(
        "Ascend310P3", 1, conv1=("Conv", 130.0), conv2=("Conv", 78.0), relu=("Relu", 21.0), bn=("BatchNorm", 4.0)
    )
    if diagnosed:
        now["diagnoses"] = [diagnosis_row("Ascend310P3", 1, FIRST, [FIRST])]
    base4 = make_doc("base4", "2026-04-30T00:00:00+00:00", "8.0.RC1", [("Ascend310P3", 4, 0.72, 90.0, "ok")])
    for doc in (base4, base, now):
        publish.publish_run(doc, url)


def findings(url, run_id="now"):
    with db.session_scope(url) as session:
        found = regression.find_regressions(session, run_id, regression.Rules())
    return {f["rule"]: f for f in found}


def test_the_throughput_finding_names_the_op_type_that_grew_first_and_the_accuracy_finding_the_layer(results_url):
    publish_runs(results_url)
    found = findings(results_url)
    where = found["throughput_drop"]["where"]
    assert where["first_diverging"] is None
    first, *rest = where["ops"]
    # Conv grew 160 -> 208 us of the total's 185 -> 233 us: 48 of 48 us (Relu +1, BatchNorm +4, BNRelu -5).
    assert (first["op_type"], first["op_name"]) == ("Conv", None)
    assert (first["baseline_us"], first["current_us"], first["share"]) == (160.0, 208.0, pytest.approx(48 / 48))
    named = {e["op_name"]: e for e in rest if e["op_name"]}
    assert next(e["op_name"] for e in rest if e["op_name"]) == "conv1"
    assert named["conv1"]["share"] == pytest.approx(30 / 48) and named["conv2"]["current_us"] == 78.0
    assert named["bn"]["change"] == "appeared" and named["bn"]["baseline_us"] is None
    assert named["bnr"]["change"] == "vanished" and named["bnr"]["current_us"] is None
    assert found["accuracy_below_reference"]["where"] == {"ops": [], "first_diverging": FIRST}
    assert found["cell_failed"]["where"] is None  # an oom has no op or layer to point at
    with db.session_scope(results_url) as session:  # stored with the finding
        stored = {f["rule"]: f for f in queries.run_document(session, "now")["findings"]}
    assert stored["throughput_drop"]["where"] == where and stored["cell_failed"]["where"] is None


def test_a_side_without_a_profile_or_a_diagnosis_is_said(results_url):
    publish_runs(results_url, baseline_profile=False, diagnosed=False)
    found = findings(results_url)
    assert found["throughput_drop"]["where"] == {
        "ops": [],
        "first_diverging": None,
        "note": "no op profile of the cell in baseline run base",
    }
    assert found["accuracy_below_reference"]["where"]["note"] == "the cell was not diagnosed"
