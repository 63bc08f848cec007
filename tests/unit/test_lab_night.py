"""bench/lab_night.py's figures from a small hand-made night: the lower bound, where the gap goes, and
the issue's targets, each worked out by hand below."""

from __future__ import annotations

from datetime import UTC, datetime

import lab_night  # bench/lab_night.py
import pytest


def _run(tool, device, start, end, batch=1, chip="AscendX", **extra):
    return {"tool": tool, "host": "h", "device": device, "chip": chip, "batch": batch, "start": start, "end": end,
            "ok": True, **extra}  # fmt: skip


# Host h, two AscendX devices. Plain cell bs1: atc 10-12, measured on device 0 at 20-25. Plain bs4: atc
# 12-14, measured on device 0 at 25-30 (device 1 tuning, device 0 busy with bs1 from 20 to 25). AOE bs1:
# jobs on device 1 at 10-40 and 40-70, measured there at 75-80. The trigger at 0, the run's end at 100.
TIMELINE = [
    _run("atc", None, 10, 12, task_pid=101),
    _run("aoe", 1, 10, 40, job_type=1),
    _run("atc", None, 12, 14, batch=4),
    _run("ais_bench", 0, 20, 25, tuned=False, task_pid=201),
    _run("ais_bench", 0, 25, 30, batch=4, tuned=False),
    _run("aoe", 1, 40, 70, job_type=2),
    _run("ais_bench", 1, 75, 80, tuned=True),
]
PUBLISHED = {("AscendX", 1): 30.0, ("AscendX", 4): 35.0, ("AscendX+AOE", 1): 90.0}


def _ti(pid, start, end, scheduled=None, host="h"):
    def iso(t):
        return datetime.fromtimestamp(t, UTC).isoformat() if t is not None else None

    return {"hostname": host, "pid": pid, "scheduled_when": iso(scheduled), "queued_when": iso(scheduled),
            "start_date": iso(start), "end_date": iso(end)}  # fmt: skip


# bs1's two tasks: its compile from 9 to 13, its measurement scheduled at 15, started at 17, ended at 27.
# The same pid 201 on another host, or earlier on this one, is another task.
TIS = [_ti(201, 1, 5), _ti(201, 16, 28, 15, host="other"), _ti(101, 9, 13, 8), _ti(201, 17, 27, 15)]


@pytest.fixture
def night():
    return lab_night.analyse(0.0, 100.0, TIMELINE, PUBLISHED, TIS)


def test_the_bound_is_the_first_tool_plus_the_busiest_device_or_the_longest_chain(night):
    # first tool at 10; device 1 busy 30 + 30 + 5 = 65 s, device 0 10 s; the AOE cell's chain 60 + 5 = 65 s
    assert night["first_tool_s"] == 10
    assert night["device_busy_s"] == {"h:0 (AscendX)": 10, "h:1 (AscendX)": 65}
    assert night["longest_chain_s"] == 65
    assert night["bound_s"] == 75
    assert night["makespan_s"] == 100 and night["ratio"] == pytest.approx(100 / 75)


def test_the_gap_is_split_into_ready_work_idle_upstream_idle_and_the_tail(night):
    # device 1 is idle 70-75 while the AOE cell is compiled and unmeasured, and after 80 until the end
    assert night["gap"] == {"idle_work_ready_s": 5, "idle_nothing_ready_s": 0, "tail_after_last_use_s": 20}
    # device 0's idle between the first tool (10) and its last use (30): 20 - 10 busy
    assert night["device_idle_s"]["h:0 (AscendX)"] == 10


def test_a_cells_wait_for_its_measurement_is_split_into_queueing_for_a_device_and_airflow(night):
    cells = {c["cell"]: c for c in night["cells"]}
    # bs1: compiled at 12, measured at 20, device 0 free the whole time: all Airflow
    assert (cells["AscendX bs1"]["queued_for_device_s"], cells["AscendX bs1"]["not_started_s"]) == (0, 8)
    # bs4: compiled at 14, measured at 25; both devices busy from 20 to 25
    assert (cells["AscendX bs4"]["queued_for_device_s"], cells["AscendX bs4"]["not_started_s"]) == (5, 6)
    assert cells["AscendX+AOE bs1"]["published_after_compile_s"] == 20


def test_a_cells_way_through_its_two_tasks_is_read_from_the_task_instances_that_ran_its_tools(night):
    hops = {k: v for k, v in {c["cell"]: c for c in night["cells"]}["AscendX bs1"].items() if k.endswith("_s")}
    assert hops == pytest.approx(
        {
            "compiled_s": 12,
            "measure_start_s": 20,
            "queued_for_device_s": 0,
            "not_started_s": 8,
            "compile_task_after_tool_s": 1,  # atc ended at 12, its task at 13
            "until_measure_scheduled_s": 2,  # 13 -> 15
            "measure_scheduled_to_started_s": 2,  # 15 -> 17
            "measure_task_to_tool_s": 3,  # 17 -> 20
            "measure_task_after_tool_s": 2,  # 25 -> 27
            "published_after_measure_task_s": 3,  # 27 -> 30
            "published_s": 30,
            "published_after_compile_s": 18,
        }
    )
    # no task instance ran bs4's tools (no pid recorded): no hops, the timeline's figures only
    assert "until_measure_scheduled_s" not in {c["cell"]: c for c in night["cells"]}["AscendX bs4"]


def test_the_issues_targets(night):
    assert night["first_published_s"] == 30 and night["plain_published_s"] == 35
    met = {t["target"]: t["met"] for t in night["targets"]}
    assert met == {
        "AscendX: plain cells all published before its first AOE tuning ends": True,  # 35 < 70
        "first cell published within 60 s of the first compile": True,  # bs1 at 30, atc of bs1 ended at 12
        "makespan within 1.2x of the lower bound": False,  # 1.33x
    }


def test_a_plain_cell_never_published_fails_its_chips_target():
    night = lab_night.analyse(0.0, 100.0, TIMELINE, {("AscendX", 1): 30.0}, [])
    assert night["plain_published_s"] is None
    assert not night["targets"][0]["met"]


def test_a_first_cell_published_late_misses_its_target_whatever_its_own_compile():
    # all cells published together at 90, long after the first compile (12): the old DAG's way
    night = lab_night.analyse(0.0, 100.0, TIMELINE, dict.fromkeys(PUBLISHED, 90.0), [])
    first = next(t for t in night["targets"] if t["target"].startswith("first cell"))
    assert not first["met"] and first["value"].endswith(": 78 s")
