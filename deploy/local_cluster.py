"""The docker-compose cluster, started from .venv on this host: what tests/integration/test_cluster.py starts.

It runs the services of docker-compose.yaml as local processes, with the compose file's own commands and
settings where they apply (executor, auth manager, paused-at-creation, ...), and local replacements for
what names a container: a throwaway metadata database and results database on the local PostgreSQL,
an empty Redis database of its own as the broker, free ports, and one ``hostname_callable`` so that each
worker's task instances name the worker that ran them. The init steps are those of
deploy/airflow-init.sh: ``airflow db migrate``, the pool line of the script, ``erfnet results init``.

    cluster = LocalCluster(workdir, [Worker("cpu-worker"), Worker("npu-worker", "airflow-worker-npu", env)])
    with cluster:                       # start(); stop() on exit, failures included
        run_id = cluster.trigger(DAG_ID, conf)
        cluster.wait_for_run(DAG_ID, run_id)

A worker is a compose service's command (its queues) plus an environment of its own: adding a second
NPU host is one more ``Worker`` with its own name and env. ``kill_worker`` SIGKILLs a worker's whole process
group (a host lost with everything on it) and ``restart_worker`` starts it again with the same command line
and environment (the host back from a reboot). By hand: ``.venv/bin/python deploy/local_cluster.py --help``.

Every service runs the library, DAGs and plugin of one source tree (``source``, default this checkout),
first on its PYTHONPATH: the venv's editable install points at whichever checkout installed it, and a
worktree's cluster must run the worktree's code (a benchmark may run an older tree's, from ``git archive``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from erfnet_tasks.deployment import VENV_BIN, local_airflow_env, without_project_settings
from erfnet_tasks.lab_airflow import LAB_AIRFLOW_SETTINGS, LAB_DEADLINE_SETTINGS

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = REPO / "docker-compose.yaml"
INIT_SCRIPT = DEPLOY / "airflow-init.sh"
BIN = VENV_BIN
PG_ADMIN = os.environ.get("ERFNET_CLUSTER_PG", "postgres@127.0.0.1:5432")
REDIS = os.environ.get("ERFNET_CLUSTER_REDIS", "127.0.0.1:6379")
ADMIN = "admin"

# x-airflow-common settings taken from docker-compose.yaml as they are; the others there name containers,
# files or secrets and get local values in LocalCluster._common_env.
COMPOSE_SETTINGS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DEFAULT_TIMEZONE",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
)
_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """docker-compose's ${NAME:-default} with the defaults of the compose file (and .env.example's none)."""
    text = _VAR.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", text)
    return text.replace("$$", "$")  # compose's escape for a literal $ (the worker's shell expands it)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_settings(env: dict[str, str] | None = None) -> dict[str, str]:
    common = compose()["x-airflow-common"]["environment"]
    return {key: _interpolate(str(common[key]), env or {}) for key in COMPOSE_SETTINGS}


def compose_command(service: str, env: dict[str, str] | None = None) -> list[str]:
    command = compose()["services"][service]["command"]
    words = shlex.split(command) if isinstance(command, str) else list(command)
    return [_interpolate(word, env or {}) for word in words]


def init_pool_commands(env: dict[str, str]) -> list[list[str]]:
    """The `airflow pools set ...` lines of deploy/airflow-init.sh, with its variables expanded."""
    lines = INIT_SCRIPT.read_text().replace("\\\n", " ").splitlines()
    words = [shlex.split(_interpolate(line, env), comments=True) for line in lines]
    return [w for w in words if w[:3] == ["airflow", "pools", "set"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Worker:
    """One `airflow celery worker`: the command of a compose service, its own name and environment."""

    name: str  # its Celery node name and the hostname on its task instances
    service: str = "airflow-worker"  # the compose service whose command (queues) it runs
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 2  # small: this host is not a worker fleet


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    def __init__(
        self, workdir: Path, workers: list[Worker], env: dict[str, str] | None = None, source: Path = REPO
    ) -> None:
        self.workdir = Path(workdir)
        self.source = Path(source)
        self.workers = workers
        self.extra_env = dict(env or {})
        suffix = secrets.token_hex(4)
        self.meta_db, self.results_db = f"airflow_cluster_{suffix}", f"erfnet_cluster_{suffix}"
        self.password = secrets.token_urlsafe(12)
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.services: list[Service] = []
        self.redis_db: int | None = None
        self._made_dbs: list[str] = []
        self._token: str | None = None

    # ------------------------------------------------------------------------------ environment

    @property
    def results_url(self) -> str:
        return f"postgresql+psycopg://{PG_ADMIN}/{self.results_db}"

    def _common_env(self) -> dict[str, str]:
        inherit = {**without_project_settings(os.environ), **compose_settings()}
        return local_airflow_env(
            self.workdir / "airflow_home",
            dags_folder=self.source / "dags",
            plugins_folder=self.source / "plugins",
            inherit=inherit,
            data=self.workdir / "data",
            api_url=self.base_url,
            **self._cluster_settings(),
        )

    def _cluster_settings(self) -> dict[str, str]:
        """What a cluster adds to a local Airflow: its databases, broker, secret, ports and worker names."""
        return {
            **LAB_AIRFLOW_SETTINGS,
            **LAB_DEADLINE_SETTINGS,  # a lab's: docker-compose.yaml carries the same
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.workdir / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{PG_ADMIN}/{self.meta_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{PG_ADMIN}/{self.meta_db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS}/{self.redis_db}",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.health_port),
            # Every worker names itself (deploy/worker_hostname.py); the default is the host's FQDN.
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_hostname.hostname",
            "PYTHONPATH": os.pathsep.join([str(self.source), str(self.source / "deploy")]),
            "AIRFLOW_CONN_ERFNET_RESULTS": self.results_url,
            "ERFNET_RESULTS_DB_URL": self.results_url,
            **self.extra_env,
        }

    def _worker_env(self, worker: Worker) -> dict[str, str]:
        env = {
            **self.env,
            "ERFNET_WORKER_HOSTNAME": worker.name,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        for key, value in worker.env.items():
            # PATH and PYTHONPATH extend the cluster's; anything else replaces it.
            env[key] = f"{value}{os.pathsep}{env[key]}" if key in ("PATH", "PYTHONPATH") and env.get(key) else value
        return env

    # ---------------------------------------------------------------------------- start / stop

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.jwt_secret, self.health_port = secrets.token_urlsafe(32), free_port()
        self._claim_redis_db()
        self._create_databases()
        self.env = self._common_env()
        sys.path.insert(0, str(DEPLOY))
        try:
            from simple_auth_passwords import set_password
        finally:
            sys.path.remove(str(DEPLOY))
        set_password(self.workdir / "passwords.json", ADMIN, self.password)
        self._init()
        self._spawn(
            "api-server",
            [
                str(BIN / "airflow"),
                *compose_command("airflow-apiserver"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--workers",
                "1",
            ],
        )
        for service, name in (("airflow-scheduler", "scheduler"), ("airflow-dag-processor", "dag-processor")):
            self._spawn(name, [str(BIN / "airflow"), *compose_command(service)])
        for worker in self.workers:
            self._spawn(worker.name, self._worker_argv(worker), self._worker_env(worker))
        self._wait_for_api()

    def _worker_argv(self, worker: Worker) -> list[str]:
        words = compose_command(worker.service, {"ERFNET_NPU_WORKER_CONCURRENCY": str(worker.concurrency)})
        name = ["--celery-hostname", f"{worker.name}@%h"]
        if words[:2] == ["bash", "-c"]:
            # The NPU worker's shell line: $(erfnet worker-queues) runs with this worker's environment (its
            # own npu-smi), exactly as in its container.
            return ["bash", "-c", f"{words[2]} {shlex.join(name)}"]
        return [str(BIN / "airflow"), *self._with_concurrency(words, worker.concurrency), *name]

    @staticmethod
    def _with_concurrency(argv: list[str], concurrency: int) -> list[str]:
        if "--concurrency" in argv:
            i = argv.index("--concurrency")
            return [*argv[:i], *argv[i + 2 :], "--concurrency", str(concurrency)]
        return [*argv, "--concurrency", str(concurrency)]

    def _init(self) -> None:
        """deploy/airflow-init.sh's steps that apply here; the two databases are migrated side by side."""
        migrate = self._spawn("db-migrate", [str(BIN / "airflow"), "db", "migrate"])
        results = self._spawn("results-init", [str(BIN / "erfnet"), "results", "init"])
        for service in (migrate, results):
            self._wait_exit(service, 300)
        for argv in init_pool_commands(self.env):
            self._wait_exit(self._spawn("pools", [str(BIN / "airflow"), *argv[1:]]), 120)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Service:
        log = self.workdir / "logs" / f"{name}.log"
        with log.open("ab") as out:
            # Its own process group: stop() ends the service with every process it started.
            process = subprocess.Popen(
                argv,
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )
        service = Service(name, process, log, list(argv), dict(env or self.env))
        self.services.append(service)
        return service

    def service(self, name: str) -> Service:
        """The latest service of that name (a restarted worker's, not the killed one's)."""
        return next(s for s in reversed(self.services) if s.name == name)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group, as a host lost with everything on it: no cleanup
        runs, the tools' own groups end through their launcher (erfnet_tasks/tool_launcher.py)."""
        service = self.service(name)
        _signal_group(service.process.pid, signal.SIGKILL)
        service.process.wait(30)
        service.name = f"{name} (killed)"  # check_alive() leaves it be; restart_worker() starts a new one

    def restart_worker(self, name: str) -> Service:
        """Start a killed worker again with the same command line and environment (a rebooted host)."""
        killed = self.service(f"{name} (killed)")
        return self._spawn(name, killed.argv, killed.env)

    def _wait_exit(self, service: Service, timeout: float) -> None:
        try:
            code = service.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{service.name} did not finish in {timeout:.0f}s: {self.tail(service.name)}") from exc
        if code != 0:
            raise ClusterError(f"{service.name} exited with {code}: {self.tail(service.name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        return self.service(name).log.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        """Raise with its log when a long-running service has exited (a worker that cannot load its executor)."""
        for service in self.services:
            if (
                service.name not in ("db-migrate", "results-init", "pools")
                and not service.name.endswith("(killed)")
                and service.process.poll() is not None
            ):
                raise ClusterError(
                    f"{service.name} exited with {service.process.returncode}:\n{self.tail(service.name)}"
                )

    def process_groups(self) -> list[int]:
        return [s.process.pid for s in self.services]

    def stop(self) -> None:
        for service in reversed(self.services):
            _signal_group(service.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for service in self.services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(max(0.1, deadline - time.monotonic()))
        for service in self.services:
            _signal_group(service.process.pid, signal.SIGKILL)  # stragglers, and children of exited leaders
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(10)
        self._drop_databases()
        self._release_redis_db()

    # ------------------------------------------------------------------------- PostgreSQL, Redis

    def _admin(self):
        import psycopg

        user, _, hostport = PG_ADMIN.partition("@")
        host, _, port = hostport.partition(":")
        return psycopg.connect(host=host, port=int(port or 5432), user=user, dbname="postgres", autocommit=True)

    def _create_databases(self) -> None:
        with self._admin() as conn:
            for name in (self.meta_db, self.results_db):
                conn.execute(f'CREATE DATABASE "{name}"')
                self._made_dbs.append(name)

    def _drop_databases(self) -> None:
        if not self._made_dbs:
            return
        with self._admin() as conn:
            for name in self._made_dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._made_dbs = []

    def _redis(self, db: int):
        import redis

        host, _, port = REDIS.partition(":")
        return redis.Redis(host=host, port=int(port or 6379), db=db)

    def _claim_redis_db(self) -> None:
        """An empty Redis database (1..15), claimed with a key so that a parallel cluster picks another."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        for db in range(15, 0, -1):
            client = self._redis(db)
            if client.dbsize() == 0 and client.set("erfnet-local-cluster", token, nx=True):
                if client.dbsize() == 1:
                    self.redis_db = db
                    return
                client.delete("erfnet-local-cluster")
        raise ClusterError(f"no empty Redis database (1..15) at {REDIS}")

    def _release_redis_db(self) -> None:
        if self.redis_db is not None:
            self._redis(self.redis_db).flushdb()
            self.redis_db = None

    # ------------------------------------------------------------------------------- REST API

    def _wait_for_api(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"api-server not up after {timeout:.0f}s: {self.tail('api-server')}") from exc
                time.sleep(1)

    def token(self) -> str:
        """A JWT from /auth/token, as any REST client gets one."""
        if self._token is None:
            body = json.dumps({"username": ADMIN, "password": self.password}).encode()
            request = urllib.request.Request(
                f"{self.base_url}/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                self._token = json.load(response)["access_token"]
        return self._token

    def get(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base_url + path, headers={"Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            f"{self.base_url}/api/v2{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise ClusterError(f"{method} {path}: HTTP {exc.code} {exc.read()[:500]!r}") from exc

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed the DAG into the metadata database."""
        self._poll(lambda: self.get(f"/api/v2/dags/{dag_id}")[0] == 200, timeout, f"DAG {dag_id} parsed")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict) -> str:
        return self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The final state of the run (success or failed)."""
        state = {}

        def finished() -> bool:
            state["value"] = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            return state["value"] in ("success", "failed")

        self._poll(finished, timeout, f"run {run_id} finished")
        return state["value"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        status, body = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
            f"{try_number}?full_content=true&map_index={map_index}"
        )
        return body.decode(errors="replace") if status == 200 else f"(HTTP {status})"

    def _poll(self, done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for: {what}")
            time.sleep(2)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Start the docker-compose cluster from .venv on this host "
        "until Ctrl-C (throwaway databases, dropped on exit)."
    )
    parser.add_argument("--workdir", type=Path, required=True, help="AIRFLOW_HOME, logs and data go here")
    parser.add_argument(
        "--npu-worker",
        action="store_true",
        help="also an NPU worker on the queues of this host's chips ($(erfnet worker-queues))",
    )
    args = parser.parse_args(argv)
    workers = [Worker("cpu-worker")] + ([Worker("npu-worker", "airflow-worker-npu")] if args.npu_worker else [])
    with LocalCluster(args.workdir, workers) as cluster:
        print(f"{cluster.base_url}  user {ADMIN}  password {cluster.password}  logs {args.workdir / 'logs'}")
        try:
            while True:
                cluster.check_alive()
                time.sleep(5)
        except KeyboardInterrupt:
            print("stopping")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClusterError as exc:
        print(f"local_cluster: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
