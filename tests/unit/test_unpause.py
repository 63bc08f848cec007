"""Unpausing starts a scheduled run at once with the form's defaults: when they point at nothing, the
first task (check_params) fails with one line naming the setting to make. The real scheduled run is in
tests/integration/test_cluster.py."""

from __future__ import annotations

import pytest

from erfnet_tasks import params, pipeline
from erfnet_tasks.errors import ErfnetError


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(tmp_path))
    for name in ("ERFNET_WEIGHTS", "ERFNET_DATASET_ROOT", "ERFNET_TARGETS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_missing_default_weights_name_erfnet_weights(data_root):
    with pytest.raises(ErfnetError) as missing:
        pipeline.check_params(params.default_params())
    message = str(missing.value)
    assert "\n" not in message
    assert "weights not found" in message and "ERFNET_WEIGHTS" in message


def test_missing_default_dataset_names_erfnet_dataset_root(data_root):
    weights = data_root / "models" / "erfnet_pretrained.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"not read by check_params")
    with pytest.raises(ErfnetError) as missing:
        pipeline.check_params(params.default_params())
    assert "dataset_root not found" in str(missing.value) and "ERFNET_DATASET_ROOT" in str(missing.value)


def test_configured_defaults_pass(data_root):
    from erfnet_tasks.datasets.synthetic import write_sample_data

    weights = data_root / "w.pth"
    weights.write_bytes(b"x")
    write_sample_data(data_root / "cs", 1)
    form = {**params.default_params(), "weights": str(weights), "dataset_root": str(data_root / "cs")}
    assert pipeline.check_params(form) is None
