"""Create the results database and its role when they are missing; run by airflow-init.

The postgres image's /docker-entrypoint-initdb.d script does this only for an empty data volume; this
covers a volume that existed before (an upgraded stack) and an external PostgreSQL server.
Connects with the server's admin account: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_HOST,
POSTGRES_PORT, POSTGRES_DB. Creates ERFNET_RESULTS_DB owned by ERFNET_RESULTS_USER.
"""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg import sql


def _admin_conninfo(env) -> dict:
    return {
        "host": env.get("POSTGRES_HOST", "postgres"),
        "port": int(env.get("POSTGRES_PORT", "5432")),
        "user": env.get("POSTGRES_USER", "airflow"),
        "password": env.get("POSTGRES_PASSWORD", ""),
        "dbname": env.get("POSTGRES_DB", "airflow"),
    }


def ensure_results_database(env=os.environ) -> list[str]:
    """Return what was created (empty when everything already existed)."""
    database = env.get("ERFNET_RESULTS_DB", "erfnet_results")
    role = env.get("ERFNET_RESULTS_USER", "erfnet")
    password = env.get("ERFNET_RESULTS_PASSWORD")
    if not password:
        raise SystemExit("ensure_results_database: ERFNET_RESULTS_PASSWORD is not set")
    created = []
    # CREATE DATABASE refuses to run inside a transaction block.
    with psycopg.connect(**_admin_conninfo(env), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )
            created.append(f"role {role}")
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
            created.append(f"database {database}")
    return created


def main() -> int:
    created = ensure_results_database()
    print("results database: created " + ", ".join(created) if created else "results database: present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
