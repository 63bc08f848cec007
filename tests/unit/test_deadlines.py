"""Every step on a device has a deadline (erfnet_tasks/deadlines.py, toolrun.py): a hung ais_bench or atc
(the stand-ins' hang switch, tests/standins/standin_faults.py) is stopped there with its whole process
group, the cell says ``timed_out`` with the numbers, and the device lease is free at once."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest

from erfnet_tasks import build, deadlines, devices, measure, settings, toolrun
from erfnet_tasks.backends import CompileFailed, InferFailed, get_backend
from erfnet_tasks.errors import ErfnetError, ToolTimedOut
from erfnet_tasks.records import Compilation, CompiledCell

REPO = harness.STANDINS.parent.parent
FLOOR_S = 10  # long enough for the stand-in to load ONNX Runtime and the model before it hangs


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"  # ended, not yet reaped by its new parent


def _hangs(record: Path) -> list[dict]:
    return [e for e in harness.invocations(record) if e["tool"] == "hang"]


@pytest.fixture
def short_deadlines(monkeypatch):
    monkeypatch.setenv("ERFNET_INFER_TIMEOUT_FLOOR", str(FLOOR_S))
    monkeypatch.setenv("ERFNET_INFER_TIMEOUT_PER_IMAGE", "0.5")
    monkeypatch.setattr(toolrun, "KILL_GRACE_S", 1.0)  # the hang's child ignores SIGTERM: SIGKILL ends it


@pytest.fixture
def om_and_prep(fixed_onnx, tmp_path, monkeypatch):
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3")
    om = get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=1).path
    prep = harness.write_prep(tmp_path / "prep", ["img_0.bin"], seed=1)[0].parent
    return record, om, prep


def test_a_hung_ais_bench_is_stopped_at_its_deadline_with_every_process_of_its_group(
    om_and_prep, short_deadlines, tmp_path, monkeypatch
):
    record, om, prep = om_and_prep
    monkeypatch.setenv("STANDIN_AIS_BENCH_HANG", "Ascend310P3:1")
    started = time.monotonic()
    with pytest.raises(InferFailed) as info:
        get_backend("ascend").infer(om, prep, tmp_path / "out", batch_size=1, device=0)
    took = time.monotonic() - started
    assert FLOOR_S <= took < FLOOR_S + 1.0 + toolrun.REAP_WAIT_S + 5
    failure = info.value
    assert failure.status == "timed_out"
    assert f"past its deadline of {FLOOR_S} s (1 images x 0.5 s per image, floor {FLOOR_S} s)" in str(failure)
    cause = failure.__cause__
    assert isinstance(cause, ToolTimedOut)
    assert (cause.tool, cause.deadline_s, cause.images) == ("ais_bench", FLOOR_S, 1)
    assert FLOOR_S <= cause.elapsed_s <= took and f"stopped after {cause.elapsed_s:.0f} s" in str(failure)
    assert "stopped:" in failure.log_path.read_text() and "hang switch on" in failure.log_path.read_text()
    [hang] = _hangs(record)
    assert hang["pgid"] != os.getpgid(0)  # a group of its own, not ours
    assert _gone(hang["pid"]) and _gone(hang["child"])  # the child ignored SIGTERM: the group got SIGKILL
    assert not toolrun.group_members(hang["pgid"])


def test_a_timed_out_cell_is_recorded_and_its_device_lease_is_free_at_once(
    om_and_prep, short_deadlines, tmp_path, monkeypatch, make
):
    _, om, prep = om_and_prep
    (tmp_path / "standin-npu-state" / "ais_bench.hang").write_text(om.name + "\n")  # the file switch
    planned = make.planned("Ascend310P3", 1)
    compilation = Compilation(status="ok", path=str(om), sha256=None, seconds=0.0, cache_hit=False, error=None)
    env = make.env(targets=["Ascend310P3"], work_dir=str(tmp_path / "work"))
    prep = make.prep(prep_dir=str(prep), gt_dir=str(tmp_path), images=1)
    measured = measure.measure_cell(CompiledCell(planned=planned, compilation=compilation), prep, env)
    assert measured.inference.status == "timed_out" and measured.inference.summary is None
    assert measured.evaluation is None
    assert measured.inference.error.startswith("timed_out: ais_bench timed out: stopped after ")
    assert f"deadline of {FLOOR_S} s" in measured.inference.error and measured.inference.device == "0"
    fd = devices._try_lock(0)  # our lease, without waiting
    assert fd is not None
    os.close(fd)
    with open(tmp_path / "standin-npu-state" / "device0.busy", "a") as busy:  # and the device itself
        fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert [p for p in (tmp_path / "work" / "outputs" / "Ascend310P3_bs1").iterdir() if p.is_dir()] == []


def test_a_slow_device_within_its_deadline_is_measured(om_and_prep, tmp_path, monkeypatch):
    record, om, prep = om_and_prep
    monkeypatch.setenv("STANDIN_AIS_BENCH_DELAY", "Ascend310P3:1=2")
    monkeypatch.setenv("STANDIN_AIS_BENCH_HANG", "Ascend310P3:8,other_model")  # matches nothing here
    result = get_backend("ascend").infer(om, prep, tmp_path / "out", batch_size=1, device=0)
    assert result.throughput_fps > 0 and result.summary_path.is_file()
    [use] = harness.device_uses(record)
    assert use["end"] - use["start"] >= 2 and _hangs(record) == []


def test_a_hung_atc_is_a_compile_failure_that_says_it_timed_out(fixed_onnx, tmp_path, monkeypatch, make):
    from erfnet_tasks.fsutil import sha256_file

    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3")
    monkeypatch.setenv("ERFNET_ATC_TIMEOUT", "3")
    monkeypatch.setenv("STANDIN_ATC_HANG", "Ascend310P3:4")
    monkeypatch.setattr(toolrun, "KILL_GRACE_S", 1.0)
    with pytest.raises(CompileFailed) as info:
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=4)
    assert re.match(
        r"atc timed out: stopped after [345] s, past its deadline of 3 s \(ERFNET_ATC_TIMEOUT 3 s\); log: ",
        str(info.value),
    )
    assert not (tmp_path / "om" / "ErfNet_bs4.om").exists()
    [hang] = _hangs(record)
    assert _gone(hang["pid"]) and _gone(hang["child"])

    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "data"))
    model = make.model(fixed_onnx, sha256_file(fixed_onnx))
    compiled = build.compile_cell(make.planned("Ascend310P3", 4), model, make.env(targets=["Ascend310P3"]))
    assert compiled.compilation.status == "failed" and "atc timed out" in compiled.compilation.error


def test_a_tool_whose_caller_is_interrupted_is_stopped_too(tmp_path, monkeypatch):
    """Airflow's execution_timeout raises in the task (SIGALRM): the tool and its child end with it."""
    monkeypatch.setattr(toolrun, "KILL_GRACE_S", 1.0)
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}')\ntime.sleep(600)\n"
    )

    def alarm(signum, frame):
        raise TimeoutError("execution_timeout")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        with pytest.raises(TimeoutError):
            toolrun.run_bounded([sys.executable, "-c", script], deadlines.Deadline(60, "test"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    leader, child = map(int, pids.read_text().split())
    assert _gone(leader) and _gone(child) and not toolrun.group_members(leader)


def test_a_tool_and_its_child_die_with_the_task_that_started_them(tmp_path):
    """A task killed with SIGKILL (its worker lost) runs no finally: the kernel tells the launcher, which
    kills the tool's group, the child that ignores SIGTERM included."""
    pid_file = tmp_path / "tool.pid"
    tool = (
        "import os, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}')\ntime.sleep(600)\n"
    )
    task = (
        "import sys\nfrom erfnet_tasks import deadlines, toolrun\n"
        f"toolrun.run_bounded([sys.executable, '-c', {tool!r}], deadlines.Deadline(600, 'test'))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", task], cwd=REPO, env=dict(os.environ))
    end = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < end and parent.poll() is None, "the tool never started"
        time.sleep(0.05)
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2 and not any(map(_gone, pids))
    parent.kill()
    parent.wait(30)
    end = time.monotonic() + 10
    while not all(map(_gone, pids)):
        assert time.monotonic() < end, "the tool or its child outlived the task that started them"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "code, status",
    [
        ("print('out'); sys.exit(3)", 3),
        ("print('out')", 0),
        ("print('out', flush=True); os.kill(os.getpid(), signal.SIGSEGV)", -11),
    ],
)
def test_the_tool_status_and_output_come_through_the_launcher(code, status):
    proc = toolrun.run_bounded([sys.executable, "-c", f"import os, signal, sys\n{code}"], deadlines.Deadline(60, "t"))
    assert (proc.returncode, proc.stdout) == (status, "out\n")


