"""Shared fixtures: a random checkpoint in the upstream layout, its exported ONNX, and a throwaway
PostgreSQL database on the test machine's server (127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("ERFNET_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def no_diagnosis_unless_asked(monkeypatch):
    """The random checkpoints of the tests fail the guide's mIoU rule, so the measure stage would diagnose
    every cell they measure (erfnet_tasks/cell_diagnosis.py), layer by layer: off unless a test turns it on."""
    monkeypatch.setenv("ERFNET_DIAGNOSE_IMAGES", "0")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    from erfnet_tasks.model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "erfnet_random_untrained.pth", seed=0)


@pytest.fixture(scope="session")
def exported_onnx(random_checkpoint, tmp_path_factory) -> Path:
    """The guide's ErfNet_origin.onnx for the random checkpoint (exported once per session)."""
    from erfnet_tasks.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "ErfNet_origin.onnx"
    export_onnx(random_checkpoint, out)
    return out


@pytest.fixture(scope="session")
def fixed_onnx(exported_onnx, tmp_path_factory) -> Path:
    """The guide's ErfNet.onnx: the export after modify_bn_weights."""
    from erfnet_tasks.onnx_export import fix_bn

    out = tmp_path_factory.mktemp("onnx_fixed") / "ErfNet.onnx"
    fix_bn(exported_onnx, out)
    return out


def _pg_admin_engine():
    import sqlalchemy as sa

    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_server():
    """The admin engine of the local PostgreSQL server; fails (not skips) when it is down."""
    import sqlalchemy as sa

    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc}); .ci/run starts it")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"erfnet_test_{uuid.uuid4().hex[:12]}"
    with pg_server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with pg_server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'results.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def results_url(request) -> str:
    """An empty results database, once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


class RecordFactory:
    """Whole stage records (records.py) for tests that start a stage in the middle: every field a
    record requires, with what the test names overridden."""

    @staticmethod
    def params(**overrides):
        values = {
            "weights": "w.pth",
            "dataset_root": "cityscapes",
            "targets": ["cpu"],
            "batch_sizes": [1],
            "aoe": False,
            "image_limit": 0,
            "reference_miou": 72.20,
            "tolerance": 1.0,
            "force": False,
            "keep_outputs": False,
            "labels_on_device": False,
        }
        return {**values, **overrides}

    def env(self, targets=("cpu",), params=None, **overrides):
        from erfnet_tasks.plan import target_record
        from erfnet_tasks.records import Environment
        from erfnet_tasks.targets import parse_target

        records = [target_record(parse_target(name)) for name in targets]
        values = {
            "run_id": "manual__1",
            "dag_id": "erfnet_offline_inference",
            "started_at": "2026-11-25T00:00:00+00:00",
            "params": self.params(**(params or {})),
            "cann_version": None,
            "driver_version": None,
            "host": "h",
            "backends": {},
            "weights_sha256": "w",
            "targets": records,
            "work_dir": "/nonexistent",
            "npu_chips": [t.chip for t in records if t.chip],
        }
        return Environment.model_validate({**values, **overrides})

    @staticmethod
    def planned(target="cpu", batch_size=1, labels=False):
        from erfnet_tasks.datasets import label_spec
        from erfnet_tasks.plan import target_record
        from erfnet_tasks.records import LabelMode, PlannedCell, output_format
        from erfnet_tasks.targets import parse_target

        mode = LabelMode.LABELS if labels else LabelMode.LOGITS
        return PlannedCell(
            target=target_record(parse_target(target)), batch_size=batch_size, output=output_format(mode, label_spec())
        )

    @staticmethod
    def model(path="m.onnx", sha256="m"):
        from erfnet_tasks.records import ExportedModel, Model

        exported = ExportedModel(
            origin="o.onnx",
            origin_sha256="o",
            max_abs_error=0.0,
            max_rel_error=0.0,
            cache_hit=False,
            labels_on_device=False,
        )
        return Model(exported=exported, path=str(path), sha256=sha256, bn_values_changed=0)

    @staticmethod
    def prep(**overrides):
        from erfnet_tasks.records import Prepared

        values = {
            "prep_dir": "p",
            "gt_dir": "g",
            "images": 1,
            "fingerprint": "f",
            "synthetic": True,
            "dataset": "cityscapes",
            "class_names": ["road"],
        }
        return Prepared.model_validate({**values, **overrides})

    def measured(
        self,
        target="cpu",
        batch_size=1,
        status="ok",
        *,
        miou=0.5,
        error=None,
        fps=10.0,
        compile_status="ok",
        compile_host=None,
        compile_cann_version=None,
        **where,
    ):
        """A measured cell; ``where``: the Inference's host, device, cann_version, driver_version."""
        from erfnet_tasks.records import Compilation, CompiledCell, Evaluation, Inference, LabelMode, MeasuredCell

        ok = status == "ok"
        compilation = Compilation(
            status=compile_status,
            path=None if compile_status == "failed" else "m.om",
            sha256=None,
            seconds=0.0,
            cache_hit=False,
            error=error if compile_status == "failed" else None,
            host=compile_host,
            cann_version=compile_cann_version,
        )
        inference = Inference(
            status=status,
            error=error,
            throughput_fps=fps if ok else None,
            compute_ms={"mean": 100.0} if ok else None,
            **where,
        )
        evaluation = (
            Evaluation(images=1, miou=miou, per_class=[miou] * 19, confusion=[[1]], label_mode=LabelMode.LOGITS)
            if ok
            else None
        )
        return MeasuredCell(
            compiled=CompiledCell(planned=self.planned(target, batch_size), compilation=compilation),
            inference=inference,
            evaluation=evaluation,
        )


@pytest.fixture(scope="session")
def make() -> RecordFactory:
    return RecordFactory()
