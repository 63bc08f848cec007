"""A CANN upgrade starts the regression DAG, with nobody triggering anything: a real Airflow (api-server,
scheduler, dag-processor; LocalExecutor) on a throwaway PostgreSQL metadata database runs the probe DAG
every minute against a stand-in NPU host. Before the upgrade the probe ends skipped and the regression
DAG gets no run from it (only its nightly); after the stand-in toolkit's version.cfg changes, the probe
emits the Asset event and the regression DAG gets exactly one asset-triggered run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from erfnet_tasks.deployment import DAG_ID, local_airflow_env, without_project_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standins"))
import harness

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
MAIN, PROBE = DAG_ID, "erfnet_cann_probe"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def metadata_url(pg_server):
    name = f"airflow_meta_{uuid.uuid4().hex[:12]}"
    with pg_server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = pg_server.url.set(database=name)
    yield base.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    with pg_server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def npu_host(tmp_path):
    toolkit = tmp_path / "ascend-toolkit" / "latest"
    harness.write_cann_version(toolkit, "8.0.0")
    return toolkit


def _env(home: Path, metadata_url: str, port: int, toolkit: Path, results_url: str) -> dict:
    return local_airflow_env(
        home,
        dags_folder=REPO / "dags",
        inherit=without_project_settings(os.environ),
        data=home / "data",
        api_url=f"http://127.0.0.1:{port}",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__API_AUTH__JWT_SECRET="erfnet-cann-trigger-test-" + uuid.uuid4().hex,
        ERFNET_CANN_PROBE_MINUTES="1",
        ERFNET_RESULTS_DB_URL=results_url,
        ERFNET_NOTIFY="",
        # The stand-in NPU host: npu-smi on PATH, the toolkit's version.cfg where CANN keeps it.
        PATH=f"{harness.BIN}{os.pathsep}{os.environ['PATH']}",
        ASCEND_TOOLKIT_HOME=str(toolkit),
        STANDIN_NPU_DRIVER="23.0.3",
    )


@pytest.fixture
def airflow_cluster(tmp_path, metadata_url, npu_host, sqlite_url):
    """api-server + scheduler + dag-processor; every process is stopped (its whole group) afterwards."""
    port = _free_port()
    env = _env(tmp_path / "airflow_home", metadata_url, port, npu_host, sqlite_url)
    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs, procs = tmp_path / "logs", []
    logs.mkdir()
    commands = {
        "api-server": [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": [AIRFLOW, "scheduler"],
        "dag-processor": [AIRFLOW, "dag-processor"],
    }
    try:
        for name, argv in commands.items():
            with (logs / f"{name}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                )
            if name == "api-server":  # tasks report to its execution API: up before anything runs
                _wait_for_health(f"http://127.0.0.1:{port}/api/v2/monitor/health", procs, logs)
        yield {
            "env": env,
            "metadata": sa.create_engine(metadata_url),
            "toolkit": npu_host,
            "results": sqlite_url,
            "logs": logs,
        }
    finally:
        for child in procs:
            with _ignore(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        for child in procs:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                with _ignore(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)


class _ignore:
    def __init__(self, *kinds):
        self.kinds = kinds

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, self.kinds)


def _wait_for_health(url: str, procs, logs: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail("Airflow did not come up:\n" + _tails(logs))
            time.sleep(2)


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2500:]}" for f in sorted(logs.glob("*.log")))


def _upgrade_runs(engine) -> list[str]:
    """The regression DAG's runs that an Asset event started (the nightly's own runs are 'scheduled':
    unpausing it creates the latest 02:00 one, as a plain cron schedule did)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT run_id FROM dag_run WHERE dag_id = :d AND run_type = 'asset_triggered' ORDER BY id"),
            {"d": MAIN},
        )
        return [str(run_id) for (run_id,) in rows]


def _probe_states(engine) -> list[str]:
    """The state of the probe task in each finished probe run, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT ti.state FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id "
                "WHERE ti.dag_id = :d AND ti.state IN ('success', 'skipped', 'failed') ORDER BY r.id"
            ),
            {"d": PROBE},
        )
        return [str(state) for (state,) in rows]


def _asset_events(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                "WHERE a.name = 'erfnet_cann_version' ORDER BY e.id"
            )
        )
        return [extra for (extra,) in rows]


def _wait(predicate, what: str, cluster, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(3)
    pytest.fail(f"timed out waiting for {what}\n" + _tails(cluster["logs"]))


def test_a_cann_upgrade_gives_one_run_and_no_upgrade_gives_none(airflow_cluster):
    from erfnet_tasks import cann_probe

    cluster, engine = airflow_cluster, airflow_cluster["metadata"]
    # This host was seen before, at the version it has now (what a deployed probe would have recorded).
    seeded = _with_env(cluster["env"], lambda: cann_probe.probe(cluster["results"]))
    assert seeded["first_seen"]

    # Probes without an upgrade: each ends skipped, no Asset event, no regression run.
    _wait(lambda: len(_probe_states(engine)) >= 1, "a first scheduled probe", cluster)
    assert _probe_states(engine) == ["skipped"] * len(_probe_states(engine)), _tails(cluster["logs"])
    assert _asset_events(engine) == [] and _upgrade_runs(engine) == []

    # The upgrade: the stand-in toolkit's version.cfg now says 8.1.RC1.
    before = len(_probe_states(engine))
    harness.write_cann_version(cluster["toolkit"], "8.1.RC1", runtime="7.7.0.1.100")
    _wait(lambda: "success" in _probe_states(engine)[before:], "a probe that sees the upgrade", cluster)
    [event] = _asset_events(engine)
    assert event["previous"]["cann_version"] == "8.0.0" and event["current"]["cann_version"] == "8.1.RC1"
    assert len(_wait(lambda: _upgrade_runs(engine), "the regression DAG's run", cluster, timeout=120)) == 1

    # Later probes see the new version as the current one: no second event, no second run.
    after = len(_probe_states(engine))
    _wait(lambda: len(_probe_states(engine)) > after, "the next probe", cluster)
    assert _probe_states(engine)[after:] == ["skipped"] * len(_probe_states(engine)[after:])
    assert len(_asset_events(engine)) == 1 and len(_upgrade_runs(engine)) == 1


def _with_env(env: dict, call):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return call()
    finally:
        os.environ.clear()
        os.environ.update(saved)