def test_a_tool_that_is_not_there_is_one_line():
    with pytest.raises(ErfnetError, match=r"^could not start no-such-tool-here: not found$"):
        toolrun.run_bounded(["no-such-tool-here"], deadlines.Deadline(5, "test"))


def test_defaults_follow_the_published_figures_and_the_work(monkeypatch):
    for name in (
        "ERFNET_INFER_TIMEOUT_PER_IMAGE",
        "ERFNET_INFER_TIMEOUT_FLOOR",
        "ERFNET_ATC_TIMEOUT",
        "ERFNET_AOE_TIMEOUT",
        "ERFNET_PROFILE_IMAGES",
        "ERFNET_DIAGNOSE_IMAGES",
        "ERFNET_DIAGNOSE_TIMEOUT_PER_IMAGE",
    ):
        monkeypatch.delenv(name, raising=False)
    # 5.7 ms per image on the slowest published NPU cell, plus 27.3 MB of files at 100 MB/s, x 4.
    assert pytest.approx(deadlines.EXPECTED_S_PER_IMAGE) == 1 / 175.8732 + 27_262_976 / 100e6
    assert deadlines.INFER_PER_IMAGE_S == 1.2 >= 4 * deadlines.EXPECTED_S_PER_IMAGE
    assert deadlines.infer_deadline(10).seconds == 120  # the floor
    assert deadlines.infer_deadline(500).seconds == 600
    assert deadlines.infer_deadline(500, loop=2).seconds == 1200
    assert (deadlines.atc_deadline().seconds, deadlines.aoe_deadline().seconds) == (900, 7200)
    # Twice (another cell's, then its own): 500 images, a profiled pass of 4 (the floor), 2 diagnosed images.
    assert deadlines.execution_timeout("measure").total_seconds() == 2 * (600 + 120 + 2 * 300) + 250 + 300
    assert deadlines.execution_timeout("compile").total_seconds() == 900 + 300
    assert deadlines.execution_timeout("compile_aoe").total_seconds() == 2 * 7200 + 300
    monkeypatch.setenv("ERFNET_INFER_TIMEOUT_PER_IMAGE", "2")
    assert deadlines.infer_deadline(500).seconds == 1000
    assert deadlines.execution_timeout("measure").total_seconds() == 2 * (1000 + 120 + 600) + 250 + 300
    monkeypatch.setenv("ERFNET_PROFILE_IMAGES", "0")
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "0")
    assert deadlines.execution_timeout("measure").total_seconds() == 2000 + 250 + 300


