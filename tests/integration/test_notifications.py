"""Notifications through Airflow's notifiers, to real receivers: an SMTP server (aiosmtpd) and a local
HTTP server as an Apprise ``json://`` target, reached from real runs of the DAG (``airflow dags test``).
A receiver that is down (a port bound but not listening) is only logged; the run's state stays its own.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers.airflow_dags import airflow_env, run_dag  # the same real `airflow dags test` runs

REPO = Path(__file__).resolve().parents[2]
BASE_URL = "http://airflow.lab.example:8080"
MAIL_TO = "model-delivery@lab.example"


class Inbox:
    """aiosmtpd handler: every message the server accepts, parsed."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_inbox():
    from aiosmtpd.smtp import SMTP

    inbox = Inbox()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: SMTP(inbox), "127.0.0.1", 0))
    inbox.port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield inbox
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def dead_port():
    """A port nobody answers on: bound (so no one else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    import subprocess

    home = tmp_path_factory.mktemp("airflow_home_notify")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=airflow_env(home, home / "unused"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint

    data = tmp_path_factory.mktemp("erfnet_data_notify")
    write_sample_data(data / "cityscapes", 2)
    write_random_checkpoint(data / "erfnet_random_untrained.pth", seed=5)
    return data


def _smtp_conn(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "from_email": "erfnet@lab.example",
                "to": MAIL_TO,
                "disable_tls": True,
                "disable_ssl": True,
                "timeout": 5,
                "retry_limit": 0,
            },
        }
    )


def _apprise_conn(port: int) -> str:
    return json.dumps({"conn_type": "apprise", "extra": {"config": {"path": f"json://127.0.0.1:{port}/erfnet-hook"}}})


def receivers(inbox, hook, dead_port, notify: str, **extra) -> dict:
    return {
        "AIRFLOW_CONN_ERFNET_MAIL": _smtp_conn(inbox.port),
        "AIRFLOW_CONN_ERFNET_HOOK": _apprise_conn(hook.server_address[1]),
        "AIRFLOW_CONN_ERFNET_DEAD_MAIL": _smtp_conn(dead_port),
        "AIRFLOW_CONN_ERFNET_DEAD_HOOK": _apprise_conn(dead_port),
        "AIRFLOW__API__BASE_URL": BASE_URL,
        "ERFNET_NOTIFY": notify,
        **extra,
    }


def _conf(data: Path, **overrides) -> dict:
    return {
        "weights": str(data / "erfnet_random_untrained.pth"),
        "dataset_root": str(data / "cityscapes"),
        "targets": ["cpu"],
        "batch_sizes": [1],
        **overrides,
    }


def _html(message) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


# Run where the metadata database is (a token's revocation is looked up there): the results app with
# Airflow's own get_user, once without and once with a real JWT of a logged-in user in the UI's cookie.
_OPEN_AS_USER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient
from erfnet_ui.app import URL_PREFIX, create_app

client = TestClient(create_app(require_user=get_user), root_path=URL_PREFIX)
path = sys.argv[2].removeprefix(URL_PREFIX)
anonymous = client.get(path)
client.cookies.set("_token",
                   create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="tester", role="viewer")))
page = client.get(path)
print(json.dumps({"anonymous": anonymous.status_code, "status": page.status_code, "text": page.text}))
"""


