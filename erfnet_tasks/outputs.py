"""The ais_bench output layout, read and written, so that one evaluator serves every backend.

Layout (docs/reference/ascend-interfaces.md): ``OUTPUT/<%Y_%m_%d-%H_%M_%S>/<input stem>_<i>.bin`` and the summary JSON,
since Nov 2022 as the sibling ``OUTPUT/<timestamp>_summary.json``, in 2022's ais_infer as
``OUTPUT/<timestamp>/sumary.json`` (sic). Both are read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadInput
from .fsutil import read_json, write_json_atomic

TIMESTAMP_FORMAT = "%Y_%m_%d-%H_%M_%S"
NEW_SUMMARY_SUFFIX = "_summary.json"
OLD_SUMMARY_NAME = "sumary.json"
STAT_KEYS = ("min", "max", "mean", "median", "percentile(99%)", "count")


@dataclass(frozen=True)
class SummaryEntry:
    infile: Path
    outfiles: tuple[Path, ...]


def output_file_name(infile: str | os.PathLike[str], index: int = 0) -> str:
    """ais_bench drops everything after the first '.' of the input name, then appends ``_<i>.bin``."""
    return f"{Path(infile).name.split('.')[0]}_{index}.bin"


def make_output_folder(output_root: str | os.PathLike[str]) -> Path:
    """Create ``OUTPUT/<timestamp>``; never reuse a timestamp folder."""
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        folder = root / time.strftime(TIMESTAMP_FORMAT)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            time.sleep(0.2)  # two runs in one second: wait for the next timestamp rather than mix outputs


def latency_stats(values_ms: Iterable[float]) -> dict[str, Any]:
    """ais_bench's statistics block (numpy), all 0.0 for an empty list."""
    values = np.asarray(list(values_ms), dtype=np.float64)
    if values.size == 0:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    return {
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "percentile(99%)": float(np.percentile(values, 99)),
        "count": int(values.size),
    }


def build_summary(
    filesinfo: list[SummaryEntry],
    *,
    compute_ms: Iterable[float],
    h2d_ms: Iterable[float],
    d2h_ms: Iterable[float],
    batch_size: int,
    args: list[str],
) -> dict[str, Any]:
    compute = latency_stats(compute_ms)
    return {
        "filesinfo": {
            str(i): {"infiles": [str(e.infile)], "outfiles": [str(p) for p in e.outfiles]}
            for i, e in enumerate(filesinfo)
        },
        "args": list(args),
        "NPU_compute_time": compute,
        "H2D_latency": latency_stats(h2d_ms),
        "D2H_latency": latency_stats(d2h_ms),
        "throughput": (1000.0 * batch_size / compute["mean"]) if compute["mean"] else 0.0,
        "npu_compute_time_list": [float(v) for v in compute_ms],
        "pid": os.getpid(),
    }


def summary_path_for(folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    return folder.parent / f"{folder.name}{NEW_SUMMARY_SUFFIX}"


def write_summary(folder: str | os.PathLike[str], summary: dict[str, Any]) -> Path:
    path = summary_path_for(folder)
    write_json_atomic(path, summary)
    return path


def load_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    data = read_json(path, "a summary JSON", missing=f"summary not found: {path}")
    if not isinstance(data, dict) or not isinstance(data.get("filesinfo"), dict):
        raise BadInput(f"{path} has no 'filesinfo': not an ais_bench summary")
    return data


def output_folder_of(summary_path: str | os.PathLike[str]) -> Path:
    """The folder holding the outputs a summary describes, for either era's layout."""
    path = Path(summary_path)
    if path.name.endswith(NEW_SUMMARY_SUFFIX):
        return path.with_name(path.name[: -len(NEW_SUMMARY_SUFFIX)])
    return path.parent


def _resolve(recorded: str, summary_path: Path, folder: Path) -> Path:
    """Summaries record paths relative to the cwd of the run; find the file from wherever we are."""
    candidate = Path(recorded)
    if candidate.exists():
        return candidate
    beside = folder / candidate.name
    if beside.exists():
        return beside
    for base in (summary_path.parent, summary_path.parent.parent):
        if (base / candidate).exists():
            return base / candidate
    return candidate


def read_summary(path: str | os.PathLike[str]) -> list[SummaryEntry]:
    """The summary's files, in the order of their keys, with output paths resolved."""
    path = Path(path)
    data = load_summary(path)
    folder = output_folder_of(path)
    entries = []
    for key in sorted(data["filesinfo"], key=lambda k: int(k) if str(k).isdigit() else str(k)):
        info = data["filesinfo"][key]
        try:
            infiles, outfiles = info["infiles"], info["outfiles"]
        except (KeyError, TypeError) as exc:
            raise BadInput(f"{path}: filesinfo entry {key!r} lacks infiles/outfiles") from exc
        if not infiles or not outfiles:
            raise BadInput(f"{path}: filesinfo entry {key!r} has no files")
        entries.append(SummaryEntry(Path(infiles[0]), tuple(_resolve(o, path, folder) for o in outfiles)))
    return entries


def find_latest_summary(output_root: str | os.PathLike[str]) -> Path:
    """The newest summary under an ais_bench output folder, new or old layout."""
    root = Path(output_root)
    found = sorted(root.glob(f"*{NEW_SUMMARY_SUFFIX}")) + sorted(root.glob(f"*/{OLD_SUMMARY_NAME}"))
    if not found:
        raise BadInput(f"no ais_bench summary under {root}")
    return max(found, key=lambda p: p.stat().st_mtime)
