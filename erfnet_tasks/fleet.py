"""The NPU fleet: which Celery queue does a chip's work, which queues this host serves, which are live.

Each chip model has its own queue, ``<ERFNET_NPU_QUEUE>-<chip>`` (``npu-Ascend310P3``), so that a cell's
compile, AOE, inference and environment probe run on a host that has its chip. A host's NPU worker
consumes the queues of the chips ``npu-smi info`` lists (``erfnet worker-queues``), so a host whose
cards change needs no edit. ``auto`` asks Celery which of these queues have a consumer right now.
"""

from __future__ import annotations

import logging

from . import settings
from .errors import BadInput

log = logging.getLogger(__name__)


def queue_for(chip: str) -> str:
    return f"{settings.npu_queue()}-{chip}"


def npu_queues() -> list[str]:
    """The queue of every chip the DAG has NPU tasks for (ERFNET_NPU_CHIPS): where the CANN probe runs.
    A chip served by several hosts is probed on whichever of them takes the task."""
    return [queue_for(chip) for chip in settings.npu_chips()]


def chip_of_queue(queue: str) -> str | None:
    prefix = settings.npu_queue() + "-"
    return queue[len(prefix) :] if queue.startswith(prefix) else None


def worker_queues() -> list[str]:
    """The queues this host's NPU worker must consume: one per chip model ``npu-smi info`` lists."""
    from .backends.ascend import detect_chips

    chips = detect_chips()
    if not chips:
        raise BadInput(
            "npu-smi info lists no NPU on this host (is the driver installed and npu-smi on "
            "PATH?): an NPU worker here would have no queue to consume"
        )
    return [queue_for(chip) for chip in dict.fromkeys(chips)]


def check_configured(chips: list[str]) -> None:
    """A chip the DAG has no tasks for (ERFNET_NPU_CHIPS, read at parse time) cannot be measured."""
    configured = settings.npu_chips()
    missing = [c for c in dict.fromkeys(chips) if c not in configured]
    if missing:
        raise BadInput(
            f"no NPU tasks for chip {', '.join(missing)}: add it to ERFNET_NPU_CHIPS (now "
            f"{','.join(configured)}) where the DAG is parsed, and start a worker on a host with "
            f"that card"
        )


def live_chips(broker_url: str | None, timeout: float = 3.0) -> list[str] | None:
    """Chips whose queue a live Celery worker consumes, sorted; None when the broker cannot be asked
    (no URL: a run outside Celery, such as ``airflow dags test``)."""
    if not broker_url:
        return None
    from celery import Celery

    app = Celery(broker=broker_url)
    # An unreachable broker must cost seconds, not Celery's default of retrying for ever.
    app.conf.update(
        broker_connection_timeout=timeout,
        broker_connection_retry=False,
        broker_connection_max_retries=1,
        broker_transport_options={"max_retries": 1},
    )
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # any broker failure means "cannot tell", said in the log
        log.warning("could not ask the Celery workers for their queues (%s)", str(exc).splitlines()[0])
        return None
    finally:
        app.close()
    chips = {chip_of_queue(q["name"]) for queues in replies.values() for q in queues}
    return sorted(c for c in chips if c)
