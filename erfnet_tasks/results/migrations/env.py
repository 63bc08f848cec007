"""Alembic environment of the results database.

The caller (erfnet_tasks.results.db) hands over an open connection in ``config.attributes``; run from
the ``alembic`` command line, the URL comes from sqlalchemy.url or db.resolve_url(). Logging is left
alone on purpose: this runs inside Airflow workers and the CLI, whose logging is not ours to reset.
"""

from __future__ import annotations

from alembic import context

from erfnet_tasks.results import db
from erfnet_tasks.results.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    # SQLite cannot ALTER most things; batch mode lets later migrations work there too.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or db.resolve_url()
    context.configure(url=db.normalize_url(url), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or db.resolve_url()
    with db.get_engine(url).begin() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
