"""TEST DOUBLE. How long the stand-in atc, AOE and device take, and the timeline of every tool run.

Off by default: the stand-ins then take only the time their own work takes (ONNX Runtime on the CPU).
``STANDIN_TIME_SCALE=S`` (S > 0) switches the timing on: each tool run then lasts at least its modeled
time below times S, so ``1`` is a lab's night and ``0.01`` a test's minute. Whatever the scale, the
compute time ais_bench reports (and so the throughput) is the modeled device's, unscaled: the guide's.

The figures at scale 1 (each a variable, in seconds):

- ``STANDIN_ATC_SECONDS`` (60): one atc compile on the host CPU. No published figure: the guide gives
  none, and docs/deployment.md's deadline (900 s) calls it "a matter of minutes" for a model of ErfNet's
  size (2.1 M parameters at 512x1024); issue 26's cold night saw the plain cells "compiled in two minutes"
  including the task around it. atc holds no device.
- ``STANDIN_AOE_JOB1_SECONDS`` (1200) and ``STANDIN_AOE_JOB2_SECONDS`` (2400): AOE's subgraph and
  operator tuning, each holding its device. No published figure either: issue 26 says "tens of minutes to
  hours" per tuning; 20 + 40 minutes is an hour per cell, half the deadline of one job (7200 s).
- the device (ais_bench), holding it: ``STANDIN_NPU_LOAD_SECONDS`` (2: acl init and the om's load, an
  allowance: no published figure), then per batch of the om ``batch / fps`` from the guide's section 7
  (table below; a partial last batch is padded and costs a whole one, as on a device), plus per image
  ``STANDIN_NPU_IO_SECONDS_PER_IMAGE`` (0.273: the 6.3 MB FP32 input read and the 21.0 MB FP16 logits
  written at 100 MB/s, the same assumption as erfnet_tasks/deadlines.py's expected time per image).
  ``STANDIN_NPU_IMAGES=N`` times every measurement as if it read N images (the val set's 500, say)
  while computing only the inputs given; ``STANDIN_NPU_FPS`` replaces the table by one figure.

The guide's fps (section 7) by chip and batch: ``310`` 220.2016, 176.2568, 176.6912, 175.8732, 181.5056
at batch 1, 4, 8, 16, 32 (64: memory allocation failed); ``310P`` 292.137, 192.398, 210.707, 211.125,
215.234, 216.937 at 1, 4, 8, 16, 32, 64; ``310P-AOE`` (an om AOE tuned) 380.0822, 379.2337, 381.9549,
379.9660, 380.1598, 226.5988. A batch the guide did not measure takes the figure of the nearest measured
batch below it; an AOE om of a chip without an AOE column (the 310), its chip's plain figure; any other
chip (910B...), the 310P's.

Every tool run, timed or not, appends one line to ``timeline.jsonl`` in its host's state folder
($STANDIN_NPU_STATE, standin_device.py): ``{"tool": "atc"|"aoe"|"ais_bench", "host", "device" (None for
atc), "chip", "batch", "job_type" (aoe), "tuned" (ais_bench of an AOE om), "model", "start", "end",
"modeled_s" (the scaled modeled time it was held to), "ok", "pid", "task_pid"}``, written when the run
ends; ``task_pid`` is the tool's grandparent, the task that started it through erfnet_tasks/toolrun.py's
launcher: a benchmark finds the Airflow task instance of a run by it (the REST API gives each one's pid). A run
killed before that, or hung, leaves no line; a hang has its own record, standin_faults.py). A benchmark
reads each device's busy time and every cell's chain of steps from it (bench/lab_night.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from standin_device import _state_dir

TIMELINE = "timeline.jsonl"
ATC_S = 60.0
AOE_JOB_S = {1: 1200.0, 2: 2400.0}
NPU_LOAD_S = 2.0
IO_S_PER_IMAGE = (3 * 512 * 1024 * 4 + 20 * 512 * 1024 * 2) / 100e6  # 0.273 s
GUIDE_FPS = {
    "310": {1: 220.2016, 4: 176.2568, 8: 176.6912, 16: 175.8732, 32: 181.5056},
    "310P": {1: 292.137, 4: 192.398, 8: 210.707, 16: 211.125, 32: 215.234, 64: 216.937},
    "310P-AOE": {1: 380.0822, 4: 379.2337, 8: 381.9549, 16: 379.9660, 32: 380.1598, 64: 226.5988},
}


def scale() -> float:
    """$STANDIN_TIME_SCALE; 0 (the default): no modeled time."""
    return float(os.environ.get("STANDIN_TIME_SCALE") or 0)


def _figure(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def atc_seconds() -> float:
    return _figure("STANDIN_ATC_SECONDS", ATC_S)


def aoe_seconds(job_type: int) -> float:
    return _figure(f"STANDIN_AOE_JOB{job_type}_SECONDS", AOE_JOB_S[job_type])


def guide_column(chip: str | None, tuned: bool) -> str:
    """The guide's column whose fps a device of ``chip`` runs an om at (module docstring)."""
    if chip == "Ascend310":
        return "310"
    return "310P-AOE" if tuned else "310P"


