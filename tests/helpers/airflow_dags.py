"""Real runs of the DAG with `airflow dags test` (Airflow's in-process dag.test()), shared by the DAG's
and the notifications' integration tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from erfnet_tasks.deployment import DAG_ID, local_airflow_env, without_project_settings

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests" / "standins"
AIRFLOW = Path(sys.executable).with_name("airflow")


def airflow_env(home: Path, data: Path, **extra: str) -> dict:
    return local_airflow_env(
        home, dags_folder=REPO / "dags", inherit=without_project_settings(os.environ), data=data, **extra
    )


class DagRun:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.output = proc.stdout + proc.stderr
        self.returncode = proc.returncode
        match = re.search(r"DagRun Finished: .*?run_id=(\S+?), .*?state=(\w+)", self.output)
        self.run_id, self.state = (match.group(1), match.group(2)) if match else (None, None)
        self.ran = set(re.findall(r"\[DAG TEST\] end task task_id=([\w.]+)", self.output))


def run_dag(home: Path, data: Path, conf: dict, **env_extra: str) -> DagRun:
    env = airflow_env(home, data, **env_extra)
    proc = subprocess.run(
        [str(AIRFLOW), "dags", "test", DAG_ID, "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    run = DagRun(proc)
    assert run.run_id, run.output[-5000:]
    return run
