"""The timing stand-ins (tests/standins/standin_timing.py), driven through the Ascend backend as the
pipeline drives them: atc, AOE and the device last their modeled time times the scale, ais_bench reports
the guide's throughput, and every tool run is in its host's timeline."""

from __future__ import annotations

import itertools
import time

import harness
import pytest
from standin_timing import read_timeline

from erfnet_tasks.backends import get_backend

SCALE = 0.02
# The guide's section 7, Ascend310P3 ("310P") and the 310P-AOE column at batch 4.
GUIDE_310P_BS4_FPS = 192.398
GUIDE_310P_AOE_BS4_FPS = 379.2337
# 500 images at batch 4 on the 310P: 2 s load + 125 batches x 4 / 192.398 fps + 500 x 27.3 MB / 100 MB/s.
DEVICE_S_500_IMAGES = 2 + 125 * 4 / GUIDE_310P_BS4_FPS + 500 * 0.2726
DEVICE_S_500_IMAGES_TUNED = 2 + 125 * 4 / GUIDE_310P_AOE_BS4_FPS + 500 * 0.2726


@pytest.fixture
def timed(monkeypatch, tmp_path):
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3,Ascend310P3")
    monkeypatch.setenv("STANDIN_HOST", "host-t")
    monkeypatch.setenv("STANDIN_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("STANDIN_ATC_SECONDS", "50")
    monkeypatch.setenv("STANDIN_AOE_JOB1_SECONDS", "50")
    monkeypatch.setenv("STANDIN_AOE_JOB2_SECONDS", "100")
    monkeypatch.setenv("STANDIN_NPU_IMAGES", "500")
    return record


def _timeline(tmp_path):
    return read_timeline(tmp_path / "standin-npu-state")


def test_atc_aoe_and_the_device_last_their_modeled_time_and_each_run_is_in_the_timeline(fixed_onnx, timed, tmp_path):
    ascend = get_backend("ascend")
    prep = harness.write_prep(tmp_path / "prep", ["img_0.bin"])[0].parent
    started = time.time()
    plain = ascend.compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=4).path
    tuned = ascend.compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=4, aoe=True, device=1).path
    oms = [plain, tuned]
    results = [ascend.infer(om, prep, tmp_path / f"out{i}", batch_size=4, device=i) for i, om in enumerate(oms)]

    assert [r.throughput_fps for r in results] == pytest.approx([GUIDE_310P_BS4_FPS, GUIDE_310P_AOE_BS4_FPS])
    runs = _timeline(tmp_path)
    assert [(r["tool"], r["device"], r.get("job_type"), r["ok"]) for r in runs] == [
        ("atc", None, None, True),
        ("aoe", 1, 1, True),
        ("aoe", 1, 2, True),
        ("ais_bench", 0, None, True),
        ("ais_bench", 1, None, True),
    ]
    assert {(r["host"], r["chip"], r["batch"]) for r in runs} == {("host-t", "Ascend310P3", 4)}
    assert [r.get("tuned") for r in runs if r["tool"] == "ais_bench"] == [False, True]
    held = [r["end"] - r["start"] for r in runs]
    modeled = [50 * SCALE, 50 * SCALE, 100 * SCALE, DEVICE_S_500_IMAGES * SCALE, DEVICE_S_500_IMAGES_TUNED * SCALE]
    assert all(h >= m for h, m in zip(held, modeled, strict=True)), (held, modeled)
    assert all(started <= r["start"] < r["end"] <= time.time() for r in runs)
    # The runs follow each other: each starts after the one before it ended (one process at a time here).
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(runs))


def test_a_delay_comes_on_top_of_the_modeled_time(fixed_onnx, timed, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_DELAY", "*=1.5")
    get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=1)
    [atc] = _timeline(tmp_path)
    assert atc["end"] - atc["start"] >= 1.5 + 50 * SCALE


def test_untimed_standins_take_no_modeled_time_but_are_recorded(fixed_onnx, timed, tmp_path, monkeypatch):
    monkeypatch.delenv("STANDIN_TIME_SCALE")
    monkeypatch.setenv("STANDIN_ATC_SECONDS", "100000")  # would be 2000 s at the scale above
    get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=1)
    [atc] = _timeline(tmp_path)
    assert atc["modeled_s"] == 0 and atc["end"] - atc["start"] < 60
