"""Store the dataset's class names with each run, so that readers (the plugin, the CLI) name the
per-class IoU columns without importing the dataset module.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Every run published before this revision measured Cityscapes (trainIds 0..18, cityscapesScripts' names).
_CITYSCAPES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # batch mode: SQLite cannot ALTER most things in place
        batch.add_column(sa.Column("class_names", sa.JSON(), nullable=True))
    runs = sa.table("runs", sa.column("class_names", sa.JSON()))
    op.execute(runs.update().values(class_names=_CITYSCAPES))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("class_names")
