"""Results schema: runs, compiled models, accuracy, performance, reference figures, findings.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _run_fk(table: str) -> tuple[sa.Column[str], sa.ForeignKeyConstraint]:
    return (
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=f"fk_{table}_run_id_runs", ondelete="CASCADE"),
    )


def _cell_columns(table: str) -> list[SchemaItem]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        *_run_fk(table),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.UniqueConstraint("run_id", "target", "batch_size", name=f"uq_{table}_run_id_target_batch_size"),
    ]


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(250), nullable=False),
        sa.Column("dag_id", sa.String(250)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("params", sa.JSON),
        sa.Column("cann_version", sa.String(100)),
        sa.Column("driver_version", sa.String(100)),
        sa.Column("host", sa.String(255)),
        sa.Column("backends", sa.JSON),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("weights_sha256", sa.String(64)),
        sa.Column("dataset_fingerprint", sa.String(255)),
        sa.Column("images", sa.Integer),
        sa.Column("synthetic", sa.Boolean),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_table(
        "compiled_models",
        *_cell_columns("compiled_models"),
        sa.Column("backend", sa.String(50)),
        sa.Column("chip", sa.String(50)),
        sa.Column("path", sa.Text),
        sa.Column("sha256", sa.String(64)),
        sa.Column("seconds", sa.Float),
        sa.Column("cache_hit", sa.Boolean),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "accuracy",
        *_cell_columns("accuracy"),
        sa.Column("images", sa.Integer),
        sa.Column("miou", sa.Float),
        sa.Column("per_class", sa.JSON),
    )
    op.create_table(
        "performance",
        *_cell_columns("performance"),
        sa.Column("throughput_fps", sa.Float),
        sa.Column("compute_min_ms", sa.Float),
        sa.Column("compute_mean_ms", sa.Float),
        sa.Column("compute_median_ms", sa.Float),
        sa.Column("compute_p99_ms", sa.Float),
        sa.Column("h2d_mean_ms", sa.Float),
        sa.Column("d2h_mean_ms", sa.Float),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "reference_figures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("metric", sa.String(50), nullable=False),
        sa.Column("column_name", sa.String(50), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("note", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_reference_figures"),
        sa.UniqueConstraint(
            "source",
            "metric",
            "column_name",
            "batch_size",
            name="uq_reference_figures_source_metric_column_name_batch_size",
        ),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        *_run_fk("findings"),
        sa.Column("rule", sa.String(50), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("baseline_run_id", sa.String(250)),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
        sa.UniqueConstraint("run_id", "rule", "target", "batch_size", name="uq_findings_run_id_rule_target_batch_size"),
    )


def downgrade() -> None:
    for table in ("findings", "reference_figures", "performance", "accuracy", "compiled_models"):
        op.drop_table(table)
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_table("runs")
