"""SQLAlchemy models of the results database.

These describe the schema for the ORM and for Alembic's autogenerate check; the tables themselves are
only ever created by the migrations (a test compares both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

# The schema's limits, defined once: the columns below are declared with them, and every value accepted at
# an edge (the trigger form, the CLI, `results import`) is checked against them (document.check_storable,
# params.validate_params), so nothing accepted there can fail to store later.
RUN_ID_MAX = 250
DAG_ID_MAX = 250
TARGET_MAX = 100
CHIP_MAX = 50
BACKEND_MAX = 50
STATUS_MAX = 20
VERSION_MAX = 100
HOST_MAX = 255
DEVICE_MAX = 50
SHA256_MAX = 64
FINGERPRINT_MAX = 255
RULE_MAX = 50
SOURCE_MAX = 50
OP_NAME_MAX = 1000  # an op's name in a profile: ONNX node names are paths (/encoder/layers.3/conv1x3_1/Conv)
OP_TYPE_MAX = 100
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # sa.Integer: 32-bit in PostgreSQL
BIGINT_MAX = 2**63 - 1  # what a query's LIMIT/OFFSET can take


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _run_fk() -> Mapped[str]:
    return mapped_column(sa.String(RUN_ID_MAX), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(RUN_ID_MAX), primary_key=True)
    dag_id: Mapped[str | None] = mapped_column(sa.String(DAG_ID_MAX))
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    status: Mapped[str] = mapped_column(sa.String(STATUS_MAX), nullable=False)
    params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    cann_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))
    driver_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))
    host: Mapped[str | None] = mapped_column(sa.String(HOST_MAX))
    backends: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    model_sha256: Mapped[str | None] = mapped_column(sa.String(SHA256_MAX))
    weights_sha256: Mapped[str | None] = mapped_column(sa.String(SHA256_MAX))
    dataset_fingerprint: Mapped[str | None] = mapped_column(sa.String(FINGERPRINT_MAX))
    images: Mapped[int | None] = mapped_column(sa.Integer)
    synthetic: Mapped[bool | None] = mapped_column(sa.Boolean)
    class_names: Mapped[list[str] | None] = mapped_column(sa.JSON)  # the dataset's, in label order
    published_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class _RunCell:
    """One cell of a run's tables (a target at a batch size): unique per run, target and batch size."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (sa.UniqueConstraint("run_id", "target", "batch_size"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    target: Mapped[str] = mapped_column(sa.String(TARGET_MAX), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)


class CompiledModel(_RunCell, Base):
    __tablename__ = "compiled_models"

    backend: Mapped[str | None] = mapped_column(sa.String(BACKEND_MAX))
    chip: Mapped[str | None] = mapped_column(sa.String(CHIP_MAX))
    path: Mapped[str | None] = mapped_column(sa.Text)
    sha256: Mapped[str | None] = mapped_column(sa.String(SHA256_MAX))
    seconds: Mapped[float | None] = mapped_column(sa.Float)
    cache_hit: Mapped[bool | None] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.String(STATUS_MAX), nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text)
    host: Mapped[str | None] = mapped_column(sa.String(HOST_MAX))  # where it was compiled
    cann_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))


class Accuracy(_RunCell, Base):
    __tablename__ = "accuracy"

    images: Mapped[int | None] = mapped_column(sa.Integer)
    miou: Mapped[float | None] = mapped_column(sa.Float)
    per_class: Mapped[list[float | None] | None] = mapped_column(sa.JSON)
    confusion: Mapped[list[list[int]] | None] = mapped_column(sa.JSON)  # channels x channels counts, rows = label
    label_mode: Mapped[str | None] = mapped_column(sa.String(STATUS_MAX))  # records.LabelMode


class Performance(_RunCell, Base):
    __tablename__ = "performance"

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        # (target, batch_size): the regression baseline's lookup (migration 0004).
        return (
            sa.UniqueConstraint("run_id", "target", "batch_size"),
            sa.Index("ix_performance_target_batch_size", "target", "batch_size"),
        )

    throughput_fps: Mapped[float | None] = mapped_column(sa.Float)
    compute_min_ms: Mapped[float | None] = mapped_column(sa.Float)
    compute_mean_ms: Mapped[float | None] = mapped_column(sa.Float)
    compute_median_ms: Mapped[float | None] = mapped_column(sa.Float)
    compute_p99_ms: Mapped[float | None] = mapped_column(sa.Float)
    h2d_mean_ms: Mapped[float | None] = mapped_column(sa.Float)
    d2h_mean_ms: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(STATUS_MAX), nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text)
    # Where it was measured (issue 16: a run may span several hosts and CANN versions).
    host: Mapped[str | None] = mapped_column(sa.String(HOST_MAX))
    device: Mapped[str | None] = mapped_column(sa.String(DEVICE_MAX))
    cann_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))
    driver_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))


