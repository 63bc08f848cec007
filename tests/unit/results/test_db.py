"""The results database against real PostgreSQL and SQLite: migrations, URL resolution, publishing,
outage recovery, queries and every regression rule."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.results import db, history, publish, queries, reference, regression
from tests.helpers.run_documents import canonical, make_doc

GUIDE_TABLES = {"runs", "compiled_models", "accuracy", "performance", "reference_figures", "findings"}


def _stored(url: str, ref: str) -> dict:
    with db.session_scope(url) as session:
        return queries.run_document(session, ref)


def _count(url: str, table: str) -> int:
    with db.get_engine(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


# ------------------------------------------------------------------------------------- migrations


def test_migrations_up_and_down(results_url):
    assert db.current_revision(results_url) is None
    assert db.upgrade(results_url) == db.head_revision()
    tables = set(sa.inspect(db.get_engine(results_url)).get_table_names())
    assert GUIDE_TABLES | {"alembic_version", "host_versions"} <= tables

    assert db.downgrade(results_url, "0001") == "0001"
    assert _count(results_url, "reference_figures") == 0

    assert db.downgrade(results_url, "base") is None
    remaining = set(sa.inspect(db.get_engine(results_url)).get_table_names())
    assert not (GUIDE_TABLES & remaining) and "host_versions" not in remaining

    assert db.upgrade(results_url) == db.head_revision()
    assert _count(results_url, "reference_figures") == 11 + 24


def test_models_match_migrations(results_url):
    """The ORM models and the migrated schema agree (Alembic's autogenerate finds nothing to do)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from erfnet_tasks.results.models import Base

    db.upgrade(results_url)
    with db.get_engine(results_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_reference_rows_hold_the_guide_figures(sqlite_url):
    db.upgrade(sqlite_url)
    with db.session_scope(sqlite_url) as session:
        rows = queries.reference_figures(session)
    fps = {(r["column"], r["batch_size"]): r for r in rows if r["metric"] == "throughput_fps"}
    for batch, columns in reference.GUIDE_THROUGHPUT.items():
        for column, value in columns.items():
            stored = fps[(column, batch)]
            if isinstance(value, str):
                assert (stored["value"], stored["status"], stored["note"]) == (None, "oom", value)
            else:
                assert (stored["value"], stored["status"]) == (pytest.approx(value), "ok")
    assert fps[("310", 64)]["note"] == "memory allocation failed"
    assert fps[("310P-AOE", 8)]["value"] == pytest.approx(381.9549)
    miou = {(r["column"], r["batch_size"]): r["value"] for r in rows if r["metric"] == "miou"}
    assert set(miou) == {(c, b) for c, bs in reference.GUIDE_ACCURACY_BATCHES.items() for b in bs}
    assert all(value == pytest.approx(reference.GUIDE_MIOU) for value in miou.values())
    assert ("310", 64) not in miou and ("310P", 64) in miou


# ------------------------------------------------------------------------------------------ URLs


def test_url_from_environment_pins_psycopg(monkeypatch):
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", "postgresql://u:p%40ss@dbhost:5433/results")
    assert db.resolve_url() == "postgresql+psycopg://u:p%40ss@dbhost:5433/results"
    assert "p%40ss" not in db.masked(db.resolve_url())
    with pytest.raises(ErfnetError, match="unsupported"):
        db.normalize_url("mysql://u@h/d")
    with pytest.raises(ErfnetError, match="driver"):
        db.normalize_url("postgresql+psycopg2://u@h/d")


def test_url_from_airflow_connection_env(monkeypatch):
    monkeypatch.delenv("ERFNET_RESULTS_DB_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_ERFNET_RESULTS", "postgres://air:secret@pg:5432/erfnet_results")
    assert db.resolve_url() == "postgresql+psycopg://air:secret@pg:5432/erfnet_results"
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERFNET_RESULTS",
        json.dumps(
            {"conn_type": "postgres", "host": "pg", "login": "air", "password": "s/cret", "schema": "res", "port": 5432}
        ),
    )
    assert db.resolve_url() == "postgresql+psycopg://air:s%2Fcret@pg:5432/res"


def test_url_falls_back_to_sqlite_in_data_dir(monkeypatch, tmp_path):
    for name in ("ERFNET_RESULTS_DB_URL", "AIRFLOW_CONN_ERFNET_RESULTS", "AIRFLOW_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "data"))
    url = db.resolve_url()
    assert url == f"sqlite:///{tmp_path / 'data' / 'results.sqlite'}"
    db.upgrade(url)
    assert (tmp_path / "data" / "results.sqlite").is_file()


# ------------------------------------------------------------------------------------- publishing

CELLS = [("cpu", 1, 0.7218, 10.5, "ok"), ("cpu", 4, 0.7219, 12.0, "ok"), ("Ascend310", 64, None, None, "oom")]


def test_publish_into_empty_database_round_trips(results_url):
    doc = make_doc("manual__2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00", "8.0.RC1", CELLS)
    assert publish.publish_run(doc, results_url) == doc["run"]["id"]
    assert db.current_revision(results_url) == db.head_revision()
    assert _stored(results_url, "latest") == canonical(doc)


def test_publish_twice_replaces_the_runs_rows(results_url):
    run_id = "scheduled__2026-01-02T00:00:00+00:00"
    first = make_doc(run_id, "2026-01-02T00:00:00+00:00", "8.0.RC1", CELLS, status="failed")
    publish.publish_run(first, results_url)
    publish.publish_run(first, results_url)
    assert (
        _count(results_url, "runs"),
        _count(results_url, "performance"),
        _count(results_url, "accuracy"),
        _count(results_url, "compiled_models"),
    ) == (1, 3, 2, 3)

    second = make_doc(run_id, "2026-01-02T00:00:00+00:00", "8.0.RC2", [("cpu", 1, 0.7301, 11.25, "ok")])
    publish.publish_run(second, results_url)
    assert (
        _count(results_url, "runs"),
        _count(results_url, "performance"),
        _count(results_url, "accuracy"),
        _count(results_url, "compiled_models"),
    ) == (1, 1, 1, 1)
    stored = _stored(results_url, run_id)
    assert stored["run"]["cann_version"] == "8.0.RC2" and stored["run"]["status"] == "complete"
    assert stored["accuracy"][0]["miou"] == pytest.approx(0.7301)
    assert stored["perf"][0]["throughput_fps"] == pytest.approx(11.25)

    # Another run's rows are not touched by re-publishing this one.
    other = make_doc("other", "2026-01-03T00:00:00+00:00", "8.0.RC2", CELLS)
    publish.publish_run(other, results_url)
    publish.publish_run(second, results_url)
    assert len(_stored(results_url, "other")["perf"]) == 3


@pytest.mark.parametrize(
    "down_url",
    ["postgresql+psycopg://postgres@127.0.0.1:1/erfnet_results", "sqlite:////nonexistent-erfnet-dir/results.sqlite"],
)
def test_outage_fails_after_retries_and_the_file_imports_later(results_url, down_url, tmp_path, monkeypatch):
    doc = make_doc("manual__outage", "2026-01-04T00:00:00+00:00", "8.0.RC1", CELLS)
    path = publish.write_run_file(doc, tmp_path / "run" / "results.json")
    assert json.loads(path.read_text()) == canonical(doc)

    waits = []
    monkeypatch.setattr(publish.time, "sleep", waits.append)
    with pytest.raises(publish.PublishFailed, match="unreachable after 3 attempts"):
        publish.publish_run(doc, down_url, retries=2, backoff=0.01)
    assert waits == [0.01, 0.02]

    assert publish.import_file(path, results_url) == ["manual__outage"]
    assert _stored(results_url, "manual__outage") == canonical(doc)


def test_write_run_file_is_atomic_and_validated(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(ErfnetError, match="batch_size"):
        publish.write_run_file(make_doc("r", "2026-01-01T00:00:00", None, [("cpu", 0, 0.5, 1.0, "ok")]), target)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["run"].update(id="run'; DROP TABLE runs; --"), "invalid run id"),
        (lambda d: d["perf"].append(dict(d["perf"][0])), "twice"),
        (lambda d: d["accuracy"][0].update(miou=72.18), "fraction"),
        (lambda d: d["perf"][0].update(status="exploded"), "status"),
        (lambda d: d["run"].update(started_at="yesterday"), "ISO 8601"),
    ],
)
def test_publish_rejects_bad_documents_before_writing(sqlite_url, mutate, message):
    doc = make_doc("r1", "2026-01-01T00:00:00+00:00", None, CELLS)
    mutate(doc)
    with pytest.raises(ErfnetError, match=message):
        publish.publish_run(doc, sqlite_url, retries=0)
    assert db.current_revision(sqlite_url) is None


