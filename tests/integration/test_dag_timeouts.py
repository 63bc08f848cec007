"""The DAG backs each NPU tool's own deadline (erfnet_tasks/deadlines.py) with Airflow's execution_timeout,
read from a real DagBag as the dag-processor parses the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from erfnet_tasks import deadlines

REPO = Path(__file__).resolve().parents[2]


def test_the_dag_backs_each_npu_tool_deadline_with_an_execution_timeout(tmp_path):
    """Parsed as the dag-processor parses it, with a lab's per-image figure: the bound follows it."""
    probe = (
        "import json, sys\nsys.path.insert(0, 'dags')\nfrom airflow.dag_processing.dagbag import DagBag\n"
        "dag = DagBag(dag_folder='dags/erfnet_offline_inference.py').dags['erfnet_offline_inference']\n"
        "print(json.dumps({t.task_id: t.execution_timeout and t.execution_timeout.total_seconds() "
        "for t in dag.tasks}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "ERFNET_"))}
    env.update(
        {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "ERFNET_INFER_TIMEOUT_PER_IMAGE": "2"}
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    timeouts = json.loads(proc.stdout.strip().splitlines()[-1])
    for chip in ("Ascend310", "Ascend310P3"):
        # 500 images x 2 s = 1000 s of inference, once waiting for the lease and once its own; 250 s of evaluation
        for group in (f"cells_{chip}", f"cells_aoe_{chip}"):
            assert timeouts[f"{group}.measure"] == 2 * 1000 + 250 + deadlines.TASK_MARGIN_S
        assert timeouts[f"cells_{chip}.compile"] == 900 + deadlines.TASK_MARGIN_S
        assert timeouts[f"cells_aoe_{chip}.compile"] == 2 * 7200 + deadlines.TASK_MARGIN_S
    assert timeouts["cells_on_host.measure"] is None and timeouts["publish_results"] is None  # no device there
    assert timeouts[f"cells_{chip}.store"] is None  # on the default queue
