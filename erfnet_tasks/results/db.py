"""Where the results database is, and bringing its schema up to date.

The URL comes from ``ERFNET_RESULTS_DB_URL``, else the Airflow connection ``erfnet_results``, else a
SQLite file in the project's data directory. Airflow is only ever imported lazily and optionally:
erfnet_tasks must work (and be tested) without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from ..errors import BadInput, first_line
from ..settings import RESULTS_DB_URL, data_dir, results_db_url

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

ENV_URL = RESULTS_DB_URL
AIRFLOW_CONN_ID = "erfnet_results"
_AIRFLOW_CONN_ENV = "AIRFLOW_CONN_ERFNET_RESULTS"
_PACKAGE_DIR = Path(__file__).resolve().parent
_ALEMBIC_INI = _PACKAGE_DIR / "alembic.ini"
_CONNECT_TIMEOUT_S = 10
_MIGRATION_LOCK_KEY = 0x45524E45  # any constant shared by every erfnet process
_VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


# ------------------------------------------------------------------------------------------- URL


def resolve_url() -> str:
    """The results database URL: the environment, then Airflow's connection, then the SQLite default."""
    url = results_db_url()
    if url:
        return normalize_url(url)
    url = _airflow_connection_url()
    if url:
        return normalize_url(url)
    return default_sqlite_url()


def default_sqlite_url() -> str:
    folder = data_dir()  # erfnet_tasks.settings: $ERFNET_DATA_DIR, else the checkout's data/
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'results.sqlite').resolve()}"


