"""Every exception class of the project, so that the DAG's retry policy names one module.

``ErfnetError`` is the one type that reaches users, as a one-line message (the CLI prints it and exits 2);
what to do about one is told by its kind:

- ``BadInput``: the input or the configuration is wrong. Fix it; retrying changes nothing.
- ``Transient``: the infrastructure is not there right now (no live NPU worker, the results database
  unreachable). Retrying later may succeed, so the DAG retries it.
- ``Verdict``: the run worked and its answer is "no" (a regression). Nothing to retry; read the findings.
"""

from __future__ import annotations

from pathlib import Path


class ErfnetError(Exception):
    """A problem stated in one line; raise one of its kinds, which say what to do about it.

    The CLI prints any of them as ``erfnet: error: <message>`` and exits non-zero; the task log keeps the
    cause chain (raise it ``from`` the exception that caused it).
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class BadInput(ErfnetError):
    """Bad input or configuration: deterministic, so the DAG fails the task without retrying."""


class Transient(ErfnetError):
    """Infrastructure that is missing or down for now: the DAG retries the task."""


class Verdict(ErfnetError):
    """The run's answer, not a fault: the DAG fails the task without retrying, and the message is the finding."""


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's message (its ``orig`` for SQLAlchemy), else its type name."""
    text = str(getattr(exc, "orig", None) or exc)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


class CompileFailed(BadInput):
    """The compiler ran and refused; ``code`` is its error code (atc's ``E10007``...) when it gave one.

    Recorded as the cell's outcome; the same model and options are refused again, hence BadInput."""

    def __init__(self, message: str, *, code: str | None = None, log_path: Path | str | None = None):
        super().__init__(message)
        self.code = code
        self.log_path = log_path


class InferFailed(BadInput):
    """Inference ran and failed; ``status`` tells the cause apart (one of ``records.INFER_FAILURES``).

    Recorded as the cell's outcome (the other cells go on), never retried as a task."""

    def __init__(self, message: str, *, status: str = "infer_failed", log_path: Path | str | None = None):
        from .records import INFER_FAILURES  # records imports this module: a top-level import would cycle

        if status not in INFER_FAILURES:
            raise ValueError(f"unknown infer status {status!r}")
        super().__init__(message)
        self.status = str(status)
        self.log_path = log_path


class ToolTimedOut(Transient):
    """A device tool (atc, AOE, ais_bench) ran past its deadline and its process group was stopped (a hung
    device is infrastructure); the backend turns it into CompileFailed or InferFailed(status="timed_out")
    with these numbers."""

    def __init__(
        self,
        message: str,
        *,
        tool: str,
        deadline_s: float,
        elapsed_s: float,
        images: int | None = None,
        output: str = "",
    ):
        super().__init__(message)
        self.tool, self.deadline_s, self.elapsed_s = tool, deadline_s, elapsed_s
        self.images, self.output = images, output


class RegressionDetected(Verdict):
    """The gate's verdict: at least one regression rule fired (or the run is incomplete)."""


class PublishFailed(Transient):
    """The results database stayed unreachable through every retry; the run's JSON file still holds it."""
