"""Sending the pipeline's messages through Airflow's notifiers (the SMTP and Apprise providers).

The callbacks the regression DAG attaches to its tasks. The messages themselves come from
``erfnet_tasks.notify``; which connections receive them from ``ERFNET_NOTIFY``. Nothing is sent when it
is empty, and a receiver that is down or misconfigured is logged, never raised: a notification must
not turn a run red, nor hide the failure it reports.

Kept beside the DAG, not in plugins/: callbacks run in the task runner on the workers (and in
``airflow dags test``), where the DAG folder is on the import path; plugins/ is the UI's.
"""

from __future__ import annotations

import contextlib
import logging

from airflow.sdk import BaseHook

from erfnet_tasks import notify, settings
from erfnet_tasks.errors import BadInput, RegressionDetected, Transient

log = logging.getLogger(__name__)
SMTP_TYPES = ("smtp", "email")


def links() -> notify.Links:
    """Links under Airflow's configured API base URL, the address people open the UI at."""
    from airflow.configuration import conf

    return notify.Links(conf.get("api", "base_url", fallback="") or "http://localhost:8080")


def notifier_for(conn_id: str, message: notify.Message):
    """The provider's notifier for one connection: SMTP (HTML e-mail) or Apprise (plain text)."""
    conn = BaseHook.get_connection(conn_id)
    kind = (conn.conn_type or "").lower()
    if kind in SMTP_TYPES:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        recipients = conn.extra_dejson.get("to")
        if not recipients:
            raise BadInput(f'SMTP connection {conn_id!r} names no recipients: set "to" in its extra')
        return SmtpNotifier(to=recipients, subject=message.subject, html_content=message.html, smtp_conn_id=conn_id)
    if kind == "apprise":
        from airflow.providers.apprise.notifications.apprise import AppriseNotifier
        from apprise import NotifyFormat, NotifyType

        return AppriseNotifier(
            title=message.subject,
            body=message.text,
            body_format=NotifyFormat.TEXT,
            notify_type=NotifyType.FAILURE if message.failure else NotifyType.INFO,
            apprise_conn_id=conn_id,
        )
    raise BadInput(
        f"connection {conn_id!r} has type {conn.conn_type!r}; ERFNET_NOTIFY takes smtp and apprise connections"
    )


def send(message: notify.Message, context) -> list[str]:
    """Hand ``message`` to every connection of ERFNET_NOTIFY; returns the ids that took it."""
    delivered = []
    for conn_id in settings.notify_connections():
        try:
            # notify(), not the notifier's __call__: that would render our text as a Jinja template,
            # and an error message or run id holding "{{" is data, not a template.
            with _apprise_failures():
                notifier_for(conn_id, message).notify(context)
        except Exception as exc:  # any receiver problem: log it and go on to the next one
            log.warning(
                "notification to %s not delivered (%s: %s)",
                conn_id,
                type(exc).__name__,
                (str(exc).strip().splitlines() or [""])[0],
            )
            continue
        delivered.append(conn_id)
        log.info("notified %s: %s", conn_id, message.subject)
    return delivered


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _apprise_failures():
    """Raise when Apprise reported a failed delivery.

    AppriseHook drops the False that Apprise returns for a receiver it could not reach; Apprise's own
    warnings are what is left of it, so they are collected here and turned into an error.
    """
    collector = _Collect()
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(collector)
    try:
        yield
    finally:
        apprise_log.removeHandler(collector)
    if collector.records:
        raise Transient(collector.records[0].getMessage())


def _error_line(exc) -> str:
    text = (str(exc).strip().splitlines() or [""])[0] if exc is not None else ""
    return f"{type(exc).__name__}: {text}" if exc is not None else "the task failed (no exception recorded)"


def on_task_failure(context) -> None:
    """A task failed for good: the gate's findings, or the task, its one-line error and its log."""
    try:
        if not settings.notify_connections():
            return
        ti, exc = context["ti"], context.get("exception")
        if isinstance(exc, RegressionDetected):
            doc, baselines = notify.load_run(ti.run_id)
            message = notify.regression_message(doc, baselines, links())
        else:
            message = notify.failure_message(
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                error=_error_line(exc),
                links=links(),
                map_index=ti.map_index,
                try_number=ti.try_number,
            )
        send(message, context)
    except Exception as exc:  # the results database down, a bad setting: the run's state stays the task's
        log.warning("no failure notification (%s: %s)", type(exc).__name__, (str(exc).splitlines() or [""])[0])


def on_gate_passed(context) -> None:
    """The gate found nothing: a summary of the run, when ERFNET_NOTIFY_SUMMARY asks for one."""
    try:
        if not settings.notify_connections():
            return
        ti, dag_run = context["ti"], context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        doc, _ = notify.load_run(ti.run_id)
        if notify.wants_summary(settings.notify_summary(), run_type, doc["run"]["status"]):
            send(notify.summary_message(doc, links()), context)
    except Exception as exc:
        log.warning("no summary notification (%s: %s)", type(exc).__name__, (str(exc).splitlines() or [""])[0])


def notify_findings(findings: list[dict], context) -> None:
    """A cell's new findings, as soon as it is stored (each finding once: the store claimed them)."""
    if not findings:
        return
    try:
        if not settings.notify_connections():
            return
        ti = context["ti"]
        doc, baselines = notify.load_run(ti.run_id)
        send(notify.early_findings_message(doc, baselines, findings, links()), context)
    except Exception as exc:  # the final message carries every finding anyway
        log.warning("no early notification (%s: %s)", type(exc).__name__, (str(exc).splitlines() or [""])[0])
