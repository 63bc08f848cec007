"""Where the project sits in Airflow: the DAG's id, the results plugin's URL prefix, and the environment
of an Airflow of this checkout on this machine (``make airflow``, the local cluster, ``erfnet demo`` and
the tests that start Airflow all build theirs here). Nothing here imports Airflow: an environment is a dict.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DAG_ID = "erfnet_offline_inference"
"""The pipeline's DAG: the dag_id of its runs, the links of notifications and the plugin's pages."""

PLUGIN_PREFIX = "/erfnet"
"""Where the results app is mounted inside the Airflow API server."""

VENV_BIN = Path(sys.executable).parent
_PROJECT_PREFIXES = ("AIRFLOW", "ERFNET_", "STANDIN_")


def without_project_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without Airflow's, the project's and the stand-ins' settings: a child then sees only what
    it is given, whatever the caller's shell exported."""
    return {k: v for k, v in environ.items() if not k.startswith(_PROJECT_PREFIXES)}


def local_airflow_env(
    home: Path,
    *,
    dags_folder: Path,
    inherit: Mapping[str, str],
    plugins_folder: Path | None = None,
    data: Path | None = None,
    data_roots: Sequence[Path | str] | None = None,
    api_url: str | None = None,
    **settings: str,
) -> dict[str, str]:
    """The environment of an Airflow whose home is ``home``, on top of ``inherit``.

    Its children find the venv's ``airflow`` first on PATH (standalone and the scheduler start them by
    name); ``data`` is the project's data folder and, unless ``data_roots`` says otherwise, the one root
    user paths may lie under; ``api_url`` is the API server's base URL (the workers reach the execution
    API under it). ``settings`` come last and win.
    """
    env = dict(inherit)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{inherit.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    if plugins_folder is not None:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins_folder)
    if data is not None:
        env["ERFNET_DATA_DIR"] = str(data)
        env["ERFNET_DATA_ROOTS"] = os.pathsep.join(dict.fromkeys(map(str, data_roots or [data])))
    if api_url is not None:
        env["AIRFLOW__API__BASE_URL"] = api_url
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{api_url}/execution/"
    env.update(settings)
    return env
