"""The CANN version probe and the per-host version history: a stand-in host whose toolkit's version.cfg
changes, recorded in a real results database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from erfnet_tasks import cann_probe
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.results import db, hosts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standins"))
import harness


@pytest.fixture
def npu_host(tmp_path, monkeypatch):
    """Stand-in npu-smi on PATH (two 310P3 chips, driver 23.0.3) and a CANN toolkit at 8.0.0."""
    from erfnet_tasks.backends import ascend

    harness.use_standins(monkeypatch, tmp_path)
    monkeypatch.setenv("STANDIN_NPU_COUNT", "2")
    monkeypatch.setenv("STANDIN_NPU_DRIVER", "23.0.3")
    monkeypatch.setattr(ascend, "DEFAULT_ASCEND_ROOT", tmp_path / "no-ascend-root")
    toolkit = tmp_path / "ascend-toolkit" / "latest"
    harness.write_cann_version(toolkit, "8.0.0")
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(toolkit))
    return toolkit


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_upgrade_is_one_change_and_one_event(npu_host, backend, request):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    first = cann_probe.probe(url, host="npu-7")
    assert first["first_seen"] and not first["changed"]  # deploying the probe starts no run
    assert first["current"] == {
        "cann_version": "8.0.0",
        "driver_version": "23.0.3",
        "chips": ["Ascend310P3", "Ascend310P3"],
    }
    assert not cann_probe.probe(url, host="npu-7")["changed"]

    harness.write_cann_version(npu_host, "8.1.RC1", runtime="7.7.0.1.100")
    upgraded = cann_probe.probe(url, host="npu-7")
    assert upgraded["changed"] and upgraded["previous"]["cann_version"] == "8.0.0"
    assert cann_probe.describe_change(upgraded) == "npu-7: CANN 8.0.0 -> 8.1.RC1"
    assert not cann_probe.probe(url, host="npu-7")["changed"]

    with db.session_scope(url) as session:
        events = hosts.upgrade_events(session)
        current = hosts.host_versions(session)
    assert [(e["host"], e["old_cann_version"], e["new_cann_version"]) for e in events] == [
        ("npu-7", "8.0.0", "8.1.RC1")
    ]
    assert dt.datetime.fromisoformat(events[0]["time"]).tzinfo is not None
    assert [(h["host"], h["cann_version"]) for h in current] == [("npu-7", "8.1.RC1")]


def test_driver_and_chip_changes_count_and_hosts_are_separate(npu_host, sqlite_url, monkeypatch):
    cann_probe.probe(sqlite_url, host="a")
    cann_probe.probe(sqlite_url, host="b")
    monkeypatch.setenv("STANDIN_NPU_DRIVER", "24.1.0")
    assert cann_probe.probe(sqlite_url, host="a")["changed"]
    monkeypatch.setenv("STANDIN_NPU_COUNT", "1")
    changed = cann_probe.probe(sqlite_url, host="a")
    assert cann_probe.describe_change(changed) == "a: chips ['Ascend310P3', 'Ascend310P3'] -> ['Ascend310P3']"
    with db.session_scope(sqlite_url) as session:
        assert [e["host"] for e in hosts.upgrade_events(session)] == ["a", "a"]
        assert hosts.upgrade_events(session, host="b") == []


def test_a_vanished_cann_version_is_an_error_not_a_change(npu_host, sqlite_url):
    cann_probe.probe(sqlite_url, host="npu-7")
    (npu_host / "version.cfg").unlink()  # mid-upgrade: the toolkit's files are being replaced
    with pytest.raises(ErfnetError, match=r"had CANN 8\.0\.0 but no CANN version can be read"):
        cann_probe.probe(sqlite_url, host="npu-7")
    harness.write_cann_version(npu_host, "8.1.RC1")
    assert cann_probe.probe(sqlite_url, host="npu-7")["changed"]


def test_two_probes_racing_on_one_change_announce_it_once(npu_host, sqlite_url, monkeypatch):
    """Two queues on one host probe the same upgrade: the unique (host, seq) lets one of them record it."""
    cann_probe.probe(sqlite_url, host="npu-7")
    with db.session_scope(sqlite_url) as session:
        before_id = hosts.latest(session, "npu-7").id
    harness.write_cann_version(npu_host, "9.0.0")
    assert cann_probe.probe(sqlite_url, host="npu-7")["changed"]  # the winner
    # The loser read the host's latest stretch before the winner committed: replay that view.
    monkeypatch.setattr(hosts, "latest", lambda session, host: session.get(hosts.HostVersion, before_id))
    assert not cann_probe.probe(sqlite_url, host="npu-7")["changed"]
    with db.session_scope(sqlite_url) as session:
        assert [e["new_cann_version"] for e in hosts.upgrade_events(session)] == ["9.0.0"]


def test_bad_host_name_is_one_line(sqlite_url):
    with pytest.raises(ErfnetError, match="host must be a non-empty name"):
        hosts.record_observation(" ", {"cann_version": "8.0.0"}, sqlite_url)
