"""Issue 15, items 8-11: values the database cannot store, CSV injection, a results-database outage, and the
smaller cases (escape sequences, a missing started_at, macOS and upper-case file names, leftovers of a
killed run, file modes). README "What we promise" names these tests."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path

import pytest

from erfnet_tasks import measure, plan
from erfnet_tasks.cli import main
from erfnet_tasks.datasets import cityscapes, synthetic
from erfnet_tasks.errors import ErfnetError, first_line
from erfnet_tasks.fsutil import write_json_atomic
from erfnet_tasks.results import models, publish
from erfnet_tasks.settings import load_settings
from tests.helpers.run_documents import make_doc

DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/erfnet_down"  # nothing listens on port 1
CHIP_56 = "Ascend" + "9" * 50


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("erfnet: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path / "erfnet-data"))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(tmp_path))
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not read by validation")
    (tmp_path / "ds").mkdir()
    return tmp_path


def doc_file(tmp_path, doc: dict, name: str = "results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def good_doc(run_id: str = "manual__2026-06-01T00:00:00+00:00", started: str = "2026-06-01T00:00:00+00:00"):
    return make_doc(run_id, started, "8.0", [("Ascend310P3", 1, 0.72, 300.0, "ok")])


# ------------------------------------------------------------------ 8. every accepted value is storable


@pytest.mark.parametrize(
    "change, message",
    [
        ({"targets": [CHIP_56]}, "at most 50 characters"),
        ({"batch_sizes": [1, 2048]}, "from 1 to 1024"),
        ({"image_limit": 2**40}, "up to 2147483647"),
    ],
)
def test_form_refuses_values_the_database_cannot_store(roots, change, message):
    raw = {"weights": str(roots / "w.pth"), "dataset_root": str(roots / "ds"), **change}
    with pytest.raises(ErfnetError, match=message):
        plan.validate_params(raw, load_settings())


def test_weights_that_are_a_directory_are_refused_in_one_line(roots):
    (roots / "weights_dir").mkdir()
    with pytest.raises(ErfnetError, match="is not a file"):
        plan.validate_params(
            {"weights": str(roots / "weights_dir"), "dataset_root": str(roots / "ds")}, load_settings()
        )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--targets", CHIP_56], "at most 50 characters"),
        (["--batch-sizes", "1,4096"], "from 1 to 1024"),
    ],
)
def test_demo_cli_refuses_them_before_airflow_starts(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", DOWN_URL)  # never reached: validation comes first
    assert main(["demo", "--images", "1", *argv]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "demo" / "airflow_home").exists()


def test_the_longest_accepted_chip_name_publishes_on_postgresql(roots, pg_url):
    chip = "Ascend" + "7" * (models.CHIP_MAX - len("Ascend"))
    params = plan.validate_params(
        {
            "weights": str(roots / "w.pth"),
            "dataset_root": str(roots / "ds"),
            "targets": [chip],
            "aoe": True,
            "batch_sizes": [1024],
        },
        load_settings(),
    )
    targets = [t.name for t in plan.expand_targets(params["targets"], aoe=True, detected_chips=[])]
    doc = make_doc(
        "manual__2026-06-02T00:00:00+00:00",
        "2026-06-02T00:00:00+00:00",
        "8.0",
        [(t, 1024, 0.7, 10.0, "ok") for t in targets],
        params=params,
    )
    for cell in doc["compiled"]:
        cell["chip"] = chip
    assert publish.publish_run(doc, pg_url, retries=0) == doc["run"]["id"]


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda d: d["compiled"][0].update(chip=CHIP_56), "compiled\\[0\\].chip is 56 characters"),
        (lambda d: d["run"].update(host="npu\x00host"), "run.host contains a NUL"),
        (lambda d: d["run"]["params"].update(note="a\x00b"), "NUL"),
        (lambda d: d["run"]["params"].update(tolerance=float("nan")), "finite"),
        (lambda d: d["run"].update(images=2**40), "integer range"),
        (lambda d: d["perf"][0].update(batch_size=2**31), "integer range"),
        (lambda d: d["run"].update(cann_version="8" * 101), "at most 100"),
    ],
)
def test_import_refuses_what_the_schema_cannot_hold_and_writes_nothing(tmp_path, pg_url, capsys, spoil, message):
    doc = good_doc()
    spoil(doc)
    path = doc_file(tmp_path, doc)
    assert main(["results", "--db", pg_url, "import", str(path)]) == 2
    err = one_error_line(capsys)
    assert re.search(message, err), err
    assert main(["results", "--db", pg_url, "init"]) == 0
    capsys.readouterr()
    assert main(["results", "--db", pg_url, "list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# ----------------------------------------------------------------------------- 9. CSV injection

HOSTILE = '=HYPERLINK("http://evil","x")'


def test_csv_exports_neutralise_formulas(sqlite_url, tmp_path, capsys, monkeypatch):
    doc = make_doc(
        "manual__2026-06-03T00:00:00+00:00",
        "2026-06-03T00:00:00+00:00",
        "8.0",
        [
            (HOSTILE, 1, 0.7, 10.0, "ok"),
            ("+cmd", 1, 0.6, 11.0, "ok"),
            ("@SUM(A1)", 1, 0.5, 9.0, "ok"),
            ("-2+3", 1, 0.5, 9.0, "ok"),
        ],
    )
    assert main(["results", "--db", sqlite_url, "import", str(doc_file(tmp_path, doc))]) == 0
    capsys.readouterr()
    assert main(["results", "--db", sqlite_url, "export", "--format", "csv"]) == 0
    cells = [c for row in csv.reader(io.StringIO(capsys.readouterr().out)) for c in row]
    assert f"'{HOSTILE}" in cells and "'+cmd" in cells and "'@SUM(A1)" in cells and "'-2+3" in cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    # the plugin's accuracy.csv and perf.csv are rendered by the same function
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[3] / "plugins"))
    from erfnet_ui import views

    for text in (views.accuracy_csv(doc), views.perf_csv(doc)):
        rows = list(csv.reader(io.StringIO(text)))
        assert f"'{HOSTILE}" in rows[0] and not any(c.startswith(("=", "+", "@")) for r in rows for c in r)


def test_negative_numbers_stay_numbers():
    from erfnet_tasks.results import tables

    assert tables.csv_safe("-0.25") == "-0.25" and tables.csv_safe("-1e-3") == "-1e-3"
    assert tables.csv_safe("-1+cmd") == "'-1+cmd" and tables.csv_safe("\tx") == "'\tx"


# ------------------------------------------------------------------------ 10. database outage


def test_nightly_run_measures_when_the_results_database_is_down(make):
    from erfnet_tasks import nightly

    env = make.env(weights_sha256="ab" * 32)
    assert nightly.unchanged_since_last_run(env, make.model(), make.prep(fingerprint="x"), url=DOWN_URL) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["results", "--db", DOWN_URL, "list"],
        ["results", "--db", DOWN_URL, "show", "--run", "latest"],
        ["results", "--db", DOWN_URL, "init"],
    ],
)
def test_results_commands_give_one_line_when_the_database_is_down(capsys, argv):
    assert main(argv) == 2
    assert "results database" in one_error_line(capsys)


def test_demo_gives_one_line_when_the_database_is_down(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ERFNET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", DOWN_URL)
    assert main(["demo", "--images", "1"]) == 2
    assert "results database" in one_error_line(capsys)


# ---------------------------------------------------------------------------------- 11. smaller ones


def test_escape_sequences_in_stored_fields_are_not_printed_raw(sqlite_url, tmp_path, capsys):
    doc = good_doc()
    doc["run"]["host"] = "npu\x1b[2J\x1b]0;owned\x07host"
    doc["perf"][0]["error"] = None
    assert main(["results", "--db", sqlite_url, "import", str(doc_file(tmp_path, doc))]) == 0
    for argv in (["show", "--run", "latest"], ["list"]):
        capsys.readouterr()
        assert main(["results", "--db", sqlite_url, *argv]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out
    assert main(["results", "--db", sqlite_url, "show", "--run", "latest"]) == 0
    assert "npu\\x1b[2J" in capsys.readouterr().out


def test_missing_started_at_is_refused_and_latest_is_unchanged(sqlite_url, tmp_path, capsys):
    assert main(["results", "--db", sqlite_url, "import", str(doc_file(tmp_path, good_doc()))]) == 0
    late = good_doc("manual__2020-01-01T00:00:00+00:00")
    del late["run"]["started_at"]
    capsys.readouterr()
    assert main(["results", "--db", sqlite_url, "import", str(doc_file(tmp_path, late, "late.json"))]) == 2
    assert "started_at is missing" in one_error_line(capsys)
    assert main(["results", "--db", sqlite_url, "show", "--run", "latest", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["id"] == "manual__2026-06-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "name, reason",
    [
        ("._frankfurt_000000_000000_leftImg8bit.png", "AppleDouble"),
        ("frankfurt_000000_000077_leftImg8bit.PNG", "rename it to .png"),
    ],
)
def test_macos_and_upper_case_files_are_named_with_the_real_reason(tmp_path, capsys, name, reason):
    synthetic.write_sample_data(tmp_path / "data", 2, size=(512, 256))
    img_dir, gt_dir = cityscapes.dataset_dirs(tmp_path / "data")
    (img_dir / "frankfurt" / name).write_bytes(b"\0\5\0\0 metadata")
    code = main(
        ["preprocess", str(img_dir), str(tmp_path / "p"), str(gt_dir), str(tmp_path / "g"), "--workers", "1", "--quiet"]
    )
    err = one_error_line(capsys)
    assert code == 2 and reason in err and "no label" not in err and "truncated" not in err


def test_a_killed_runs_leftovers_are_cleaned(tmp_path):
    synthetic.write_sample_data(tmp_path / "data", 1, size=(512, 256))
    img_dir, gt_dir = cityscapes.dataset_dirs(tmp_path / "data")
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / ".x.bin.1234abcd.part").write_bytes(b"half")
    cityscapes.preprocess(img_dir, prep, gt_dir, tmp_path / "g", workers=1, progress=False)
    assert not list(prep.glob("*.part"))
    out_dir = tmp_path / "outputs" / "cpu_bs1"
    (out_dir / "2026_01_01-00_00_00").mkdir(parents=True)  # a killed inference: outputs, no summary
    (out_dir / "2026_01_01-00_00_00" / "a_0.bin").write_bytes(b"partial")
    (out_dir / "2026_01_02-00_00_00").mkdir()
    (out_dir / "2026_01_02-00_00_00_summary.json").write_text("{}")
    assert measure.remove_unfinished_outputs(out_dir) == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["2026_01_02-00_00_00", "2026_01_02-00_00_00_summary.json"]


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"a": 1})
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        os.umask(0o002)
        write_json_atomic(tmp_path / "b.json", {"b": 1})
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_first_line_is_safe_on_empty_messages():
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("\n  first\nsecond")) == "first"