@pytest.mark.parametrize(
    "name", ["ERFNET_INFER_TIMEOUT_PER_IMAGE", "ERFNET_INFER_TIMEOUT_FLOOR", "ERFNET_ATC_TIMEOUT", "ERFNET_AOE_TIMEOUT"]
)
@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "1e999"])
def test_a_bad_deadline_setting_is_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ErfnetError) as info:
        (deadlines.infer_deadline(1), deadlines.atc_deadline(), deadlines.aoe_deadline())
    assert str(info.value) == f"{name} must be a number of seconds greater than 0, got {value!r}"
    monkeypatch.setenv(name, " 2.5 ")
    assert getattr(settings, name.removeprefix("ERFNET_").lower())(1.0) == 2.5


def test_a_bad_deadline_setting_stops_the_command_in_one_line_before_any_tool_runs(tmp_path, monkeypatch):
    record = harness.use_standins(monkeypatch, tmp_path)
    env = {**os.environ, "ERFNET_ATC_TIMEOUT": "soon"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "erfnet_tasks.cli",
            "compile",
            str(tmp_path / "x.onnx"),
            str(tmp_path / "om"),
            "--backend",
            "ascend",
            "--chip",
            "Ascend310P3",
            "--batch-size",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "erfnet: error: ERFNET_ATC_TIMEOUT must be a number of seconds greater than 0, got 'soon'\n"
    assert harness.invocations(record) == []


def test_a_hung_aoe_releases_the_device_it_tuned_on(fixed_onnx, tmp_path, monkeypatch, make):
    from erfnet_tasks.fsutil import sha256_file

    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3")
    monkeypatch.setenv("ERFNET_AOE_TIMEOUT", "2")
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "standin-npu-state").mkdir(exist_ok=True)
    (tmp_path / "standin-npu-state" / "aoe.hang").write_text("Ascend310P3:*\n")
    monkeypatch.setattr(toolrun, "KILL_GRACE_S", 1.0)
    model = make.model(fixed_onnx, sha256_file(fixed_onnx))
    env = make.env(targets=["Ascend310P3+AOE"])
    compiled = build.compile_cell(make.planned("Ascend310P3+AOE", 2), model, env).compilation
    assert compiled.status == "failed" and compiled.path is None
    assert re.match(
        r"aoe timed out: stopped after \d+ s, past its deadline of 2 s "
        r"\(ERFNET_AOE_TIMEOUT 2 s per AOE job\)",
        compiled.error,
    )
    assert len([c for c in harness.invocations(record) if c["tool"] == "aoe"]) == 1  # job 2 never started
    [hang] = _hangs(record)
    assert _gone(hang["pid"]) and _gone(hang["child"])
    fd = devices._try_lock(0)
    assert fd is not None
    os.close(fd)
