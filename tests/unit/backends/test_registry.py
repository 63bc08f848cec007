"""backends/__init__.py: one registry that the CLI, the targets, the form and the pipeline read."""

from __future__ import annotations

import re

import pytest

from erfnet_tasks import backends, targets
from erfnet_tasks.cli import build_parser
from erfnet_tasks.errors import ErfnetError


def test_every_registered_backend_satisfies_the_protocol():
    for backend in backends.all_backends():
        assert isinstance(backend, backends.Backend), backend.NAME
        assert backend.RUNS_ON in ("npu", "host")
        assert backends.get_backend(backend.NAME) is backend
    assert backends.get_backend("ais_bench") is backends.get_backend("ascend")
    with pytest.raises(ErfnetError, match="unknown backend 'tensorrt'; choose one of onnxruntime, torch"):
        backends.get_backend("tensorrt")


def test_targets_cli_choices_and_form_pattern_come_from_the_registry():
    assert backends.host_targets() == {
        "cpu": ("onnxruntime", "cpu"),
        "cuda": ("onnxruntime", "cuda"),
        "torch-cpu": ("torch", "cpu"),
        "torch-cuda": ("torch", "cuda"),
    }
    assert backends.npu_backend().NAME == "ascend"
    choices = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["infer"]._actions if a.dest == "backend"
    ).choices
    assert list(choices) == backends.backend_names() == ["onnxruntime", "torch", "ascend", "ais_bench"]
    pattern = re.compile(targets.form_pattern())
    for name in ["auto", *backends.host_targets(), "Ascend310", "Ascend310P3+AOE"]:
        assert pattern.fullmatch(name), name
    for name in ["Ascend310; rm -rf /", "torch", "cpu ", "Ascend310P3+AOE+AOE"]:
        assert not pattern.fullmatch(name), name
        with pytest.raises(ErfnetError):
            targets.parse_target(name)


def test_each_backend_picks_the_device_for_its_targets():
    assert backends.get_backend("onnxruntime").device_for(targets.parse_target("cpu").as_dict()) == "cpu"
    assert backends.get_backend("torch").device_for(targets.parse_target("torch-cuda").as_dict()) == "cuda"
    assert backends.get_backend("ascend").device_for(targets.parse_target("Ascend310P3").as_dict()) == 0