class ReferenceFigure(Base):
    """One published figure of the guide: mIoU or fps for a guide column (T4, 310, 310P, 310P-AOE)."""

    __tablename__ = "reference_figures"
    __table_args__ = (sa.UniqueConstraint("source", "metric", "column_name", "batch_size"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(sa.String(SOURCE_MAX), nullable=False)
    metric: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    column_name: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    value: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(STATUS_MAX), nullable=False)
    note: Mapped[str | None] = mapped_column(sa.Text)


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (sa.UniqueConstraint("run_id", "rule", "target", "batch_size"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    rule: Mapped[str] = mapped_column(sa.String(RULE_MAX), nullable=False)
    target: Mapped[str] = mapped_column(sa.String(TARGET_MAX), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    message: Mapped[str] = mapped_column(sa.Text, nullable=False)
    value: Mapped[float | None] = mapped_column(sa.Float)
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    baseline_run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_MAX))
    # When a notification first carried it (early, as its cell was stored): each finding is notified once.
    notified_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # Where it regressed (results.where): {"ops": [...], "first_diverging": {...} | null}; null for rules
    # that have no place to point at (a cell that failed or never ran).
    where: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class OpProfile(Base):
    """One op of a cell's profiled pass (profiles.OpTime): the same shape for every backend, so that two
    cells measured on different CANN versions compare op by op (results.where)."""

    __tablename__ = "op_profiles"
    __table_args__ = (sa.UniqueConstraint("run_id", "target", "batch_size", "op_name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    target: Mapped[str] = mapped_column(sa.String(TARGET_MAX), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    op_name: Mapped[str] = mapped_column(sa.String(OP_NAME_MAX), nullable=False)
    op_type: Mapped[str] = mapped_column(sa.String(OP_TYPE_MAX), nullable=False)
    calls: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    total_us: Mapped[float] = mapped_column(sa.Float, nullable=False)
    mean_us: Mapped[float] = mapped_column(sa.Float, nullable=False)
    share: Mapped[float] = mapped_column(sa.Float, nullable=False)  # of the profile's total time


class CellDiagnosis(_RunCell, Base):
    """A cell's model compared layer by layer with its FP32 ONNX golden (erfnet_tasks.diagnose), made when
    its mIoU failed the rule: ``layers`` in execution order, ``first_diverging`` the first precision error."""

    __tablename__ = "cell_diagnoses"

    images: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    first_diverging: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    layers: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, nullable=False)


class CellProgress(_RunCell, Base):
    """Where each cell of a run is while the run goes on (records.CellState): the plugin's live view and,
    for a cell whose task died without a word, what it was doing and where (``results.progress``)."""

    __tablename__ = "cell_progress"

    chip: Mapped[str | None] = mapped_column(sa.String(CHIP_MAX))
    backend: Mapped[str | None] = mapped_column(sa.String(BACKEND_MAX))
    aoe: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    state: Mapped[str] = mapped_column(sa.String(STATUS_MAX), nullable=False)
    host: Mapped[str | None] = mapped_column(sa.String(HOST_MAX))
    try_number: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text)  # the one-line error of a step that raised
    error_kind: Mapped[str | None] = mapped_column(sa.String(RULE_MAX))  # the exception's class name
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class HostVersion(Base):
    """One stretch of time during which an NPU host had the same CANN version, driver and chips.

    ``seq`` counts a host's stretches (1, 2, ...); unique per host, so two probes that see the same
    upgrade at once cannot both record it.
    """

    __tablename__ = "host_versions"
    __table_args__ = (sa.UniqueConstraint("host", "seq"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(sa.String(HOST_MAX), nullable=False)
    seq: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    cann_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))
    driver_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))
    chips: Mapped[list[str] | None] = mapped_column(sa.JSON)
    first_seen_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class CannSummary(Base):
    """Per CANN version, target and batch over all runs: best, median and latest fps and mIoU.

    Derived data (module ``cann_summary``): every write of a run recomputes its versions' rows, so
    the history page reads these instead of aggregating every cell of every run.
    """

    __tablename__ = "cann_summary"
    __table_args__ = (
        sa.Index("ix_cann_summary_cann_version", "cann_version"),
        sa.Index("ix_cann_summary_batch_size", "batch_size"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    cann_version: Mapped[str | None] = mapped_column(sa.String(VERSION_MAX))
    target: Mapped[str] = mapped_column(sa.String(TARGET_MAX), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    runs: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    first_started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    last_started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    fps_best: Mapped[float | None] = mapped_column(sa.Float)
    fps_median: Mapped[float | None] = mapped_column(sa.Float)
    fps_latest: Mapped[float | None] = mapped_column(sa.Float)
    miou_best: Mapped[float | None] = mapped_column(sa.Float)
    miou_median: Mapped[float | None] = mapped_column(sa.Float)
    miou_latest: Mapped[float | None] = mapped_column(sa.Float)
    latest_run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_MAX))
