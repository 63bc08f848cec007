"""`make airflow`: Airflow on this machine, ready for one click on Trigger, until Ctrl-C.

What the README's manual steps used to ask for, in one command:
- AIRFLOW_HOME (data/airflow_home), the dags and plugins folders of this checkout, no example DAGs;
- .venv/bin first on PATH: `airflow standalone` starts its scheduler, dag-processor, api-server and
  triggerer by the name `airflow`, so without it they all crash and nothing listens on the port;
- the metadata database migrated and the pool of deploy/airflow-init.sh set *before* standalone starts
  (a second shell without these exports gets "Database migration required");
- the demo's synthetic dataset and random checkpoint (erfnet demo's own, under data/demo) as the form's
  defaults, with targets cpu, batch sizes 1,4 and reference mIoU 0 (random weights score ~0), so that the
  first trigger with the defaults untouched and the scheduled run that unpausing creates both succeed;
- results in their own SQLite file (data/airflow_home/results.sqlite), so `latest` is never a demo run.

`airflow standalone` runs the LocalExecutor: every task runs on this machine, whatever its queue.
Ctrl-C (or SIGTERM) stops standalone and every process it started: they share one process group.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from local_cluster import init_pool_commands

from erfnet_tasks.demo import DEMO_IMAGES, prepare_inputs
from erfnet_tasks.deployment import DAG_ID, VENV_BIN, local_airflow_env
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.settings import data_dir

REPO = Path(__file__).resolve().parent.parent
BIN = VENV_BIN
ADMIN = "admin"  # standalone's user (SimpleAuthManager, simple_auth_manager_users = admin:admin)
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
FORM_DEFAULTS = {"ERFNET_TARGETS": "cpu", "ERFNET_BATCH_SIZES": "1,4", "ERFNET_REFERENCE_MIOU": "0"}


class LaunchError(RuntimeError):
    pass


def airflow_env(data: Path, port: int, weights: Path, dataset: Path) -> dict[str, str]:
    home = data / "airflow_home"
    env = local_airflow_env(
        home,
        dags_folder=REPO / "dags",
        plugins_folder=REPO / "plugins",
        inherit=os.environ,
        data=data,
        api_url=f"http://localhost:{port}",
        AIRFLOW__API__PORT=str(port),
        ERFNET_WEIGHTS=str(weights),
        ERFNET_DATASET_ROOT=str(dataset),
        **FORM_DEFAULTS,
    )
    env.setdefault("ERFNET_RESULTS_DB_URL", f"sqlite:///{home / 'results.sqlite'}")
    # A development server with a generated password: this machine only, unless AIRFLOW__API__HOST says otherwise.
    env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    # The LocalExecutor starts one worker process per slot up front (32 by default): one per core here.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(max(2, os.cpu_count() or 2)))
    return env


def prepare(env: dict[str, str], log: Path) -> None:
    """Migrate the metadata and results databases and set the pool, before any Airflow process starts."""
    home = Path(env["AIRFLOW_HOME"])
    steps = [
        [str(BIN / "airflow"), "db", "migrate"],
        [str(BIN / "erfnet"), "results", "init"],
        *([str(BIN / "airflow"), *argv[1:]] for argv in init_pool_commands(env)),
    ]
    with log.open("ab") as out:
        for argv in steps:
            print(f"airflow: {' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv[:4]))} ...")
            if subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home).returncode != 0:
                raise LaunchError(f"`{' '.join(argv[1:3])}` failed; its output is in {log}")


def health(base_url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until_ready(process: subprocess.Popen, base_url: str, log: Path, timeout: float = 600) -> None:
    """Until the api-server answers and reports a healthy scheduler, or standalone dies."""
    deadline = time.monotonic() + timeout
    while True:
        status = health(base_url)
        if status and status.get("scheduler", {}).get("status") == "healthy":
            return
        if process.poll() is not None:
            raise LaunchError(f"airflow standalone exited with {process.returncode}: see {log}")
        if time.monotonic() > deadline:
            raise LaunchError(f"Airflow not ready at {base_url} after {timeout:.0f}s: see {log}")
        time.sleep(2)


def stop(process: subprocess.Popen) -> None:
    """SIGINT to the group (standalone's own clean shutdown), then SIGTERM, then SIGKILL for stragglers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.5)


def banner(env: dict[str, str], base_url: str, log: Path) -> str:
    password_file = Path(env["AIRFLOW_HOME"]) / PASSWORD_FILE
    try:
        password = json.loads(password_file.read_text()).get(ADMIN, "?")
    except (OSError, ValueError):
        password = "(not written yet)"
    return "\n".join(
        [
            f"Airflow is up: {base_url}   user {ADMIN}   password {password}",
            f"  (the password is kept in {password_file})",
            "  executor: LocalExecutor (airflow standalone) - every task runs here; the `npu` queue is ignored",
            f"  form defaults: weights {env['ERFNET_WEIGHTS']}",
            f"                 dataset {env['ERFNET_DATASET_ROOT']}  (synthetic; random weights)",
            f"                 targets {env['ERFNET_TARGETS']}, batch sizes {env['ERFNET_BATCH_SIZES']}, "
            f"reference mIoU {env['ERFNET_REFERENCE_MIOU']}",
            f"  results: {env['ERFNET_RESULTS_DB_URL']}",
            f"  logs: {log}",
            f"Open the DAG {DAG_ID} and press Trigger. Ctrl-C stops everything.",
        ]
    )


def run(port: int) -> int:

    data = data_dir()
    dataset, weights = prepare_inputs(data / "demo", DEMO_IMAGES)
    env = airflow_env(data, port, weights, dataset)
    home = Path(env["AIRFLOW_HOME"])
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "standalone.log"
    prepare(env, log)
    base_url = f"http://localhost:{port}"
    print(f"airflow: starting `airflow standalone` (log: {log})")
    with log.open("ab") as out:
        # Its own process group, so that stop() reaches every process standalone starts.
        process = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=home,
            start_new_session=True,
        )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        wait_until_ready(process, base_url, log)
        print(banner(env, base_url, log), flush=True)
        while process.poll() is None:
            time.sleep(1)
        raise LaunchError(f"airflow standalone exited with {process.returncode}: see {log}")
    except KeyboardInterrupt:
        print("\nairflow: stopping (standalone lets running tasks finish; at most a minute)", flush=True)
        return 0
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Airflow standalone with this checkout's DAG and plugin, the "
        "demo's synthetic data as the form's defaults; Ctrl-C stops it."
    )
    parser.add_argument("--port", type=int, default=8080, help="the UI's port (default 8080)")
    args = parser.parse_args(argv)
    try:
        return run(args.port)
    except (LaunchError, ErfnetError) as exc:
        print(f"airflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
