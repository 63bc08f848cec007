"""`erfnet runs prune`: old run folders and unused compile-cache entries go; each "never removes" rule
holds; the dry run lists exactly what the real prune removes."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from erfnet_tasks.cli import main
from erfnet_tasks.pipeline import run_folder_name
from erfnet_tasks.results import db
from erfnet_tasks.results.models import Accuracy, CompiledModel, Performance, Run
from erfnet_tasks.results.publish import publish_run
from erfnet_tasks.retention import parse_duration
from erfnet_tasks.settings import load_settings

NOW = dt.datetime.now(dt.UTC)
OLD = (NOW - dt.timedelta(days=40)).timestamp()


def _age(folder: Path, when: float) -> None:
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.utime(Path(base) / name, (when, when))
    os.utime(folder, (when, when))


def _folder(parent: Path, name: str, when: float, size: int = 1000) -> Path:
    folder = parent / name
    (folder / "outputs").mkdir(parents=True)
    (folder / "outputs" / "x_0.bin").write_bytes(b"\0" * size)
    _age(folder, when)
    return folder


def _publish(url: str, run_id: str, days_ago: int, status: str, targets: dict[str, str | None]) -> None:
    """A run measuring each target (batch 1) with the compiled model at the given path."""
    started = (NOW - dt.timedelta(days=days_ago)).isoformat()
    cell_status = "ok" if status == "complete" else "infer_failed"
    publish_run(
        {
            "run": {"id": run_id, "started_at": started, "status": status},
            "compiled": [{"target": t, "batch_size": 1, "path": p, "status": "ok"} for t, p in targets.items()],
            "accuracy": [{"target": t, "batch_size": 1, "images": 1, "miou": 0.5, "per_class": [0.5]} for t in targets],
            "perf": [{"target": t, "batch_size": 1, "throughput_fps": 1.0, "status": cell_status} for t in targets],
        },
        url=url,
        retries=0,
    )


@pytest.fixture
def installation(tmp_path, sqlite_url, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("ERFNET_DATA_DIR", str(data))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(data))
    runs, cache = load_settings().runs_dir, load_settings().compile_cache
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", sqlite_url)
    entry = {name: _folder(cache, name, OLD) for name in ("used_by_latest", "used_by_older", "unused")}
    entry["fresh"] = _folder(cache, "fresh", dt.datetime.now().timestamp())
    model = {name: str(folder / "model.onnx") for name, folder in entry.items()}
    _publish(sqlite_url, "older_cpu", 40, "complete", {"cpu": model["used_by_older"]})
    _publish(sqlite_url, "latest_cpu", 35, "complete", {"cpu": model["used_by_latest"]})
    _publish(sqlite_url, "only_torch", 50, "complete", {"torch-cpu": None})
    _publish(sqlite_url, "incomplete_cpu", 32, "incomplete", {"cpu": model["unused"]})
    for run_id in ("older_cpu", "latest_cpu", "only_torch", "incomplete_cpu"):
        _folder(runs, run_folder_name(run_id), OLD)
    _folder(runs, "fresh_run", dt.datetime.now().timestamp())
    return {"data": data, "runs": runs, "cache": cache, "url": sqlite_url}


def _prune(capsys, *args) -> list[str]:
    assert main(["runs", "prune", *args]) == 0
    return capsys.readouterr().out.splitlines()


def _removed(lines: list[str]) -> list[str]:
    return sorted(
        re.sub(r"^(would remove|removed) ", "", line).split(" (")[0]
        for line in lines
        if re.match(r"^(would remove|removed) (run|cache) ", line)
    )


def _row_counts(url: str) -> dict:
    with db.session_scope(url) as session:
        return {
            m.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(m))
            for m in (Run, CompiledModel, Accuracy, Performance)
        }


def test_dry_run_lists_exactly_what_the_real_prune_removes(installation, capsys):
    before = sorted(p for p in installation["data"].rglob("*"))
    dry = _prune(capsys, "--older-than", "30d", "--dry-run")
    assert sorted(p for p in installation["data"].rglob("*")) == before  # a dry run removes nothing
    real = _prune(capsys, "--older-than", "30d")
    assert _removed(dry) == _removed(real) and _removed(real)
    assert all(not Path(p.split(" ", 1)[1]).exists() for p in _removed(real))
    assert re.search(r"^removed 4 folder\(s\); freed [\d.]+ MiB \(4000 bytes\)$", real[-1]), real
    assert _prune(capsys, "--older-than", "30d", "--dry-run")[-1].startswith("would remove 0 folder(s)")


def test_the_latest_complete_run_of_each_target_stays_and_an_incomplete_one_does_not(installation, capsys):
    _prune(capsys, "--older-than", "30d")
    runs = installation["runs"]
    assert sorted(p.name for p in runs.iterdir()) == ["fresh_run", "latest_cpu", "only_torch"]


def test_a_cache_entry_the_latest_complete_run_used_stays(installation, capsys):
    lines = _prune(capsys, "--older-than", "30d")
    assert sorted(p.name for p in installation["cache"].iterdir()) == ["fresh", "used_by_latest"]
    assert any(line.startswith("kept ") and "used_by_latest" in line and "latest_cpu" in line for line in lines)


def test_no_database_row_is_removed(installation, capsys):
    before = _row_counts(installation["url"])
    _prune(capsys, "--older-than", "1m")
    assert _row_counts(installation["url"]) == before and before["runs"] == 4


def test_only_what_is_older_than_the_age_goes(installation, capsys):
    assert _removed(_prune(capsys, "--older-than", "45d", "--dry-run")) == []  # everything is 40 days old
    assert len(_removed(_prune(capsys, "--older-than", "1m", "--dry-run"))) == 4  # the fresh ones are seconds old


@pytest.mark.parametrize("age", ["30", "d", "0x1d", "30 days", "1w"])
def test_a_bad_age_is_one_line(installation, capsys, age):
    assert main(["runs", "prune", "--older-than", age]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "30d, 12h or 90m" in err[0]


def test_durations():
    assert parse_duration("30d") == dt.timedelta(days=30)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("90m") == dt.timedelta(minutes=90)


def test_a_running_run_stays_however_old_its_folder(installation, capsys):
    """A run still measuring (opened days ago, a long AOE night) keeps its folder: its cells write there."""
    from erfnet_tasks.results.progress import open_run

    with db.session_scope(installation["url"]) as session:
        started = (NOW - dt.timedelta(days=33)).isoformat()
        open_run(session, {"id": "still_running", "started_at": started}, [])
    _folder(installation["runs"], run_folder_name("still_running"), OLD)
    lines = _prune(capsys, "--older-than", "30d")
    assert (installation["runs"] / run_folder_name("still_running")).is_dir(), lines
    assert not (installation["runs"] / run_folder_name("incomplete_cpu")).exists()