# ---------------------------------------------------------------------------------------- queries


def test_latest_list_and_history(results_url):
    publish.publish_run(make_doc("a", "2026-01-01T00:00:00+00:00", "7.0", CELLS), results_url)
    publish.publish_run(
        make_doc("b", "2026-01-02T08:00:00+08:00", "8.0", [("cpu", 1, 0.70, 9.0, "ok")], status="failed"), results_url
    )
    with db.session_scope(results_url) as session:
        assert queries.resolve_run_id(session, "latest") == "b"
        runs = queries.list_runs(session, limit=10)
        assert [r["id"] for r in runs] == ["b", "a"]
        assert runs[1]["perf_cells"] == 3 and runs[1]["failed_cells"] == 1
        assert runs[0]["started_at"] == "2026-01-02T00:00:00+00:00"  # stored and shown in UTC
        assert [r["id"] for r in queries.list_runs(session, limit=1)] == ["b"]

        points = [p for p in history.points(session, batch_size=1) if p["target"] == "cpu"]
        assert [(p["run_id"], p["cann_version"], p["miou"], p["throughput_fps"]) for p in points] == [
            ("a", "7.0", pytest.approx(0.7218), pytest.approx(10.5)),
            ("b", "8.0", pytest.approx(0.70), pytest.approx(9.0)),
        ]
        everything = history.points(session)
        assert {(p["run_id"], p["target"], p["batch_size"]) for p in everything} == {
            ("a", "cpu", 1),
            ("a", "cpu", 4),
            ("a", "Ascend310", 64),
            ("b", "cpu", 1),
        }

        with pytest.raises(ErfnetError, match="no run 'zzz'"):
            queries.run_document(session, "zzz")
        with pytest.raises(ErfnetError, match="invalid run id"):
            queries.run_document(session, "a' OR '1'='1")


