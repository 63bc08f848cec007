"""atc / AOE driven through the stand-ins in tests/standins/bin, which record every invocation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "standins"))
import harness
from standin_om import read_om

from erfnet_tasks import cli
from erfnet_tasks.backends import CompileFailed, get_backend
from erfnet_tasks.errors import ErfnetError

# The guide's command with --log=error and without the shell's quotes around --input_shape.
GUIDE_ATC = [
    "--framework=5",
    "--model={onnx}",
    "--output={out}/ErfNet_bs{n}",
    "--input_format=NCHW",
    "--input_shape=actual_input_1:{n},3,512,1024",
    "--log=error",
    "--soc_version={chip}",
    "--output_type=FP16",
]


@pytest.fixture
def record(monkeypatch, tmp_path):
    return harness.use_standins(monkeypatch, tmp_path)


def test_atc_gets_the_guides_flags_and_its_log_is_kept(fixed_onnx, tmp_path, record):
    result = get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=8)
    assert result.path == tmp_path / "om" / "ErfNet_bs8.om"
    (call,) = harness.invocations(record)
    assert call["tool"] == "atc"
    assert call["argv"] == [a.format(onnx=fixed_onnx, out=tmp_path / "om", n=8, chip="Ascend310P3") for a in GUIDE_ATC]
    header, onnx_bytes = read_om(str(result.path))
    assert (header["soc_version"], header["batch"], header["output_type"]) == ("Ascend310P3", 8, "FP16")
    assert onnx_bytes == fixed_onnx.read_bytes()
    assert result.log_path == tmp_path / "om" / "ErfNet_bs8.log"
    assert "ATC run success, welcome to the next use." in result.log_path.read_text()


def test_failing_atc_is_reported_with_its_error_code(fixed_onnx, tmp_path, record):
    with pytest.raises(CompileFailed) as info:
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend999", batch_size=1)
    assert info.value.code == "E10001"
    assert "E10001" in str(info.value) and "soc_version" in str(info.value)
    assert "ATC run failed" in info.value.log_path.read_text()
    assert not (tmp_path / "om" / "ErfNet_bs1.om").exists()


def test_missing_model_reaches_the_user_as_atcs_code(tmp_path, record, capsys):
    assert (
        cli.main(
            [
                "compile",
                "--backend",
                "ascend",
                "--chip",
                "Ascend310",
                "--batch-size",
                "1",
                str(tmp_path / "nope.onnx"),
                str(tmp_path / "om"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("erfnet: error: atc failed") and "E10007" in err and err.count("\n") == 1


def test_stale_om_does_not_survive_a_failed_compile(fixed_onnx, tmp_path, record):
    (tmp_path / "om").mkdir()
    (tmp_path / "om" / "ErfNet_bs1.om").write_bytes(b"old")
    with pytest.raises(CompileFailed):
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend999", batch_size=1)
    assert not (tmp_path / "om" / "ErfNet_bs1.om").exists()


def test_aoe_tunes_subgraphs_then_operators(fixed_onnx, tmp_path, record):
    result = get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=4, aoe=True)
    assert result.path == tmp_path / "om" / "ErfNet_bs4_aoe.om"
    entries = harness.invocations(record)
    # each tuning job runs on a device (the stand-in records its use: tool "device", as ais_bench's does)
    assert [e["tool"] for e in entries] == ["aoe", "device", "aoe", "device"]
    assert [e["device"] for e in entries if e["tool"] == "device"] == [0, 0]
    calls = [e for e in entries if e["tool"] == "aoe"]
    base = [
        "--framework=5",
        f"--model={fixed_onnx}",
        "JOB",
        f"--output={tmp_path / 'om' / 'ErfNet_bs4_aoe'}",
        "--input_format=NCHW",
        "--input_shape=actual_input_1:4,3,512,1024",
    ]
    assert [c["argv"] for c in calls] == [[a if a != "JOB" else f"--job_type={j}" for a in base] for j in (1, 2)]
    assert read_om(str(result.path))[0]["job_type"] == 2
    assert result.log_path.read_text().count("[Aoe]Aoe process finished") == 2


BAD_CHIPS = [
    "Ascend310;rm -rf /",
    "$(x)",
    "Ascend310P3 --log=debug",
    "ascend310",
    "Ascend",
    "Ascend310`id`",
    "Ascend310\n",
    "../Ascend310",
    "",
    310,
]


@pytest.mark.parametrize("chip", BAD_CHIPS)
def test_bad_chip_names_never_reach_a_process(fixed_onnx, tmp_path, record, chip):
    with pytest.raises(ErfnetError, match="chip must look like Ascend310P3"):
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip=chip, batch_size=1)
    assert harness.invocations(record) == []


@pytest.mark.parametrize("batch", [0, -1, 1.5, "4", True, None])
def test_bad_batch_sizes_never_reach_a_process(fixed_onnx, tmp_path, record, batch):
    with pytest.raises(ErfnetError, match="batch size must be a positive integer"):
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310", batch_size=batch, aoe=True)
    assert harness.invocations(record) == []


def test_missing_chip_is_asked_for(fixed_onnx, tmp_path, record):
    with pytest.raises(ErfnetError, match="needs --chip"):
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip=None, batch_size=1)
    assert harness.invocations(record) == []


def test_cli_refuses_a_shell_metacharacter_chip_before_atc(fixed_onnx, tmp_path, record, capsys):
    assert (
        cli.main(
            [
                "compile",
                "--backend",
                "ascend",
                "--chip",
                "$(touch pwned)",
                "--batch-size",
                "1",
                str(fixed_onnx),
                str(tmp_path / "om"),
            ]
        )
        == 2
    )
    assert "chip must look like" in capsys.readouterr().err
    assert harness.invocations(record) == []
    assert not Path("pwned").exists()


def test_missing_atc_is_one_clear_sentence(fixed_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ErfnetError, match="'atc' is not on PATH"):
        get_backend("ascend").compile(fixed_onnx, tmp_path / "om", chip="Ascend310P3", batch_size=1)


def test_standin_atc_rejects_the_shell_quoted_shape(fixed_onnx, tmp_path, record):
    # Guards the stand-in itself: quotes passed through literally (as a shell-less caller would if it
    # copied the guide verbatim) are an invalid shape.
    import subprocess

    proc = subprocess.run(
        [
            str(harness.BIN / "atc"),
            "--framework=5",
            f"--model={fixed_onnx}",
            f"--output={tmp_path / 'x'}",
            '--input_shape="actual_input_1:1,3,512,1024"',
            "--soc_version=Ascend310P3",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert 'E10001: Value ["actual_input_1:1,3,512,1024"] for parameter [--input_shape] is invalid' in proc.stdout
    assert json.loads(record.read_text().splitlines()[0])["tool"] == "atc"


def test_an_argmax_model_compiles_without_output_type_and_the_om_outputs_int32(fixed_onnx, tmp_path, record):
    """atc's --output_type would set the om's output type whatever the graph's (FP16 labels); without it the
    om keeps the last operator's type, so labels_on_device leaves it out."""
    from erfnet_tasks.onnx_export import append_argmax

    argmax = tmp_path / "ErfNet_argmax.onnx"
    argmax.write_bytes(fixed_onnx.read_bytes())
    append_argmax(argmax)
    result = get_backend("ascend").compile(argmax, tmp_path / "om", chip="Ascend310P3", batch_size=1)
    (call,) = harness.invocations(record)
    assert call["argv"] == [a.format(onnx=argmax, out=tmp_path / "om", n=1, chip="Ascend310P3") for a in GUIDE_ATC[:-1]]
    header, _onnx = read_om(str(result.path))
    assert header["output_type"] is None
    harness.write_prep(tmp_path / "prep", ["a_0.bin"], seed=1)
    out = get_backend("ascend").infer(result.path, tmp_path / "prep", tmp_path / "out", batch_size=1, device="0")
    (label_file,) = sorted((tmp_path / "out").rglob("*.bin"))
    assert label_file.stat().st_size == 512 * 1024 * 4 and out.summary_path.is_file()
    import numpy as np

    labels = np.fromfile(label_file, dtype=np.int32)
    assert labels.min() >= 0 and labels.max() < 20
