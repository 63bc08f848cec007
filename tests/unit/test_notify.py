"""Message building (erfnet_tasks.notify): the gate's findings, another failure and the nightly summary,
from runs stored in a real results database; no Airflow involved."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from erfnet_tasks import notify, settings
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.results import db, regression
from erfnet_tasks.results.publish import publish_run

OLD = "scheduled__2026-11-20T02:00:00+00:00"
NEW = "asset_triggered__2026-11-27T09:07:00+00:00"
BASE = "https://airflow.example.org/lab"


def _doc(run_id, started, cann, cells):
    perf, acc = [], []
    for (target, batch), (fps, status, miou) in cells.items():
        perf.append(
            {
                "target": target,
                "batch_size": batch,
                "throughput_fps": fps,
                "status": status,
                "error": None if status == "ok" else "malloc device buffer failed",
            }
        )
        if miou is not None:
            acc.append({"target": target, "batch_size": batch, "images": 3, "miou": miou, "per_class": [0.5] * 19})
    return {
        "run": {
            "id": run_id,
            "dag_id": "erfnet_offline_inference",
            "started_at": started,
            "status": "complete",
            "cann_version": cann,
            "host": "npu-7",
            "params": {"reference_miou": 72.2, "tolerance": 1.0},
        },
        "accuracy": acc,
        "perf": perf,
        "findings": [],
    }


@pytest.fixture
def regressed(sqlite_url):
    """CANN 8.0.0 then 8.1.RC1: the Ascend310P3 at batch 1 loses 20% fps, batch 4 runs out of memory,
    and cpu batch 1's mIoU falls below 72.20 - 1."""
    publish_run(
        _doc(
            OLD,
            "2026-11-20T02:00:00+00:00",
            "8.0.0",
            {
                ("Ascend310P3", 1): (300.0, "ok", 0.7221),
                ("Ascend310P3", 4): (200.0, "ok", 0.7221),
                ("cpu", 1): (50.0, "ok", 0.7221),
            },
        ),
        sqlite_url,
    )
    publish_run(
        _doc(
            NEW,
            "2026-11-27T09:07:00+00:00",
            "8.1.RC1",
            {
                ("Ascend310P3", 1): (240.0, "ok", 0.7221),
                ("Ascend310P3", 4): (None, "oom", None),
                ("cpu", 1): (50.0, "ok", 0.6543),
            },
        ),
        sqlite_url,
    )
    with db.session_scope(sqlite_url) as session:
        found = regression.find_regressions(session, NEW, regression.Rules())
    assert len(found) == 3
    return sqlite_url


