"""A run that is still going (issue 26), as its readers see it: its progress, its tables with the cells
not stored yet in their state, and the CANN summary, the history, `erfnet results show/list/export/compare`
that leave it out or say it is running. On PostgreSQL and SQLite."""

from __future__ import annotations

import json

import pytest

from erfnet_tasks.cli import main
from erfnet_tasks.errors import BadInput
from erfnet_tasks.records import CellState
from erfnet_tasks.results import cann_summary, db, history, publish, queries, tables
from tests.helpers.run_documents import make_doc
from tests.helpers.running_run import RunningRun

CLOSED = "scheduled__2026-06-01T02:00:00+00:00"
RUNNING = "scheduled__2026-06-02T02:00:00+00:00"
PLANNED = [("Ascend310P3", 1), ("Ascend310P3", 4), ("cpu", 1), ("cpu", 4)]


@pytest.fixture
def running(results_url):
    """A closed night on CANN 8.0 (cpu b1 at 40 fps), then a running one on the same CANN: cpu b1 stored
    at 100 fps (a partial night's one cell, faster than any closed night), the 310P3 b1 tuning on npu-a,
    the 310P3 b4 measuring on npu-b, cpu b4 queued."""
    publish.publish_run(
        make_doc(CLOSED, "2026-06-01T02:00:00+00:00", "8.0", [(t, b, 0.72, 40.0, "ok") for t, b in PLANNED]),
        results_url,
    )
    run = RunningRun(results_url, RUNNING, "2026-06-02T02:00:00+00:00", "8.0", PLANNED).open()
    run.store(("cpu", 1, 0.7300, 100.0, "ok"))
    run.set_state("Ascend310P3", 1, CellState.TUNING, host="npu-a")
    run.set_state("Ascend310P3", 4, CellState.MEASURING, host="npu-b")
    return run


def _progress(url: str, ref: str = RUNNING) -> dict:
    with db.session_scope(url) as session:
        return queries.run_progress(session, ref)


def test_progress_counts_stored_cells_and_names_each_pending_cells_state(running):
    progress = _progress(running.url, "latest")
    assert (progress["run_id"], progress["status"], progress["running"]) == (RUNNING, "running", True)
    assert progress["started_at"] == "2026-06-02T02:00:00+00:00" and progress["finished_at"] is None
    assert (progress["done"], progress["total"]) == (1, 4)
    pending = {(c["target"], c["batch_size"]): (c["state"], c["host"]) for c in progress["pending"]}
    assert pending == {
        ("Ascend310P3", 1): ("tuning", "npu-a"),
        ("Ascend310P3", 4): ("measuring", "npu-b"),
        ("cpu", 4): ("queued", None),
    }
    assert {s: n for s, n in progress["states"].items() if n} == {"queued": 1, "tuning": 1, "measuring": 1}
    assert progress["updated_at"] is not None

    running.store(("cpu", 4, 0.7301, 110.0, "ok"))
    later = _progress(running.url)
    assert (later["done"], later["total"]) == (2, 4)
    assert ("cpu", 4) not in {(c["target"], c["batch_size"]) for c in later["pending"]}


def test_a_closed_run_is_not_running_and_a_run_without_progress_rows_is_all_done(running):
    running.store(*[(t, b, 0.72, 50.0, "ok") for t, b in PLANNED if (t, b) != ("cpu", 1)])
    running.close()
    closed = _progress(running.url)
    assert (closed["status"], closed["running"], closed["done"], closed["total"]) == ("complete", False, 4, 4)
    assert closed["pending"] == []
    # Published whole, the way every run was before issue 26: its stored cells are its matrix.
    old = _progress(running.url, CLOSED)
    assert (old["done"], old["total"], old["pending"], old["updated_at"]) == (4, 4, [], None)
    with pytest.raises(BadInput, match="no run"):
        _progress(running.url, "manual__1999-01-01")


def _rows(table: tables.Table) -> dict:
    return {row[0]: dict(zip(table.headers, row, strict=True)) for row in table.rows}


def _pending_doc(url: str) -> dict:
    with db.session_scope(url) as session:
        doc = queries.run_document(session, RUNNING)
    return dict(doc, pending=_progress(url)["pending"])


def test_tables_show_each_pending_cell_in_its_state_and_no_best_batch_yet(running):
    doc = _pending_doc(running.url)
    accuracy = _rows(tables.accuracy_table(doc))
    assert accuracy[1]["cpu"] == tables.Percent(0.73, 0.722 - 0.01)
    assert accuracy[1]["Ascend310P3"] is CellState.TUNING and accuracy[4]["cpu"] is CellState.QUEUED
    perf = _rows(tables.perf_table(doc, "cpu"))
    assert perf[1]["cpu"] == tables.Number(100.0) and perf[4]["Ascend310P3"] is CellState.MEASURING
    assert perf[1]["Ascend310P3/cpu"] is None  # beside a cell still to come: no ratio yet, not "/"
    best = perf[tables.Mark.BEST_BATCH]
    assert best["cpu"] is tables.Mark.PENDING and best["Ascend310P3"] is tables.Mark.PENDING
    assert best["Ascend310P3/cpu"] is tables.Mark.PENDING
    assert tables.text(perf[4]["Ascend310P3"]) == "measuring" and tables.text(best["cpu"]) == "pending"


