"""How long each step on a device may take: the tools' deadlines and the Airflow tasks' execution_timeout.

A hung tool must cost its deadline, not the night: ais_bench, atc and AOE run under a deadline derived
from the work (toolrun.py stops the tool's whole process group there and the cell is ``timed_out``), and
Airflow's ``execution_timeout`` on each NPU task backs it up should the tool's own deadline fail.

The defaults and the figures behind them (each configurable in seconds; settings.py reads them):

- Inference, ``ERFNET_INFER_TIMEOUT_PER_IMAGE`` (default 1.2 s) x images x ``--loop``, never under
  ``ERFNET_INFER_TIMEOUT_FLOOR`` (default 120 s). Per image: the slowest NPU throughput the guide publishes
  (its section 7: the 310 at batch 16, 175.87 fps) is 5.7 ms of device time; ais_bench also reads the
  6.3 MB FP32 input file and writes 21.0 MB of FP16 logits per image, 0.273 s at an assumed 100 MB/s of
  host storage; 0.278 s expected, x 4 (the safety factor) = 1.11 s, rounded up to 1.2 s. Per image, not
  per batch: the guide's throughput varies little with the batch (175.9 to 220.2 fps on the 310), and the
  file I/O, which dominates, is per image. The floor covers ais_bench's start (acl init, loading the om)
  and a small set; the guide publishes no start-up time, so it is an allowance, not a measurement.
  The whole val set (500 images) gets 600 s.
- atc, ``ERFNET_ATC_TIMEOUT`` (default 900 s) per compile, and AOE, ``ERFNET_AOE_TIMEOUT`` (default
  7200 s) per job (a cell runs job 1, subgraph tuning, then job 2, operator tuning). The guide publishes
  no compile or tuning times: these are allowances (atc of a model of ErfNet's size is a matter of
  minutes; tuning, of hours). Each compiled cell records its compile's ``seconds``: set the variables
  to a few times the longest your lab sees.

- The profiled pass (a few images, ``ERFNET_PROFILE_IMAGES``, after the measured pass, on the same lease):
  ais_bench's inference deadline for those images, so in practice the floor.
- The diagnosis of a cell whose mIoU fails (msprobe, ``ERFNET_DIAGNOSE_IMAGES`` runs of one image each, on
  the device), ``ERFNET_DIAGNOSE_TIMEOUT_PER_IMAGE`` (default 300 s) per run. msprobe dumps every op of the
  om and every node of the ONNX golden: ErfNet has some 290 million intermediate values per image, 0.58 GB
  dumped in FP16, 1.16 GB once converted to float32 .npy, 1.16 GB of ONNX Runtime dumps, all read back to
  compare: about 5.2 GB of file traffic, 52 s at the assumed 100 MB/s, x 4 = 208 s; the om-to-JSON
  conversion, ais_bench's start and the comparison itself (our host comparison of the same tensors takes
  about 10 s per image on 2 cores) are allowed for by rounding up to 300 s. No published figure: an
  allowance.

The tasks' execution_timeout is fixed when the DAG is parsed, before a run's image count is known, so it
is computed for the most images a run measures (the Cityscapes val set, ``MAX_IMAGES``):

- measure: one other cell's time on the device (the device lease may be busy with it: its inference,
  profiled pass and diagnosis) + its own + the evaluation budget + ``TASK_MARGIN_S``; the evaluation budget
  is 0.5 s per image (our evaluation reads FP16 logits at 18.6 images/s on one worker, BENCHMARKS.md:
  0.054 s, about 9x) with a 60 s floor;
- compile (atc): the atc deadline + the margin; compile with AOE: two AOE jobs + the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from . import settings

MAX_IMAGES = 500  # the Cityscapes val set: the largest run the DAG measures (params.py)
SLOWEST_PUBLISHED_FPS = 175.8732  # the guide, section 7: Ascend310 at batch 16, the slowest NPU cell that ran
INPUT_BYTES_PER_IMAGE = 3 * 512 * 1024 * 4  # the preprocessed FP32 input ais_bench reads
OUTPUT_BYTES_PER_IMAGE = 20 * 512 * 1024 * 2  # the FP16 logits it writes (labels_on_device: a tenth)
HOST_IO_BYTES_PER_S = 100e6  # assumed: a modest local disk or network share
SAFETY_FACTOR = 4.0
EXPECTED_S_PER_IMAGE = (
    1 / SLOWEST_PUBLISHED_FPS + (INPUT_BYTES_PER_IMAGE + OUTPUT_BYTES_PER_IMAGE) / HOST_IO_BYTES_PER_S
)
INFER_PER_IMAGE_S = math.ceil(SAFETY_FACTOR * EXPECTED_S_PER_IMAGE * 10) / 10  # 1.2 s
INFER_FLOOR_S = 120.0
ATC_S = 900.0
AOE_JOB_S = 7200.0
AOE_JOBS = 2  # job_type 1 (subgraphs), then 2 (operators)
EVAL_PER_IMAGE_S = 0.5
DIAGNOSE_PER_IMAGE_S = 300.0
EVAL_FLOOR_S = 60.0
TASK_MARGIN_S = 300.0  # task start, the om's check, logging, XCom; and time for the tool's own kill
TaskKind = Literal["measure", "compile", "compile_aoe"]


@dataclass(frozen=True)
class Deadline:
    """A tool's deadline in seconds, with the numbers it came from (said when the tool is stopped)."""

    seconds: float
    basis: str
    images: int | None = None


