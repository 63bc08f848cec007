"""Every ``ERFNET_*`` environment variable is read here and nowhere else, once per call.

- ERFNET_DATA_DIR: the project's data directory (work folders, compile cache, SQLite results).
  Default: ``data/`` in the source checkout, else in the current directory (an installed wheel).
- ERFNET_DATA_ROOTS: folders (os.pathsep-separated) under which user-supplied paths (weights, dataset
  root) must resolve. Default: the data directory.
- ERFNET_WEIGHTS, ERFNET_DATASET_ROOT, ERFNET_TARGETS (comma-separated): the trigger form's defaults.
- ERFNET_RESULTS_DB_URL: the results database (else Airflow's connection, else SQLite; results/db.py).
- ERFNET_NPU_QUEUE: the Celery queue of the NPU workers (default ``npu``).
- ERFNET_ORT_THREADS: ONNX Runtime's intra-op threads (0, the default: one per physical core).
- ERFNET_AIS_BENCH_PYTHON: the interpreter that runs ``-m ais_bench`` (default: this one).
- ERFNET_PRUNE_OLDER_THAN: the maintenance DAG's retention age (default 30d; `erfnet runs prune`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ErfnetError


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


def results_db_url() -> str | None:
    return _env(RESULTS_DB_URL) or None


def npu_queue() -> str:
    return _env("ERFNET_NPU_QUEUE") or "npu"


def ort_threads() -> int:
    text = _env("ERFNET_ORT_THREADS") or "0"
    if not text.isdigit():
        raise ErfnetError(f"ERFNET_ORT_THREADS must be a non-negative integer, got {text!r}")
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


def resolve_under_roots(raw: str, roots: tuple[Path, ...], what: str) -> Path:
    """Resolve a user-supplied path (symlinks too) and insist it lies under one of the data roots."""
    if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
        raise ErfnetError(f"{what}: expected a path, got {raw!r}")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ErfnetError(f"{what} {raw!r} resolves to {resolved}, outside the data roots ({allowed}); "
                          f"set ERFNET_DATA_ROOTS to allow it")
    if not resolved.exists():
        raise ErfnetError(f"{what} not found: {resolved}")
    return resolved
