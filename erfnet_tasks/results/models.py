"""SQLAlchemy models of the results database.

These describe the schema for the ORM and for Alembic's autogenerate check; the tables themselves are
only ever created by the migrations (a test compares both).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

PERF_STATUSES = ("ok", "oom", "compile_failed", "infer_failed", "skipped")
RUN_STATUSES = ("complete", "partial", "failed", "skipped")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


def _run_fk() -> Mapped[str]:
    return mapped_column(sa.String(250), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(250), primary_key=True)
    dag_id: Mapped[str | None] = mapped_column(sa.String(250))
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    params: Mapped[dict | None] = mapped_column(sa.JSON)
    cann_version: Mapped[str | None] = mapped_column(sa.String(100))
    driver_version: Mapped[str | None] = mapped_column(sa.String(100))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    backends: Mapped[dict | None] = mapped_column(sa.JSON)
    model_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    weights_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    dataset_fingerprint: Mapped[str | None] = mapped_column(sa.String(255))
    images: Mapped[int | None] = mapped_column(sa.Integer)
    synthetic: Mapped[bool | None] = mapped_column(sa.Boolean)
    published_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class _RunCell:
    """One cell of a run's tables (a target at a batch size): unique per run, target and batch size."""

    @declared_attr.directive
    def __table_args__(cls):
        return (sa.UniqueConstraint("run_id", "target", "batch_size"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    target: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)


class CompiledModel(_RunCell, Base):
    __tablename__ = "compiled_models"

    backend: Mapped[str | None] = mapped_column(sa.String(50))
    chip: Mapped[str | None] = mapped_column(sa.String(50))
    path: Mapped[str | None] = mapped_column(sa.Text)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    seconds: Mapped[float | None] = mapped_column(sa.Float)
    cache_hit: Mapped[bool | None] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text)


class Accuracy(_RunCell, Base):
    __tablename__ = "accuracy"

    images: Mapped[int | None] = mapped_column(sa.Integer)
    miou: Mapped[float | None] = mapped_column(sa.Float)
    per_class: Mapped[list | None] = mapped_column(sa.JSON)


class Performance(_RunCell, Base):
    __tablename__ = "performance"

    throughput_fps: Mapped[float | None] = mapped_column(sa.Float)
    compute_min_ms: Mapped[float | None] = mapped_column(sa.Float)
    compute_mean_ms: Mapped[float | None] = mapped_column(sa.Float)
    compute_median_ms: Mapped[float | None] = mapped_column(sa.Float)
    compute_p99_ms: Mapped[float | None] = mapped_column(sa.Float)
    h2d_mean_ms: Mapped[float | None] = mapped_column(sa.Float)
    d2h_mean_ms: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text)


class ReferenceFigure(Base):
    """One published figure of the guide: mIoU or fps for a guide column (T4, 310, 310P, 310P-AOE)."""

    __tablename__ = "reference_figures"
    __table_args__ = (sa.UniqueConstraint("source", "metric", "column_name", "batch_size"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    metric: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    column_name: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    value: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    note: Mapped[str | None] = mapped_column(sa.Text)


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (sa.UniqueConstraint("run_id", "rule", "target", "batch_size"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    rule: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    target: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    batch_size: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    message: Mapped[str] = mapped_column(sa.Text, nullable=False)
    value: Mapped[float | None] = mapped_column(sa.Float)
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    baseline_run_id: Mapped[str | None] = mapped_column(sa.String(250))


class HostVersion(Base):
    """One stretch of time during which an NPU host had the same CANN version, driver and chips.

    ``seq`` counts a host's stretches (1, 2, ...); unique per host, so two probes that see the same
    upgrade at once cannot both record it.
    """

    __tablename__ = "host_versions"
    __table_args__ = (sa.UniqueConstraint("host", "seq"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    seq: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    cann_version: Mapped[str | None] = mapped_column(sa.String(100))
    driver_version: Mapped[str | None] = mapped_column(sa.String(100))
    chips: Mapped[list | None] = mapped_column(sa.JSON)
    first_seen_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
