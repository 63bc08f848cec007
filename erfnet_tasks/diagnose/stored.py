"""What ``erfnet diagnose --run RUN --target T --batch-size B`` compares: a stored cell's own artifacts.

- the compiled model: the cell's ``compiled_models`` row (path, backend), checked against its sha256
  (for a PyTorch cell, the checkpoint it ran);
- the golden: the run's fixed FP32 model, the ``ErfNet*.onnx`` that ``build.fix_bn_step`` writes beside
  its export in the export cache, found by the run's ``model_sha256``;
- the inputs: the preprocessing-cache folder whose manifest's fingerprint is the run's dataset fingerprint.

Found by content, never by a path rebuilt from the run's parameters: a cache entry rebuilt since holds
other bytes. Anything gone (pruned, rebuilt, moved) is one line naming what and where.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import ALIASES, get_backend
from ..errors import BadInput, ErfnetError
from ..fsutil import read_json, sha256_file
from ..settings import load_settings

GOLDEN_PATTERN = "ErfNet*.onnx"
MANIFEST_NAME = "manifest.json"  # datasets.cityscapes.MANIFEST_NAME: every preprocessing entry holds one
CELLS_NAMED = 6  # how many of the run's cells an unknown-cell error lists


@dataclass(frozen=True)
class StoredCell:
    run_id: str
    target: str
    batch_size: int
    backend: str  # as the registry names it (onnxruntime, torch, ascend)
    model: Path
    golden: Path
    prep_dir: Path
    device: str | None  # the device a host backend measured on (torch-cuda: cuda), None: the default


def locate_cell(run_ref: str, target: str, batch_size: int, url: str | None = None) -> StoredCell:
    """The cell's compiled model, its run's golden and preprocessed inputs, each checked to still be there."""
    from ..results import db, queries

    db.require_schema(url)
    with db.session_scope(url) as session:
        doc = queries.run_document(session, run_ref)
    run = doc["run"]
    row = _compiled_row(doc["compiled"], run["id"], target, batch_size)
    if not row["backend"]:
        raise BadInput(f"run {run['id']}'s cell {target} batch {batch_size} records no backend")
    backend = ALIASES.get(row["backend"], row["backend"])
    return StoredCell(
        run_id=run["id"],
        target=target,
        batch_size=batch_size,
        backend=backend,
        model=compiled_model(row, run["id"]),
        golden=find_golden(run["model_sha256"], run["id"]),
        prep_dir=find_inputs(run["dataset_fingerprint"], run["id"]),
        device=get_backend(backend).TARGETS.get(target),
    )


def _compiled_row(rows: list[dict[str, Any]], run_id: str, target: str, batch_size: int) -> dict[str, Any]:
    for row in rows:
        if row["target"] == target and row["batch_size"] == batch_size:
            return row
    cells = ", ".join(f"{r['target']} batch {r['batch_size']}" for r in rows[:CELLS_NAMED]) or "none"
    more = f" and {len(rows) - CELLS_NAMED} more" if len(rows) > CELLS_NAMED else ""
    raise BadInput(f"run {run_id} has no cell {target} at batch {batch_size} (its cells: {cells}{more})")


def compiled_model(row: dict[str, Any], run_id: str) -> Path:
    """The file the cell ran, if it is still the one the run recorded."""
    cell = f"run {run_id}'s cell {row['target']} batch {row['batch_size']}"
    if row["status"] == "failed" or not row["path"]:
        raise BadInput(f"{cell} has no compiled model (compile {row['status']}: {row['error'] or 'no path'})")
    path = Path(row["path"])
    if not path.is_file():
        raise BadInput(f"{cell}: its compiled model {path} is gone (pruned or moved)")
    if row["sha256"] and sha256_file(path) != row["sha256"]:
        raise BadInput(f"{cell}: {path} is no longer the model it ran (sha256 differs from the run's record)")
    return path


def find_golden(model_sha256: str | None, run_id: str) -> Path:
    """The run's fixed model in the export cache, by its sha256."""
    if not model_sha256:
        raise BadInput(f"run {run_id} records no model sha256: its golden ONNX cannot be identified")
    cache = load_settings().export_cache
    for candidate in _files(cache, f"*/{GOLDEN_PATTERN}"):
        if sha256_file(candidate) == model_sha256:
            return candidate
    raise BadInput(f"run {run_id}'s golden ONNX (sha256 {model_sha256[:12]}...) is gone from the export cache {cache}")


def find_inputs(fingerprint: str | None, run_id: str) -> Path:
    """The preprocessing-cache folder whose manifest has the run's dataset fingerprint."""
    if not fingerprint:
        raise BadInput(f"run {run_id} records no dataset fingerprint: its inputs cannot be identified")
    cache = load_settings().prep_cache
    for manifest in _files(cache, f"*/*/{MANIFEST_NAME}"):
        try:
            data = read_json(manifest, "a preprocessing manifest")
        except ErfnetError:  # a half-written or foreign file is not the run's entry
            continue
        if isinstance(data, dict) and data.get("fingerprint") == fingerprint:
            return manifest.parent
    raise BadInput(
        f"run {run_id}'s preprocessed inputs (dataset fingerprint {fingerprint[:16]}) are gone from "
        f"the preprocessing cache {cache}"
    )


def _files(root: Path, pattern: str) -> Iterator[Path]:
    return (p for p in sorted(root.glob(pattern)) if p.is_file()) if root.is_dir() else iter(())
