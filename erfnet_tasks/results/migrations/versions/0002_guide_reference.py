"""Seed the guide's published figures (sections 6.3 and 7) as reference rows.

A frozen copy of erfnet_tasks.results.reference at the time of writing: migrations must not change
meaning when library code changes later (tests keep both copies equal).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SOURCE = "guide"
_FPS: dict[int, dict[str, float | str]] = {
    1: {"T4": 215.8135, "310": 220.2016, "310P": 292.137, "310P-AOE": 380.0822},
    4: {"T4": 226.745, "310": 176.2568, "310P": 192.398, "310P-AOE": 379.2337},
    8: {"T4": 237.8234, "310": 176.6912, "310P": 210.707, "310P-AOE": 381.9549},
    16: {"T4": 250.2417, "310": 175.8732, "310P": 211.125, "310P-AOE": 379.9660},
    32: {"T4": 222.312, "310": 181.5056, "310P": 215.234, "310P-AOE": 380.1598},
    64: {"T4": 226.2459, "310": "memory allocation failed", "310P": 216.937, "310P-AOE": 226.5988},
}
_MIOU = 0.7220
_MIOU_BATCHES = {"310": (1, 4, 8, 16, 32), "310P": (1, 4, 8, 16, 32, 64)}

_table = sa.table(
    "reference_figures",
    sa.column("source", sa.String),
    sa.column("metric", sa.String),
    sa.column("column_name", sa.String),
    sa.column("batch_size", sa.Integer),
    sa.column("value", sa.Float),
    sa.column("status", sa.String),
    sa.column("note", sa.String),
)


def _rows() -> list[dict[str, Any]]:
    rows = []
    for column, batches in _MIOU_BATCHES.items():
        rows += [
            dict(
                source=SOURCE,
                metric="miou",
                column_name=column,
                batch_size=b,
                value=_MIOU,
                status="ok",
                note="guide 6.3: 72.20 mIoU on the 500 val images",
            )
            for b in batches
        ]
    for batch, columns in _FPS.items():
        for column, value in columns.items():
            failed = isinstance(value, str)
            rows.append(
                dict(
                    source=SOURCE,
                    metric="throughput_fps",
                    column_name=column,
                    batch_size=batch,
                    value=None if failed else value,
                    status="oom" if failed else "ok",
                    note=value if failed else "guide 7",
                )
            )
    return rows


def upgrade() -> None:
    op.bulk_insert(_table, _rows())


def downgrade() -> None:
    op.execute(_table.delete().where(_table.c.source == SOURCE))
