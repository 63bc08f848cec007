"""Shared fixtures: a random checkpoint in the upstream layout, its exported ONNX, and a throwaway
PostgreSQL database on the test machine's server (127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("ERFNET_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


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
