"""The CANN summary table: per CANN version, target and batch the best, median and latest fps and
mIoU over all runs, kept by every publish (erfnet_tasks.results.cann_summary), so that the history
page and /api/cann read a few hundred rows instead of aggregating every cell of every run.

The rows of a database that already holds runs are computed by ``db.upgrade`` right after this
revision (the aggregate lives in the library, in two dialects; a migration must not import it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cann_summary",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("cann_version", sa.String(100)),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("first_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fps_best", sa.Float),
        sa.Column("fps_median", sa.Float),
        sa.Column("fps_latest", sa.Float),
        sa.Column("miou_best", sa.Float),
        sa.Column("miou_median", sa.Float),
        sa.Column("miou_latest", sa.Float),
        sa.Column("latest_run_id", sa.String(250)),
        sa.PrimaryKeyConstraint("id", name="pk_cann_summary"),
    )
    op.create_index("ix_cann_summary_cann_version", "cann_summary", ["cann_version"])
    op.create_index("ix_cann_summary_batch_size", "cann_summary", ["batch_size"])


def downgrade() -> None:
    op.drop_index("ix_cann_summary_batch_size", table_name="cann_summary")
    op.drop_index("ix_cann_summary_cann_version", table_name="cann_summary")
    op.drop_table("cann_summary")
