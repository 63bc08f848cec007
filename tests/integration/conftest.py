"""Every test here runs real Airflow (`airflow dags test`, a scheduler, the cluster) or the deployment's own
tools: marked `integration`, left out of `make test-fast`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The hook sees the whole session's items, so only those under this folder get the marker.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
