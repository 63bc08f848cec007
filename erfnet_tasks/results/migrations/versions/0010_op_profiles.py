"""Where a regression is: each cell's op profile (one row per op, the same shape for every backend), the
layer-by-layer diagnosis of a cell whose mIoU failed, and each finding's "where".

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "op_profiles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("op_name", sa.String(1000), nullable=False),
        sa.Column("op_type", sa.String(100), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("total_us", sa.Float(), nullable=False),
        sa.Column("mean_us", sa.Float(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_op_profiles_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_op_profiles"),
        sa.UniqueConstraint(
            "run_id", "target", "batch_size", "op_name", name="uq_op_profiles_run_id_target_batch_size_op_name"
        ),
    )
    op.create_table(
        "cell_diagnoses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("first_diverging", sa.JSON(), nullable=True),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_cell_diagnoses_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_cell_diagnoses"),
        sa.UniqueConstraint("run_id", "target", "batch_size", name="uq_cell_diagnoses_run_id_target_batch_size"),
    )
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("where", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("where")
    op.drop_table("cell_diagnoses")
    op.drop_table("op_profiles")
