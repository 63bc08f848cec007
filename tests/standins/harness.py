"""Test helpers for the backend tests: put the stand-ins on PATH/PYTHONPATH, make inputs, read outputs.

Part of the test doubles (tests/standins), never shipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

STANDINS = Path(__file__).resolve().parent
BIN = STANDINS / "bin"
SAMPLE_SHAPE = (3, 512, 1024)
NUM_CLASSES = 20


def use_standins(
    monkeypatch, tmp_path, *, chip: str = "Ascend310P3", devices: int | None = None, era: str | None = None
) -> Path:
    """Stand-in atc/aoe/npu-smi first on PATH, the stand-in ais_bench importable; returns the record file."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(STANDINS) + (os.pathsep + existing if existing else ""))
    monkeypatch.setenv("STANDIN_NPU_CHIP", chip)
    if devices is None:  # as many as npu-smi lists
        monkeypatch.delenv("STANDIN_NPU_DEVICES", raising=False)
    else:
        monkeypatch.setenv("STANDIN_NPU_DEVICES", str(devices))
    monkeypatch.delenv("STANDIN_NPU_COUNT", raising=False)
    monkeypatch.setenv("STANDIN_NPU_STATE", str(tmp_path / "standin-npu-state"))
    monkeypatch.setenv("ERFNET_DEVICE_LOCK_DIR", str(tmp_path / "device-leases"))
    if era:
        monkeypatch.setenv("STANDIN_AIS_BENCH_ERA", era)
    else:
        monkeypatch.delenv("STANDIN_AIS_BENCH_ERA", raising=False)
    monkeypatch.delenv("ERFNET_AIS_BENCH_PYTHON", raising=False)
    record = tmp_path / "standin_invocations.jsonl"
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    return record


def device_uses(record: Path) -> list[dict]:
    """Every use of a stand-in device (ais_bench, aoe): device, chip, host, start, end, shared."""
    return [e for e in invocations(record) if e["tool"] == "device"]


def invocations(record: Path) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def write_prep(folder: Path, names: list[str], *, seed: int = 0, shape=SAMPLE_SHAPE) -> list[Path]:
    """Inputs like the preprocessed dataset: float32 CHW in [0, 1), one raw .bin per image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = folder / name
        rng.random(shape, dtype=np.float32).tofile(path)
        paths.append(path)
    return paths


def torch_logits(checkpoint: Path, files: list[Path]) -> np.ndarray:
    """The upstream network (PyTorch, float32) on the given inputs: (N, 20, H, W)."""
    import torch

    from erfnet_tasks.model import load_erfnet

    net = load_erfnet(checkpoint)
    batch = np.stack([np.fromfile(f, dtype=np.float32).reshape(SAMPLE_SHAPE) for f in files])
    with torch.inference_mode():
        return net(torch.from_numpy(batch)).numpy()


def read_logits(path: Path, shape=(NUM_CLASSES, *SAMPLE_SHAPE[1:])) -> np.ndarray:
    """An output .bin as fp16 or fp32, told apart by its size (as the evaluator does)."""
    count = int(np.prod(shape))
    size = Path(path).stat().st_size
    dtype = {count * 2: np.float16, count * 4: np.float32}.get(size)
    assert dtype is not None, f"{path}: {size} bytes is neither fp16 nor fp32 logits of shape {shape}"
    return np.fromfile(path, dtype=dtype).reshape(shape)


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=0) == np.argmax(b, axis=0)))


def write_cann_version(toolkit: Path, version: str, runtime: str = "7.6.0.1.220") -> Path:
    """The toolkit's version.cfg as CANN writes it; rewriting it is how a test upgrades CANN."""
    toolkit.mkdir(parents=True, exist_ok=True)
    path = toolkit / "version.cfg"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# version: 1.0\nruntime_running_version=[{runtime}:{version}]\n")
    os.replace(tmp, path)
    return path
