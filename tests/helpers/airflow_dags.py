"""Real runs of the DAG with `airflow dags test` (Airflow's in-process dag.test()), shared by the DAG's
and the notifications' integration tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests" / "standins"
AIRFLOW = Path(sys.executable).with_name("airflow")
DAG_ID = "erfnet_offline_inference"


def airflow_env(home: Path, data: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "STANDIN_", "ERFNET_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ERFNET_DATA_DIR": str(data),
        "ERFNET_DATA_ROOTS": str(data),
        **extra,
    })
    return env


class DagRun:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.output = proc.stdout + proc.stderr
        self.returncode = proc.returncode
        match = re.search(r"DagRun Finished: .*?run_id=(\S+?), .*?state=(\w+)", self.output)
        self.run_id, self.state = (match.group(1), match.group(2)) if match else (None, None)
        self.ran = set(re.findall(r"\[DAG TEST\] end task task_id=(\w+)", self.output))


def run_dag(home: Path, data: Path, conf: dict, **env_extra: str) -> DagRun:
    env = airflow_env(home, data, **env_extra)
    proc = subprocess.run([str(AIRFLOW), "dags", "test", DAG_ID, "--conf", json.dumps(conf)],
                          env=env, capture_output=True, text=True, timeout=900)
    run = DagRun(proc)
    assert run.run_id, run.output[-5000:]
    return run
