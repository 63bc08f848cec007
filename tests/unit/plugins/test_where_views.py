"""The run page's "where it regressed" section (plugins/erfnet_ui/where_views.py, _where.html): a failing
cell's per-layer cosine curve with its first diverging layer marked, and its op-time comparison."""

from __future__ import annotations

import re

import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from erfnet_ui.app import URL_PREFIX, create_app
from erfnet_ui.where_views import cosine_curve
from fastapi.testclient import TestClient

from tests.helpers.run_documents import diagnosis_row, make_doc, profile_rows

BASE_RUN, RUN = "scheduled__2026-11-01T02:00:00+00:00", "asset_triggered__2026-11-02T09:00:00+00:00"


def layer(index, cosine, diverges=False):
    op_type = "Conv" if index % 2 else "Relu"
    metrics = {"cosine": cosine, "relative_euclidean": 0.0 if cosine == 1 else 1.0, "precision_error": diverges}
    return {"node": f"n{index}", "op_type": op_type, "onnx_nodes": [f"n{index}"], **metrics}


LAYERS = [layer(0, 1.0), layer(1, 1.0), layer(2, None), layer(3, 0.2, True), layer(4, -0.5, True), layer(5, 0.1, True)]


@pytest.fixture
def client(sqlite_url, monkeypatch):
    from erfnet_tasks.results import db, publish, regression

    base = make_doc(BASE_RUN, "2026-11-01T02:00:00+00:00", "8.0.RC1", [("Ascend310P3", 1, 0.72, 300.0, "ok")])
    base["op_profiles"] = profile_rows("Ascend310P3", 1, n1=("Conv", 100.0), n3=("Conv", 50.0), n0=("Relu", 10.0))
    now = make_doc(RUN, "2026-11-02T09:00:00+00:00", "8.0.RC3", [("Ascend310P3", 1, 0.40, 240.0, "ok")])
    now["op_profiles"] = profile_rows("Ascend310P3", 1, n1=("Conv", 101.0), n3=("Conv", 80.0), n0=("Relu", 9.0))
    now["diagnoses"] = [diagnosis_row("Ascend310P3", 1, LAYERS[3], LAYERS)]
    for doc in (base, now):
        publish.publish_run(doc, sqlite_url)
    with db.session_scope(sqlite_url) as session:
        regression.find_regressions(session, RUN, regression.Rules())
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", sqlite_url)
    app = create_app(require_user=get_user)
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="tester", role="admin")
    return TestClient(app, root_path=URL_PREFIX, raise_server_exceptions=False)


def test_a_failing_cell_shows_its_cosine_curve_and_its_op_time_comparison(client):
    page = client.get(f"/runs/{RUN}")
    assert page.status_code == 200
    html = page.text
    section = html[html.index('<section class="where" id="where-Ascend310P3-b1">') :]
    section = section[: section.index("</section>")]
    assert "first diverging layer n3 (Conv; ONNX nodes n3): cosine 0.2" in section
    # Two stretches of the line (layer 2's cosine could not be computed), the mark on layer 3.
    assert len(re.findall(r'<polyline class="curve" points="([^"]+)"', section)) == 2
    assert "first diverging: #3 n3" in section
    assert len(re.findall(r"<circle ", section)) == 5 + 1  # each layer with a cosine, and the mark
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section[section.index('id="where-Ascend310P3-b1-ops"') :], re.S)
    cells = [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]
    cells = [c for c in cells if c]
    assert cells[0][:5] == ["Conv", "(all)", "150.0", "181.0", "+31.0"]  # the op type that grew most first
    assert [c[1] for c in cells[1:]][:2] == ["n3", "n1"]  # then the ops, most growth first
    assert 'class="fail">+30.0' in section


def test_a_run_without_a_regression_has_no_such_section(client):
    assert "Where it regressed" not in client.get(f"/runs/{BASE_RUN}").text


def test_the_curve_spans_the_lowest_cosine_and_marks_the_first_diverging_layer():
    curve = cosine_curve(LAYERS, "n3")
    left, top, right, bottom = curve.plot
    xs = [p.x for p in curve.points]
    assert xs[0] == left and xs[-1] == right and [p.index for p in curve.points] == [0, 1, 3, 4, 5]
    lowest = min(curve.points, key=lambda p: p.cosine)
    assert lowest.node == "n4" and top <= lowest.y <= bottom and max(p.y for p in curve.points) == lowest.y
    assert min(p.y for p in curve.points) == pytest.approx(top)  # cosine 1.0 at the top
    assert curve.first.node == "n3" and top < curve.threshold_y < bottom
    assert cosine_curve(LAYERS, None).first is None