# ---------------------------------------------------------------------------------------- regressions


def _findings(url: str, run_id: str, rules=None) -> list[dict]:
    with db.session_scope(url) as session:
        return regression.find_regressions(session, run_id, rules)


def test_accuracy_below_reference_minus_tolerance(results_url):
    publish.publish_run(
        make_doc(
            "acc", "2026-02-01T00:00:00+00:00", "8.0", [("cpu", 1, 0.7119, 10.0, "ok"), ("cpu", 4, 0.7121, 10.0, "ok")]
        ),
        results_url,
    )
    found = _findings(results_url, "acc")
    assert [(f["rule"], f["target"], f["batch_size"]) for f in found] == [("accuracy_below_reference", "cpu", 1)]
    assert found[0]["value"] == pytest.approx(0.7119) and found[0]["threshold"] == pytest.approx(0.7120)
    assert "71.19" in found[0]["message"]
    assert _findings(results_url, "acc", regression.Rules(tolerance=0.02)) == []
    assert len(_findings(results_url, "acc", regression.Rules(reference_miou=0.75))) == 2


def test_the_gate_never_compares_across_label_modes(results_url):
    def run(run_id, day, cann, fps, mode):
        doc = make_doc(run_id, f"2026-04-{day:02d}T00:00:00+00:00", cann, [("cpu", 1, 0.72, fps, "ok")])
        doc["accuracy"][0]["label_mode"] = mode
        publish.publish_run(doc, results_url)

    run("labels-old-cann", 1, "7.0", 200.0, "labels")  # faster, but label maps: not this run's mode
    run("logits-old-cann", 2, "7.0", 100.0, "logits")
    run("logits-new", 3, "8.0", 99.0, "logits")
    assert _findings(results_url, "logits-new") == []  # 1% below the logits baseline; 50% below the labels one
    run("labels-new", 4, "8.0", 150.0, "labels")
    (found,) = _findings(results_url, "labels-new")  # 25% below labels-old-cann, above every logits run
    assert (found["rule"], found["baseline_run_id"]) == ("throughput_drop", "labels-old-cann")
    assert _stored(results_url, "labels-new")["accuracy"][0]["label_mode"] == "labels"


