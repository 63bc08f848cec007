"""The deployment: docker-compose.yaml as docker-compose itself resolves it, the Dockerfile, and the init
scripts the containers run. docker-compose's `config` needs no engine (Debian's package; `make test`
installs it through tools/ensure-system-packages.sh)."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"

AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-npu",
]
ASCEND_DEVICES = ["/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]


def _compose_env() -> dict:
    """The caller's environment without anything that would fill the file's variables for it."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


def _docker_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: run tools/ensure-system-packages.sh (make test does)")
    # --profile npu: Compose v2 leaves profiled services out of `config` unless asked; v1 accepts it too.
    argv = [
        exe,
        "-f",
        str(COMPOSE),
        "--project-directory",
        str(REPO),
        "--env-file",
        str(env_file),
        "--profile",
        "npu",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, env=_compose_env(), timeout=120)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    shutil.copy(REPO / ".env.example", env_file)
    proc = _docker_compose(env_file, "config")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _command(service: dict) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def _queues(service: dict) -> list[str]:
    argv = _command(service)
    assert argv[:2] == ["celery", "worker"], argv
    assert argv.count("--queues") == 1, argv
    return argv[argv.index("--queues") + 1].split(",")


def _mounts(service: dict) -> dict[str, tuple[str, str]]:
    """container path -> (host path, mode), from docker-compose's resolved short syntax."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


# ------------------------------------------------------------------------------------------ compose


def test_compose_has_the_airflow3_celery_layout(resolved):
    services = resolved["services"]
    for name in ["postgres", "redis", "airflow-init", *AIRFLOW_SERVICES]:
        assert name in services, f"missing service {name}"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).host == "postgres"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    # Tokens signed by the scheduler must verify in the api-server: one secret for every component.
    secrets = {services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(secrets) == 1 and secrets != {""}
    assert _command(services["airflow-apiserver"]) == ["api-server"]
    assert _command(services["airflow-dag-processor"]) == ["dag-processor"]


def test_every_long_running_service_has_a_healthcheck(resolved):
    services = resolved["services"]
    for name in ["postgres", "redis", *AIRFLOW_SERVICES]:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    ping = " ".join(services["airflow-worker-npu"]["healthcheck"]["test"])
    assert "inspect ping" in ping


def test_start_order_waits_for_healthy_backends_and_a_finished_init(resolved):
    services = resolved["services"]
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    for worker in ("airflow-worker", "airflow-worker-npu"):
        assert services[worker]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_cpu_worker_takes_the_default_queue_and_npu_worker_the_queues_of_its_chips(resolved):
    services = resolved["services"]
    assert _queues(services["airflow-worker"]) == ["default"]
    # The NPU worker's queues are npu-<chip> for the chips its host has, read by `erfnet worker-queues`
    # in its own shell (tests/integration/test_cluster.py runs this line for two simulated hosts).
    argv = _command(services["airflow-worker-npu"])
    assert argv[:2] == ["bash", "-c"], argv
    assert (
        argv[2]
        .replace("$$", "$")
        .startswith(  # `config` writes compose's escaped $$ back
            'queues=$(erfnet worker-queues) && exec airflow celery worker --queues "$queues" '
        )
    )
    workers_on_npu = [
        name
        for name, s in services.items()
        if "worker-queues" in " ".join(_command(s))
        or (_command(s)[:2] == ["celery", "worker"] and any(q.startswith("npu") for q in _queues(s)))
    ]
    assert workers_on_npu == ["airflow-worker-npu"]


def test_npu_worker_has_the_ascend_devices_driver_and_toolkit(resolved):
    npu = resolved["services"]["airflow-worker-npu"]
    devices = {d.split(":")[0]: d.split(":")[1] for d in npu["devices"]}
    for device in ASCEND_DEVICES:
        assert devices.get(device) == device, f"{device} not mapped"
    mounts = _mounts(npu)
    for path in (
        "/usr/local/Ascend/driver",
        "/usr/local/bin/npu-smi",
        "/usr/local/dcmi",
        "/usr/local/Ascend/ascend-toolkit",
    ):
        assert path in mounts and mounts[path][1] == "ro", f"{path} not mounted read-only"
    assert mounts["/usr/local/Ascend/driver"][0] == "/usr/local/Ascend/driver"
    assert npu["environment"]["ASCEND_TOOLKIT_HOME"] == "/usr/local/Ascend/ascend-toolkit/latest"
    assert npu["build"]["target"] == "npu"
    assert "npu" in npu["profiles"]
    # The CPU worker must not be given the devices.
    assert "devices" not in resolved["services"]["airflow-worker"]


def test_workers_share_the_data_folder_and_the_dags(resolved):
    services = resolved["services"]
    for name in ("airflow-worker", "airflow-worker-npu", "airflow-scheduler"):
        mounts = _mounts(services[name])
        assert mounts["/opt/erfnet/data"][0] == str(REPO / "data"), name
        assert mounts["/opt/airflow/dags"][0] == str(REPO / "dags"), name
        assert mounts["/opt/airflow/plugins"][0] == str(REPO / "plugins"), name
        env = services[name]["environment"]
        assert env["ERFNET_DATA_DIR"] == "/opt/erfnet/data"
        assert "/opt/erfnet/data" in env["ERFNET_DATA_ROOTS"].split(":")


def test_results_database_is_reached_through_the_erfnet_results_connection(resolved):
    services = resolved["services"]
    pg_env = services["postgres"]["environment"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        conn = make_url(env["AIRFLOW_CONN_ERFNET_RESULTS"])
        assert conn.drivername == "postgresql+psycopg"
        assert (conn.host, conn.database) == ("postgres", pg_env["ERFNET_RESULTS_DB"])
        assert (conn.username, conn.password) == (pg_env["ERFNET_RESULTS_USER"], pg_env["ERFNET_RESULTS_PASSWORD"])
        assert env["ERFNET_RESULTS_DB_URL"] == env["AIRFLOW_CONN_ERFNET_RESULTS"]
    # The postgres image runs this folder once on an empty volume: it makes the second database.
    mounts = _mounts(services["postgres"])
    assert mounts["/docker-entrypoint-initdb.d"] == (str(DEPLOY / "postgres-init"), "ro")


def test_init_runs_the_init_script_with_the_pool_size(resolved):
    init = resolved["services"]["airflow-init"]
    argv = _command(init)
    assert argv[0] == "bash" and argv[1].startswith("/opt/erfnet/deploy/")
    script = DEPLOY / Path(argv[1]).relative_to("/opt/erfnet/deploy")
    assert script.is_file()
    assert init["user"] == "0:0"
    assert init["environment"]["ERFNET_NPU_SLOTS"] == "1"
    logical_lines = script.read_text().replace("\\\n", " ").splitlines()
    commands = [words for words in (shlex.split(line, comments=True) for line in logical_lines) if words]
    assert ["airflow", "db", "migrate"] in commands
    assert ["erfnet", "results", "init"] in commands
    pool = next(words for words in commands if words[:3] == ["airflow", "pools", "set"])
    assert pool[3:5] == ["npu_devices", "${ERFNET_NPU_SLOTS:-1}"]
    assert ["airflow", "connections", "get", "erfnet_results", "--output", "json", ">/dev/null"] in commands
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_compose_refuses_to_resolve_without_the_jwt_secret(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(
            line + "\n"
            for line in (REPO / ".env.example").read_text().splitlines()
            if not line.startswith("AIRFLOW_JWT_SECRET=")
        )
    )
    proc = _docker_compose(env_file, "config")
    assert proc.returncode != 0
    assert "AIRFLOW_JWT_SECRET" in proc.stderr


# --------------------------------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


KNOWN = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def test_dockerfile_parses_and_builds_the_project_with_the_constraints():
    instructions = _instructions(DOCKERFILE.read_text())
    assert {k for k, _ in instructions} <= KNOWN
    froms = [args.split() for k, args in instructions if k == "FROM"]
    assert froms == [["apache/airflow:3.3.2-python3.11", "AS", "cpu"], ["cpu", "AS", "npu"]]
    pins = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    assert pins["apache-airflow"] == "3.3.2"
    installs = [args for k, args in instructions if k == "RUN" and "pip install" in args]
    project = next(shlex.split(args) for args in installs if args.rstrip().endswith(" ."))
    assert project[project.index("--constraint") + 1] == "constraints.txt"
    assert project[project.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    for args in installs:
        assert "--constraint" in args, args
    for keyword, args in instructions:
        if keyword == "ENTRYPOINT":
            entry = json.loads(args)
            assert entry[:2] == ["/usr/bin/dumb-init", "--"]
            assert (DEPLOY / Path(entry[2]).relative_to("/opt/erfnet/deploy")).stat().st_mode & 0o111


def test_dockerfile_copies_only_what_exists_and_is_not_dockerignored():
    ignored = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword != "COPY":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{source} is dockerignored"


def test_hadolint_accepts_the_dockerfile():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the parse checks above still run)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------- init scripts


def test_npu_entrypoint_refuses_to_start_without_ascend_devices(tmp_path):
    if list(Path("/dev").glob("davinci[0-9]*")):
        pytest.skip("this machine has Ascend devices")
    proc = subprocess.run(
        ["bash", str(DEPLOY / "npu-entrypoint.sh"), "celery", "worker"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "ASCEND_TOOLKIT_HOME": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert "/dev/davinci" in proc.stderr


def test_simple_auth_password_is_set_and_other_users_kept(tmp_path):
    from simple_auth_passwords import set_password  # deploy/ is on pytest's pythonpath

    path = tmp_path / "config" / "passwords.json"
    set_password(path, "admin", "first")
    path.write_text(json.dumps({"admin": "first", "viewer": "generated-by-airflow"}))
    set_password(path, "admin", "second")
    assert json.loads(path.read_text()) == {"admin": "second", "viewer": "generated-by-airflow"}
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def pg_names():
    """A database and role name for one test, dropped afterwards."""
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    names = {"db": f"erfnet_deploy_{suffix}", "role": f"erfnet_deploy_{suffix}"}
    yield names
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{names["db"]}"')
        conn.execute(f'DROP ROLE IF EXISTS "{names["role"]}"')


def _owner_of(database: str):
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as conn:
        row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return row[0] if row else None


@pytest.mark.postgres
def test_postgres_initdb_script_creates_the_results_database(pg_names):
    if shutil.which("psql") is None:
        pytest.fail("psql is missing (the postgres image has it; install postgresql-client here)")
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": "127.0.0.1",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "ERFNET_RESULTS_DB": pg_names["db"],
        "ERFNET_RESULTS_USER": pg_names["role"],
        "ERFNET_RESULTS_PASSWORD": "it's; DROP",
    }
    proc = subprocess.run(
        ["bash", str(DEPLOY / "postgres-init" / "10-erfnet-results.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert _owner_of(pg_names["db"]) == pg_names["role"]


@pytest.mark.postgres
def test_init_creates_a_missing_results_database_once(pg_names):
    env = {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "ERFNET_RESULTS_DB": pg_names["db"],
        "ERFNET_RESULTS_USER": pg_names["role"],
        "ERFNET_RESULTS_PASSWORD": "secret",
    }
    run = [sys.executable, str(DEPLOY / "ensure_results_database.py")]
    first = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"database {pg_names['db']}" in first.stdout
    assert _owner_of(pg_names["db"]) == pg_names["role"]
    second = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0 and "present" in second.stdout
