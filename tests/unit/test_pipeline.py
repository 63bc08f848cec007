"""The DAG's steps as plain functions: parameter validation, the target matrix, the compile cache."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from erfnet_tasks import build, measure, nightly, pipeline, plan, report
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.records import COMPILED_FIELDS, PERF_FIELDS, MeasuredCell, PlannedCell, from_xcom, to_xcom
from erfnet_tasks.settings import load_settings
from erfnet_tasks.targets import expand_targets, parse_target


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cityscapes").mkdir(parents=True)
    (root / "w.pth").write_bytes(b"weights")
    monkeypatch.setenv("ERFNET_DATA_DIR", str(root))
    monkeypatch.setenv("ERFNET_DATA_ROOTS", str(root))
    return root


def form(root, **overrides) -> dict:
    return {"weights": str(root / "w.pth"), "dataset_root": str(root / "cityscapes"), "targets": ["cpu"], **overrides}


def test_valid_form_is_normalised(data_root):
    params = pipeline.validate_params(form(data_root, batch_sizes=[4, 1, 4], tolerance=1), load_settings())
    assert params["batch_sizes"] == [1, 4]
    assert params["reference_miou"] == 72.20 and params["tolerance"] == 1.0
    assert params["weights"] == str((data_root / "w.pth").resolve())
    # The trigger form's multi-select sends its choices as strings; unset switches (null) are off.
    params = pipeline.validate_params(form(data_root, batch_sizes=["8", 1, "1"], aoe=None, force=None), load_settings())
    assert params["batch_sizes"] == [1, 8] and params["aoe"] is False and params["force"] is False


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_sizes": [0]}, "batch_sizes"),
        ({"batch_sizes": ["4x"]}, "batch_sizes"),
        ({"batch_sizes": [" 4"]}, "batch_sizes"),
        ({"batch_sizes": ["2048"]}, "batch_sizes"),
        ({"batch_sizes": ["\uff14"]}, "batch_sizes"),
        ({"batch_sizes": [True]}, "batch_sizes"),
        ({"batch_sizes": []}, "batch_sizes"),
        ({"targets": ["Ascend310; rm -rf /"]}, "unknown target"),
        ({"targets": ["$(reboot)"]}, "unknown target"),
        ({"targets": ["Ascend310P3+AOE+AOE"]}, "unknown target"),
        ({"targets": "cpu"}, "targets"),
        ({"image_limit": -1}, "image_limit"),
        ({"reference_miou": 172.0}, "reference_miou"),
        ({"force": "yes"}, "force"),
        ({"weights": "/etc/passwd"}, "outside the data roots"),
        ({"dataset_root": "../../"}, "outside the data roots"),
        ({"weights": "missing.pth"}, "not found"),
        ({"colour": "red"}, "unknown parameter"),
    ],
)
def test_bad_form_values_are_refused_in_one_line(data_root, overrides, message):
    with pytest.raises(ErfnetError, match=message) as info:
        pipeline.validate_params(form(data_root, **overrides), load_settings())
    assert "\n" not in str(info.value)


def test_a_symlink_cannot_lead_out_of_the_data_roots(data_root, tmp_path):
    outside = tmp_path / "secret.pth"
    outside.write_bytes(b"x")
    os.symlink(outside, data_root / "link.pth")
    with pytest.raises(ErfnetError, match="outside the data roots"):
        pipeline.validate_params(form(data_root, weights=str(data_root / "link.pth")), load_settings())


def test_targets_map_to_backends_and_aoe_adds_a_column_per_chip():
    assert parse_target("cpu").backend == "onnxruntime"
    assert parse_target("torch-cuda").device == "cuda"
    aoe = parse_target("Ascend310P3+AOE")
    assert (aoe.backend, aoe.chip, aoe.aoe) == ("ascend", "Ascend310P3", True)
    names = [t.name for t in expand_targets(["auto", "cpu", "Ascend310P3"], aoe=True, detected_chips=["Ascend310P3"])]
    assert names == ["Ascend310P3", "Ascend310P3+AOE", "cpu"]
    assert [t.name for t in expand_targets(["auto"], aoe=False, detected_chips=[])] == ["cpu"]


def test_plan_splits_the_matrix_by_where_it_runs(make):
    names = [t.name for t in expand_targets(["Ascend310", "cpu"], aoe=True, detected_chips=[])]
    env = make.env(targets=names, params={"batch_sizes": [1, 64]})
    groups = {
        g: [(c.target.name, c.batch_size) for c in plan.plan_cells(env, g, "Ascend310")]
        for g in ("npu", "npu_aoe", "host")
    }
    assert plan.plan_cells(env, "npu", "Ascend310P3") == []  # another chip's group
    assert groups == {
        "npu": [("Ascend310", 1), ("Ascend310", 64)],
        "npu_aoe": [("Ascend310+AOE", 1), ("Ascend310+AOE", 64)],
        "host": [("cpu", 1), ("cpu", 64)],
    }


def test_the_output_format_is_decided_when_the_cell_is_planned(make):
    """labels_on_device: a backend that compiles an artifact outputs int32 label maps, PyTorch (which runs
    the checkpoint) the guide's FP16 logits; the sizes are the dataset's (20 channels of 1024x512)."""
    env = make.env(targets=["cpu", "torch-cpu", "Ascend310"], params={"labels_on_device": True})
    formats = {
        c.target.name: c.output
        for g, chip in (("host", None), ("npu", "Ascend310"))
        for c in plan.plan_cells(env, g, chip)
    }
    assert {name: (f.label_mode, f.dtype) for name, f in formats.items()} == {
        "cpu": ("labels", "int32"),
        "Ascend310": ("labels", "int32"),
        "torch-cpu": ("logits", "float16"),
    }
    assert formats["cpu"].bytes_per_image == 1024 * 512 * 4
    assert formats["torch-cpu"].bytes_per_image == 20 * 1024 * 512 * 2
    logits = plan.plan_cells(make.env(), "host")[0].output
    assert (logits.label_mode, logits.bytes_per_image) == ("logits", 20 * 1024 * 512 * 2)


def test_records_cross_xcom_as_plain_json_and_refuse_what_does_not_fit(make):
    cell = make.measured("Ascend310", 4, "oom", error="oom: malloc device buffer failed", host="h", device="1")
    data = json.loads(json.dumps(to_xcom(cell)))
    assert from_xcom(MeasuredCell, data) == cell
    assert data["compiled"]["planned"]["target"]["device_type"] == "npu" and data["inference"]["device"] == "1"
    with pytest.raises(ErfnetError, match=r"not a MeasuredCell: inference\.colour: Extra inputs"):
        from_xcom(MeasuredCell, {**data, "inference": {**data["inference"], "colour": "red"}})
    with pytest.raises(ErfnetError, match="not a PlannedCell: batch_size"):
        from_xcom(PlannedCell, {k: v for k, v in to_xcom(make.planned()).items() if k != "batch_size"})
    with pytest.raises(ValidationError):  # frozen: a stage makes a new record, it never edits one
        cell.inference.status = "ok"


def test_the_run_document_rows_carry_the_records_fields(make):
    cell = make.measured(
        "Ascend310",
        1,
        host="host-b",
        device="0",
        cann_version="8.1.RC1",
        driver_version="23",
        compile_host="host-c",
        compile_cann_version="8.0.0",
    )
    doc = report.build_run_document(make.env(), make.model(), make.prep(), [cell], report.collect_perf([cell]))
    assert list(doc["compiled"][0]) == list(COMPILED_FIELDS) and list(doc["perf"][0]) == list(PERF_FIELDS)
    assert (doc["compiled"][0]["host"], doc["compiled"][0]["cann_version"]) == ("host-c", "8.0.0")
    assert (doc["perf"][0]["host"], doc["perf"][0]["device"], doc["perf"][0]["cann_version"]) == (
        "host-b",
        "0",
        "8.1.RC1",
    )
    assert doc["accuracy"][0]["label_mode"] == "logits" and doc["accuracy"][0]["miou"] == 0.5


def test_compile_cache_is_keyed_by_content_and_reused(data_root, fixed_onnx, make):
    from erfnet_tasks.fsutil import sha256_file

    model = make.model(fixed_onnx, sha256_file(fixed_onnx))
    env, cell = make.env(), make.planned("cpu", 2)
    first = build.compile_cell(cell, model, env).compilation
    second = build.compile_cell(cell, model, env).compilation
    assert first.status == "ok" and not first.cache_hit
    assert second.cache_hit and second.path == first.path
    assert second.sha256 == sha256_file(first.path)
    # Keyed by the CANN version of the host that compiles (a fleet's hosts are upgraded one at a time).
    assert build.cache_key(model, "8.0.RC3", cell) != build.cache_key(model, "8.0.0", cell)
    assert build.cache_key(model, None, make.planned("cpu", 4)) != build.cache_key(model, None, cell)
    assert build.cache_key(model, None, make.planned("cpu", 2, labels=True)) != build.cache_key(model, None, cell)


def test_two_workers_never_build_the_same_store_entry_at_once(tmp_path):
    import threading
    import time

    from erfnet_tasks.store import Store

    store, built = Store(tmp_path / "cache", "a test cache"), []

    def build_slowly(staging):
        built.append(staging)
        time.sleep(0.2)
        (staging / "a.bin").write_bytes(b"artifact")
        return staging / "a.bin", {"n": len(built)}

    entries = []
    workers = [
        threading.Thread(target=lambda: entries.append(store.fetch_or_build("k", build_slowly))) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(built) == 1 and sorted(e.hit for e in entries) == [False, True]
    assert {e.artifact.read_bytes() for e in entries} == {b"artifact"} and entries[1].meta == {"n": 1}


def test_a_refused_compile_is_a_recorded_cell_not_a_crash(data_root, tmp_path, monkeypatch, make):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    atc = bin_dir / "atc"
    atc.write_text(
        "#!/bin/sh\necho 'E10007: [PID: 1] the model file is invalid'\n"
        "echo 'ATC run failed, Please check the detail log, Try atc --help for more information'\nexit 1\n"
    )
    atc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    onnx = data_root / "m.onnx"
    onnx.write_bytes(b"not really onnx")
    env = make.env(targets=["Ascend310"], cann_version="8.0.0")
    result = build.compile_cell(make.planned("Ascend310", 1), make.model(onnx, "abc"), env)
    assert result.compilation.status == "failed" and "E10007" in result.compilation.error
    measured = measure.infer_cell(result, make.prep(), env)
    row = report.perf_row(measured)
    assert row.status == "compile_failed" and row.throughput_fps is None and "E10007" in row.error


def test_run_document_status_and_cells(make):
    env = make.env(targets=["Ascend310"], cann_version="8.0.0")
    ok = make.measured("Ascend310", 1)
    oom = make.measured("Ascend310", 64, "oom", error="oom: malloc device buffer failed")
    prep = make.prep(images=2)
    doc = report.build_run_document(env, make.model(), prep, [ok, oom], report.collect_perf([ok, oom]))
    assert doc["run"]["status"] == "complete"
    assert [(a["target"], a["batch_size"]) for a in doc["accuracy"]] == [("Ascend310", 1)]
    assert {p["batch_size"]: p["status"] for p in doc["perf"]} == {1: "ok", 64: "oom"}
    failed = report.build_run_document(env, make.model(), prep, [oom], report.collect_perf([oom]))
    assert failed["run"]["status"] == "failed"


@pytest.mark.slow  # three full-size ERFNet exports, each checked against PyTorch
def test_export_is_reused_while_weights_and_exporter_are_unchanged(data_root, random_checkpoint, make):
    from erfnet_tasks.fsutil import sha256_file

    env = make.env(params={"weights": str(random_checkpoint)}, weights_sha256=sha256_file(random_checkpoint))
    first = build.export_step(env)
    second = build.export_step(env)
    assert not first.cache_hit and second.cache_hit
    assert second.origin == first.origin and second.max_abs_error == first.max_abs_error
    model = build.fix_bn_step(second)
    assert model.bn_values_changed == 10 and model.sha256 == sha256_file(model.path)
    other = build.export_step(env.model_copy(update={"weights_sha256": "0" * 64}))
    assert not other.cache_hit and other.origin != first.origin


def _env_and_cells(make):
    env = make.env(
        targets=["Ascend310", "Ascend310P3"],
        run_id="manual__2",
        started_at="2026-11-26T00:00:00+00:00",
        params={"reference_miou": 0.0},
        cann_version="8.0.0",
        hosts=[
            {"chip": c, "host": "h", "cann_version": "8.0.0", "driver_version": None, "devices": [0]}
            for c in ("Ascend310", "Ascend310P3")
        ],
    )
    ok = make.measured("Ascend310P3", 1)
    unloaded = make.measured(
        "Ascend310", 1, "model_load_failed", error="model_load_failed: ais_bench failed: load model from file failed"
    )
    return env, ok, unloaded


@pytest.mark.parametrize("status", ["model_load_failed", "device_open_failed", "infer_failed"])
def test_a_cell_that_never_reached_a_device_makes_the_run_incomplete(status, make):
    env, ok, _unloaded = _env_and_cells(make)
    cells = [ok, make.measured("Ascend310", 1, status, error=f"{status}: x")]
    doc = report.build_run_document(env, make.model(), make.prep(), cells, report.collect_perf(cells))
    assert doc["run"]["status"] == "incomplete"
    assert {p["target"]: p["status"] for p in doc["perf"]} == {"Ascend310": status, "Ascend310P3": "ok"}


def _publish(env, cells, make, url):
    from erfnet_tasks.results import publish

    publish.publish_run(
        report.build_run_document(env, make.model(), make.prep(), cells, report.collect_perf(cells)), url
    )


def test_incomplete_run_fails_the_gate_with_the_reason_and_never_makes_the_nightly_skip(sqlite_url, make):
    from erfnet_tasks.errors import RegressionDetected

    env, ok, unloaded = _env_and_cells(make)
    _publish(env, [ok, unloaded], make, sqlite_url)
    with pytest.raises(RegressionDetected, match=r"incomplete .*Ascend310 batch 1: model_load_failed.*load model"):
        report.regression_gate(env.run_id, dict(env.params), sqlite_url)
    assert nightly.unchanged_since_last_run(env, make.model(), make.prep(), sqlite_url) is None

    # The same matrix with every cell a result (oom is one) is complete, and the next nightly skips.
    oom = make.measured("Ascend310", 1, "oom", error="oom: malloc device buffer failed")
    later = env.model_copy(update={"run_id": "manual__3", "started_at": "2026-11-27T00:00:00+00:00"})
    _publish(later, [ok, oom], make, sqlite_url)
    assert report.regression_gate(later.run_id, dict(later.params), sqlite_url) == []
    assert nightly.unchanged_since_last_run(env, make.model(), make.prep(), sqlite_url) == "manual__3"


def test_the_nightly_skip_and_the_gate_compare_each_chip_with_its_own_cann(sqlite_url, make):
    """Issue 16: a fleet's hosts are upgraded one at a time; each cell records its own CANN."""
    from erfnet_tasks.results import db, queries

    env, _ok, _unloaded = _env_and_cells(make)
    cells = [
        make.measured("Ascend310", 1, host="host-b", device="0", cann_version="8.0.0"),
        make.measured("Ascend310P3", 1, host="host-a", device="1", cann_version="8.0.0"),
    ]
    _publish(env, cells, make, sqlite_url)
    assert nightly.unchanged_since_last_run(env, make.model(), make.prep(), sqlite_url) == "manual__2"
    # Host B (the 310) upgraded alone: that chip changed, so the nightly measures.
    upgraded = env.model_copy(
        update={
            "hosts": tuple(
                h.model_copy(update={"cann_version": "8.1.RC1"}) if h.chip == "Ascend310" else h for h in env.hosts
            )
        }
    )
    with db.session_scope(sqlite_url) as session:
        previous = queries.run_document(session, "manual__2")
    assert nightly.changed_chips(upgraded, previous) == ["Ascend310"]
    assert nightly.unchanged_since_last_run(upgraded, make.model(), make.prep(), sqlite_url) is None
    # Its cells are 20% slower on the new CANN; the 310P3's, on the same CANN, have no baseline at all.
    later = upgraded.model_copy(update={"run_id": "manual__3", "started_at": "2026-11-27T00:00:00+00:00"})
    slower = [
        make.measured("Ascend310", 1, host="host-b", device="0", cann_version="8.1.RC1", fps=8.0),
        make.measured("Ascend310P3", 1, host="host-a", device="1", cann_version="8.0.0", fps=5.0),
    ]
    _publish(later, slower, make, sqlite_url)
    findings = report.regression_findings("manual__3", dict(later.params), sqlite_url)
    assert [(f["rule"], f["target"], f["baseline_run_id"]) for f in findings] == [
        ("throughput_drop", "Ascend310", "manual__2")
    ]
    assert "now CANN 8.1.RC1" in findings[0]["message"]
    with db.session_scope(sqlite_url) as session:
        doc = queries.run_document(session, "manual__3")
    assert [(c["target"], c["host"], c["device"], c["cann_version"]) for c in doc["perf"]] == [
        ("Ascend310", "host-b", "0", "8.1.RC1"),
        ("Ascend310P3", "host-a", "1", "8.0.0"),
    ]


