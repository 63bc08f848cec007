"""The one exception type that reaches users as a one-line message."""


class ErfnetError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The CLI prints it as ``erfnet: error: <message>`` and exits non-zero; the DAG lets it fail the
    task without retries, because re-running a deterministic failure changes nothing.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its ``orig`` for SQLAlchemy), else its type name."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
