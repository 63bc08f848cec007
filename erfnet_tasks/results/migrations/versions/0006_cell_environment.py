"""Where each cell was compiled and measured: host, device, CANN and driver per cell, so a run that
spans a fleet (a 310 host and a 310P host, upgraded at different times) records each cell's own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HOST_MAX, VERSION_MAX, DEVICE_MAX = 255, 100, 50


def upgrade() -> None:
    # Cells published before this revision keep NULL: the run's own host and CANN are all they had.
    with op.batch_alter_table("performance") as batch:  # batch mode: SQLite cannot ALTER in place
        batch.add_column(sa.Column("host", sa.String(HOST_MAX), nullable=True))
        batch.add_column(sa.Column("device", sa.String(DEVICE_MAX), nullable=True))
        batch.add_column(sa.Column("cann_version", sa.String(VERSION_MAX), nullable=True))
        batch.add_column(sa.Column("driver_version", sa.String(VERSION_MAX), nullable=True))
    with op.batch_alter_table("compiled_models") as batch:
        batch.add_column(sa.Column("host", sa.String(HOST_MAX), nullable=True))
        batch.add_column(sa.Column("cann_version", sa.String(VERSION_MAX), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compiled_models") as batch:
        for name in ("cann_version", "host"):
            batch.drop_column(name)
    with op.batch_alter_table("performance") as batch:
        for name in ("driver_version", "cann_version", "device", "host"):
            batch.drop_column(name)