def test_throughput_drop_and_failed_cell_against_previous_cann(results_url):
    def run(run_id, day, cann, cells, status="complete"):
        publish.publish_run(make_doc(run_id, f"2026-03-{day:02d}T00:00:00+00:00", cann, cells, status), results_url)

    def full(fps):
        return [
            ("cpu", 1, 0.72, fps, "ok"),
            ("cpu", 4, 0.72, fps, "ok"),
            ("cpu", 8, 0.72, fps, "ok"),
            ("cpu", 16, 0.72, fps, "ok"),
        ]

    run("old-cann", 1, "7.0", full(100.0))
    run("old-cann-failed", 2, "6.0", full(10.0), status="failed")  # not complete: never a baseline
    run("same-cann", 3, "8.0", full(200.0))  # same CANN: never a baseline
    run(
        "new",
        4,
        "8.0",
        [
            ("cpu", 1, 0.72, 94.0, "ok"),
            ("cpu", 4, 0.72, 96.0, "ok"),
            ("cpu", 8, None, None, "oom"),
            ("cpu", 16, None, None, "model_load_failed"),
            ("cpu", 32, None, None, "infer_failed"),
        ],
        status="incomplete",
    )
    run("later", 5, "7.0", full(1000.0))  # after the run: never a baseline

    found = _findings(results_url, "new")
    # A cell that never reached a device is reported with or without a baseline; oom is a result.
    assert [(f["rule"], f["batch_size"], f["baseline_run_id"]) for f in found] == [
        ("cell_not_measured", 16, None),
        ("cell_not_measured", 32, None),
        ("throughput_drop", 1, "old-cann"),
        ("cell_failed", 8, "old-cann"),
    ]
    assert "model_load_failed" in found[0]["message"] and "infer_failed" in found[1]["message"]
    assert found[2]["value"] == pytest.approx(94.0) and found[2]["threshold"] == pytest.approx(95.0)
    assert "oom" in found[3]["message"]
    assert [f["rule"] for f in _findings(results_url, "new", regression.Rules(throughput_drop=0.10))] == [
        "cell_not_measured",
        "cell_not_measured",
        "cell_failed",
    ]

    # Stored, and idempotent: evaluating again replaces rather than adds.
    _findings(results_url, "new")
    _findings(results_url, "new")
    assert _count(results_url, "findings") == 4
    stored = _stored(results_url, "new")["findings"]
    assert sorted(f["rule"] for f in stored) == [
        "cell_failed",
        "cell_not_measured",
        "cell_not_measured",
        "throughput_drop",
    ]


def test_no_baseline_no_perf_findings(results_url):
    publish.publish_run(
        make_doc("first", "2026-04-01T00:00:00+00:00", "8.0", [("cpu", 1, 0.72, 1.0, "oom")]), results_url
    )
    assert _findings(results_url, "first") == []


def test_rules_from_params_read_the_guides_units():
    rules = regression.rules_from_params({"reference_miou": 72.2, "tolerance": 1.0})
    assert rules.reference_miou == pytest.approx(0.722) and rules.tolerance == pytest.approx(0.01)
    half_point = regression.rules_from_params({"reference_miou": 72.2, "tolerance": 0.5})
    assert half_point.tolerance == pytest.approx(0.005)  # half a point, not 50 points
    ten_percent = regression.rules_from_params({"reference_miou": 0, "throughput_drop": 10})
    assert ten_percent.throughput_drop == pytest.approx(0.1)
    assert regression.rules_from_params(None) == regression.Rules()
    with pytest.raises(ErfnetError):
        regression.rules_from_params({"tolerance": "a lot"})


@pytest.mark.postgres
def test_concurrent_first_publishes_share_one_migration(pg_url):
    import threading

    errors = []

    def publish_one(i):
        try:
            publish.publish_run(
                make_doc(f"r{i}", f"2026-07-0{i + 1}T00:00:00", "8.0", [("cpu", 1, 0.72, 1.0, "ok")]), pg_url, retries=0
            )
        except Exception as exc:  # collected, so the assertion shows what went wrong
            errors.append(repr(exc))

    threads = [threading.Thread(target=publish_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _count(pg_url, "runs") == 4 and _count(pg_url, "reference_figures") == 35
