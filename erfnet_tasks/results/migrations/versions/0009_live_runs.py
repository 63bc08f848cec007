"""Runs that are published as they happen: each cell's progress while its run is ``running``, and when a
finding was first notified (the gate speaks per cell as it is stored, once per finding).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cell_progress",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("chip", sa.String(50), nullable=True),
        sa.Column("backend", sa.String(50), nullable=True),
        sa.Column("aoe", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(50), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_cell_progress_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_cell_progress"),
        sa.UniqueConstraint("run_id", "target", "batch_size", name="uq_cell_progress_run_id_target_batch_size"),
    )
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("notified_at")
    op.drop_table("cell_progress")