class Cells(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.rows, self.links, self._row = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
            self.rows.append(self._row)
        elif tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def test_regression_message_lists_every_finding_with_baseline_and_links(regressed):
    doc, baselines = notify.load_run(NEW, regressed)
    msg = notify.regression_message(doc, baselines, notify.Links(BASE + "/"))
    assert msg.failure and "3 finding(s)" in msg.subject and NEW in msg.subject and "CANN 8.1.RC1" in msg.subject
    lines = {line.split(",")[0]: line for line in msg.text.splitlines() if line.startswith("- ")}
    drop = lines["- Ascend310P3 batch 1"]
    assert "throughput (fps): 240.00 (baseline 300.00, threshold 285.00); rule throughput_drop" in drop
    assert f"baseline run {OLD} (CANN 8.0.0) against this run (CANN 8.1.RC1)" in drop
    assert "cell status: oom (baseline ok, 200.00 fps" in lines["- Ascend310P3 batch 4"]
    assert "mIoU (%): 65.43 (baseline 72.20, threshold 71.20); rule accuracy_below_reference" in lines["- cpu batch 1"]
    page = f"{BASE}/erfnet/runs/asset_triggered__2026-11-27T09%3A07%3A00%2B00%3A00"
    dag_run = f"{BASE}/dags/erfnet_offline_inference/runs/asset_triggered__2026-11-27T09%3A07%3A00%2B00%3A00"
    assert f"Results page: {page}" in msg.text and f"DAG run: {dag_run}" in msg.text

    html = Cells(msg.html)
    assert html.links == [page, dag_run]
    header, *rows = html.rows
    assert header[:4] == ["target", "batch", "metric", "this run"]
    drop_row = next(r for r in rows if r[:2] == ["Ascend310P3", "1"])
    assert drop_row == [
        "Ascend310P3",
        "1",
        "throughput (fps)",
        "240.00",
        "300.00",
        "285.00",
        "throughput_drop",
        OLD,
        "8.0.0",
        "8.1.RC1",
        "no op profile of the cell in baseline run " + OLD + " or this run",
    ], drop_row


def test_html_escapes_what_comes_from_outside(regressed):
    msg = notify.failure_message(
        dag_id="erfnet_offline_inference",
        run_id="manual__<b>x</b>",
        task_id="preprocess",
        error="bad file <script>alert(1)</script>\nsecond line",
        links=notify.Links(BASE),
    )
    assert "<script>" not in msg.html and "&lt;script&gt;" in msg.html
    assert "second line" not in msg.text


def test_failure_message_names_task_error_and_log(regressed):
    msg = notify.failure_message(
        dag_id="erfnet_offline_inference",
        run_id=NEW,
        task_id="infer_on_npu",
        error="ErfnetError: om not found\nTraceback...",
        links=notify.Links(BASE),
        map_index=3,
        try_number=2,
    )
    assert msg.subject == f"[ErfNet] run {NEW} failed in infer_on_npu[3]"
    assert "  ErfnetError: om not found" in msg.text and "Traceback" not in msg.text
    log = re.search(r"Task log: (\S+)", msg.text).group(1)
    assert log.endswith("/tasks/infer_on_npu/mapped/3?try_number=2") and log.startswith(BASE + "/dags/")


def test_summary_has_the_guides_two_tables(regressed):
    doc, _ = notify.load_run(OLD, regressed)
    msg = notify.summary_message(doc, notify.Links(BASE))
    assert not msg.failure and "3/3 cells ok" in msg.subject
    assert "Accuracy (mIoU %)" in msg.text and "Throughput (fps)" in msg.text and "300" in msg.text
    rows = Cells(msg.html).rows
    assert ["batch", "Ascend310P3", "cpu", "guide"] in rows and any(r[:2] == ["1", "72.21"] for r in rows)


def test_summary_policy_and_settings(monkeypatch):
    assert notify.wants_summary("nightly", "scheduled", "complete")
    assert notify.wants_summary("nightly", "asset_triggered", "complete")
    assert not notify.wants_summary("nightly", "manual", "complete")
    assert notify.wants_summary("all", "manual", "complete")
    assert not notify.wants_summary("all", "manual", "partial")
    assert not notify.wants_summary("off", "scheduled", "complete")
    monkeypatch.setenv("ERFNET_NOTIFY", " smtp_default, apprise_lab,,smtp_default ")
    assert settings.notify_connections() == ["smtp_default", "apprise_lab"]
    monkeypatch.setenv("ERFNET_NOTIFY", "")
    assert settings.notify_connections() == []
    monkeypatch.setenv("ERFNET_NOTIFY", "smtp;rm -rf /")
    with pytest.raises(ErfnetError, match="ERFNET_NOTIFY: not a connection id"):
        settings.notify_connections()
    monkeypatch.setenv("ERFNET_NOTIFY_SUMMARY", "weekly")
    with pytest.raises(ErfnetError, match="ERFNET_NOTIFY_SUMMARY must be one of off, nightly, all"):
        settings.notify_summary()
    with pytest.raises(ErfnetError, match="must start with http"):
        notify.Links("airflow.example.org")


def test_the_regression_message_says_where_each_finding_regressed(regressed):
    from erfnet_tasks.results.models import CellDiagnosis, OpProfile

    layer = {"node": "conv2", "op_type": "Conv", "onnx_nodes": ["conv2"], "cosine": 0.3, "relative_euclidean": 2.0}
    with db.session_scope(regressed) as session:
        for run_id, conv_us in ((OLD, 100.0), (NEW, 130.0)):
            for name, op_type, mean in (("conv2", "Conv", conv_us), ("relu2", "Relu", 20.0)):
                session.add(
                    OpProfile(
                        run_id=run_id,
                        target="Ascend310P3",
                        batch_size=1,
                        op_name=name,
                        op_type=op_type,
                        calls=1,
                        total_us=mean,
                        mean_us=mean,
                        share=0.5,
                    )
                )
        session.add(CellDiagnosis(run_id=NEW, target="cpu", batch_size=1, images=2, first_diverging=layer, layers=[]))
        session.flush()
        regression.find_regressions(session, NEW, regression.Rules())
    doc, baselines = notify.load_run(NEW, regressed)
    lines = notify.regression_message(doc, baselines, notify.Links(BASE)).text.splitlines()
    drop = next(i for i, line in enumerate(lines) if line.startswith("- Ascend310P3 batch 1"))
    assert lines[drop + 1] == (
        "  where: slower op types: Conv 100.0 -> 130.0 us (+30%, 100% of the growth). "
        "top ops: conv2 (Conv) 100.0 -> 130.0 us (+30%, 100% of the growth)"
    )
    accuracy = next(i for i, line in enumerate(lines) if line.startswith("- cpu batch 1"))
    assert lines[accuracy + 1].startswith("  where: first diverging layer conv2 (Conv; ONNX nodes conv2): cosine 0.3")
    oom = next(i for i, line in enumerate(lines) if line.startswith("- Ascend310P3 batch 4"))
    assert not lines[oom + 1].startswith("  where:")  # an oom has no op or layer to point at
