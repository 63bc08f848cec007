"""deploy/local_airflow.py (`make airflow`): the environment it gives standalone, and that the form's
defaults it sets pass the library's checks, so the first trigger and the first scheduled run succeed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import local_airflow

from erfnet_tasks import params, settings


def test_children_find_airflow_and_the_form_defaults_pass_check_params(tmp_path, monkeypatch):
    from erfnet_tasks.demo import DEMO_IMAGES, prepare_inputs

    monkeypatch.delenv("ERFNET_RESULTS_DB_URL", raising=False)
    dataset, weights = prepare_inputs(tmp_path / "demo", DEMO_IMAGES)
    env = local_airflow.airflow_env(tmp_path, 8080, weights, dataset)
    # standalone starts its children by the name `airflow`: the venv's must come first on PATH.
    first = env["PATH"].split(os.pathsep)[0]
    assert Path(first) == Path(sys.executable).parent and (Path(first) / "airflow").exists()
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow_home")
    assert env["ERFNET_RESULTS_DB_URL"] == f"sqlite:///{tmp_path / 'airflow_home' / 'results.sqlite'}"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8080/execution/"

    for name in (
        "ERFNET_DATA_DIR",
        "ERFNET_DATA_ROOTS",
        "ERFNET_WEIGHTS",
        "ERFNET_DATASET_ROOT",
        "ERFNET_TARGETS",
        "ERFNET_BATCH_SIZES",
        "ERFNET_REFERENCE_MIOU",
    ):
        monkeypatch.setenv(name, env[name])
    form = {name: field["default"] for name, field in params.form_fields().items()}  # what a scheduled run gets
    checked = params.validate_params(form, settings.load_settings().data_roots)
    assert checked["targets"] == ["cpu"] and checked["batch_sizes"] == [1, 4]
    assert checked["reference_miou"] == 0.0  # random weights score about 0: the gate must not fail them


def test_the_pool_comes_from_the_init_script(tmp_path):
    env = local_airflow.airflow_env(tmp_path, 8080, tmp_path / "w.pth", tmp_path / "ds")
    pools = local_airflow.init_pool_commands(env)
    assert [argv[3] for argv in pools] == ["npu_devices"]