def test_results_show_says_where_each_cell_ran(sqlite_url, capsys, make):
    from erfnet_tasks.cli import main

    env, _ok, _unloaded = _env_and_cells(make)
    cells = [
        make.measured(
            "Ascend310",
            1,
            host="host-b",
            device="0",
            cann_version="8.1.RC1",
            driver_version="23.0.3",
            compile_host="host-b",
            compile_cann_version="8.1.RC1",
        ),
        make.measured(
            "Ascend310P3",
            1,
            host="host-a",
            device="1",
            cann_version="8.0.0",
            driver_version="22.0.2",
            compile_host="host-a",
            compile_cann_version="8.0.0",
        ),
    ]
    _publish(env, cells, make, sqlite_url)
    assert main(["results", "--db", sqlite_url, "show", "--run", env.run_id]) == 0
    out = capsys.readouterr().out
    assert "covered (chip, host, CANN): Ascend310 on host-b, CANN 8.1.RC1; Ascend310P3 on host-a, CANN 8.0.0" in out
    rows = [line.split() for line in out.split("Where each cell ran", 1)[1].splitlines() if line.startswith("Ascend")]
    assert rows[:2] == [
        ["Ascend310", "1", "host-b", "host-b", "0", "8.1.RC1", "23.0.3", "ok"],
        ["Ascend310P3", "1", "host-a", "host-a", "1", "8.0.0", "22.0.2", "ok"],
    ]


