"""The results UI app through FastAPI's test client: Airflow's own auth dependency on every route, every
page and endpoint over empty, populated and unreachable databases."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from erfnet_ui.app import URL_PREFIX, create_app
from fastapi.testclient import TestClient

from tests.helpers.html_tables import Tables

OLD_RUN = "manual__2026-11-01T10:00:00+00:00"
NEW_RUN = "scheduled__2026-11-20T02:00:00+00:00"
# fps per batch: the NPU target is 4x the CPU one; batch 64 runs out of device memory in the new run.
CPU_FPS = {1: 50.0, 4: 60.0, 8: 70.0, 16: 80.0, 32: 90.0, 64: 100.0}
CLASS_IOU = [round(0.30 + i * 0.02, 4) for i in range(19)]

PAGES = [
    "/",
    "/history",
    f"/runs/{OLD_RUN}",
    "/api/runs",
    "/api/runs/latest",
    f"/api/runs/{OLD_RUN}",
    "/runs/latest/accuracy.csv",
    "/runs/latest/perf.csv",
    f"/runs/{OLD_RUN}/perf.csv",
    "/api/history",
    "/api/cann",
    "/static/echarts.min.js",
    "/static/history.js",
]


def _doc(run_id: str, started: str, cann: str, *, oom: bool, findings: list[dict]) -> dict:
    acc, perf = [], []
    for target, factor in (("cpu", 1.0), ("Ascend310P3", 4.0)):
        for batch, fps in CPU_FPS.items():
            if oom and target == "Ascend310P3" and batch == 64:
                perf.append(
                    {
                        "target": target,
                        "batch_size": batch,
                        "status": "oom",
                        "error": "aclrtMalloc failed, error code 207001",
                    }
                )
                continue
            perf.append({"target": target, "batch_size": batch, "throughput_fps": fps * factor, "status": "ok"})
            # cpu at batch 32 falls below 72.20 - 1.00: the one failing accuracy cell
            miou = 0.70 if (target, batch) == ("cpu", 32) else 0.7220
            acc.append({"target": target, "batch_size": batch, "images": 3, "miou": miou, "per_class": CLASS_IOU})
    return {
        "run": {
            "id": run_id,
            "dag_id": "erfnet_offline_inference",
            "started_at": started,
            "status": "complete",
            "cann_version": cann,
            "driver_version": "23.0.3",
            "host": "npu-host-7",
            "backends": {"ascend": cann},
            "model_sha256": "c0ffee" * 10 + "beef",
            "images": 3,
            "synthetic": False,
        },
        "accuracy": acc,
        "perf": perf,
        "findings": findings,
    }


FINDING = {
    "rule": "throughput_drop",
    "target": "cpu",
    "batch_size": 4,
    "message": "cpu batch 4 dropped 25% vs CANN 7.0",
    "value": 45.0,
    "threshold": 0.1,
    "baseline_run_id": OLD_RUN,
}


@pytest.fixture(scope="module")
def auth_manager():
    return create_auth_manager()  # what get_user consults; SimpleAuthManager by default


def _client(url: str | None, monkeypatch, user: bool) -> TestClient:
    if url is not None:
        monkeypatch.setenv("ERFNET_RESULTS_DB_URL", url)
    app = create_app(require_user=get_user)  # exactly as plugins/erfnet_plugin.py builds it
    if user:
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="tester", role="admin")
    return TestClient(app, root_path=URL_PREFIX, raise_server_exceptions=False)


@pytest.fixture
def populated(sqlite_url):
    from erfnet_tasks.results.publish import publish_run

    publish_run(_doc(OLD_RUN, "2026-11-01T10:00:00+00:00", "7.0.RC1", oom=False, findings=[]), sqlite_url)
    publish_run(_doc(NEW_RUN, "2026-11-20T02:00:00+00:00", "8.0.RC2", oom=True, findings=[FINDING]), sqlite_url)
    return sqlite_url


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_requests_are_refused(path, populated, monkeypatch, auth_manager):
    client = _client(populated, monkeypatch, user=False)
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)
    client.cookies.set("_token", "forged")
    response = client.get(path)
    assert response.status_code in (401, 403)
    assert "72.20" not in response.text and "npu-host-7" not in response.text


def test_latest_page_lays_out_the_guide_tables(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    response = client.get("/")
    assert response.status_code == 200
    page = Tables(response.text)
    assert NEW_RUN in page.all_text

    accuracy = page.tables["accuracy-table"]
    assert accuracy[0] == ["batch", "Ascend310P3", "cpu", "guide"]
    assert [r[0] for r in accuracy[1:]] == ["1", "4", "8", "16", "32", "64"]
    assert page.cell("accuracy-table", "1", "cpu") == "72.20 ✓"
    failed = page.cell("accuracy-table", "32", "cpu")
    assert failed.startswith("70.00") and "✗" in failed
    assert page.cell("accuracy-table", "64", "Ascend310P3") == "device memory exhausted"
    assert 'class="fail"' in response.text and 'class="pass"' in response.text

    perf = page.tables["perf-table"]
    headers = perf[0]
    # default reference target: the run's first target; the NPU column has its guide ratio beside it
    assert "cpu/Ascend310P3" in headers and "Ascend310P3/guide 310P" in headers and "guide 310P" in headers
    assert page.cell("perf-table", "1", "cpu") == "50.00"
    assert page.cell("perf-table", "1", "Ascend310P3") == "200.00"
    assert page.cell("perf-table", "1", "cpu/Ascend310P3") == "0.250"
    assert page.cell("perf-table", "1", "Ascend310P3/guide 310P") == f"{200 / 292.137:.3f}"
    assert page.cell("perf-table", "64", "Ascend310P3") == "device memory exhausted"
    assert page.cell("perf-table", "64", "cpu/Ascend310P3") == "/"
    assert page.cell("perf-table", "best batch", "Ascend310P3") == "360.00 (b32)"
    assert page.cell("perf-table", "best batch", "cpu") == "100.00 (b64)"
    assert "aclrtMalloc failed" in response.text  # the failure's reason, as the cell's tooltip

    text = page.all_text
    for fact in ("8.0.RC2", "23.0.3", "npu-host-7", "c0ffee"):
        assert fact in text
    assert FINDING["message"] in text
    assert "/dags/erfnet_offline_inference/runs/scheduled__2026-11-20T02%3A00%3A00%2B00%3A00" in response.text


def test_reference_target_is_chosen_by_query(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    page = Tables(client.get("/", params={"reference": "cpu"}).text)
    assert "Ascend310P3/cpu" in page.tables["perf-table"][0] and "cpu/Ascend310P3" not in page.tables["perf-table"][0]
    assert page.cell("perf-table", "8", "Ascend310P3/cpu") == "4.000"
    unknown = client.get("/", params={"reference": "Ascend910"})
    assert unknown.status_code == 200 and "not in this run" in unknown.text


def test_one_run_page_has_per_class_iou_with_names(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    response = client.get(f"/runs/{OLD_RUN}")
    assert response.status_code == 200
    page = Tables(response.text)
    assert page.cell("per-class-table", "road", "cpu b1") == "30.00"
    assert page.cell("per-class-table", "bicycle", "Ascend310P3 b64") == f"{CLASS_IOU[18] * 100:.2f}"
    assert page.cell("accuracy-table", "64", "Ascend310P3") == "72.20 ✓"  # the old run had no OOM
    assert "7.0.RC1" in page.all_text and "No regressions found." in page.all_text


def _chart_data(html: str) -> dict:
    start = html.index('<script id="history-data" type="application/json">')
    body = html[html.index(">", start) + 1 : html.index("</script>", start)]
    return json.loads(body)


def test_history_has_charts_findings_and_cann_versions(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    # the default range is the 90 days up to the newest run: both runs (Nov 1 and Nov 20)
    response = client.get("/history", params={"batch": 1})
    assert response.status_code == 200
    assert 'src="/erfnet/static/echarts.min.js"' in response.text
    chart = _chart_data(response.text)
    assert [r[1] for r in chart["runs"]] == [OLD_RUN, NEW_RUN]
    assert chart["targets"] == ["Ascend310P3", "cpu"] and chart["batch"] == 1
    assert chart["series"]["cpu"]["fps"] == [50.0, 50.0] and chart["series"]["cpu"]["miou"] == [72.2, 72.2]
    assert [(b["cann"], b["start"][:10], b["end"][:10]) for b in chart["bands"]] == [
        ("7.0.RC1", "2026-11-01", "2026-11-20"),
        ("8.0.RC2", "2026-11-20", "2026-11-20"),
    ]
    assert (chart["reference"], chart["tolerance"]) == (72.2, 1.0)
    page = Tables(response.text)
    versions = [r[:2] for r in page.tables["cann-table"][1:]]
    assert versions == [["7.0.RC1", "Ascend310P3"], ["7.0.RC1", "cpu"], ["8.0.RC2", "Ascend310P3"], ["8.0.RC2", "cpu"]]
    row = page.tables["cann-table"][3]
    header = page.tables["cann-table"][0]
    by_header = dict(zip(header, row, strict=True))
    assert by_header["fps best"] == "200.00" and by_header["mIoU % latest"] == "72.20"
    assert FINDING["message"] in page.all_text
    assert {r[0] for r in page.tables["runs"][1:]} == {OLD_RUN, NEW_RUN}


def test_history_at_batch_64_shows_the_oom_as_a_gap(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    chart = _chart_data(client.get("/history", params={"batch": 64}).text)
    assert chart["series"]["Ascend310P3"]["fps"] == [400.0, None]
    assert chart["series"]["Ascend310P3"]["status"] == ["ok", "oom"]


def test_history_range_reaches_back_to_the_first_run(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    # ten days up to the newest run: only the new one, with a link to the ten days before
    response = client.get("/history", params={"days": 10})
    chart = _chart_data(response.text)
    assert [r[1] for r in chart["runs"]] == [NEW_RUN]
    assert 'id="older" href="/erfnet/history?batch=1&amp;since=2026-11-01&amp;until=2026-11-10"' in response.text
    assert 'id="all-runs" href="/erfnet/history?batch=1&amp;since=2026-11-01"' in response.text
    # the CANN table covers every run whatever the range
    assert [r[0] for r in Tables(response.text).tables["cann-table"][1:]][:1] == ["7.0.RC1"]
    older = client.get("/history", params={"since": "2026-11-01", "until": "2026-11-10"})
    assert [r[1] for r in _chart_data(older.text)["runs"]] == [OLD_RUN]
    assert 'id="newer"' in older.text and 'id="older"' not in older.text
    assert "No regressions found." in older.text  # the finding belongs to the new run


def test_history_and_cann_json_api(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    body = client.get("/api/history", params={"since": "2026-11-15", "until": "2026-11-30"}).json()
    assert body["since"] == "2026-11-15" and body["until"] == "2026-11-30" and body["older"] == "2026-10-30"
    assert {p["run_id"] for p in body["points"]} == {NEW_RUN} and len(body["points"]) == 12
    assert "per_class" not in body["points"][0]
    one_batch = client.get("/api/history", params={"days": 365, "batch": 4}).json()["points"]
    assert {(p["run_id"], p["batch_size"]) for p in one_batch} == {(OLD_RUN, 4), (NEW_RUN, 4)}
    first = client.get("/api/history", params={"days": 365, "batch": 4, "runs": 1}).json()
    assert {p["run_id"] for p in first["points"]} == {OLD_RUN} and first["next"].startswith("/erfnet/api/history?")
    second = client.get(first["next"].removeprefix("/erfnet")).json()  # the client's base is the app's prefix
    assert {p["run_id"] for p in second["points"]} == {NEW_RUN} and second["next"] is None
    unknown = client.get("/api/history", params={"after": "no-such-run"})
    assert unknown.status_code == 400 and "no run 'no-such-run'" in unknown.json()["detail"]
    cann = client.get("/api/cann", params={"batch": 1}).json()
    assert [(r["cann_version"], r["target"]) for r in cann] == [
        ("7.0.RC1", "Ascend310P3"),
        ("7.0.RC1", "cpu"),
        ("8.0.RC2", "Ascend310P3"),
        ("8.0.RC2", "cpu"),
    ]
    assert cann[1]["fps_median"] == 50.0 and cann[1]["miou_latest"] == 0.722


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/runs", {"limit": str(2**63 + 1)}),
        ("/api/runs", {"limit": "0"}),
        ("/api/runs", {"limit": "-5"}),
        ("/api/runs", {"limit": "1e3"}),
        ("/api/runs", {"limit": "NaN"}),
        ("/history", {"batch": str(2**64)}),
        ("/history", {"days": "0"}),
        ("/history", {"since": "2026-13-01"}),
        ("/api/history", {"days": str(10**30)}),
        ("/api/history", {"batch": "abc"}),
        ("/api/cann", {"batch": "-1"}),
        ("/api/history", {"since": "2026-11-20", "until": "2026-11-01"}),
    ],
)
def test_out_of_range_numbers_and_dates_are_400(populated, monkeypatch, path, params):
    client = _client(populated, monkeypatch, user=True)
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    text = response.text if "/api/" not in path else response.json()["detail"]
    assert "Traceback" not in text and "unavailable" not in text
    assert client.get("/api/runs", params={"limit": "1"}).status_code == 200


def test_static_files_are_served_and_nothing_else(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    library = client.get("/static/echarts.min.js")
    assert library.status_code == 200 and library.headers["content-type"].startswith("text/javascript")
    assert b"echarts" in library.content[:2000] and len(library.content) > 500_000
    assert client.get("/static/history.js").status_code == 200
    for name in ("echarts.LICENSE", "..%2Fapp.py", "nope.js", "README.md"):
        assert client.get(f"/static/{name}").status_code == 404


def test_pages_issue_a_bounded_number_of_queries_and_no_log_lines(sqlite_url, monkeypatch, caplog):
    """History, latest and the API cost the same number of statements for 3 runs and for 12 (no N+1),
    and a request writes no Alembic INFO lines."""
    import logging

    from erfnet_tasks.results import db
    from erfnet_tasks.results.publish import publish_run

    def statements(paths) -> list[int]:
        engine = db.get_engine(sqlite_url)
        counts = []
        for path in paths:
            seen: list[int] = []

            def listener(*args, seen=seen, **kwargs):  # bound now: one list per path
                seen.append(1)

            sa.event.listen(engine, "before_cursor_execute", listener)
            try:
                assert client.get(path).status_code == 200
            finally:
                sa.event.remove(engine, "before_cursor_execute", listener)
            counts.append(len(seen))
        return counts

    import sqlalchemy as sa

    client = _client(sqlite_url, monkeypatch, user=True)
    paths = ["/history", "/history?since=2026-01-01", "/", "/api/runs", "/api/history", "/api/cann"]
    for day in range(1, 4):
        publish_run(
            _doc(
                f"scheduled__2026-11-{day:02d}",
                f"2026-11-{day:02d}T02:00:00+00:00",
                "7.0",
                oom=False,
                findings=[FINDING],
            ),
            sqlite_url,
        )
    few = statements(paths)
    for day in range(4, 13):
        publish_run(
            _doc(
                f"scheduled__2026-11-{day:02d}",
                f"2026-11-{day:02d}T02:00:00+00:00",
                f"8.{day}",
                oom=True,
                findings=[FINDING],
            ),
            sqlite_url,
        )
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    many = statements(paths)
    # history: 13 with the probe's upgrade markers
    assert few == many and max(many) <= 13, dict(zip(paths, many, strict=True))
    assert not [r for r in caplog.records if r.name.startswith("alembic")]


def test_json_api_returns_run_documents(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    runs = client.get("/api/runs").json()
    assert [r["id"] for r in runs] == [NEW_RUN, OLD_RUN]
    latest = client.get("/api/runs/latest").json()
    assert set(latest) == {"run", "compiled", "accuracy", "perf", "findings"}
    assert latest["run"]["id"] == NEW_RUN and latest["run"]["cann_version"] == "8.0.RC2"
    oom = next(c for c in latest["perf"] if (c["target"], c["batch_size"]) == ("Ascend310P3", 64))
    assert oom["status"] == "oom" and oom["throughput_fps"] is None
    assert latest["findings"][0]["message"] == FINDING["message"]
    old = client.get(f"/api/runs/{OLD_RUN}").json()
    assert old["run"]["id"] == OLD_RUN and len(old["accuracy"]) == 12
    missing = client.get("/api/runs/manual__1999-01-01")
    assert missing.status_code == 404 and "no run" in missing.json()["detail"]


def test_csv_downloads(populated, monkeypatch):
    client = _client(populated, monkeypatch, user=True)
    accuracy = client.get("/runs/latest/accuracy.csv")
    assert accuracy.status_code == 200 and accuracy.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(accuracy.text)))
    assert rows[0] == ["batch", "Ascend310P3", "cpu", "guide"]
    assert rows[1][:3] == ["1", "72.20", "72.20"]
    perf = list(csv.reader(io.StringIO(client.get("/runs/latest/perf.csv", params={"reference": "Ascend310P3"}).text)))
    header = perf[0]
    by_batch = {r[0]: dict(zip(header, r, strict=True)) for r in perf[1:]}
    assert by_batch["4"]["cpu/Ascend310P3"] == "0.250"
    assert by_batch["64"]["Ascend310P3"] == "oom"
    assert by_batch["best batch"]["cpu"] == "100.00 (b64)"
    assert client.get("/runs/latest/perf.csv", params={"reference": "nope"}).status_code == 400
    assert client.get(f"/runs/{OLD_RUN}/accuracy.csv").status_code == 200


@pytest.mark.parametrize("migrated", [False, True])
def test_empty_database_says_how_to_trigger_a_run(sqlite_url, monkeypatch, migrated):
    if migrated:
        from erfnet_tasks.results import db

        db.upgrade(sqlite_url)
    client = _client(sqlite_url, monkeypatch, user=True)
    for path in ("/", "/history"):
        response = client.get(path)
        assert response.status_code == 200
        assert 'id="empty-state"' in response.text and "erfnet_offline_inference" in response.text
        assert "Trigger" in response.text
    assert client.get("/api/runs").json() == []
    assert client.get("/api/runs/latest").status_code == 404
    assert client.get("/runs/latest/accuracy.csv").status_code == 404


def test_database_down_gives_an_error_page_not_a_traceback(monkeypatch):
    client = _client(
        "postgresql+psycopg://postgres@127.0.0.1:1/erfnet_results?connect_timeout=2", monkeypatch, user=True
    )
    for path in ("/", "/history", f"/runs/{OLD_RUN}"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
        assert "results database is unavailable" in response.text
        assert "Traceback" not in response.text and 'File "' not in response.text
    api = client.get("/api/runs")
    assert api.status_code == 503 and "unavailable" in api.json()["detail"]
    assert client.get("/runs/latest/perf.csv").status_code == 503


def test_plugin_mounts_the_app_and_a_nav_view():
    spec = importlib.util.spec_from_file_location("erfnet_plugin", REPO / "plugins" / "erfnet_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.ErfnetResultsPlugin
    (app_entry,) = plugin.fastapi_apps
    assert app_entry["url_prefix"] == "/erfnet" and app_entry["name"]
    (view,) = plugin.external_views
    assert view["destination"] == "nav" and view["url_route"] == "erfnet" and view["href"] == "/erfnet/"
    # the mounted app refuses an anonymous request by itself
    response = TestClient(app_entry["app"], raise_server_exceptions=False).get("/")
    assert response.status_code == 401


def test_upgrade_events_for_chart_markers(sqlite_url, monkeypatch):
    import datetime as dt

    from erfnet_tasks.results import hosts

    t0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    for minutes, cann in ((0, "8.0.0"), (5, "8.0.0"), (10, "8.1.RC1")):
        hosts.record_observation(
            "npu-7",
            {"cann_version": cann, "driver_version": "23.0.3", "chips": ["Ascend310P3"]},
            sqlite_url,
            now=t0 + dt.timedelta(minutes=minutes),
        )
    client = _client(sqlite_url, monkeypatch, user=True)
    assert client.get("/api/upgrades").json() == [
        {
            "time": "2026-11-27T09:10:00+00:00",
            "host": "npu-7",
            "old_cann_version": "8.0.0",
            "new_cann_version": "8.1.RC1",
            "old_driver_version": "23.0.3",
            "new_driver_version": "23.0.3",
            "old_chips": ["Ascend310P3"],
            "new_chips": ["Ascend310P3"],
        }
    ]
    assert client.get("/api/upgrades", params={"host": "other"}).json() == []
    assert _client(sqlite_url, monkeypatch, user=False).get("/api/upgrades").status_code in (401, 403)


def test_history_charts_mark_the_upgrades_the_probe_saw_in_the_range(populated, monkeypatch):
    import datetime as dt

    from erfnet_tasks.results import hosts

    observed = {"driver_version": "23.0.3", "chips": ["Ascend310P3"]}
    for when, cann in (("2026-11-10T09:00", "7.0.RC1"), ("2026-11-15T09:30", "8.0.RC2"), ("2025-01-01T00:00", "6.0")):
        hosts.record_observation(
            "npu-a" if when > "2026" else "npu-old",
            {"cann_version": cann, **observed},
            populated,
            now=dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC),
        )
    hosts.record_observation(
        "npu-old", {"cann_version": "6.1", **observed}, populated, now=dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    )  # long before the range
    chart = _chart_data(_client(populated, monkeypatch, user=True).get("/history", params={"batch": 1}).text)
    assert chart["upgrades"] == [{"time": "2026-11-15T09:30:00+00:00", "label": "npu-a: CANN 7.0.RC1 \u2192 8.0.RC2"}]


def test_every_failure_status_reads_as_words_on_the_page():
    """The words come from CellStatus itself: no_space, once missing from a hand-kept list, has them too."""
    from erfnet_ui import views

    from erfnet_tasks.records import CellStatus

    doc = {
        "run": {"id": "r"},
        "perf": [
            {"target": "Ascend310", "batch_size": 1, "status": status.value, "error": f"{status.value}: detail"}
            for status in CellStatus
            if status is not CellStatus.OK
        ],
    }
    shown = set()
    for status in CellStatus:
        if status is CellStatus.OK:
            continue
        table = views.perf_view({**doc, "perf": [c for c in doc["perf"] if c["status"] == status]}, None)
        cell = table.rows[0][1]
        assert cell.css == "status" and cell.title == f"{status.value}: detail" and "_" not in cell.text
        shown.add(cell.text)
    assert "no space for the outputs" in shown and len(shown) == len(CellStatus) - 1