def infer_deadline(images: int, loop: int = 1) -> Deadline:
    """ais_bench over ``images`` inputs, each run ``loop`` times: per image x work, never under the floor."""
    per_image = settings.infer_timeout_per_image(INFER_PER_IMAGE_S)
    floor = settings.infer_timeout_floor(INFER_FLOOR_S)
    work = images * max(loop, 1)
    seconds = max(floor, work * per_image)
    loops = f" x {loop} loops" if loop > 1 else ""
    return Deadline(seconds, f"{images} images{loops} x {per_image:g} s per image, floor {floor:g} s", images)


def atc_deadline() -> Deadline:
    seconds = settings.atc_timeout(ATC_S)
    return Deadline(seconds, f"ERFNET_ATC_TIMEOUT {seconds:g} s")


def aoe_deadline() -> Deadline:
    """One AOE job; a cell runs ``AOE_JOBS`` of them, each under its own deadline."""
    seconds = settings.aoe_timeout(AOE_JOB_S)
    return Deadline(seconds, f"ERFNET_AOE_TIMEOUT {seconds:g} s per AOE job")


def profile_deadline(images: int) -> Deadline:
    """The profiled pass: ais_bench over its few images, once (the floor, in practice)."""
    return infer_deadline(images)


def diagnosis_deadline() -> Deadline:
    """One image's layer-by-layer comparison on the device (one msprobe run)."""
    seconds = settings.diagnose_timeout_per_image(DIAGNOSE_PER_IMAGE_S)
    return Deadline(seconds, f"ERFNET_DIAGNOSE_TIMEOUT_PER_IMAGE {seconds:g} s for 1 image", 1)


def device_seconds(images: int) -> float:
    """The longest a cell holds its device: inference, profiled pass, and a diagnosis should its mIoU fail."""
    profile = profile_deadline(settings.profile_images()).seconds if settings.profile_images() else 0.0
    diagnosis = settings.diagnose_images() * diagnosis_deadline().seconds
    return infer_deadline(images).seconds + profile + diagnosis


def evaluation_budget(images: int) -> float:
    return max(EVAL_FLOOR_S, images * EVAL_PER_IMAGE_S)


def task_timeout_seconds(kind: TaskKind, images: int = MAX_IMAGES) -> float:
    """The Airflow ``execution_timeout`` of a task of ``kind``, in seconds (module docstring)."""
    if kind == "measure":
        held = device_seconds(images)
        return 2 * held + evaluation_budget(images) + TASK_MARGIN_S  # one wait for the lease, then its own
    if kind == "compile":
        return atc_deadline().seconds + TASK_MARGIN_S
    if kind == "compile_aoe":
        return AOE_JOBS * aoe_deadline().seconds + TASK_MARGIN_S
    raise ValueError(f"unknown task kind {kind!r}")


def execution_timeout(kind: TaskKind, images: int = MAX_IMAGES) -> timedelta:
    """``execution_timeout`` for the DAG's task of ``kind``: the tool deadline's backup."""
    return timedelta(seconds=math.ceil(task_timeout_seconds(kind, images)))


def longest_task_seconds() -> float:
    """The longest any NPU task may run: what the Celery broker's visibility timeout must exceed."""
    return max(task_timeout_seconds(kind) for kind in ("measure", "compile", "compile_aoe"))
