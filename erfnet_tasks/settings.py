"""Every ``ERFNET_*`` environment variable is read here and nowhere else, once per call.

- ERFNET_DATA_DIR: the project's data directory (work folders, compile cache, SQLite results).
  Default: ``data/`` in the source checkout, else in the current directory (an installed wheel).
- ERFNET_DATA_ROOTS: folders (os.pathsep-separated) under which user-supplied paths (weights, dataset
  root) must resolve. Default: the data directory.
- ERFNET_WEIGHTS, ERFNET_DATASET_ROOT, ERFNET_TARGETS (comma-separated), ERFNET_BATCH_SIZES
  (comma-separated), ERFNET_REFERENCE_MIOU: the trigger form's defaults, which scheduled runs use too
  (``make airflow`` points them at the demo's synthetic data and random weights).
- ERFNET_RESULTS_DB_URL: the results database (else Airflow's connection, else SQLite; results/db.py).
- ERFNET_NPU_QUEUE: the prefix of the NPU workers' Celery queues, one per chip: ``<prefix>-<chip>``
  (default ``npu``, so ``npu-Ascend310P3``).
- ERFNET_NPU_CHIPS (comma-separated): the chips the DAG has NPU tasks for, read when the DAG is parsed
  (a task's queue is fixed then). Default: the guide's ``Ascend310,Ascend310P3``.
- ERFNET_WORKER_HOSTNAME: the name a worker records for the cells it runs (default: the host name;
  deploy/local_cluster.py names each simulated host with it).
- ERFNET_DEVICE_LOCK_DIR: the host-local folder of the NPU device lease files (default
  ``<tmp>/erfnet-npu-devices``); every worker process of one host must see the same folder.
- ERFNET_ORT_THREADS: ONNX Runtime's intra-op threads (0, the default: one per physical core).
- ERFNET_AIS_BENCH_PYTHON: the interpreter that runs ``-m ais_bench`` (default: this one).
- ERFNET_NOTIFY: Airflow connection ids (comma-separated) that receive notifications; empty: none.
- ERFNET_NOTIFY_SUMMARY: off (default), nightly or all: which runs that pass the gate get a summary.
- ERFNET_CANN_PROBE_MINUTES: how often the CANN version probe runs (default 5).
- ERFNET_PRUNE_OLDER_THAN: the maintenance DAG's retention age (default 30d; `erfnet runs prune`).
- ERFNET_INFER_TIMEOUT_PER_IMAGE, ERFNET_INFER_TIMEOUT_FLOOR, ERFNET_ATC_TIMEOUT, ERFNET_AOE_TIMEOUT: the
  deadlines of the device tools, in seconds (defaults and the figures behind them: deadlines.py).
- ERFNET_PROFILE_IMAGES: the images of each cell's profiled pass, after its measured one (default 4; 0
  turns the op profiles off). ERFNET_DIAGNOSE_IMAGES: the images a cell whose mIoU fails is compared on,
  layer by layer, with its golden (default 2; 0 turns the diagnosis off); ERFNET_DIAGNOSE_TIMEOUT_PER_IMAGE
  its deadline per image, in seconds (deadlines.py).
- ERFNET_RETRY_DELAY: seconds between a failed task's tries (default 120: a host lost mid-run gets that
  long to come back before its cell's retry is queued; lab_airflow.py's bound counts it). Read when the
  DAG is parsed.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .chips import GUIDE_CHIPS, is_chip
from .errors import BadInput


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    data_roots: tuple[Path, ...]

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def compile_cache(self) -> Path:
        return self.data_dir / "cache" / "compiled"

    @property
    def export_cache(self) -> Path:
        return self.data_dir / "cache" / "onnx"

    @property
    def prep_cache(self) -> Path:
        return self.data_dir / "cache" / "prep"


_REPO = Path(__file__).resolve().parent.parent
RESULTS_DB_URL = "ERFNET_RESULTS_DB_URL"


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def default_weights() -> str:
    return _env("ERFNET_WEIGHTS") or str(data_dir() / "models" / "erfnet_pretrained.pth")


def default_dataset_root() -> str:
    return _env("ERFNET_DATASET_ROOT") or str(data_dir() / "cityscapes")


def default_targets() -> list[str]:
    return [t.strip() for t in (_env("ERFNET_TARGETS") or "auto").split(",") if t.strip()]


def default_batch_sizes(fallback: list[int]) -> list[int]:
    text = _env("ERFNET_BATCH_SIZES")
    if not text:
        return list(fallback)
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words or not all(w.isdigit() for w in words):
        raise BadInput(f"ERFNET_BATCH_SIZES must be comma-separated positive integers, got {text!r}")
    return [int(w) for w in words]


def default_reference_miou(fallback: float) -> float:
    text = _env("ERFNET_REFERENCE_MIOU")
    if not text:
        return fallback
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 100:  # NaN fails this too
        raise BadInput(f"ERFNET_REFERENCE_MIOU must be a number of mIoU points from 0 to 100, got {text!r}")
    return value


def results_db_url() -> str | None:
    return _env(RESULTS_DB_URL) or None


def npu_queue() -> str:
    return _env("ERFNET_NPU_QUEUE") or "npu"


DEFAULT_NPU_CHIPS = GUIDE_CHIPS


def npu_chips() -> list[str]:
    text = _env("ERFNET_NPU_CHIPS")
    chips = [c.strip() for c in text.split(",") if c.strip()] if text else list(DEFAULT_NPU_CHIPS)
    bad = [c for c in chips if not is_chip(c)]
    if bad:
        raise BadInput(f"ERFNET_NPU_CHIPS must list chips such as Ascend310P3, got {bad[0]!r}")
    return list(dict.fromkeys(chips))


def host_name() -> str:
    return _env("ERFNET_WORKER_HOSTNAME") or socket.gethostname()


def device_lock_dir() -> Path:
    explicit = _env("ERFNET_DEVICE_LOCK_DIR")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "erfnet-npu-devices"


def ort_threads() -> int:
    text = _env("ERFNET_ORT_THREADS") or "0"
    if not text.isdigit():
        raise BadInput(f"ERFNET_ORT_THREADS must be a non-negative integer, got {text!r}")
    return int(text)


def prune_older_than() -> str:
    return _env("ERFNET_PRUNE_OLDER_THAN") or "30d"


def ais_bench_python() -> str | None:
    return _env("ERFNET_AIS_BENCH_PYTHON") or None


def data_dir() -> Path:
    explicit = _env("ERFNET_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    if (_REPO / "pyproject.toml").is_file():
        return _REPO / "data"
    return (Path.cwd() / "data").resolve()


def repo_dir() -> Path | None:
    """The source checkout this package runs from (it holds dags/ and plugins/), if any."""
    return _REPO if (_REPO / "dags").is_dir() else None


def load_settings() -> Settings:
    base = data_dir()
    roots_env = os.environ.get("ERFNET_DATA_ROOTS", "")  # not stripped: a root may end in a space
    roots = tuple(Path(r).resolve() for r in roots_env.split(os.pathsep) if r.strip()) or (base,)
    return Settings(data_dir=base, data_roots=roots)


def inside_roots(resolved: Path, roots: tuple[Path, ...]) -> bool:
    """Whether a resolved path is one of ``roots`` or lies under one."""
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def refuse_outside_roots(subject: str, resolved: Path, roots: tuple[Path, ...]) -> None:
    """The data-roots check: ``subject`` (what the user gave, as the message names it) must resolve inside."""
    if not inside_roots(resolved, roots):
        raise BadInput(
            f"{subject} resolves to {resolved}, outside the data roots ({', '.join(map(str, roots))}); "
            f"set ERFNET_DATA_ROOTS to allow it"
        )


def resolve_under_roots(raw: object, roots: tuple[Path, ...], what: str) -> Path:
    """Resolve a user-supplied path (symlinks too) and insist it lies under one of the data roots."""
    if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
        raise BadInput(f"{what}: expected a path, got {raw!r}")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    resolved = path.resolve()
    refuse_outside_roots(f"{what} {raw!r}", resolved, roots)
    if not resolved.exists():
        raise BadInput(f"{what} not found: {resolved}")
    return resolved


# ------------------------------------------------------------------------------- notifications

_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
SUMMARY_MODES = ("off", "nightly", "all")


def notify_connections() -> list[str]:
    """ERFNET_NOTIFY: the Airflow connection ids that receive notifications (comma-separated; empty: none)."""
    raw = os.environ.get("ERFNET_NOTIFY", "")
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [conn_id for conn_id in ids if not _CONN_ID.fullmatch(conn_id)]
    if bad:
        raise BadInput(f"ERFNET_NOTIFY: not a connection id: {bad[0]!r} (letters, digits, _ . - only)")
    return list(dict.fromkeys(ids))


def notify_summary() -> str:
    """ERFNET_NOTIFY_SUMMARY: off (default), nightly (scheduled and upgrade-triggered runs) or all."""
    mode = os.environ.get("ERFNET_NOTIFY_SUMMARY", "").strip().lower() or "off"
    if mode not in SUMMARY_MODES:
        raise BadInput(f"ERFNET_NOTIFY_SUMMARY must be one of {', '.join(SUMMARY_MODES)}, got {mode!r}")
    return mode


def cann_probe_minutes() -> int:
    """ERFNET_CANN_PROBE_MINUTES: how often each NPU host's CANN version is checked (default 5)."""
    raw = os.environ.get("ERFNET_CANN_PROBE_MINUTES", "").strip() or "5"
    if not raw.isdigit() or not 1 <= int(raw) <= 1440:
        raise BadInput(f"ERFNET_CANN_PROBE_MINUTES must be a whole number of minutes from 1 to 1440, got {raw!r}")
    return int(raw)