def test_an_imported_complete_run_with_an_unmeasured_cell_is_stored_incomplete(sqlite_url, make):
    from erfnet_tasks.results import db, publish, queries

    env, ok, unloaded = _env_and_cells(make)
    cells = [ok, unloaded]
    doc = report.build_run_document(env, make.model(), make.prep(), cells, report.collect_perf(cells))
    doc["run"]["status"] = "complete"  # as a hand-edited or older results.json might claim
    publish.publish_run(doc, sqlite_url)
    with db.session_scope(sqlite_url) as session:
        assert queries.run_document(session, env.run_id)["run"]["status"] == "incomplete"


def test_a_failing_npu_smi_does_not_abort_a_cpu_only_run(data_root, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "npu-smi"
    smi.write_text("#!/bin/sh\necho 'dcmi module initialize failed. ret is -8005'\nexit 1\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env = pipeline.resolve_environment(form(data_root), "manual__npu_smi_broken")
    assert [t["name"] for t in env["targets"]] == ["cpu"] and env["driver_version"] is None
    assert set(env["backends"]) == {"onnxruntime", "torch"}


def test_a_chip_no_live_worker_serves_is_transient_and_a_bad_form_is_bad_input(data_root, monkeypatch):
    from erfnet_tasks.errors import BadInput, Transient

    monkeypatch.setenv("ERFNET_NPU_CHIPS", "Ascend310,Ascend310P3")
    monkeypatch.setattr(plan, "live_chips", lambda broker_url: ["Ascend310"])  # the 310P3 worker is down
    with pytest.raises(Transient, match="no live NPU worker consumes npu-Ascend310P3") as caught:
        pipeline.resolve_environment(form(data_root, targets=["Ascend310P3"]), "manual__worker_down")
    assert not isinstance(caught.value, BadInput)
    with pytest.raises(BadInput, match="no NPU tasks for chip Ascend999: add it to ERFNET_NPU_CHIPS") as caught:
        pipeline.resolve_environment(form(data_root, targets=["Ascend999"]), "manual__unconfigured_chip")
    assert not isinstance(caught.value, Transient)
