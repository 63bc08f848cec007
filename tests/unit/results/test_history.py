"""History at scale against real PostgreSQL and SQLite: ranges, the CANN aggregate (best, median,
latest), the bounded regression baseline, bulk `erfnet results import` and two concurrent imports."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import nightlies  # bench/nightlies.py
import pytest
import sqlalchemy as sa

from erfnet_tasks.results import db, history, importing, publish, regression
from erfnet_tasks.results.models import Performance, Run
from tests.helpers.run_documents import make_doc

ERFNET = str(Path(sys.executable).parent / "erfnet")


def _publish_series(url: str, fps_by_run: list[tuple[str, float | None, float | None]]) -> list[str]:
    """One run per day in January 2026 with the given (CANN, cpu fps at batch 1, mIoU)."""
    ids = []
    for day, (cann, fps, miou) in enumerate(fps_by_run, start=1):
        run_id = f"scheduled__2026-01-{day:02d}"
        cells = [("cpu", 1, miou, fps, "ok" if fps is not None else "oom"), ("npu", 4, 0.72, 400.0 + day, "ok")]
        publish.publish_run(make_doc(run_id, f"2026-01-{day:02d}T02:00:00+00:00", cann, cells), url)
        with db.session_scope(url) as session:
            regression.find_regressions(session, run_id)
        ids.append(run_id)
    return ids


def _summary_row(rows, cann, target="cpu", batch=1):
    return next(r for r in rows if (r["cann_version"], r["target"], r["batch_size"]) == (cann, target, batch))


def test_cann_summary_is_best_median_latest_over_all_runs(results_url):
    series = [
        ("7.0", 10.0, 0.70),
        ("7.0", 30.0, 0.72),
        ("7.0", 20.0, 0.71),  # odd count: median 20
        ("8.0", 50.0, 0.73),
        ("8.0", None, None),
        ("8.0", 40.0, 0.725),  # an OOM night: no value
        ("8.0", 44.0, 0.728),
        ("9.0", 5.0, 0.5),
    ]
    _publish_series(results_url, series)
    with db.session_scope(results_url) as session:
        rows = history.cann_summary(session)
        at_batch_1 = history.cann_summary(session, batch_size=1)
    assert [r["cann_version"] for r in rows if (r["target"], r["batch_size"]) == ("cpu", 1)] == ["7.0", "8.0", "9.0"]
    old = _summary_row(rows, "7.0")
    assert (old["runs"], old["fps_best"], old["fps_median"], old["fps_latest"]) == (3, 30.0, 20.0, 20.0)
    assert old["miou_median"] == pytest.approx(0.71) and old["latest_run_id"] == "scheduled__2026-01-03"
    new = _summary_row(rows, "8.0")
    # even count of values (50, 40, 44): median of 3 is 44; the latest night is 44 (7th), the OOM one is no value
    assert (new["runs"], new["fps_best"], new["fps_median"], new["fps_latest"]) == (4, 50.0, 44.0, 44.0)
    assert new["miou_median"] == pytest.approx(statistics.median([0.73, 0.725, 0.728]))
    assert _summary_row(rows, "8.0", "npu", 4)["fps_median"] == pytest.approx((405 + 406) / 2)  # even: mean of two
    assert {r["batch_size"] for r in at_batch_1} == {1}
    assert _summary_row(at_batch_1, "9.0")["fps_latest"] == 5.0


def test_points_and_findings_by_range_without_per_class(results_url):
    _publish_series(results_url, [("7.0", 10.0, 0.72)] * 4 + [("8.0", 5.0, 0.60)])
    since, until = datetime(2026, 1, 3, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    with db.session_scope(results_url) as session:
        first, last = history.span(session)
        points = history.points(session, since, until, batch_size=1)
        findings = history.findings_between(session, since, until)
        runs, more = history.runs_between(session, since, until, limit=2)
    assert (first.day, last.day) == (1, 5)
    assert [p["run_id"][-2:] for p in points] == ["03", "04", "05"]
    assert set(points[0]) == {
        "run_id",
        "started_at",
        "cann_version",
        "target",
        "batch_size",
        "throughput_fps",
        "status",
        "miou",
    }
    assert points[-1]["miou"] == 0.60 and points[-1]["cann_version"] == "8.0"
    assert {(f["run_id"][-2:], f["rule"]) for f in findings} == {
        ("05", "accuracy_below_reference"),
        ("05", "throughput_drop"),
    }
    assert [r["id"][-2:] for r in runs] == ["05", "04"] and more
    assert runs[0]["perf_cells"] == 2 and runs[0]["findings"] == 2


def test_baseline_is_the_latest_earlier_run_on_another_cann(results_url):
    # 7.0 nights at 100 fps then 90 fps, then 8.0: its baseline is the last 7.0 night (90), not the first
    _publish_series(results_url, [("7.0", 100.0, 0.72), ("7.0", 90.0, 0.72), ("8.0", 86.0, 0.72), ("8.0", 80.0, 0.72)])
    with db.session_scope(results_url) as session:
        run = session.get(Run, "scheduled__2026-01-04")
        # each cell with the CANN it ran on now (8.0): the baseline is the latest earlier run on another one
        baselines = regression._baselines(session, run, {("cpu", 1): "8.0", ("npu", 4): "8.0", ("cpu", 64): "8.0"})
    assert baselines[("cpu", 1)] == ("scheduled__2026-01-02", "7.0", 90.0)
    assert baselines[("npu", 4)][0] == "scheduled__2026-01-02"
    assert ("cpu", 64) not in baselines


def _write(folder: Path, docs: list[dict]) -> list[Path]:
    return nightlies.write_documents(docs, folder)


def test_import_many_files_and_directories_reports_each(results_url, tmp_path, capsys):
    from erfnet_tasks.cli import main

    docs = nightlies.nightly_documents(6)
    _write(tmp_path / "backlog", docs[:4])
    single = publish.write_run_file(docs[4], tmp_path / "single.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad_doc = tmp_path / "bad.json"
    bad_doc.write_text(json.dumps({**docs[5], "run": {**docs[5]["run"], "started_at": "yesterday"}}))
    code = main(
        [
            "results",
            "--db",
            results_url,
            "import",
            str(tmp_path / "backlog"),
            str(single),
            str(broken),
            str(bad_doc),
            str(tmp_path / "missing.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1  # something was refused
    assert out.count("imported run ") == 5
    assert f"refused {broken}: cannot read run document" in out
    assert "refused run " in out and "not an ISO 8601 time" in out
    assert "no such file or directory" in out
    assert out.strip().splitlines()[-1].startswith("5 imported, 0 already present, 3 refused")
    code = main(["results", "--db", results_url, "import", str(tmp_path / "backlog"), str(single)])
    out = capsys.readouterr().out
    assert code == 0 and out.count("already present run ") == 5 and "0 imported, 5 already present" in out
    with db.session_scope(results_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Run)) == 5


def test_import_of_nothing_usable_is_one_line(sqlite_url, tmp_path, capsys):
    from erfnet_tasks.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["results", "--db", sqlite_url, "import", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("erfnet: error: nothing to import: directory holds no")
    assert len(captured.err.strip().splitlines()) == 1


def test_replace_overwrites_a_present_run(sqlite_url, tmp_path):
    doc = nightlies.nightly_documents(1)[0]
    path = publish.write_run_file(doc, tmp_path / "r.json")
    assert [o.status for o in importing.import_paths([str(path)], sqlite_url, report=lambda _l: None)] == ["imported"]
    doc["run"]["host"] = "other-host"
    publish.write_run_file(doc, path)
    assert importing.import_paths([str(path)], sqlite_url, report=lambda _l: None)[0].status == "already present"
    assert importing.import_paths([str(path)], sqlite_url, replace=True, report=lambda _l: None)[0].status == "imported"
    with db.session_scope(sqlite_url) as session:
        assert session.get(Run, doc["run"]["id"]).host == "other-host"


@pytest.mark.parametrize("fresh", [True, False], ids=["empty-database", "migrated"])
def test_two_concurrent_imports_of_the_same_runs_are_safe(results_url, tmp_path, fresh):
    docs = nightlies.nightly_documents(8)
    _write(tmp_path / "runs", docs)
    if not fresh:
        db.upgrade(results_url)
    argv = [ERFNET, "results", "--db", results_url, "import", str(tmp_path / "runs")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    for out, err, code in outputs:
        assert "Traceback" not in err and "Traceback" not in out
        assert code == 0, err
    imported = sum(out.count("imported run ") for out, _e, _c in outputs)
    present = sum(out.count("already present run ") for out, _e, _c in outputs)
    assert imported + present == 16 and imported == 8  # each run written exactly once
    with db.session_scope(results_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Run)) == 8
        cells = session.scalar(sa.select(sa.func.count()).select_from(Performance))
    assert cells == sum(len(d["perf"]) for d in docs)


def _reference_baseline(docs: list[dict], new: dict, target: str, batch: int, cann, mode: str):
    """The rule as the docstring states it, as a plain loop over the documents: the latest complete run
    started before ``new`` whose cell (target, batch) was ok with fps, on another CANN, in the same mode."""
    candidates = []
    for doc in docs:
        run = doc["run"]
        if (
            run["id"] == new["run"]["id"]
            or run["status"] != "complete"
            or run["started_at"] >= new["run"]["started_at"]
        ):
            continue
        modes = {(a["target"], a["batch_size"]): a.get("label_mode") or "logits" for a in doc["accuracy"]}
        for cell in doc["perf"]:
            cell_cann = cell.get("cann_version") or run["cann_version"]
            if (
                (cell["target"], cell["batch_size"]) == (target, batch)
                and cell["status"] == "ok"
                and cell["throughput_fps"] is not None
                and cell_cann != cann
                and modes.get((target, batch), "logits") == mode
            ):
                candidates.append((run["started_at"], run["id"], cell_cann, cell["throughput_fps"]))
    if not candidates:
        return None
    _started, run_id, cell_cann, fps = max(candidates)
    return run_id, cell_cann, fps


def test_paged_baseline_walk_equals_the_rule_over_every_run(results_url, monkeypatch):
    """Random histories (per-cell CANN, OOM cells, incomplete runs, both label modes, equal start times):
    the bounded baseline (3 recent runs read first, so that most cells need the older-runs query) gives what
    the rule gives."""
    import random

    monkeypatch.setattr(regression, "RECENT_RUNS", 3)
    rng = random.Random(20)
    docs = []
    for i in range(40):
        hour = i // 3  # three runs share each start time: the tie is broken by run id
        cells = [
            (
                t,
                b,
                0.72 if rng.random() < 0.9 else None,
                round(rng.uniform(10, 100), 2),
                "ok" if rng.random() < 0.8 else "oom",
            )
            for t in ("cpu", "npu")
            for b in (1, 4)
        ]
        doc = make_doc(
            f"run_{rng.randrange(10**6):06d}_{i:02d}",
            f"2026-02-01T{hour:02d}:00:00+00:00",
            rng.choice(["7.0", "8.0", None]),
            cells,
            status="complete" if rng.random() < 0.85 else "incomplete",
        )
        for cell in doc["perf"]:
            cell["cann_version"] = rng.choice([None, "7.0", "8.0", "9.0"])
            if cell["status"] != "ok":
                cell["throughput_fps"] = None
        for acc in doc["accuracy"]:
            acc["label_mode"] = rng.choice(["logits", "labels"])
        publish.publish_run(doc, results_url)
        docs.append(doc)
    with_baseline = 0
    with db.session_scope(results_url) as session:
        for doc in docs:
            run = session.get(Run, doc["run"]["id"])
            modes = {(a["target"], a["batch_size"]): a["label_mode"] for a in doc["accuracy"]}
            cells = {
                (c["target"], c["batch_size"]): c["cann_version"] or doc["run"]["cann_version"] for c in doc["perf"]
            }
            got = regression._baselines(session, run, cells)
            with_baseline += len(got)
            for (target, batch), cann in cells.items():
                want = _reference_baseline(docs, doc, target, batch, cann, modes.get((target, batch), "logits"))
                assert got.get((target, batch)) == want, (doc["run"]["id"], target, batch)
    assert with_baseline > 60  # of 160 cells: the comparison is not mostly between two Nones


def test_the_stored_cann_summary_follows_every_publish_and_a_changed_version(results_url):
    from erfnet_tasks.results import cann_summary

    ids = _publish_series(
        results_url,
        [
            ("7.0", 10.0, 0.70),
            ("7.0", 30.0, 0.72),
            ("8.0", 50.0, 0.73),
            ("8.0", None, None),
            ("8.0", 44.0, 0.728),
            (None, 5.0, 0.5),
        ],
    )
    with db.session_scope(results_url) as session:
        assert cann_summary.rows(session) == cann_summary.computed(session)
        assert _summary_row(cann_summary.rows(session), "7.0")["runs"] == 2
    # the second night re-published as a 9.0 run: 7.0 loses it, 9.0 appears, nothing else moves
    moved = make_doc(ids[1], "2026-01-02T02:00:00+00:00", "9.0", [("cpu", 1, 0.74, 31.0, "ok")])
    publish.publish_run(moved, results_url)
    with db.session_scope(results_url) as session:
        stored = cann_summary.rows(session)
        assert stored == cann_summary.computed(session)
        assert cann_summary.rows(session, batch_size=4) == cann_summary.computed(session, batch_size=4)
    assert _summary_row(stored, "7.0")["runs"] == 1 and _summary_row(stored, "7.0")["fps_latest"] == 10.0
    assert (_summary_row(stored, "9.0")["fps_best"], _summary_row(stored, "9.0")["latest_run_id"]) == (31.0, ids[1])
    assert [r["cann_version"] for r in stored if r["target"] == "npu"] == ["7.0", "8.0", None]


def test_upgrading_a_database_with_runs_computes_its_cann_summary(results_url):
    from erfnet_tasks.results import cann_summary
    from erfnet_tasks.results.models import CannSummary

    _publish_series(results_url, [("7.0", 10.0, 0.70), ("8.0", 50.0, 0.73), ("8.0", 40.0, 0.72)])
    db.downgrade(results_url, "0007")  # as a database from before the summary table
    assert db.upgrade(results_url) == db.head_revision()
    with db.session_scope(results_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CannSummary)) == 4  # 2 versions x 2 cells
        assert cann_summary.rows(session) == cann_summary.computed(session)
