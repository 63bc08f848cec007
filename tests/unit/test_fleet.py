"""The NPU fleet on one host: `erfnet worker-queues` from npu-smi, the stand-ins' device-to-chip map and
shared-device detection, and the host-local device leases (erfnet_tasks/devices.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import harness
import pytest

from erfnet_tasks import cli, devices, fleet
from erfnet_tasks.backends import InferFailed, get_backend

REPO = harness.STANDINS.parent.parent


def erfnet(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "erfnet_tasks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_worker_queues_one_per_chip_model_in_order(tmp_path, monkeypatch, capsys):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3,Ascend310P3,Ascend310")
    assert cli.main(["worker-queues"]) == 0
    assert capsys.readouterr().out == "npu-Ascend310P3,npu-Ascend310\n"


def test_worker_queues_prefix_and_a_changed_host_need_no_edit(tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310")
    monkeypatch.setenv("ERFNET_NPU_QUEUE", "lab")
    first = erfnet("worker-queues", env=dict(os.environ))
    monkeypatch.setenv("STANDIN_NPU_CHIP", "Ascend310P3")  # a card swapped
    second = erfnet("worker-queues", env=dict(os.environ))
    assert (first.returncode, first.stdout, second.stdout) == (0, "lab-Ascend310\n", "lab-Ascend310P3\n")


def test_worker_queues_without_npu_is_one_line_and_nonzero(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STANDIN_", "ERFNET_"))}
    env["PATH"] = os.path.dirname(sys.executable)  # no npu-smi
    result = erfnet("worker-queues", env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("erfnet: error: npu-smi info lists no NPU") and result.stderr.count("\n") == 1


def test_om_loads_only_on_a_device_of_its_chip(fixed_onnx, tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310,Ascend310P3")
    prep = harness.write_prep(tmp_path / "prep", ["a.bin"])[0].parent
    om = get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=1).path
    with pytest.raises(InferFailed) as info:
        get_backend("ascend").infer(om, prep, tmp_path / "out0", batch_size=1, device=0)
    assert info.value.status == "model_load_failed"
    result = get_backend("ascend").infer(om, prep, tmp_path / "out1", batch_size=1, device=1)
    assert result.throughput_fps > 0


def test_two_processes_on_one_device_are_detected_and_recorded(fixed_onnx, tmp_path, monkeypatch):
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3")
    prep = harness.write_prep(tmp_path / "prep", ["a.bin", "b.bin"])[0].parent
    om = get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=1).path
    argv = [sys.executable, "-m", "ais_bench", "--model", str(om), "--input", str(prep), "--device", "0", "--loop", "3"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(300) for p in procs] == [0, 0]
    uses = harness.device_uses(record)
    assert len(uses) == 2 and {u["device"] for u in uses} == {0}
    overlapped = max(u["start"] for u in uses) < min(u["end"] for u in uses)
    assert overlapped, uses  # three loops over two full-size images: the runs overlap
    assert sorted(u["shared"] for u in uses) == [False, True]


def test_leases_take_different_devices_of_the_chip_and_wait_when_all_are_busy(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    chips = ["Ascend310", "Ascend310P3", "Ascend310P3"]
    got, third = [], []
    with devices.lease("Ascend310P3", chips=chips) as first, devices.lease("Ascend310P3", chips=chips) as second:
        got += [first, second]

        def wait_for_third():
            with devices.lease("Ascend310P3", chips=chips, poll=0.05) as device:
                third.append(device)

        caplog.set_level("INFO", logger="erfnet_tasks.devices")
        waiter = threading.Thread(target=wait_for_third)
        waiter.start()
        time.sleep(0.5)
        assert third == [] and "waiting for a device of Ascend310P3: all busy (devices 1,2)" in caplog.text
    waiter.join(10)
    assert sorted(got) == [1, 2] and third and third[0] in (1, 2)


def test_a_dag_task_waits_briefly_then_gives_its_slot_back_with_when_to_come_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    chips = ["Ascend310"]
    leased = []
    claim = devices.Claim(wait_s=0.3, recheck_s=7, on_leased=lambda: leased.append("held"))
    with devices.lease("Ascend310", chips=chips):
        started = time.monotonic()
        with pytest.raises(devices.DeviceWait) as info, devices.lease("Ascend310", chips=chips, poll=0.05, claim=claim):
            pass
        waited = time.monotonic() - started
    assert 0.3 <= waited < 5 and info.value.seconds == 7 and leased == []
    assert "no device of Ascend310 for this task" in str(info.value) and "all busy" in str(info.value)
    with devices.lease("Ascend310", chips=chips, claim=claim) as device:  # free now: taken at once, and said
        assert device == 0 and leased == ["held"]


def test_a_tuning_leaves_a_device_to_pending_plain_cells_without_waiting_for_it(tmp_path, monkeypatch):
    """keep_free=1 while measurements are pending: a tuning takes a device only if another stays free; one
    it would have to take from them is never waited for in-process (that wait held the pool slots the plain
    measurements needed: the deadlock at the lab's pool size), and the last device is taken once none is."""
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    chips = ["Ascend310P3", "Ascend310P3"]
    pending = [True]
    tuning = devices.Claim(wait_s=60, recheck_s=5, keep_free=lambda: 1 if pending[0] else 0)
    with devices.lease("Ascend310P3", chips=chips, claim=tuning) as first:
        started = time.monotonic()
        with pytest.raises(devices.DeviceWait) as info, devices.lease("Ascend310P3", chips=chips, claim=tuning):
            pass
        assert time.monotonic() - started < 5  # at once, though wait_s is 60
        assert "keeping 1 free for the run's measurements" in str(info.value) and info.value.seconds == 5
        with devices.lease("Ascend310P3", chips=chips) as plain:  # the plain cell gets the device left
            assert plain != first
        pending[0] = False
        with devices.lease("Ascend310P3", chips=chips, claim=tuning) as second:
            assert second != first


def test_a_one_device_chip_measures_its_plain_cells_before_it_tunes(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    tuning = devices.Claim(wait_s=60, keep_free=lambda: 1)
    with pytest.raises(devices.DeviceWait), devices.lease("Ascend310", chips=["Ascend310"], claim=tuning):
        pass  # the device is free, and kept: a plain cell is still to be measured


def test_tunings_that_start_together_leave_the_device_they_meant_to_leave(tmp_path, monkeypatch):
    """Counting the free devices and taking one is atomic: of eight tunings at once on two devices, with
    measurements pending, exactly one tunes."""
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    chips = ["Ascend310P3", "Ascend310P3"]
    tuning = devices.Claim(wait_s=60, keep_free=lambda: 1)
    go, done, tuned, deferred = threading.Barrier(8), threading.Event(), [], []

    def tune():
        go.wait()
        try:
            with devices.lease("Ascend310P3", chips=chips, claim=tuning) as device:
                tuned.append(device)
                done.wait(10)
        except devices.DeviceWait:
            deferred.append(1)

    threads = [threading.Thread(target=tune) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(tuned) + len(deferred) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tuned) == 1 and len(deferred) == 7
    done.set()
    for thread in threads:
        thread.join(10)


def test_without_a_wait_limit_a_tuning_waits_in_process_for_the_plain_cells(tmp_path, monkeypatch):
    """The CLI's way (no Claim.wait_s): a tuning keeping a device free waits until none is pending."""
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    pending = threading.Event()
    pending.set()
    tuning = devices.Claim(keep_free=lambda: 1 if pending.is_set() else 0)
    tuned = []

    def tune():
        with devices.lease("Ascend310", chips=["Ascend310"], poll=0.05, claim=tuning) as device:
            tuned.append(device)

    waiter = threading.Thread(target=tune)
    waiter.start()
    time.sleep(0.4)
    assert tuned == []
    pending.clear()
    waiter.join(10)
    assert tuned == [0]


def test_no_device_of_the_chip_is_device_open_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    with pytest.raises(InferFailed) as info, devices.lease("Ascend310", chips=["Ascend310P3"]):
        pass
    assert info.value.status == "device_open_failed"


def test_a_killed_holder_leaves_no_stale_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "leases"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom erfnet_tasks import devices\n"
            "with devices.lease('Ascend310', chips=['Ascend310']):\n    print('held', flush=True)\n    time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        cwd=REPO,
    )
    assert holder.stdout.readline().strip() == "held"
    assert devices._try_lock(0) is None  # held by the other process
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    with devices.lease("Ascend310", chips=["Ascend310"], poll=0.05) as device:
        assert device == 0


def test_configured_chips_and_queue_names(monkeypatch):
    monkeypatch.setenv("ERFNET_NPU_CHIPS", "Ascend310P3")
    assert fleet.queue_for("Ascend310P3") == "npu-Ascend310P3" and fleet.chip_of_queue("npu-Ascend310") == "Ascend310"
    with pytest.raises(Exception, match="no NPU tasks for chip Ascend310: add it to ERFNET_NPU_CHIPS"):
        fleet.check_configured(["Ascend310"])


def test_configured_chips_must_be_chip_names(monkeypatch):
    from erfnet_tasks import settings
    from erfnet_tasks.errors import ErfnetError

    monkeypatch.delenv("ERFNET_NPU_CHIPS", raising=False)
    assert settings.npu_chips() == ["Ascend310", "Ascend310P3"]  # the guide's two columns
    monkeypatch.setenv("ERFNET_NPU_CHIPS", "Ascend310P3, Ascend910B3,Ascend310P3")
    assert settings.npu_chips() == ["Ascend310P3", "Ascend910B3"]
    monkeypatch.setenv("ERFNET_NPU_CHIPS", "Ascend310;rm")
    with pytest.raises(ErfnetError, match="ERFNET_NPU_CHIPS must list chips such as Ascend310P3"):
        settings.npu_chips()


def test_no_broker_means_auto_is_this_hosts_chips_and_a_dead_broker_is_told_fast(tmp_path, monkeypatch):
    from erfnet_tasks import plan

    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3,Ascend310")
    assert fleet.live_chips(None) is None
    assert plan.fleet_chips(None) == ["Ascend310P3", "Ascend310"]
    assert plan.fleet_chips([]) == []  # a fleet without NPU workers: auto then means cpu
    started = time.monotonic()
    assert fleet.live_chips("redis://127.0.0.1:1/0", timeout=1.0) is None  # nothing listens on port 1
    assert time.monotonic() - started < 30


def test_aoe_tunes_on_a_leased_device_of_its_own_chip(fixed_onnx, tmp_path, monkeypatch, make):
    from erfnet_tasks import build
    from erfnet_tasks.fsutil import sha256_file

    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310,Ascend310P3")
    monkeypatch.setenv("ERFNET_WORKER_HOSTNAME", "host-x")
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "data"))  # the compile cache
    cell = make.planned("Ascend310P3+AOE", 1)
    model = make.model(fixed_onnx, sha256_file(fixed_onnx))
    compiled = build.compile_cell(cell, model, make.env(targets=["Ascend310P3+AOE"])).compilation
    assert compiled.status == "ok" and compiled.host == "host-x"
    aoe = [c["argv"] for c in harness.invocations(record) if c["tool"] == "aoe"]
    assert len(aoe) == 2 and all("--device=1" in argv for argv in aoe)  # device 1 is the 310P3
    assert {(u["device"], u["chip"], u["shared"]) for u in harness.device_uses(record)} == {(1, "Ascend310P3", False)}
