"""The guide's published figures (guide sections 6.3 and 7), the yardstick every run is compared with.

The ``reference_figures`` table holds the same numbers, seeded by migration 0002 (a migration keeps the
values it shipped with, so it does not import these); a test checks the seeded rows against them.
"""

from __future__ import annotations

GUIDE_MIOU = 0.7220
"""72.20 mIoU on the 500 Cityscapes val images (the upstream README says 72.1)."""

GUIDE_MIOU_PERCENT = round(GUIDE_MIOU * 100, 2)
"""The same figure in the trigger form's unit, mIoU points (72.2)."""

GUIDE_TOLERANCE = 0.01
"""The guide's acceptance criterion: within 1 point of the open-source figure."""

GUIDE_ACCURACY_BATCHES = {"310": (1, 4, 8, 16, 32), "310P": (1, 4, 8, 16, 32, 64)}

GUIDE_COLUMNS = ("T4", "310", "310P", "310P-AOE")

# fps per batch and guide column; a string is the guide's own text for a cell that did not run.
GUIDE_THROUGHPUT: dict[int, dict[str, float | str]] = {
    1: {"T4": 215.8135, "310": 220.2016, "310P": 292.137, "310P-AOE": 380.0822},
    4: {"T4": 226.745, "310": 176.2568, "310P": 192.398, "310P-AOE": 379.2337},
    8: {"T4": 237.8234, "310": 176.6912, "310P": 210.707, "310P-AOE": 381.9549},
    16: {"T4": 250.2417, "310": 175.8732, "310P": 211.125, "310P-AOE": 379.9660},
    32: {"T4": 222.312, "310": 181.5056, "310P": 215.234, "310P-AOE": 380.1598},
    64: {"T4": 226.2459, "310": "memory allocation failed", "310P": 216.937, "310P-AOE": 226.5988},
}


def guide_column(target: str) -> str | None:
    """The guide's table column that a pipeline target corresponds to, or None when it has none."""
    if target == "Ascend310":
        return "310"
    if target.startswith("Ascend310P"):
        return "310P-AOE" if target.endswith("+AOE") else "310P"
    if target == "torch-cuda":
        return "T4"
    return None