def _count(name: str, fallback: int) -> int:
    raw = _env(name)
    if not raw:
        return fallback
    if not raw.isdigit() or int(raw) > 1000:
        raise BadInput(f"{name} must be a whole number of images from 0 to 1000, got {raw!r}")
    return int(raw)


def profile_images() -> int:
    """ERFNET_PROFILE_IMAGES: the images of a cell's profiled pass (0: no profiled pass)."""
    return _count("ERFNET_PROFILE_IMAGES", 4)


def diagnose_images() -> int:
    """ERFNET_DIAGNOSE_IMAGES: the images a failing cell is diagnosed on (0: no diagnosis)."""
    return _count("ERFNET_DIAGNOSE_IMAGES", 2)


# ------------------------------------------------------------------------------- tool deadlines


def _positive_seconds(name: str, fallback: float) -> float:
    raw = _env(name)
    if not raw:
        return fallback
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # NaN fails this too
        raise BadInput(f"{name} must be a number of seconds greater than 0, got {raw!r}")
    return value


def infer_timeout_per_image(fallback: float) -> float:
    """ERFNET_INFER_TIMEOUT_PER_IMAGE: seconds of ais_bench's deadline per image (deadlines.py)."""
    return _positive_seconds("ERFNET_INFER_TIMEOUT_PER_IMAGE", fallback)