def _open_as_logged_in_user(url: str, home: Path, results_url: str) -> dict:
    import subprocess

    assert url.startswith(BASE_URL + "/erfnet/")
    env = airflow_env(
        home,
        home / "unused",
        ERFNET_RESULTS_DB_URL=results_url,
        AIRFLOW__API_AUTH__JWT_SECRET="erfnet-notification-test-secret-" + "x" * 40,
    )
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_AS_USER, str(REPO / "plugins"), urlsplit(url).path],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_gate_findings_arrive_by_mail_and_webhook_and_dead_receivers_are_only_logged(
    airflow_home, data, pg_url, smtp_inbox, webhook, dead_port
):
    env = receivers(
        smtp_inbox,
        webhook,
        dead_port,
        "erfnet_dead_mail,erfnet_mail,erfnet_dead_hook,erfnet_hook",
        ERFNET_RESULTS_DB_URL=pg_url,
    )
    run = run_dag(airflow_home, data, _conf(data, reference_miou=99.0), **env)  # random weights: far below 99
    assert run.state == "failed" and "publish_results" in run.ran, run.output[-5000:]
    assert "notification to erfnet_dead_mail not delivered" in run.output
    assert "notification to erfnet_dead_hook not delivered" in run.output

    # The finding is notified as soon as its cell is stored, while the run still goes on (issue 26), then
    # once more in the final message, which says it was notified before.
    subjects = [m["Subject"] for m in smtp_inbox.messages]
    assert len(subjects) == 2 and subjects[0].startswith(f"[ErfNet] regression found while run {run.run_id} goes on")
    early_sent = run.output.index("notified erfnet_mail: [ErfNet] regression found while")
    assert early_sent < run.output.index("[DAG TEST] starting task_id=publish_results"), "notified only at the end"
    mail = smtp_inbox.messages[1]
    assert smtp_inbox.recipients == [[MAIL_TO], [MAIL_TO]]
    assert mail["Subject"].startswith("[ErfNet] regression: 1 finding(s) in run ") and run.run_id in mail["Subject"]
    html = _html(mail)
    assert "accuracy_below_reference" in html and "mIoU (%)" in html and "99.00" in html and "98.00" in html
    links = re.findall(r'href="([^"]+)"', html)
    assert links[0].startswith(f"{BASE_URL}/erfnet/runs/")
    assert links[1].startswith(f"{BASE_URL}/dags/erfnet_offline_inference/runs/")

    assert len(webhook.received) == 2
    assert "the run is still going" in webhook.received[0][1]["message"]
    path, posted = webhook.received[1]
    assert "notified earlier, as its cell was stored" in posted["message"]
    assert path == "/erfnet-hook" and posted["type"] == "failure" and posted["title"] == mail["Subject"]
    assert "- cpu batch 1, mIoU (%): " in posted["message"] and "rule accuracy_below_reference" in posted["message"]
    assert f"Results page: {links[0]}" in posted["message"]

    opened = _open_as_logged_in_user(links[0], airflow_home, pg_url)
    assert opened["anonymous"] in (401, 403)
    assert opened["status"] == 200 and f"Run {run.run_id}" in opened["text"] and "accuracy-table" in opened["text"]


def test_a_complete_run_sends_a_summary_and_a_dead_receiver_does_not_fail_it(
    airflow_home, data, sqlite_url, smtp_inbox, webhook, dead_port
):
    env = receivers(
        smtp_inbox,
        webhook,
        dead_port,
        "erfnet_dead_hook,erfnet_mail,erfnet_hook",
        ERFNET_RESULTS_DB_URL=sqlite_url,
        ERFNET_NOTIFY_SUMMARY="all",
    )
    run = run_dag(airflow_home, data, _conf(data, reference_miou=0.0, force=True), **env)
    assert run.state == "success", run.output[-5000:]
    assert "notification to erfnet_dead_hook not delivered" in run.output
    assert [m["Subject"] for m in smtp_inbox.messages] == [
        f"[ErfNet] run {run.run_id} complete: 1/1 cells ok, no regression (CANN unknown)"
    ]
    html = _html(smtp_inbox.messages[0])
    assert "<h3>Accuracy (mIoU %)</h3>" in html and "<h3>Throughput (fps)</h3>" in html
    assert [p["type"] for _path, p in webhook.received] == ["info"]
    assert "Throughput (fps)" in webhook.received[0][1]["message"]


def test_another_failure_names_task_error_and_log_and_an_empty_list_sends_nothing(
    airflow_home, data, sqlite_url, smtp_inbox, webhook, dead_port
):
    bad = _conf(data, weights="/etc/passwd")  # outside the data roots: check_params, the first task, refuses it
    env = receivers(smtp_inbox, webhook, dead_port, "erfnet_mail,erfnet_hook", ERFNET_RESULTS_DB_URL=sqlite_url)
    run = run_dag(airflow_home, data, bad, **env)
    assert run.state == "failed"
    [mail] = smtp_inbox.messages
    assert mail["Subject"] == f"[ErfNet] run {run.run_id} failed in check_params"
    text = webhook.received[0][1]["message"]
    assert "BadInput: weights '/etc/passwd' resolves to /etc/passwd, outside the data roots" in text
    log = re.search(r"Task log: (\S+)", text).group(1)
    assert log.startswith(f"{BASE_URL}/dags/erfnet_offline_inference/runs/") and "/tasks/check_params" in log

    quiet = run_dag(airflow_home, data, bad, **{**env, "ERFNET_NOTIFY": ""})
    assert quiet.state == "failed"
    assert len(smtp_inbox.messages) == 1 and len(webhook.received) == 1  # nothing more arrived
