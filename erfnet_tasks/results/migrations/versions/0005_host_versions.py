"""Per-host history of CANN version, driver and chips, written by the CANN version probe.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_versions",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("cann_version", sa.String(100)),
        sa.Column("driver_version", sa.String(100)),
        sa.Column("chips", sa.JSON),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_host_versions"),
        sa.UniqueConstraint("host", "seq", name="uq_host_versions_host_seq"),
    )


def downgrade() -> None:
    op.drop_table("host_versions")
