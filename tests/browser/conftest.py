"""Every test here drives headless Chromium against a real `airflow api-server`: marked `browser`, left out of
`make test-fast`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.chromium import CHROMIUM, Chromium

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The hook sees the whole session's items, so only those under this folder get the marker.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make system-test-deps` (tools/ensure-system-packages.sh)")
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()
