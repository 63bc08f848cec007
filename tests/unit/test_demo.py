"""demo.py's own pieces (the whole demo runs the DAG: tests/integration/test_dag.py covers that path)."""

from __future__ import annotations

import os

import pytest

from erfnet_tasks import demo
from erfnet_tasks.errors import ErfnetError


def test_airflow_environment_is_the_demos_own(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://not-the-demos")
    env = demo.airflow_environment(tmp_path, tmp_path / "dags")
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow_home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env
    assert env["ERFNET_DATA_ROOTS"].split(os.pathsep) == [str(tmp_path / "elsewhere"), str(tmp_path / "data")]


def test_prepare_inputs_writes_synthetic_data_and_random_weights_once(tmp_path, capsys):
    dataset, weights = demo.prepare_inputs(tmp_path, 1)
    assert len(list((dataset / "leftImg8bit").rglob("*.png"))) == 1 and weights.is_file()
    assert "SYNTHETIC" in capsys.readouterr().out
    stamp = weights.stat().st_mtime_ns
    demo.prepare_inputs(tmp_path, 1)
    assert weights.stat().st_mtime_ns == stamp and "writing" not in capsys.readouterr().out


def test_demo_needs_a_source_checkout(monkeypatch):
    monkeypatch.setattr(demo, "repo_dir", lambda: None)
    with pytest.raises(ErfnetError, match="source checkout"):
        demo.run_demo()


def test_demo_flags_reach_the_dag_runs_conf(tmp_path, monkeypatch):
    """`erfnet demo --labels-on-device --keep-outputs` hands both switches to the DAG run it starts."""
    import json

    from erfnet_tasks.cli import main

    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", f"sqlite:///{tmp_path / 'results.sqlite'}")
    started = []
    monkeypatch.setattr(demo, "_airflow", lambda *args, env: started.append(args))
    main(["demo", "--images", "1", "--labels-on-device", "--keep-outputs"])
    (dags_test,) = [args for args in started if args[:2] == ("dags", "test")]
    conf = json.loads(dags_test[dags_test.index("--conf") + 1])
    assert conf["labels_on_device"] is True and conf["keep_outputs"] is True
    started.clear()
    main(["demo", "--images", "1"])
    conf = json.loads(next(a for a in started if a[:2] == ("dags", "test"))[-1])
    assert conf["labels_on_device"] is False and conf["keep_outputs"] is False