def fps(chip: str | None, batch: int, tuned: bool) -> float:
    if os.environ.get("STANDIN_NPU_FPS"):
        return float(os.environ["STANDIN_NPU_FPS"])
    table = GUIDE_FPS[guide_column(chip, tuned)]
    measured = [b for b in sorted(table) if b <= batch] or [min(table)]
    return table[measured[-1]]


def batch_compute_ms(chip: str | None, batch: int, tuned: bool) -> float:
    """One batch's NPU compute time on the modeled device, in ms (unscaled: what ais_bench reports)."""
    return 1000.0 * batch / fps(chip, batch, tuned)


def device_seconds(
    chip: str | None, batch: int, tuned: bool, images: int, loop: int = 1, compute_factor: float = 1.0
) -> float:
    """An ais_bench run's modeled hold of its device, at scale 1: load, then every batch and its files
    (``compute_factor``: the stand-in CANN's slowed op type, standin_cann.py, on the compute alone)."""
    images = int(os.environ.get("STANDIN_NPU_IMAGES") or images)
    batches = max(1, -(-images // max(batch, 1)))
    compute = batches * max(loop, 1) * compute_factor * batch_compute_ms(chip, batch, tuned) / 1000.0
    io = images * _figure("STANDIN_NPU_IO_SECONDS_PER_IMAGE", IO_S_PER_IMAGE)
    return _figure("STANDIN_NPU_LOAD_SECONDS", NPU_LOAD_S) + compute + io


@dataclass
class ToolRun:
    """One run of a stand-in tool; ``pace`` holds it to its modeled time, the timeline line is written
    when the run's block ends."""

    entry: dict = field(default_factory=dict)
    modeled_s: float = 0.0

    def pace(self, seconds_at_scale_1: float, delayed_s: float = 0.0) -> None:
        """Last at least ``seconds_at_scale_1`` x the scale since the run started (nothing when off), plus
        ``delayed_s``, the delay switch's seconds already spent (standin_faults.py): a delay comes on top."""
        self.modeled_s = seconds_at_scale_1 * scale()
        remaining = self.entry["start"] + delayed_s + self.modeled_s - time.time()
        if remaining > 0:
            time.sleep(remaining)


@contextlib.contextmanager
def tool_run(tool: str, **facts: object) -> Iterator[ToolRun]:
    """Time one tool run (``facts``: device, chip, batch, job_type, tuned, model) into the timeline."""
    run = ToolRun(
        {
            "tool": tool,
            "host": os.environ.get("STANDIN_HOST") or os.environ.get("ERFNET_WORKER_HOSTNAME", ""),
            "device": None,
            **facts,
            "start": time.time(),
        }
    )
    ok = False
    try:
        yield run
        ok = True
    except SystemExit as exc:  # atc's and aoe's failures exit through sys.exit
        ok = exc.code in (None, 0)
        raise
    finally:
        end = time.time()
        append_timeline({**run.entry, "end": end, "modeled_s": run.modeled_s, "ok": ok, "pid": os.getpid(),
                         "task_pid": _parent_of(os.getppid())})  # fmt: skip


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            stat = fh.read()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])  # after the command name: state, then ppid


def append_timeline(entry: dict) -> None:
    with open(os.path.join(_state_dir(), TIMELINE), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def read_timeline(state_dir: str | os.PathLike[str]) -> list[dict]:
    """A host's timeline (empty when none of its tools ran)."""
    path = os.path.join(state_dir, TIMELINE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
