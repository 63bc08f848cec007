"""The PyTorch backend's arguments and failures (its end-to-end run is in backends/test_agreement.py)."""

from __future__ import annotations

import harness
import pytest
import torch

from erfnet_tasks.backends import InferFailed, get_backend
from erfnet_tasks.errors import ErfnetError


def test_compile_has_nothing_to_build_and_wants_the_checkpoint(random_checkpoint, fixed_onnx, tmp_path):
    backend = get_backend("torch")
    result = backend.compile(random_checkpoint, tmp_path, chip="cpu", batch_size=4)
    assert (result.path, result.seconds) == (random_checkpoint, 0.0)
    with pytest.raises(ErfnetError, match=r"pass the \.pth"):
        backend.compile(fixed_onnx, tmp_path, chip="cpu", batch_size=4)
    with pytest.raises(ErfnetError, match="no equivalent"):
        backend.compile(random_checkpoint, tmp_path, chip="cpu", batch_size=4, aoe=True)


def test_missing_checkpoint_is_model_load_failed(tmp_path):
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "a.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InferFailed) as info:
        get_backend("torch").infer(tmp_path / "none.pth", tmp_path / "prep", tmp_path / "out", batch_size=1)
    assert info.value.status == "model_load_failed"


def test_wrong_input_size_is_infer_failed(random_checkpoint, tmp_path):
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "a.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InferFailed, match="tensorsize: 6291456 filesize: 16 not match") as info:
        get_backend("torch").infer(random_checkpoint, tmp_path / "prep", tmp_path / "out", batch_size=1)
    assert info.value.status == "infer_failed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-CUDA message")
def test_cuda_without_a_gpu_is_a_clear_error(random_checkpoint, tmp_path):
    (tmp_path / "prep").mkdir()
    with pytest.raises(ErfnetError, match="sees no CUDA device"):
        get_backend("torch").infer(random_checkpoint, tmp_path / "prep", tmp_path / "out", batch_size=1, device="cuda")


def test_profile_averages_each_aten_op_over_the_profiled_batches(random_checkpoint, tmp_path):
    harness.write_prep(tmp_path / "in", ["a.bin", "b.bin", "c.bin"])
    ops = get_backend("torch").profile(random_checkpoint, tmp_path / "in", tmp_path / "work", batch_size=1, images=2)
    by_name = {op.op_name: op for op in ops}
    convolution = next(op for name, op in by_name.items() if "conv" in name and "transpose" not in name)
    # ERFNet's encoder and decoder run dozens of convolutions per image: 2 profiled images, no warm-up counted
    assert convolution.calls % 2 == 0 and convolution.calls >= 2 * 50
    assert sum(op.share for op in ops) == pytest.approx(1.0)
