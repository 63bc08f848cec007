"""``python3 -m ais_bench`` driven through the stand-in (tests/standins/ais_bench): both eras' layouts
and printouts, and every failure status."""

from __future__ import annotations

import harness
import numpy as np
import pytest

from erfnet_tasks import outputs
from erfnet_tasks.backends import InferFailed, ascend, get_backend
from erfnet_tasks.errors import ErfnetError


def compile_om(onnx, out, chip, batch):
    return get_backend("ascend").compile(onnx, out, chip=chip, batch_size=batch).path


@pytest.fixture
def prep(tmp_path):
    return harness.write_prep(tmp_path / "prep", ["img_0.bin"], seed=1)[0].parent


def test_old_era_layout_and_printout_are_read(fixed_onnx, prep, tmp_path, monkeypatch):
    record = harness.use_standins(monkeypatch, tmp_path, chip="Ascend310", era="2022")
    om = compile_om(fixed_onnx, tmp_path / "om", "Ascend310", 1)
    result = get_backend("ais_bench").infer(om, prep, tmp_path / "out", batch_size=1, device="0", loop=2, warmup=0)
    assert result.summary_path == result.output_dir / "sumary.json"
    assert [e.outfiles for e in outputs.read_summary(result.summary_path)] == [(result.output_dir / "img_0_0.bin",)]
    assert (result.output_dir / "img_0_0.bin").stat().st_size == 20 * 512 * 1024 * 2  # FP16 om
    assert result.compute_ms["count"] == 2  # 2022 summaries have no count: taken from the time list
    assert result.throughput_fps == pytest.approx(1000.0 / result.compute_ms["mean"])
    ais = [c for c in harness.invocations(record) if c["tool"] == "ais_bench"]
    assert ais[0]["argv"] == [
        "--model",
        str(om),
        "--input",
        str(prep),
        "--outfmt",
        "BIN",
        "--output",
        str(tmp_path / "out"),
        "--batchsize",
        "1",
        "--device",
        "0",
        "--loop",
        "2",
        "--warmup_count",
        "0",
    ]


def test_device_memory_exhausted_is_oom(fixed_onnx, prep, tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310")
    om = compile_om(fixed_onnx, tmp_path / "om", "Ascend310", 64)
    with pytest.raises(InferFailed) as info:
        get_backend("ascend").infer(om, prep, tmp_path / "out", batch_size=64)
    assert info.value.status == "oom"
    assert "malloc device buffer failed" in str(info.value)
    assert "RuntimeError: [1][ACL: invalid parameter]" in info.value.log_path.read_text()


def test_om_for_another_chip_is_model_load_failed(fixed_onnx, prep, tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3")
    om = compile_om(fixed_onnx, tmp_path / "om", "Ascend310", 1)
    with pytest.raises(InferFailed, match="load model from file failed") as info:
        get_backend("ascend").infer(om, prep, tmp_path / "out", batch_size=1)
    assert info.value.status == "model_load_failed"


def test_unknown_device_is_device_open_failed(fixed_onnx, prep, tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend310P3", devices=2)
    om = compile_om(fixed_onnx, tmp_path / "om", "Ascend310P3", 1)
    with pytest.raises(InferFailed, match="acl open device 2 failed") as info:
        get_backend("ascend").infer(om, prep, tmp_path / "out", batch_size=1, device=2)
    assert info.value.status == "device_open_failed"


def test_wrong_input_size_is_infer_failed(fixed_onnx, tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path)
    om = compile_om(fixed_onnx, tmp_path / "om", "Ascend310P3", 1)
    (tmp_path / "prep").mkdir()
    np.zeros(100, dtype=np.float32).tofile(tmp_path / "prep" / "x.bin")
    with pytest.raises(InferFailed, match="tensorsize: 6291456 filesize: 400 not match") as info:
        get_backend("ascend").infer(om, tmp_path / "prep", tmp_path / "out", batch_size=1)
    assert info.value.status == "infer_failed"


@pytest.mark.parametrize("device", ["0;ls", "-1", "cuda", "0, 1"])
def test_bad_device_ids_never_reach_a_process(tmp_path, monkeypatch, device, prep):
    record = harness.use_standins(monkeypatch, tmp_path)
    (tmp_path / "m.om").write_bytes(b"x")
    with pytest.raises(ErfnetError, match="Ascend device must be an id"):
        get_backend("ascend").infer(tmp_path / "m.om", prep, tmp_path / "out", batch_size=1, device=device)
    assert harness.invocations(record) == []


def test_ais_bench_python_can_be_chosen(tmp_path, monkeypatch, prep):
    harness.use_standins(monkeypatch, tmp_path)
    monkeypatch.setenv("ERFNET_AIS_BENCH_PYTHON", str(tmp_path / "no-such-python3"))
    (tmp_path / "m.om").write_bytes(b"x")
    with pytest.raises(ErfnetError, match=r"could not start .*no-such-python3"):
        get_backend("ascend").infer(tmp_path / "m.om", prep, tmp_path / "out", batch_size=1)


def test_available_needs_atc_and_a_real_ais_bench(tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path)
    assert ascend.available()
    monkeypatch.delenv("PYTHONPATH")  # no ais_bench module to run
    assert not ascend.available()


# The printouts below are the interface document's examples.
NEW_PRINTOUT = """[INFO] -----------------Performance Summary------------------
[INFO] H2D_latency (ms): min = 1.0, max = 2.0, mean = 1.5, median = 1.5, percentile(99%) = 1.99
[INFO] NPU_compute_time (ms): min = 3.4, max = 3.6, mean = 3.5, median = 3.5, percentile(99%) = 3.598
[INFO] throughput 1000*batchsize.mean(1.0)/NPU_compute_time.mean(3.5): 285.7142857142857
[INFO] ------------------------------------------------------"""
OLD_PRINTOUT = """[INFO] NPU_compute_time (ms): min = 3.4, max = 3.6, mean = 3.5, median = 3.5, percentile(99%) = 3.598
[INFO] throughput 1000*batchsize(4)/NPU_compute_time.mean(3.5): 1142.857142857143"""


def test_performance_printouts_of_both_eras_are_parsed():
    new = ascend.parse_performance(NEW_PRINTOUT)
    assert new["throughput"] == pytest.approx(285.7142857142857)
    assert new["NPU_compute_time"] == {"min": 3.4, "max": 3.6, "mean": 3.5, "median": 3.5, "percentile(99%)": 3.598}
    assert new["H2D_latency"]["mean"] == 1.5 and "D2H_latency" not in new
    assert ascend.parse_performance(OLD_PRINTOUT)["throughput"] == pytest.approx(1142.857142857143)


@pytest.mark.parametrize(
    "text,status",
    [
        (
            "[ERROR] malloc device buffer failed. size is 1342177280\n"
            "[ERROR] load model from file failed, model file is a.om",
            "oom",
        ),
        ("[ERROR] can't malloc buffer, size is 83886080, create output failed", "oom"),
        (
            "[ERROR] load model from file failed, model file is ErfNet_bs1.om\n"
            "RuntimeError: [1][ACL: invalid parameter]",
            "model_load_failed",
        ),
        ("[ERROR] acl open device 0 failed", "device_open_failed"),
        ("[ERROR] arg0 tensorsize: 6291456 filesize: 400 not match", "infer_failed"),
        ("Segmentation fault", "infer_failed"),
    ],
)
def test_failure_messages_are_classified(text, status):
    assert ascend.classify_failure(text) == status
