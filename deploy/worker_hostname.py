"""``[core] hostname_callable`` for several Celery workers on one host (deploy/local_cluster.py).

Airflow records the name this returns on every task instance a worker runs. In docker-compose.yaml each
worker is its own container with its own hostname, so the default is right there; on one host the
workers would all record the same name, and nobody could tell which worker ran a task.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("ERFNET_WORKER_HOSTNAME") or socket.getfqdn()
