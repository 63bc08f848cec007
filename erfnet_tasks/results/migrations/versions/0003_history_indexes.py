"""Index the regression baseline's access path: performance cells by (target, batch size).

The baseline of a new run's cell is the latest earlier run with the same target and batch
(erfnet_tasks.results.regression._baselines); without this index every import scans the whole
performance table. History by date range uses the existing runs.started_at index and the
(run_id, target, batch_size) unique index.

Revision ID: 0003_i20_history_indexes
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0003_i20_history_indexes"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_performance_target_batch_size", "performance", ["target", "batch_size"])


def downgrade() -> None:
    op.drop_index("ix_performance_target_batch_size", table_name="performance")
