"""Every exception class of the project, so that the DAG's retry policy names one module.

``ErfnetError`` is the one type that reaches users, as a one-line message; the others are its kinds.
"""


class ErfnetError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The CLI prints it as ``erfnet: error: <message>`` and exits non-zero; the DAG lets it fail the
    task without retries, because re-running a deterministic failure changes nothing.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's message (its ``orig`` for SQLAlchemy), else its type name."""
    text = str(getattr(exc, "orig", None) or exc)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


class CompileFailed(ErfnetError):
    """The compiler ran and refused; ``code`` is its error code (atc's ``E10007``...) when it gave one."""

    def __init__(self, message: str, *, code: str | None = None, log_path=None):
        super().__init__(message)
        self.code = code
        self.log_path = log_path


class InferFailed(ErfnetError):
    """Inference ran and failed; ``status`` tells the cause apart (one of ``records.INFER_FAILURES``)."""

    def __init__(self, message: str, *, status: str = "infer_failed", log_path=None):
        from .records import INFER_FAILURES

        if status not in INFER_FAILURES:
            raise ValueError(f"unknown infer status {status!r}")
        super().__init__(message)
        self.status = str(status)
        self.log_path = log_path


class ToolTimedOut(ErfnetError):
    """A device tool (atc, AOE, ais_bench) ran past its deadline and its process group was stopped; the
    backend turns it into CompileFailed or InferFailed(status="timed_out") with these numbers."""

    def __init__(self, message: str, *, tool: str, deadline_s: float, elapsed_s: float, images: int | None = None,
                 output: str = ""):
        super().__init__(message)
        self.tool, self.deadline_s, self.elapsed_s, self.images, self.output = tool, deadline_s, elapsed_s, images, output


class RegressionDetected(ErfnetError):
    """The gate's verdict: at least one regression rule fired (or the run is incomplete)."""


class PublishFailed(ErfnetError):
    """The results database stayed unreachable through every retry; the run's JSON file still holds it."""