def infer_timeout_floor(fallback: float) -> float:
    """ERFNET_INFER_TIMEOUT_FLOOR: the shortest ais_bench deadline, whatever the image count."""
    return _positive_seconds("ERFNET_INFER_TIMEOUT_FLOOR", fallback)


def atc_timeout(fallback: float) -> float:
    """ERFNET_ATC_TIMEOUT: the deadline of one atc compile."""
    return _positive_seconds("ERFNET_ATC_TIMEOUT", fallback)


def aoe_timeout(fallback: float) -> float:
    """ERFNET_AOE_TIMEOUT: the deadline of one AOE job (subgraph or operator tuning)."""
    return _positive_seconds("ERFNET_AOE_TIMEOUT", fallback)


def diagnose_timeout_per_image(fallback: float) -> float:
    """ERFNET_DIAGNOSE_TIMEOUT_PER_IMAGE: the deadline of one image's layer-by-layer comparison (msprobe)."""
    return _positive_seconds("ERFNET_DIAGNOSE_TIMEOUT_PER_IMAGE", fallback)


def retry_delay(fallback: float) -> float:
    """ERFNET_RETRY_DELAY: seconds between a failed task's tries (the DAG's default_args)."""
    return _positive_seconds("ERFNET_RETRY_DELAY", fallback)


def device_wait_s() -> float:
    """ERFNET_DEVICE_WAIT_S: how long a DAG task waits in its own process for a busy device before it gives
    its slots back and is rescheduled (a measurement queued behind another waits it out; one behind an AOE
    tuning does not)."""
    return _positive_seconds("ERFNET_DEVICE_WAIT_S", 60.0)


# Below this, a rescheduled task can be due again before the scheduler has read the executor's report of
# the try that rescheduled it (seen 6 s late on a loaded scheduler): Airflow 3.3 then takes the report for
# a task killed externally and fails the try (scheduler_job_runner: "task-state-changed-externally").
MIN_DEVICE_RECHECK_S = 15.0


def device_recheck_s() -> float:
    """ERFNET_DEVICE_RECHECK_S: when a task that gave its slots back waiting for a device starts again."""
    value = _positive_seconds("ERFNET_DEVICE_RECHECK_S", 30.0)
    if value < MIN_DEVICE_RECHECK_S:
        raise BadInput(
            f"ERFNET_DEVICE_RECHECK_S must be at least {MIN_DEVICE_RECHECK_S:g} s (a shorter reschedule races "
            f"Airflow's own bookkeeping and costs the task a try), got {value:g}"
        )
    return value