def test_columns_keep_their_place_while_the_cells_are_stored(running):
    before = tables.perf_table(_pending_doc(running.url)).headers
    running.store(("Ascend310P3", 4, 0.72, 300.0, "ok"))
    assert tables.perf_table(_pending_doc(running.url)).headers == before
    assert tables.accuracy_table(_pending_doc(running.url)).headers == ["batch", "Ascend310P3", "cpu", "guide"]


def test_cann_summary_leaves_a_running_run_out_until_it_closes(running):
    def cpu_b1(rows):
        return next(r for r in rows if (r["target"], r["batch_size"]) == ("cpu", 1))

    with db.session_scope(running.url) as session:
        cann_summary.rebuild(session)  # whatever wrote the running run's cells, the summary stays closed runs'
    with db.session_scope(running.url) as session:
        kept, aggregate = cann_summary.rows(session), cann_summary.computed(session)
    assert kept == aggregate
    assert (cpu_b1(kept)["runs"], cpu_b1(kept)["fps_best"], cpu_b1(kept)["latest_run_id"]) == (1, 40.0, CLOSED)

    running.store(*[(t, b, 0.72, 50.0, "ok") for t, b in PLANNED if (t, b) != ("cpu", 1)])
    running.close()
    with db.session_scope(running.url) as session:
        closed = cpu_b1(cann_summary.rows(session))
    assert (closed["runs"], closed["fps_best"], closed["latest_run_id"]) == (2, 100.0, RUNNING)


def test_history_charts_closed_runs_only_and_lists_the_running_one_with_its_count(running):
    with db.session_scope(running.url) as session:
        points = history.points(session)
        page, _next = history.points_page(session, None, None, None, runs=10)
        runs, _more = history.runs_between(session, None, None, limit=10)
    assert {p["run_id"] for p in points} == {CLOSED} and {p["run_id"] for p in page} == {CLOSED}
    listed = {r["id"]: r for r in runs}
    assert listed[RUNNING]["status"] == "running"
    assert (listed[RUNNING]["perf_cells"], listed[RUNNING]["planned_cells"]) == (1, 4)
    assert listed[CLOSED]["planned_cells"] is None
    assert tables.stored_cells(listed[RUNNING]) == "1 of 4" and tables.stored_cells(listed[CLOSED]) == 4


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_says_running_with_the_count_and_the_pending_cells_states(running, capsys):
    code, out, _ = run_cli(capsys, "results", "--db", running.url, "show", "--run", RUNNING)
    assert code == 0
    assert f"run {RUNNING} (running)" in out
    assert "RUNNING: 1 of 4 cells stored; queued 1, tuning 1, measuring 1; last update" in out
    accuracy = out.split("Accuracy")[1].split("Performance")[0].splitlines()
    row_1 = next(line for line in accuracy if line.startswith("1 "))
    assert row_1.split()[:3] == ["1", "tuning", "73.00"]
    code, out, err = run_cli(capsys, "results", "--db", running.url, "show", "--run", RUNNING, "--format", "json")
    assert code == 0 and json.loads(out)["run"]["status"] == "running"
    assert f"run {RUNNING} is still running: 1 of 4 cells stored so far" in err


def test_list_counts_a_running_runs_cells_of_its_planned_ones(running, capsys):
    code, out, _ = run_cli(capsys, "results", "--db", running.url, "list")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith(RUNNING))
    assert "running" in line and "1 of 4" in line
    code, out, _ = run_cli(capsys, "results", "--db", running.url, "list", "--format", "json")
    assert code == 0
    by_id = {r["id"]: r for r in json.loads(out)}
    assert by_id[RUNNING]["planned_cells"] == 4 and by_id[CLOSED]["planned_cells"] is None


def test_export_leaves_a_running_run_out_unless_it_is_named(running, capsys):
    code, out, err = run_cli(capsys, "results", "--db", running.url, "export")
    assert code == 0
    assert [d["run"]["id"] for d in json.loads(out)["runs"]] == [CLOSED]
    assert f"left out run {RUNNING}: still running" in err
    code, out, err = run_cli(capsys, "results", "--db", running.url, "export", "--run", RUNNING, "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 2  # the header and the one cell stored
    assert f"run {RUNNING} is still running: 1 of 4 cells stored so far" in err


def test_compare_says_which_side_is_still_running(running, capsys):
    code, out, _ = run_cli(capsys, "results", "--db", running.url, "compare", CLOSED, RUNNING)
    assert code == 0
    heading = out.splitlines()[0]
    assert f"A = {CLOSED} (CANN 8.0)" in heading and f"B = {RUNNING} (CANN 8.0, RUNNING: cells so far)" in heading
