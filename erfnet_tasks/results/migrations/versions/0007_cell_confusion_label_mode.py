"""Store each cell's confusion matrix (mIoU and per-class IoU can be recomputed without the outputs, and
two runs compared class by class) and the label mode that produced its mIoU (FP16 logits argmaxed on the
host, or label maps from an ArgMax on the device; the gate never compares across modes).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accuracy") as batch:  # batch mode: SQLite cannot ALTER most things in place
        batch.add_column(sa.Column("confusion", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("label_mode", sa.String(20), nullable=True))
    # Every cell published before this revision was computed from the guide's FP16 logits.
    accuracy = sa.table("accuracy", sa.column("label_mode", sa.String(20)))
    op.execute(accuracy.update().values(label_mode="logits"))


def downgrade() -> None:
    with op.batch_alter_table("accuracy") as batch:
        batch.drop_column("label_mode")
        batch.drop_column("confusion")
