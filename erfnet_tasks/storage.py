"""A cell's outputs on disk: the space they need before they are written, and their deletion once counted.

FP16 logits are 20 x 512 x 1024 x 2 bytes (about 21 MB) per image, so a 500-image cell writes about
10.5 GB. A cell checks the free space of its output folder before it writes anything, and once its
mIoU, per-class IoU and confusion matrix are stored, deletes exactly the output files its summary
lists (those that were counted). The summary JSON and the cell's log stay.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .datasets import LabelSpec
from .errors import BadInput
from .outputs import output_folder_of, read_summary
from .records import LabelMode, output_format

log = logging.getLogger(__name__)

# A cell never fills its disk to the last byte: other writers (logs, the summary, other runs) share it.
MARGIN_FRACTION = 0.05
MARGIN_BYTES = 16 * 2**20


def bytes_per_image(spec: LabelSpec, mode: LabelMode | str = LabelMode.LOGITS) -> int:
    """What one image's output takes (``records.output_format``; a planned cell carries it)."""
    return output_format(mode, spec).bytes_per_image


def bytes_needed(images: int, per_image: int) -> int:
    outputs = images * per_image
    return outputs + int(outputs * MARGIN_FRACTION) + MARGIN_BYTES


@dataclass(frozen=True)
class Shortage:
    needed: int
    free: int
    folder: str

    @property
    def message(self) -> str:
        return (
            f"no_space: the outputs need {self.needed / 2**20:.1f} MiB ({self.needed} bytes, margin included) "
            f"but {self.folder} has {self.free / 2**20:.1f} MiB ({self.free} bytes) free"
        )


def _existing(folder: Path) -> Path:
    """The folder, or its nearest existing ancestor (the file system the outputs will land on)."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return candidate
    raise BadInput(f"no existing folder above {folder}")  # pragma: no cover (the root exists)


def check_space(folder: str | Path, images: int, per_image: int) -> Shortage | None:
    """None when ``images`` outputs of ``per_image`` bytes (plus the margin) fit, else the numbers."""
    folder = Path(folder)
    free = shutil.disk_usage(_existing(folder)).free
    needed = bytes_needed(images, per_image)
    return Shortage(needed, free, str(folder)) if needed > free else None


def delete_counted_outputs(summary_path: str | Path) -> int:
    """Delete the output files the summary lists (inside its output folder only), then that folder if it
    is empty; the summary itself stays. Returns how many files were deleted."""
    summary_path = Path(summary_path)
    folder = output_folder_of(summary_path).resolve()
    deleted = 0
    for entry in read_summary(summary_path):
        for out in entry.outfiles:
            path = Path(out)
            if path.resolve().is_relative_to(folder) and path.is_file() and not path.is_symlink():
                path.unlink()
                deleted += 1
    if folder != summary_path.parent.resolve() and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # the new layout's timestamp folder held only the outputs
    log.info("deleted %d counted output file(s) of %s", deleted, summary_path)
    return deleted
