"""Ascend host detection: CANN version files (created here in tmp dirs), npu-smi (the stand-in), driver."""

from __future__ import annotations

import json
from pathlib import Path

import harness
import pytest

from erfnet_tasks import cli
from erfnet_tasks.backends import ascend
from erfnet_tasks.errors import ErfnetError

VERSION_CFG = """# version: 1.0
runtime_running_version=[7.6.0.1.220:8.0.0]
compiler_running_version=[7.6.0.1.220:8.0.0]
toolkit_running_version=[7.6.0.1.220:8.0.0]
"""
INSTALL_INFO = """package_name=Ascend-cann-toolkit
version=8.0.RC3
innerversion=V100R001C19SPC001B155
arch={arch}
"""


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """An empty /usr/local/Ascend stand-in and no ASCEND_TOOLKIT_HOME."""
    root = tmp_path / "Ascend"
    root.mkdir()
    monkeypatch.setattr(ascend, "DEFAULT_ASCEND_ROOT", root)
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME", raising=False)
    return root


def write_info(base: Path, arch: str | None = None) -> Path:
    arch = arch or ascend._arch()
    path = base / f"{arch}-linux" / "ascend_toolkit_install.info"
    path.parent.mkdir(parents=True)
    path.write_text(INSTALL_INFO.format(arch=arch))
    return path


def test_version_cfg_of_the_classic_layout(fake_root):
    latest = fake_root / "ascend-toolkit" / "latest"
    latest.mkdir(parents=True)
    (latest / "version.cfg").write_text(VERSION_CFG)
    assert ascend.detect_cann_version() == "8.0.0"


def test_install_info_when_there_is_no_version_cfg(fake_root):
    write_info(fake_root / "ascend-toolkit" / "latest")
    assert ascend.detect_cann_version() == "8.0.RC3"


def test_cann_85_layout(fake_root):
    write_info(fake_root / "cann")
    assert ascend.detect_cann_version() == "8.0.RC3"


def test_install_info_of_another_arch_is_still_found(fake_root):
    write_info(fake_root / "cann", arch="riscv64" if ascend._arch() != "riscv64" else "x86_64")
    assert ascend.detect_cann_version() == "8.0.RC3"


def test_ascend_toolkit_home_comes_first(fake_root, tmp_path, monkeypatch):
    (fake_root / "ascend-toolkit" / "latest").mkdir(parents=True)
    (fake_root / "ascend-toolkit" / "latest" / "version.cfg").write_text(VERSION_CFG)
    home = tmp_path / "custom" / "ascend-toolkit" / "8.5.0"
    home.mkdir(parents=True)
    (home / "version.cfg").write_text(VERSION_CFG.replace("8.0.0", "8.5.0"))
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(home))
    assert ascend.detect_cann_version() == "8.5.0"


def test_missing_cann_is_one_clear_sentence(fake_root, capsys):
    with pytest.raises(ErfnetError) as info:
        ascend.detect_cann_version()
    message = str(info.value)
    assert message.startswith("no CANN toolkit found") and "ASCEND_TOOLKIT_HOME" in message and "\n" not in message
    assert ascend.version() == "unavailable"


@pytest.mark.parametrize("chip,count", [("Ascend310P3", 1), ("Ascend910B3", 2), ("Ascend310", 4)])
def test_chips_from_npu_smi(tmp_path, monkeypatch, chip, count):
    harness.use_standins(monkeypatch, tmp_path, chip=chip)
    monkeypatch.setenv("STANDIN_NPU_COUNT", str(count))
    assert ascend.detect_chips() == [chip] * count


def test_both_table_formats_of_the_interface_document():
    old = """| npu-smi 22.0.0                       Version: 22.0.2                                       |
| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===================+=================+======================================================+
| 0       310P3     | OK              | 17.0         56                0    / 0              |
| 0       0         | 0000:AF:00.0    | 0            934  / 23054                            |"""
    assert ascend.parse_npu_smi_chips(old) == ["Ascend310P3"]
    assert ascend.parse_npu_smi_chips("| 0     910B3   | OK  | 94.2  41  0 / 0 |") == ["Ascend910B3"]


def test_no_npu_smi_means_no_chips(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ascend.detect_chips() == []


def test_driver_version_from_version_info_then_npu_smi(fake_root, tmp_path, monkeypatch):
    harness.use_standins(monkeypatch, tmp_path)
    monkeypatch.setenv("STANDIN_NPU_DRIVER", "23.0.rc2")
    assert ascend.detect_driver_version() == "23.0.rc2"
    (fake_root / "driver").mkdir()
    (fake_root / "driver" / "version.info").write_text("Version=24.1.0\nascendhal_version=7.35.19\n")
    assert ascend.detect_driver_version() == "24.1.0"


def test_cli_environment_json(fake_root, tmp_path, monkeypatch, capsys):
    harness.use_standins(monkeypatch, tmp_path, chip="Ascend910B3")
    write_info(fake_root / "cann")
    assert cli.main(["environment", "--format", "json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["cann_version"] == "8.0.RC3"
    assert env["chips"] == ["Ascend910B3"] and env["driver_version"] == "22.0.2"
    assert env["backends"]["onnxruntime"]["available"] and env["backends"]["ascend"]["available"]
    assert env["backends"]["ascend"]["version"] == "8.0.RC3"


def test_cli_environment_text_without_cann(fake_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["environment"]) == 0
    out = capsys.readouterr().out
    assert "CANN version:   not found" in out and "note: no CANN toolkit found" in out
    assert "ascend       not available" in out
