"""settings.py: the one reader of ERFNET_* variables."""

from __future__ import annotations

import os

import pytest

from erfnet_tasks import settings
from erfnet_tasks.errors import ErfnetError


def test_data_dir_and_roots_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("ERFNET_DATA_ROOTS", raising=False)
    loaded = settings.load_settings()
    assert loaded.data_dir == tmp_path / "d" and loaded.data_roots == (tmp_path / "d",)
    assert loaded.compile_cache == tmp_path / "d" / "cache" / "compiled"
    monkeypatch.setenv("ERFNET_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert settings.load_settings().data_roots == (tmp_path / "a", tmp_path / "b")


def test_form_defaults_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path))
    for name in ("ERFNET_WEIGHTS", "ERFNET_DATASET_ROOT", "ERFNET_TARGETS"):
        monkeypatch.delenv(name, raising=False)
    assert settings.default_weights() == str(tmp_path / "models" / "erfnet_pretrained.pth")
    assert settings.default_dataset_root() == str(tmp_path / "cityscapes")
    assert settings.default_targets() == ["auto"]
    monkeypatch.setenv("ERFNET_TARGETS", "Ascend310P3, cpu,,")
    assert settings.default_targets() == ["Ascend310P3", "cpu"]


def test_batch_sizes_and_reference_defaults_from_the_environment(monkeypatch):
    monkeypatch.delenv("ERFNET_BATCH_SIZES", raising=False)
    monkeypatch.delenv("ERFNET_REFERENCE_MIOU", raising=False)
    assert settings.default_batch_sizes([1, 4]) == [1, 4] and settings.default_reference_miou(72.2) == 72.2
    monkeypatch.setenv("ERFNET_BATCH_SIZES", " 1, 4,,")
    monkeypatch.setenv("ERFNET_REFERENCE_MIOU", "0")
    assert settings.default_batch_sizes([8]) == [1, 4] and settings.default_reference_miou(72.2) == 0.0
    for name, bad in (
        ("ERFNET_BATCH_SIZES", "1,x"),
        ("ERFNET_REFERENCE_MIOU", "nan"),
        ("ERFNET_REFERENCE_MIOU", "101"),
    ):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ErfnetError, match=name):
            settings.default_batch_sizes([1]) if name == "ERFNET_BATCH_SIZES" else settings.default_reference_miou(1.0)
        monkeypatch.delenv(name)


def test_worker_settings(monkeypatch):
    for name in ("ERFNET_NPU_QUEUE", "ERFNET_ORT_THREADS", "ERFNET_AIS_BENCH_PYTHON", "ERFNET_RESULTS_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    assert (settings.npu_queue(), settings.ort_threads(), settings.ais_bench_python(), settings.results_db_url()) == (
        "npu",
        0,
        None,
        None,
    )
    monkeypatch.setenv("ERFNET_ORT_THREADS", "4")
    monkeypatch.setenv("ERFNET_NPU_QUEUE", "npu-310p")
    assert (settings.ort_threads(), settings.npu_queue()) == (4, "npu-310p")
    monkeypatch.setenv("ERFNET_ORT_THREADS", "-1")
    with pytest.raises(ErfnetError, match="ERFNET_ORT_THREADS must be a non-negative integer"):
        settings.ort_threads()


def test_paths_must_resolve_under_a_root(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"x")
    roots = (tmp_path,)
    assert settings.resolve_under_roots("w.pth", roots, "weights") == tmp_path / "w.pth"
    with pytest.raises(ErfnetError, match="outside the data roots"):
        settings.resolve_under_roots("/etc/hostname", roots, "weights")
    with pytest.raises(ErfnetError, match="expected a path"):
        settings.resolve_under_roots("a\x00b", roots, "weights")


def test_device_wait_and_a_recheck_no_shorter_than_airflows_own_bookkeeping(monkeypatch):
    monkeypatch.delenv("ERFNET_DEVICE_WAIT_S", raising=False)
    monkeypatch.delenv("ERFNET_DEVICE_RECHECK_S", raising=False)
    assert (settings.device_wait_s(), settings.device_recheck_s()) == (60.0, 30.0)
    monkeypatch.setenv("ERFNET_DEVICE_WAIT_S", "5")
    monkeypatch.setenv("ERFNET_DEVICE_RECHECK_S", "15")
    assert (settings.device_wait_s(), settings.device_recheck_s()) == (5.0, 15.0)
    monkeypatch.setenv("ERFNET_DEVICE_RECHECK_S", "3")
    with pytest.raises(ErfnetError, match="ERFNET_DEVICE_RECHECK_S must be at least 15 s"):
        settings.device_recheck_s()
    monkeypatch.setenv("ERFNET_DEVICE_WAIT_S", "nan")
    with pytest.raises(ErfnetError, match="ERFNET_DEVICE_WAIT_S must be a number of seconds greater than 0"):
        settings.device_wait_s()
