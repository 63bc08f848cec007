"""`erfnet results ...` through the real CLI entry point, on PostgreSQL and SQLite, and the guide-style tables."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy.exc

from erfnet_tasks.cli import main
from erfnet_tasks.errors import Transient
from erfnet_tasks.records import CellStatus
from erfnet_tasks.results import db, importing, publish, tables
from tests.helpers.run_documents import canonical, make_doc

RUN_A = "scheduled__2026-05-01T00:00:00+00:00"
RUN_B = "manual__2026-05-02T00:00:00+00:00"


@pytest.fixture
def two_runs(results_url):
    publish.publish_run(
        make_doc(
            RUN_A,
            "2026-05-01T00:00:00+00:00",
            "7.0",
            [("Ascend310", 1, 0.7220, 200.0, "ok"), ("Ascend310P3", 1, 0.7221, 300.0, "ok")],
        ),
        results_url,
    )
    publish.publish_run(
        make_doc(
            RUN_B,
            "2026-05-02T00:00:00+00:00",
            "8.0",
            [
                ("Ascend310", 1, 0.7218, 220.0, "ok"),
                ("Ascend310", 64, None, None, "oom"),
                ("Ascend310P3", 1, 0.7050, 290.0, "ok"),
                ("Ascend310P3", 64, 0.7219, 216.0, "ok"),
            ],
            status="complete",
        ),
        results_url,
    )
    return results_url


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_json_is_the_run_document(two_runs, capsys, monkeypatch):
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", two_runs)
    code, out, _ = run_cli(capsys, "results", "show", "--run", "latest", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"run", "compiled", "accuracy", "perf", "op_profiles", "diagnoses", "findings"}
    assert doc["run"]["id"] == RUN_B and doc["run"]["cann_version"] == "8.0" and doc["run"]["status"] == "complete"
    assert {
        "id",
        "dag_id",
        "started_at",
        "finished_at",
        "status",
        "params",
        "cann_version",
        "driver_version",
        "host",
        "backends",
        "model_sha256",
        "weights_sha256",
        "dataset_fingerprint",
        "images",
        "synthetic",
    } == set(doc["run"])
    cell = next(c for c in doc["accuracy"] if (c["target"], c["batch_size"]) == ("Ascend310", 1))
    assert cell["miou"] == pytest.approx(0.7218) and len(cell["per_class"]) == 19  # a fraction, not percent
    oom = next(c for c in doc["perf"] if (c["target"], c["batch_size"]) == ("Ascend310", 64))
    assert oom["status"] == "oom" and oom["throughput_fps"] is None and oom["error"] == "oom at batch 64"
    assert {"target", "batch_size", "throughput_fps", "status", "compute_p99_ms", "h2d_mean_ms"} <= set(oom)
    assert doc == canonical(
        make_doc(
            RUN_B,
            "2026-05-02T00:00:00+00:00",
            "8.0",
            [
                ("Ascend310", 1, 0.7218, 220.0, "ok"),
                ("Ascend310", 64, None, None, "oom"),
                ("Ascend310P3", 1, 0.7050, 290.0, "ok"),
                ("Ascend310P3", 64, 0.7219, 216.0, "ok"),
            ],
            status="complete",
        )
    )


def test_show_table_in_percent_like_the_guide(two_runs, capsys):
    code, out, _ = run_cli(
        capsys, "results", "--db", two_runs, "show", "--run", RUN_B, "--reference-target", "Ascend310"
    )
    assert code == 0
    assert "72.18" in out and "0.7218" not in out
    assert "70.50 (< 71.20)" in out  # below 72.20 - 1 point
    assert "Ascend310P3/Ascend310" in out and "1.318" in out  # 290 / 220
    assert "memory allocation failed" in out  # the guide's own 310 batch-64 cell
    perf_lines = out[out.index("Performance (fps)") :].splitlines()
    row_64 = next(line for line in perf_lines if line.startswith("64 "))
    assert row_64.split()[1:4] == ["oom", "/", "216.00"]


def test_show_csv_has_one_row_per_cell(two_runs, capsys):
    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "show", "--run", RUN_B, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["target"], r["batch_size"], r["status"]) for r in rows] == [
        ("Ascend310", "1", "ok"),
        ("Ascend310", "64", "oom"),
        ("Ascend310P3", "1", "ok"),
        ("Ascend310P3", "64", "ok"),
    ]
    assert float(rows[0]["miou"]) == pytest.approx(0.7218) and float(rows[0]["throughput_fps"]) == 220.0
    assert rows[1]["miou"] == "" and rows[1]["error"] == "oom at batch 64"
    assert {r["run_id"] for r in rows} == {RUN_B}


def test_compare_and_list(two_runs, capsys):
    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "compare", RUN_A, RUN_B, "--format", "csv")
    assert code == 0
    rows = {(r["target"], r["batch"]): r for r in csv.DictReader(io.StringIO(out))}
    assert rows[("Ascend310", "1")]["delta points"] == "-0.02"
    assert rows[("Ascend310", "1")]["fps B/A"] == "1.100"
    assert rows[("Ascend310P3", "1")]["delta points"] == "-1.71"
    assert rows[("Ascend310", "64")]["fps A"] == "" and rows[("Ascend310", "64")]["fps B"] == "oom"

    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "compare", RUN_A, RUN_B)
    assert code == 0 and "CANN 7.0" in out and "CANN 8.0" in out

    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "list", "--format", "json")
    runs = json.loads(out)
    assert [r["id"] for r in runs] == [RUN_B, RUN_A] and runs[0]["failed_cells"] == 1
    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "list")
    assert code == 0 and out.index(RUN_B) < out.index(RUN_A)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "--run", "x'; DROP TABLE runs; --"], "invalid run id"),
        (["show", "--run", "no-such-run"], "no run 'no-such-run'"),
        (["show", "--reference-target", "Ascend910"], "reference target 'Ascend910' is not in this run"),
        (["compare", RUN_A, "../etc"], "invalid run id"),
        (["import", "/nonexistent/results.json"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(two_runs, capsys, argv, message):
    code, out, err = run_cli(capsys, "results", "--db", two_runs, *argv)
    assert code == 2 and out == ""
    assert err.startswith("erfnet: error: ") and message in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "list", "--format", "json")
    assert len(json.loads(out)) == 2  # the tables are still there


def test_reading_an_uninitialised_database_says_init(sqlite_url, capsys):
    code, _, err = run_cli(capsys, "results", "--db", sqlite_url, "list")
    assert code == 2 and "erfnet results init" in err
    code, out, _ = run_cli(capsys, "results", "--db", sqlite_url, "init")
    assert code == 0 and f"revision {db.head_revision()}" in out
    code, out, _ = run_cli(capsys, "results", "--db", sqlite_url, "list")
    assert code == 0 and "no runs yet" in out


def test_export_then_import_into_another_database(two_runs, sqlite_url, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "results", "--db", two_runs, "export", "--format", "json")
    assert code == 0
    exported = json.loads(out)
    assert [d["run"]["id"] for d in exported["runs"]] == [RUN_B, RUN_A]
    path = tmp_path / "export.json"
    path.write_text(out)

    target = tmp_path / "copy.sqlite"
    code, out, _ = run_cli(capsys, "results", "--db", f"sqlite:///{target}", "import", str(path))
    assert code == 0 and out.count("imported run") == 2
    assert "1 regression finding(s)" in out  # RUN_B's 70.50 at Ascend310P3 batch 1
    code, out, _ = run_cli(capsys, "results", "--db", f"sqlite:///{target}", "export", "--run", RUN_A)
    assert json.loads(out)["runs"] == [d for d in exported["runs"] if d["run"]["id"] == RUN_A]

    code, out, _ = run_cli(
        capsys, "results", "--db", two_runs, "export", "--format", "csv", "--run", RUN_A, "--run", RUN_B
    )
    assert [r["run_id"] for r in csv.DictReader(io.StringIO(out))] == [RUN_A] * 2 + [RUN_B] * 4


# ------------------------------------------------------------------------------------------- tables

GUIDE_LIKE = make_doc(
    "t",
    "2026-06-01T00:00:00+00:00",
    "8.0",
    [
        ("Ascend310", 1, 0.7220, 220.2016, "ok"),
        ("Ascend310", 64, None, None, "oom"),
        ("Ascend310P3", 1, 0.7220, 292.137, "ok"),
        ("Ascend310P3", 64, 0.7220, 216.937, "ok"),
        ("Ascend310P3+AOE", 1, 0.7220, 380.0822, "ok"),
        ("Ascend310P3+AOE", 64, None, None, "compile_failed"),
        ("torch-cuda", 1, None, 215.8135, "ok"),
        ("cpu", 1, 0.70, 5.0, "ok"),
    ],
)


def _as_text(table: tables.Table) -> dict[str, dict[str, str]]:
    """Each row, by its label, as the CLI writes its cells."""
    return {tables.text(row[0]): dict(zip(table.headers, map(tables.text, row), strict=True)) for row in table.rows}


def test_perf_table_ratios_like_guide_section_7():
    table = tables.perf_table(GUIDE_LIKE, reference_target="Ascend310")
    by_batch = _as_text(table)
    assert table.headers[:4] == ["batch", "Ascend310", "Ascend310/guide 310", "Ascend310P3"]
    assert by_batch["1"]["Ascend310P3/Ascend310"] == "1.327"  # the guide's 310P/310 at batch 1
    assert by_batch["1"]["Ascend310P3+AOE/Ascend310"] == "1.726"
    assert by_batch["1"]["Ascend310P3/guide 310P"] == "1.000"
    assert by_batch["1"]["torch-cuda/guide T4"] == "1.000"
    assert "cpu/guide" not in " ".join(table.headers)  # cpu has no guide column
    assert by_batch["64"]["Ascend310"] == "oom" and by_batch["64"]["Ascend310P3/Ascend310"] == "/"
    assert by_batch["64"]["Ascend310P3+AOE"] == "compile_failed"
    assert by_batch["64"]["guide 310"] == "memory allocation failed"
    assert by_batch["64"]["guide 310P-AOE"] == "226.60"
    assert by_batch["best batch"]["Ascend310P3"] == "292.14 (b1)"
    assert by_batch["best batch"]["guide 310P-AOE"] == "380.08 (b1)"
    assert sum("/" in h for h in tables.perf_table(GUIDE_LIKE).headers) == 4  # without a reference: guide ratios only


def test_perf_table_holds_values_not_text():
    """What the plugin reads: batches as numbers, failures as statuses, the best row and the guide's columns
    marked, so nothing is parsed back from text."""
    table = tables.perf_table(GUIDE_LIKE, reference_target="Ascend310")
    rows = {row[0]: dict(zip(table.headers, row, strict=True)) for row in table.rows}
    assert [row[0] for row in table.rows] == [1, 64, tables.Mark.BEST_BATCH]
    assert rows[64]["Ascend310"] is CellStatus.OOM and rows[64]["Ascend310P3/Ascend310"] is tables.NO_RATIO
    assert rows[1]["Ascend310P3"] == tables.Number(292.137)
    assert rows[1]["Ascend310P3/Ascend310"].value == pytest.approx(292.137 / 220.2016)
    assert rows[tables.Mark.BEST_BATCH]["Ascend310P3"] == tables.Best(292.137, 1)
    assert {table.headers[i] for i in table.guide_columns} == {"guide T4", "guide 310", "guide 310P", "guide 310P-AOE"}


def test_accuracy_table_in_percent_with_failures_as_status():
    table = tables.accuracy_table(GUIDE_LIKE)
    by_batch = _as_text(table)
    assert by_batch["1"]["Ascend310"] == "72.20" and by_batch["1"]["guide"] == "72.20"
    assert by_batch["1"]["cpu"] == "70.00 (< 71.20)"
    assert by_batch["64"]["Ascend310"] == "oom" and by_batch["64"]["Ascend310P3+AOE"] == "compile_failed"
    assert by_batch["1"]["torch-cuda"] == ""  # measured for speed only
    cpu = table.headers.index("cpu")
    assert table.rows[0][cpu] == tables.Percent(0.70, pytest.approx(0.7120)) and table.rows[0][cpu].below
    assert table.rows[1][table.headers.index("Ascend310")] is CellStatus.OOM
    assert tables.text(tables.accuracy_table(GUIDE_LIKE, tolerance=0.03).rows[0][cpu]) == "70.00"


def test_reference_shows_the_guides_figures_seeded_by_migration(sqlite_url, capsys):
    assert run_cli(capsys, "results", "--db", sqlite_url, "init")[0] == 0
    code, out, _ = run_cli(capsys, "results", "--db", sqlite_url, "reference")
    assert code == 0
    assert any(line.split()[:4] == ["throughput_fps", "310P-AOE", "1", "380.082"] for line in out.splitlines())
    assert "memory allocation failed" in out
    code, out, _ = run_cli(capsys, "results", "--db", sqlite_url, "reference", "--format", "json")
    figures = json.loads(out)
    first = {k: figures[0][k] for k in ("metric", "column", "batch_size")}
    assert len(figures) == 35 and first == {"metric": "miou", "column": "310", "batch_size": 1}


def test_an_error_with_a_cause_is_still_one_line_from_the_command(tmp_path):
    """The error is raised from the driver's (the task log keeps that chain); the user reads one line."""
    import os
    import subprocess
    import sys

    doc = tmp_path / "results.json"
    doc.write_text(
        json.dumps(make_doc(RUN_A, "2026-05-01T00:00:00+00:00", "7.0", [("Ascend310", 1, 0.72, 200.0, "ok")]))
    )
    down = "postgresql+psycopg://postgres@127.0.0.1:1/nothing_listens"
    proc = subprocess.run(
        [sys.executable, "-m", "erfnet_tasks.cli", "results", "--db", down, "import", str(doc)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("erfnet: error: results database") and "unavailable" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    with pytest.raises(Transient) as caught:  # in-process: the cause is kept for the task log
        importing.import_paths([str(doc)], down, report=lambda line: None)
    assert isinstance(caught.value.__cause__, sqlalchemy.exc.OperationalError)


@pytest.fixture
def regressed_with_where(results_url):
    """CANN 7.0 then 8.0: the Ascend310P3's Conv ops 30% slower, and its mIoU failing with conv2 diverging."""
    from erfnet_tasks.results import regression
    from tests.helpers.run_documents import diagnosis_row, profile_rows

    base = make_doc(RUN_A, "2026-05-01T00:00:00+00:00", "7.0", [("Ascend310P3", 1, 0.7221, 300.0, "ok")])
    base["op_profiles"] = profile_rows("Ascend310P3", 1, conv2=("Conv", 100.0), relu2=("Relu", 20.0))
    now = make_doc(RUN_B, "2026-05-02T00:00:00+00:00", "8.0", [("Ascend310P3", 1, 0.5, 240.0, "ok")])
    now["op_profiles"] = profile_rows("Ascend310P3", 1, conv2=("Conv", 130.0), relu2=("Relu", 20.0))
    layer = {"node": "conv2", "op_type": "Conv", "onnx_nodes": ["conv2"], "cosine": 0.3, "relative_euclidean": 2.0}
    now["diagnoses"] = [diagnosis_row("Ascend310P3", 1, layer, [layer])]
    for doc in (base, now):
        publish.publish_run(doc, results_url)
    with db.session_scope(results_url) as session:
        regression.find_regressions(session, RUN_B, regression.Rules())
    return results_url


def test_show_findings_prints_each_finding_with_where_it_regressed(regressed_with_where, capsys, monkeypatch):
    monkeypatch.setenv("ERFNET_RESULTS_DB_URL", regressed_with_where)
    code, out, _ = run_cli(capsys, "results", "show", "--run", RUN_B, "--findings")
    assert code == 0
    assert f"run {RUN_B} (complete)" in out and "Accuracy" not in out
    drop = out.index("throughput_drop: Ascend310P3 batch 1: 240.00 fps")
    assert out[drop:].splitlines()[1] == (
        "  where: slower op types: Conv 100.0 -> 130.0 us (+30%, 100% of the growth). "
        "top ops: conv2 (Conv) 100.0 -> 130.0 us (+30%, 100% of the growth)"
    )
    assert "accuracy_below_reference: Ascend310P3 batch 1: mIoU 50.00" in out
    assert "  where: first diverging layer conv2 (Conv; ONNX nodes conv2): cosine 0.3, relative_euclidean 2" in out

    code, out, _ = run_cli(capsys, "results", "show", "--run", RUN_B, "--format", "json")
    where = {f["rule"]: f["where"] for f in json.loads(out)["findings"]}
    assert where["throughput_drop"]["ops"][0] == {
        "op_type": "Conv",
        "op_name": None,
        "baseline_us": 100.0,
        "current_us": 130.0,
        "share": 1.0,
        "change": "grew",
    }
    assert where["accuracy_below_reference"]["first_diverging"]["node"] == "conv2"
    code, out, _ = run_cli(capsys, "results", "show", "--run", RUN_B, "--findings", "--format", "json")
    assert {f["rule"] for f in json.loads(out)} == {"throughput_drop", "accuracy_below_reference"}
    code, out, err = run_cli(capsys, "results", "show", "--run", RUN_B, "--findings", "--format", "csv")
    assert code == 2 and err == "erfnet: error: --findings prints a table or JSON, not CSV\n"
