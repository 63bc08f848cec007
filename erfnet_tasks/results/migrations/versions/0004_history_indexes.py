"""Index the regression baseline's access path: performance cells by (target, batch size).

The baseline of a new run's cell is the latest earlier run with the same target and batch
(erfnet_tasks.results.regression._baselines); without this index every import scans the whole
performance table. History by date range uses the existing runs.started_at index and the
(run_id, target, batch_size) unique index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_performance_target_batch_size", "performance", ["target", "batch_size"])


def downgrade() -> None:
    op.drop_index("ix_performance_target_batch_size", table_name="performance")
