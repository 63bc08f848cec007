"""A run published as it happens (issue 26) and a bad night that still delivers (issue 25): the run opened
as running with its matrix, each cell stored (once) as measured and gated on its own, each finding claimed
for notification once, a cell whose task died published with what its last progress mark says, and the
close publishing every planned cell."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from erfnet_tasks import pipeline, progress, report
from erfnet_tasks.errors import BadInput, Transient
from erfnet_tasks.records import CellState, CellStatus, to_xcom
from erfnet_tasks.results import db, queries
from erfnet_tasks.results.models import CellProgress, Finding, Performance, Run


@pytest.fixture
def live(results_url, monkeypatch, tmp_path, make):
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", results_url)
    monkeypatch.setenv("ERFNET_WORKER_HOSTNAME", "npu-host-a")
    env = make.env(targets=("cpu", "Ascend310P3"), params={"batch_sizes": [1, 2]}, work_dir=str(tmp_path))
    assert report.open_run(env) == 4
    return env


def _states(url):
    with db.session_scope(url) as session:
        rows = session.scalars(sa.select(CellProgress).order_by(CellProgress.target, CellProgress.batch_size))
        return {(r.target, r.batch_size): (r.state, r.host, r.error_kind) for r in rows}


def _perf(url, run_id):
    with db.session_scope(url) as session:
        rows = session.scalars(sa.select(Performance).where(Performance.run_id == run_id))
        return {(r.target, r.batch_size): (r.status, r.host, r.error) for r in rows}


def test_a_run_opens_running_with_its_whole_matrix_queued(live, results_url):
    with db.session_scope(results_url) as session:
        run = session.get(Run, live.run_id)
        assert run.status == "running" and run.finished_at is None
    assert _states(results_url) == {
        ("Ascend310P3", 1): ("queued", None, None),
        ("Ascend310P3", 2): ("queued", None, None),
        ("cpu", 1): ("queued", None, None),
        ("cpu", 2): ("queued", None, None),
    }


def test_each_cell_is_stored_the_moment_it_is_measured_and_a_retry_replaces_it(live, results_url, make):
    first = make.measured("cpu", 1, fps=10.0)
    report.store_cell(first, live)
    assert _perf(results_url, live.run_id) == {("cpu", 1): ("ok", None, None)}
    report.store_cell(make.measured("cpu", 1, fps=12.0), live)  # a retried cell: one row, the new one
    with db.session_scope(results_url) as session:
        doc = queries.run_document(session, live.run_id)
    assert [(p["target"], p["batch_size"], p["throughput_fps"]) for p in doc["perf"]] == [("cpu", 1, 12.0)]
    assert doc["run"]["status"] == "running"
    assert _states(results_url)[("cpu", 1)][0] == "stored"


def test_a_finding_is_found_as_its_cell_is_stored_and_claimed_for_notification_once(live, results_url, make):
    bad = make.measured("cpu", 2, miou=0.5)  # 50.00 < 72.20 - 1.00
    found = report.store_cell(bad, live)
    assert [(f["rule"], f["target"], f["batch_size"]) for f in found] == [("accuracy_below_reference", "cpu", 2)]
    claimed = report.claim_new_findings(live, bad.planned)
    assert [f["rule"] for f in claimed] == ["accuracy_below_reference"]
    report.store_cell(bad, live)  # stored again (a retry): found again, but never notified twice
    assert report.claim_new_findings(live, bad.planned) == []
    good = make.measured("cpu", 1, miou=0.73)
    assert report.store_cell(good, live) == [] and report.claim_new_findings(live, good.planned) == []

    # The close keeps the findings and when each was notified; the gate then lists them all.
    cells = report.with_unstored_cells(live, [good, bad])
    report.publish(report.build_run_document(live, make.model(), make.prep(), cells), live)
    with db.session_scope(results_url) as session:
        kept = session.scalars(sa.select(Finding).where(Finding.run_id == live.run_id)).all()
        assert [(f.rule, f.notified_at is not None) for f in kept] == [("accuracy_below_reference", True)]
    findings = report.regression_findings(live.run_id, dict(live.params), results_url)
    rules = sorted((f["rule"], f["target"], f["batch_size"]) for f in findings)
    assert rules == [
        ("accuracy_below_reference", "cpu", 2),
        ("cell_not_measured", "Ascend310P3", 1),
        ("cell_not_measured", "Ascend310P3", 2),
    ]
    with db.session_scope(results_url) as session:
        notified = {
            (f.target, f.batch_size): f.notified_at is not None
            for f in session.scalars(sa.select(Finding).where(Finding.run_id == live.run_id))
        }
    assert notified == {("cpu", 2): True, ("Ascend310P3", 1): False, ("Ascend310P3", 2): False}


def test_the_close_publishes_every_planned_cell_once_and_results_json(live, results_url, make, tmp_path):
    stored = [make.measured("cpu", 1), make.measured("cpu", 2)]
    for cell in stored:
        report.store_cell(cell, live)
    out = pipeline.close_run(
        to_xcom(live), to_xcom(make.model()), to_xcom(make.prep()), True, [to_xcom(c) for c in stored] + [None]
    )
    assert out["status"] == "incomplete"
    perf = _perf(results_url, live.run_id)
    assert sorted(perf) == [("Ascend310P3", 1), ("Ascend310P3", 2), ("cpu", 1), ("cpu", 2)]
    assert perf[("Ascend310P3", 1)][0] == "task_failed" and "store task failed" in perf[("Ascend310P3", 1)][2]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["run"]["status"] == "incomplete" and len(doc["perf"]) == 4
    assert all(state == "stored" for state, _host, _kind in _states(results_url).values())  # nothing pending


def test_a_run_that_measured_nothing_of_its_own_is_removed_at_the_close(live, results_url, make):
    assert pipeline.close_run(to_xcom(live), to_xcom(make.model()), to_xcom(make.prep()), False, []) == {
        "run_id": live.run_id,
        "skipped": True,
    }
    with db.session_scope(results_url) as session:
        assert session.get(Run, live.run_id) is None
        assert session.scalar(sa.select(sa.func.count()).select_from(CellProgress)) == 0


def test_a_run_whose_model_was_never_built_closes_failed(live, results_url):
    assert pipeline.close_run(to_xcom(live), None, None, None, [])["status"] == "failed"


# ----------------------------------------------------------------- a cell whose task died


def test_a_step_marks_its_state_and_host_and_records_the_error_it_raises(live, results_url, make):
    cell = make.planned("Ascend310P3", 1)
    with progress.step(live.run_id, cell, CellState.MEASURING, try_number=2):
        assert _states(results_url)[("Ascend310P3", 1)] == ("measuring", "npu-host-a", None)
    with pytest.raises(BadInput), progress.step(live.run_id, cell, CellState.MEASURING):
        raise BadInput("the outputs hold labels, the cell planned logits")
    assert _states(results_url)[("Ascend310P3", 1)] == ("measuring", "npu-host-a", "BadInput")
    fate = progress.fate(live.run_id, cell)
    assert fate.status == CellStatus.TASK_FAILED and fate.host == "npu-host-a"
    assert "BadInput: the outputs hold labels" in fate.error and "while measuring on npu-host-a" in fate.error


def test_a_worker_killed_mid_measure_leaves_a_host_lost_cell_stored_with_its_host(live, results_url, make):
    cell = make.planned("Ascend310P3", 2)
    progress.mark(live.run_id, cell, CellState.MEASURING, try_number=1)  # then SIGKILL: no other word
    stored = pipeline.store_cell(to_xcom(cell), None, None, to_xcom(live))
    assert stored["inference"]["status"] == "host_lost"
    status, host, error = _perf(results_url, live.run_id)[("Ascend310P3", 2)]
    assert (status, host) == ("host_lost", "npu-host-a")
    assert "stopped while measuring on npu-host-a" in error and "npu-Ascend310P3" in error


def test_a_cell_no_worker_ever_started_is_host_lost_and_its_compiled_model_is_kept(live, results_url, make):
    cell = make.planned("Ascend310P3", 1)
    compiled = make.measured("Ascend310P3", 1).compiled
    progress.mark(live.run_id, cell, CellState.COMPILED)
    stored = pipeline.store_cell(to_xcom(cell), to_xcom(compiled), None, to_xcom(live))
    assert stored["compiled"]["compilation"]["status"] == "ok"
    assert stored["inference"]["status"] == "host_lost"
    assert "no worker of npu-Ascend310P3 started its measurement" in stored["inference"]["error"]


@pytest.mark.parametrize(
    ("last", "status", "words"),
    [
        ((CellState.QUEUED, None, None, None), CellStatus.HOST_LOST, "started its compile"),
        ((CellState.TUNING, "h", None, None), CellStatus.HOST_LOST, "stopped while tuning on h"),
        ((CellState.MEASURING, "h", "Timeout, PID: 7", "AirflowTaskTimeout"), CellStatus.TIMED_OUT, "Timeout"),
        ((CellState.COMPILING, "h", "atc died", "RuntimeError"), CellStatus.TASK_FAILED, "RuntimeError: atc died"),
        (None, CellStatus.TASK_FAILED, "no record"),
    ],
)
def test_the_verdict_on_a_last_mark(make, last, status, words):
    fate = progress.judge(make.planned("Ascend310", 1), last)
    assert fate.status == status and words in fate.error and fate.error.startswith(status.value)


def test_an_unreadable_progress_is_transient_never_a_lost_cell(make):
    with pytest.raises(Transient, match="cannot read the progress"):
        progress.fate("r", make.planned(), url="postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_marks_are_best_effort_while_the_database_is_down(make):
    cell = make.planned()
    with progress.step("r", cell, CellState.COMPILING, url="postgresql+psycopg://nobody@127.0.0.1:1/none"):
        pass  # the step ran: a lost live state never costs the work


def test_a_tuning_gives_way_to_each_measurement_of_its_chip_until_it_holds_a_device(results_url, monkeypatch, make):
    """What an AOE tuning of the chip gives way to: plain cells queued, compiling or compiled (waiting for a
    device) and tuned cells compiled; not a tuning waiting to start (queued), a cell measuring (it holds its
    device), one stored, or one whose try raised."""
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", results_url)
    params = {"batch_sizes": [1, 2]}
    env = make.env(
        targets=("Ascend310P3", "Ascend310P3+AOE"), params=params, run_id="manual__aoe", npu_chips=["Ascend310P3"]
    )
    assert report.open_run(env) == 4
    plain = [make.planned("Ascend310P3", b) for b in (1, 2)]
    tuned = [make.planned("Ascend310P3+AOE", b) for b in (1, 2)]
    run = env.run_id
    assert progress.measurements_pending(run, "Ascend310P3")  # the plain cells are queued
    progress.mark(run, plain[0], CellState.COMPILED)
    progress.mark(run, plain[1], CellState.MEASURING)
    assert progress.measurements_pending(run, "Ascend310P3")  # plain bs1 waits for a device
    progress.mark(run, plain[0], CellState.MEASURING)
    assert not progress.measurements_pending(run, "Ascend310P3")  # the tunings, queued, are no measurement
    progress.mark(run, tuned[0], CellState.TUNING)
    assert not progress.measurements_pending(run, "Ascend310P3")
    progress.mark(run, tuned[0], CellState.COMPILED)
    assert progress.measurements_pending(run, "Ascend310P3")  # tuned: its measurement goes before the next tuning
    with pytest.raises(RuntimeError), progress.step(run, tuned[0], CellState.COMPILED):
        raise RuntimeError("the measurement's first try failed")
    assert not progress.measurements_pending(run, "Ascend310P3")  # a failed try holds nothing back
    assert not progress.measurements_pending(run, "Ascend310")  # no cell of that chip in the run
    assert not progress.measurements_pending(run, "Ascend310P3", url="postgresql+psycopg://nobody@127.0.0.1:1/x")


def test_a_measurement_with_no_device_yet_stays_compiled_without_an_error(live, make, results_url, monkeypatch):
    """DeviceWait is no failure: the cell stays `compiled` (waiting for a device), no error recorded; the
    cell turns `measuring` only once it holds a device."""
    from erfnet_tasks import measure
    from erfnet_tasks.devices import DeviceWait

    def no_device(cell, prep, env, claim):
        raise DeviceWait("no device of Ascend310P3 for this task after 60s (all busy)", 30)

    monkeypatch.setattr(measure, "measure_cell", no_device)
    compiled = make.measured("Ascend310P3", 1).compiled
    with pytest.raises(DeviceWait):
        pipeline.measure_cell(to_xcom(compiled), to_xcom(make.prep()), to_xcom(live), try_number=1)
    assert _states(results_url)[("Ascend310P3", 1)] == ("compiled", "npu-host-a", None)

    def measured_on_a_device(cell, prep, env, claim):
        assert _states(results_url)[("Ascend310P3", 1)][0] == "compiled"
        claim.on_leased()
        assert _states(results_url)[("Ascend310P3", 1)][0] == "measuring"
        return make.measured("Ascend310P3", 1)

    monkeypatch.setattr(measure, "measure_cell", measured_on_a_device)
    pipeline.measure_cell(to_xcom(compiled), to_xcom(make.prep()), to_xcom(live), try_number=2)