def normalize_url(url: str) -> str:
    """Validate ``url`` and pin PostgreSQL to psycopg 3 (``postgres://`` and ``postgresql://`` too)."""
    try:
        parsed = make_url(str(url).strip())
    except Exception:  # no cause chained: the parser's message repeats the URL, password and all
        raise BadInput(f"not a database URL: {_mask_text(str(url))!r}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        if driver not in ("", "psycopg"):
            raise BadInput(f"unsupported PostgreSQL driver {driver!r} in the results URL; use postgresql+psycopg")
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise BadInput(f"unsupported results database {backend!r}: use PostgreSQL or SQLite")
    return parsed.render_as_string(hide_password=False)


def masked(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _mask_text(url)


def _mask_text(text: str) -> str:
    return "<unparseable URL>" if "@" in text else text


def _airflow_connection_url() -> str | None:
    """The ``erfnet_results`` connection as a SQLAlchemy URL, or None when Airflow does not know it."""
    raw = os.environ.get(_AIRFLOW_CONN_ENV, "").strip()
    if raw:
        return _url_from_json(raw) if raw.startswith("{") else raw
    if not _inside_airflow():
        return None
    try:
        from airflow.sdk import BaseHook  # only where Airflow is installed, never at import time

        conn = BaseHook.get_connection(AIRFLOW_CONN_ID)
    except Exception as exc:  # not defined, no metadata database, not inside a deployment: fall through
        log.info("Airflow connection %r not available (%s); using the SQLite default", AIRFLOW_CONN_ID, first_line(exc))
        return None
    return _url_from_parts(conn.conn_type, conn.host, conn.login, conn.password, conn.schema, conn.port)


def _inside_airflow() -> bool:
    """Whether this process belongs to an Airflow deployment, so asking Airflow makes sense.

    Importing Airflow just to learn it knows nothing costs seconds per CLI call (and creates
    ~/airflow), so only processes that run under Airflow (already imported, or AIRFLOW_HOME /
    AIRFLOW__* configuration set) ask it.
    """
    if "airflow" in sys.modules:
        return True
    configured = "AIRFLOW_HOME" in os.environ or any(name.startswith("AIRFLOW__") for name in os.environ)
    return configured and importlib.util.find_spec("airflow") is not None


def _url_from_json(raw: str) -> str:
    try:
        fields = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{_AIRFLOW_CONN_ENV} is neither a URI nor valid JSON") from exc
    if not isinstance(fields, dict):
        raise BadInput(f"{_AIRFLOW_CONN_ENV} JSON must be an object")
    return _url_from_parts(
        fields.get("conn_type"),
        fields.get("host"),
        fields.get("login"),
        fields.get("password"),
        fields.get("schema"),
        fields.get("port"),
    )


def _url_from_parts(
    conn_type: str | None,
    host: str | None,
    login: str | None,
    password: str | None,
    schema: str | None,
    port: int | str | None,
) -> str:
    kind = (conn_type or "").lower()
    if kind == "sqlite":
        # Airflow's sqlite connections keep the file path in host.
        return f"sqlite:///{host or schema}"
    if kind not in ("postgres", "postgresql"):
        raise BadInput(f"Airflow connection {AIRFLOW_CONN_ID!r} has type {conn_type!r}; expected postgres or sqlite")
    return sa.URL.create(
        "postgresql+psycopg",
        username=login or None,
        password=password or None,
        host=host or None,
        port=int(port) if port else None,
        database=schema or None,
    ).render_as_string(hide_password=False)


# ------------------------------------------------------------------------------ engine and session


def get_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL for the life of the process (the plugin and the CLI share this)."""
    url = normalize_url(url) if url else resolve_url()
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_enforce_foreign_keys)
        return engine
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": _CONNECT_TIMEOUT_S}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_enforce_foreign_keys(dbapi_connection: Any, _record: object) -> None:
    # SQLite ignores ON DELETE CASCADE unless asked per connection.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextlib.contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session committed on success and rolled back on any exception."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# ------------------------------------------------------------------------------------- migrations


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config(str(_ALEMBIC_INI))
    # Set explicitly so that a wheel install (no ini beside it) still finds the scripts.
    config.set_main_option("script_location", str(_PACKAGE_DIR / "migrations"))
    return config


SUMMARY_REVISION = "0008"  # adds the CANN summary table, which is derived data: computed here


def upgrade(url: str | None = None, revision: str = "head") -> str | None:
    """Migrate the database at ``url`` to ``revision``; returns the revision it is at afterwards.

    A database that held runs before the CANN summary table existed gets the table's rows computed
    (in the migration's transaction), so no page ever reads an empty summary beside stored runs.
    """
    return _run_alembic("upgrade", url, revision, after=_fill_new_summary)


def _fill_new_summary(connection: sa.Connection, before: str | None, after: str | None) -> None:
    def number(rev: str | None) -> int:
        return int(rev) if rev and rev.isdigit() else 0

    if before is not None and number(before) < int(SUMMARY_REVISION) <= number(after):
        from sqlalchemy.orm import Session

        from . import cann_summary

        with Session(bind=connection) as session:  # joins the migration's transaction; commits with it
            cann_summary.rebuild(session)
            session.commit()


def downgrade(url: str | None, revision: str) -> str | None:
    return _run_alembic("downgrade", url, revision)


def _run_alembic(
    direction: str,
    url: str | None,
    revision: str,
    after: Callable[[sa.Connection, str | None, str | None], None] | None = None,
) -> str | None:
    from alembic import command

    config = alembic_config()
    with _sqlite_migration_lock(url), get_engine(url).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two publishers meeting an empty database must not both create the schema.
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        before = _revision_on(connection)
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)
        if after is not None:
            after(connection, before, _revision_on(connection))
    return current_revision(url)


@contextlib.contextmanager
def _sqlite_migration_lock(url: str | None) -> Iterator[None]:
    """Two processes meeting an empty SQLite file must not both create the schema: SQLite runs DDL
    outside the migration's transaction, so the second one would find half the tables. A lock file
    beside the database serialises them (PostgreSQL uses an advisory lock instead)."""
    parsed = make_url(normalize_url(url) if url else resolve_url())
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    import fcntl

    lock_path = Path(parsed.database).with_name(Path(parsed.database).name + ".migrate-lock")
    try:
        lock = open(lock_path, "a+b")  # noqa: SIM115  (entered just below: only the open may fail quietly)
    except OSError:  # no such folder, read-only: connecting fails next, with the error callers expect
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_revision(url: str | None = None) -> str | None:
    """The Alembic revision of the database, None when it was never migrated.

    Read straight from Alembic's version table: every plugin request asks, and Alembic's own
    MigrationContext would log two INFO lines each time.
    """
    with get_engine(url).connect() as connection:
        return _revision_on(connection)


def _revision_on(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table(_VERSION_TABLE):
        return None
    versions = connection.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalars().all()
    if len(versions) > 1:  # branched heads are never ours; say so rather than pick one
        raise BadInput(f"the results database has several Alembic heads: {', '.join(sorted(versions))}")
    return versions[0] if versions else None


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships its migrations"
    return head


def require_schema(url: str | None = None) -> None:
    """Refuse to query a database that has no results schema yet, with a hint instead of SQL errors."""
    if current_revision(url) is None:
        raise BadInput(
            f"the results database {masked(url or resolve_url())} has no schema yet; "
            f"run `erfnet results init` (or publish a run)"
        )
