"""Ascend chip names (the soc_version atc takes): what one looks like, and the guide's two."""

from __future__ import annotations

import re

CHIP_PATTERN = re.compile(r"^Ascend[0-9A-Za-z]+$")
"""A chip name: ``Ascend310``, ``Ascend310P3``, ``Ascend910B3``... (it names a Celery queue and a target)."""

GUIDE_CHIPS = ("Ascend310", "Ascend310P3")
"""The guide's two NPU columns: the default of ERFNET_NPU_CHIPS and the chips the trigger form lists."""


def is_chip(name: object) -> bool:
    return isinstance(name, str) and CHIP_PATTERN.fullmatch(name) is not None
