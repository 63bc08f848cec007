"""The profiled pass: after a cell's measured pass, a few images under the backend's own profiler give
each op's time (msprof's op summary, ONNX Runtime's trace, torch.profiler), in one shape for every backend.

It is never part of the measured pass (profiling perturbs timing), and it can only add to a cell: a
profiled pass that fails is logged and the cell keeps its measurement, without a profile.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from . import settings
from .backends import Backend
from .errors import ErfnetError, first_line
from .records import ProfiledOp

log = logging.getLogger(__name__)
WORK_PREFIX = ".profile-"  # inside the cell's output folder: a killed attempt's is removed with its leftovers


def profile_cell(
    backend: Backend,
    model: str,
    prep_dir: str,
    out_dir: Path,
    *,
    batch_size: int,
    device: str | int | None,
    what: str,
) -> tuple[ProfiledOp, ...] | None:
    """Each op's time over ``settings.profile_images()`` images (None: turned off, or the pass failed)."""
    images = settings.profile_images()
    if images == 0:
        return None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=out_dir) as work:
            ops = backend.profile(model, prep_dir, work, batch_size=batch_size, images=images, device=device)
    except ErfnetError as exc:
        log.warning("%s: the profiled pass failed, no op profile is stored (the measurement stands): %s", what, exc)
        return None
    except Exception as exc:  # a profiler's own failure, whatever its type, must not cost the measurement
        log.warning("%s: the profiled pass failed (%s), no op profile is stored", what, first_line(exc), exc_info=True)
        return None
    if not ops:
        log.warning("%s: the profiled pass recorded no op, no op profile is stored", what)
        return None
    log.info("%s: profiled %d ops over %d image(s)", what, len(ops), images)
    return tuple(ProfiledOp.model_validate(op.as_dict()) for op in ops)
