"""The ONNX Runtime backend on a tiny stand-in network (1x1 conv, 3 -> 20 channels, 8x16), so that the
ais_bench layout, batching, padding and failures are tested in milliseconds; the full ERFNet runs in
backends/test_agreement.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from erfnet_tasks import cli, outputs
from erfnet_tasks.backends import InferFailed, get_backend
from erfnet_tasks.errors import ErfnetError

SHAPE = (3, 8, 16)
rng = np.random.default_rng(7)
WEIGHT = rng.standard_normal((20, 3, 1, 1)).astype(np.float32)
BIAS = rng.standard_normal(20).astype(np.float32)


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    x = helper.make_tensor_value_info("actual_input_1", TensorProto.FLOAT, ["-1", *SHAPE])
    y = helper.make_tensor_value_info("output1", TensorProto.FLOAT, ["-1", 20, *SHAPE[1:]])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["actual_input_1", "w", "b"], ["conv"]),
            helper.make_node("Relu", ["conv"], ["output1"]),
        ],
        "tiny",
        [x],
        [y],
        initializer=[numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.einsum("oc,chw->ohw", WEIGHT[:, :, 0, 0], x) + BIAS[:, None, None], 0)


def write_inputs(folder: Path, names) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for i, name in enumerate(names):
        arr = np.random.default_rng(i).random(SHAPE, dtype=np.float32)
        if name.endswith(".npy"):
            np.save(folder / name, arr)
        else:
            arr.tofile(folder / name)
        data[name] = arr
    return data


def test_compile_fixes_the_batch_and_saves_a_model_that_loads_on_cpu(tiny_onnx, tmp_path):
    result = get_backend("onnxruntime").compile(tiny_onnx, tmp_path / "c", chip="cpu", batch_size=4)
    assert result.path == tmp_path / "c" / "ErfNet_bs4_cpu.onnx"
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, *SHAPE]
    assert session.get_outputs()[0].shape[0] == 4
    assert list(tmp_path.joinpath("c").iterdir()) == [result.path]  # no temporary left behind


def test_infer_writes_the_ais_bench_layout_with_padding_and_natural_order(tiny_onnx, tmp_path):
    backend = get_backend("onnxruntime")
    compiled = backend.compile(tiny_onnx, tmp_path / "c", batch_size=2)
    names = ["img10.bin", "img2.bin", "img1.bin"]
    data = write_inputs(tmp_path / "prep", names)
    (tmp_path / "prep" / "notes.txt").write_text("not an input")
    result = backend.infer(compiled.path, tmp_path / "prep", tmp_path / "out", batch_size=2, loop=3, warmup=2)

    assert result.output_dir.parent == tmp_path / "out"
    assert result.summary_path == tmp_path / "out" / f"{result.output_dir.name}_summary.json"
    summary = json.loads(result.summary_path.read_text())
    infiles = [summary["filesinfo"][k]["infiles"][0] for k in sorted(summary["filesinfo"], key=int)]
    assert [Path(f).name for f in infiles] == ["img1.bin", "img2.bin", "img10.bin"]  # ais_bench's natural order
    # 2 batches (the second padded) x 3 loops; warmups are not timed; CPU has no device copies.
    assert summary["NPU_compute_time"]["count"] == 6 and len(summary["npu_compute_time_list"]) == 6
    assert summary["H2D_latency"]["count"] == 0 and summary["D2H_latency"]["mean"] == 0.0
    assert summary["throughput"] == pytest.approx(2000.0 / summary["NPU_compute_time"]["mean"])
    assert sorted(p.name for p in result.output_dir.iterdir()) == ["img10_0.bin", "img1_0.bin", "img2_0.bin"]
    for name, arr in data.items():
        out = np.fromfile(result.output_dir / name.replace(".bin", "_0.bin"), dtype=np.float16)
        np.testing.assert_allclose(out.reshape(20, *SHAPE[1:]), expected(arr), rtol=2e-3, atol=2e-3)
    assert [e.infile.name for e in outputs.read_summary(result.summary_path)] == ["img1.bin", "img2.bin", "img10.bin"]


def test_reused_output_buffers_never_mix_images(tiny_onnx, tmp_path, monkeypatch):
    """A compiled (static) model runs through IOBinding into 2 reused buffer sets that the writer thread
    writes from: 7 images at batch 2 are 4 batches, so each set is refilled while the other is on disk."""
    from erfnet_tasks.backends import _local

    sets = []
    real_init = _local.OutputBuffers.__init__

    def counting_init(self, specs, sets_=2):
        sets.append(specs)
        real_init(self, specs, sets_)

    monkeypatch.setattr(_local.OutputBuffers, "__init__", counting_init)
    backend = get_backend("onnxruntime")
    compiled = backend.compile(tiny_onnx, tmp_path / "c", batch_size=2)
    data = write_inputs(tmp_path / "prep", [f"img{i}.bin" for i in range(7)])
    result = backend.infer(compiled.path, tmp_path / "prep", tmp_path / "out", batch_size=2, loop=2, warmup=1)
    assert sets == [[((2, 20, *SHAPE[1:]), np.float16)]]  # the IOBinding path was taken, with fp16 buffers
    for name, arr in data.items():
        out = np.fromfile(result.output_dir / name.replace(".bin", "_0.bin"), dtype=np.float16)
        np.testing.assert_allclose(out.reshape(20, *SHAPE[1:]), expected(arr), rtol=2e-3, atol=2e-3)


def test_fp32_output_and_npy_inputs_on_a_dynamic_batch_model(tiny_onnx, tmp_path):
    data = write_inputs(tmp_path / "prep", ["a.npy", "b.bin"])
    result = get_backend("onnxruntime").infer(
        tiny_onnx, tmp_path / "prep", tmp_path / "out", batch_size=4, warmup=0, output_type="fp32"
    )
    for name, arr in data.items():
        out = np.fromfile(result.output_dir / f"{name.split('.')[0]}_0.bin", dtype=np.float32)
        assert out.size == 20 * SHAPE[1] * SHAPE[2]
        np.testing.assert_allclose(out.reshape(20, *SHAPE[1:]), expected(arr), rtol=1e-5, atol=1e-5)


def test_wrong_input_size_is_an_infer_failure(tiny_onnx, tmp_path):
    (tmp_path / "prep").mkdir()
    np.zeros(10, dtype=np.float32).tofile(tmp_path / "prep" / "x.bin")
    with pytest.raises(InferFailed, match="tensorsize: 1536 filesize: 40 not match") as info:
        get_backend("onnxruntime").infer(tiny_onnx, tmp_path / "prep", tmp_path / "out", batch_size=1)
    assert info.value.status == "infer_failed"


def test_batch_size_must_match_a_compiled_model(tiny_onnx, tmp_path):
    backend = get_backend("onnxruntime")
    compiled = backend.compile(tiny_onnx, tmp_path / "c", batch_size=4)
    write_inputs(tmp_path / "prep", ["a.bin"])
    with pytest.raises(ErfnetError, match="model's batch size is 4"):
        backend.infer(compiled.path, tmp_path / "prep", tmp_path / "out", batch_size=2)


def test_unloadable_model_is_a_model_load_failure(tmp_path):
    write_inputs(tmp_path / "prep", ["a.bin"])
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(InferFailed) as info:
        get_backend("onnxruntime").infer(tmp_path / "bad.onnx", tmp_path / "prep", tmp_path / "out", batch_size=1)
    assert info.value.status == "model_load_failed"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="tests the no-CUDA message")
def test_cuda_without_the_provider_is_a_clear_error(tiny_onnx, tmp_path):
    write_inputs(tmp_path / "prep", ["a.bin"])
    with pytest.raises(ErfnetError, match="no CUDAExecutionProvider"):
        get_backend("onnxruntime").infer(tiny_onnx, tmp_path / "prep", tmp_path / "out", batch_size=1, device="cuda")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch size must be a positive integer"),
        ({"batch_size": "2"}, "batch size must be a positive integer"),
        ({"batch_size": 1, "output_type": "int8"}, "output type must be one of fp16, fp32"),
        ({"batch_size": 1, "loop": 0}, "loop must be a positive integer"),
        ({"batch_size": 1, "device": "npu"}, "device must be cpu, cuda or cuda:N"),
    ],
)
def test_bad_arguments_are_refused(tiny_onnx, tmp_path, kwargs, message):
    write_inputs(tmp_path / "prep", ["a.bin"])
    with pytest.raises(ErfnetError, match=message):
        get_backend("onnxruntime").infer(tiny_onnx, tmp_path / "prep", tmp_path / "out", **kwargs)


def test_cli_compile_and_infer(tiny_onnx, tmp_path, capsys):
    write_inputs(tmp_path / "prep", ["a.bin", "b.bin", "c.bin"])
    assert (
        cli.main(
            [
                "compile",
                "--backend",
                "onnxruntime",
                "--chip",
                "cpu",
                "--batch-size",
                "2",
                str(tiny_onnx),
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    compiled = capsys.readouterr().out.strip()
    assert compiled == str(tmp_path / "c" / "ErfNet_bs2_cpu.onnx")
    assert (
        cli.main(
            [
                "infer",
                "--model",
                compiled,
                "--input",
                str(tmp_path / "prep"),
                "--output",
                str(tmp_path / "out"),
                "--batchsize",
                "2",
                "--output-type",
                "fp32",
            ]
        )
        == 0
    )
    summary = outputs.find_latest_summary(tmp_path / "out")
    assert len(outputs.read_summary(summary)) == 3
    assert (
        cli.main(
            [
                "infer",
                "--model",
                compiled,
                "--input",
                str(tmp_path / "missing"),
                "--output",
                str(tmp_path / "out"),
                "--batchsize",
                "2",
            ]
        )
        == 2
    )
    assert "erfnet: error: input folder not found" in capsys.readouterr().err


def test_unknown_backend(tmp_path):
    with pytest.raises(ErfnetError, match="unknown backend 'tensorrt'"):
        get_backend("tensorrt")


def test_a_write_failure_is_one_error_line_and_no_thread_traceback(tiny_onnx, tmp_path, monkeypatch, capfd):
    from erfnet_tasks import fsutil

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "write", disk_full)
    backend = get_backend("onnxruntime")
    compiled = backend.compile(tiny_onnx, tmp_path / "c", batch_size=2)
    write_inputs(tmp_path / "prep", [f"img{i}.bin" for i in range(5)])
    with pytest.raises(ErfnetError, match=r"could not write outputs to .*No space left on device") as info:
        backend.infer(compiled.path, tmp_path / "prep", tmp_path / "out", batch_size=2)
    assert info.value.status == "no_space"  # the cell's own status; the other cells go on
    assert "Traceback" not in capfd.readouterr().err


def test_profile_times_each_op_of_the_measured_session_after_its_warm_up(tiny_onnx, tmp_path):
    ort_backend = get_backend("onnxruntime")
    compiled = ort_backend.compile(tiny_onnx, tmp_path / "c", chip="cpu", batch_size=2).path
    write_inputs(tmp_path / "in", ["b_2.bin", "a_10.bin", "c_1.bin", "d_3.bin", "e_4.bin"])
    ops = ort_backend.profile(compiled, tmp_path / "in", tmp_path / "work", batch_size=2, images=3)
    by_name = {op.op_name: op for op in ops}
    # 3 images at batch 2 are 2 batches (the warm-up batch is not counted); the fp16 Cast of `infer` is there
    assert by_name["output1__to_fp16"].op_type == "Cast"
    assert {op.calls for op in ops} == {2}
    assert any(op.op_type in ("Conv", "FusedConv") for op in ops)
    assert sum(op.share for op in ops) == pytest.approx(1.0)
    assert all(op.total_us >= 0 and op.mean_us == pytest.approx(op.total_us / 2) for op in ops)
    assert list((tmp_path / "work").glob("onnxruntime_profile*.json"))  # the trace stays for the caller to remove
    with pytest.raises(ErfnetError, match="positive number of images"):
        ort_backend.profile(compiled, tmp_path / "in", tmp_path / "work", batch_size=2, images=0)
