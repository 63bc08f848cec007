"""The pinned set (constraints.txt, which the Dockerfile installs too) works together: `pip check` is clean,
and every Airflow component docker-compose.yaml starts loads its configured executor and the providers,
each in its own process with the compose file's settings. celery 5.7.0 passed every other test while no
scheduler or worker could start (`cannot import name 'retry' from 'celery.backends.database'`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))
from local_cluster import compose, compose_command, compose_settings

from erfnet_tasks.deployment import local_airflow_env, without_project_settings

AIRFLOW = Path(sys.executable).with_name("airflow")
# The providers the deployment needs: the executor's, the metadata/results databases', the DAG's operators'.
NEEDED_PROVIDERS = {
    "apache-airflow-providers-celery",
    "apache-airflow-providers-postgres",
    "apache-airflow-providers-standard",
    "apache-airflow-providers-common-sql",
}


def test_pip_check_is_clean():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_venv_has_exactly_the_pinned_versions():
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    wrong = {
        name: (version, installed.get(name))
        for name, version in pins.items()
        if name in installed and installed[name] != version
    }
    assert wrong == {}, "installed differs from constraints.txt (make install): " + repr(wrong)


def _airflow_services() -> dict[str, list[str]]:
    """compose service -> its Airflow command, for every service that runs one."""
    out = {}
    for name in compose()["services"]:
        if name.startswith("airflow-") or name == "flower":
            command = compose_command(name)
            if command and command[0] not in ("bash",):
                out[name] = command
    return out


# What each component loads when it starts, in the order it does so; any failure exits non-zero.
PROBE = textwrap.dedent("""
    import sys
    from airflow.configuration import conf
    from airflow.executors.executor_loader import ExecutorLoader
    from airflow.providers_manager import ProvidersManager

    command = sys.argv[1:]
    for name in ExecutorLoader.get_executor_names():
        cls, _ = ExecutorLoader.import_executor_cls(name)
        print("executor", name.alias or name.module_path, cls.__name__)
    pm = ProvidersManager()
    pm.initialize_providers_list()
    print("providers", " ".join(sorted(pm.providers)))
    if command[0] == "api-server":
        from airflow.api_fastapi.app import get_auth_manager_cls
        print("auth manager", get_auth_manager_cls().__name__)
    if command[0] == "dag-processor":
        from pathlib import Path
        from airflow import settings
        from airflow.dag_processing.dagbag import BundleDagBag
        # As the dag-processor parses the dags-folder bundle: its folder on sys.path (the DAG's helpers).
        bag = BundleDagBag(settings.DAGS_FOLDER, bundle_path=Path(settings.DAGS_FOLDER))
        assert not bag.import_errors, bag.import_errors
        print("dags", " ".join(sorted(bag.dag_ids)))
    if command[:2] == ["celery", "worker"] or command[:2] == ["celery", "flower"]:
        from airflow.providers.celery.executors.celery_executor import app
        print("celery app", app.main, type(app.backend).__name__)
""")


@pytest.mark.parametrize("service", sorted(_airflow_services()))
def test_every_compose_component_loads_its_executor_and_providers(service, tmp_path):
    command = _airflow_services()[service]
    env = local_airflow_env(
        tmp_path,
        dags_folder=REPO / "dags",
        plugins_folder=REPO / "plugins",
        inherit={**without_project_settings(os.environ), **compose_settings()},
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+sqlite:///{tmp_path / 'celery.db'}",
        AIRFLOW__API_AUTH__JWT_SECRET="pins-test",
    )
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *command], capture_output=True, text=True, env=env, timeout=300
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr[-4000:]
    assert f"executor {env['AIRFLOW__CORE__EXECUTOR']} CeleryExecutor" in probe.stdout, probe.stdout
    providers = set(probe.stdout.split("providers ", 1)[1].splitlines()[0].split())
    assert providers >= NEEDED_PROVIDERS, providers
    if command[0] != "celery":
        return
    # The command line itself: `airflow celery ...` exists only when the executor imports.
    cli = subprocess.run([str(AIRFLOW), *command, "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-4000:]
