"""Where the pipeline keeps its files, read from the environment once per call.

- ERFNET_DATA_DIR: the project's data directory (work folders, compile cache, SQLite results).
  Default: ``data/`` in the source checkout, else in the current directory (an installed wheel).
- ERFNET_DATA_ROOTS: folders (os.pathsep-separated) under which user-supplied paths (weights, dataset
  root) must resolve. Default: the data directory.
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


def data_dir() -> Path:
    explicit = os.environ.get("ERFNET_DATA_DIR", "").strip()
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
    roots_env = os.environ.get("ERFNET_DATA_ROOTS", "")
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
