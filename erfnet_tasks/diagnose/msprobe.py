"""An Ascend .om against its ONNX golden through msprobe's offline-model compare (PyPI mindstudio-probe).

``msprobe compare -m offline_model -gp GOLDEN.onnx -tp TARGET.om -i IN.bin -o OUT_DIR`` writes
``OUT_DIR/<%Y%m%d%H%M%S>/result_<timestamp>.csv``; its columns are read by name (two are named
``DataType`` and two ``Address``: the first of a name is taken). ``-i`` names one file per model input,
so N images are N runs, merged row by row (worst value of each metric). Rows of op inputs (a
``TensorIndex`` holding ``:input``) are skipped: a layer is its output.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

from ..deadlines import Deadline
from ..errors import BadInput
from ..toolrun import run_bounded
from .inputs import first_inputs
from .metrics import METRIC_COLUMNS, Metrics, worst_of
from .report import Layer

MSPROBE_ENV = "ERFNET_MSPROBE"  # the msprobe program (default: msprobe on PATH)
REQUIRED_COLUMNS = ("OpType", "NPUDump", "GroundTruth", *METRIC_COLUMNS)
NO_COUNTERPART = "*"


def compare_command(
    golden: str | os.PathLike[str],
    target: str | os.PathLike[str],
    inputs: list[Path],
    out_dir: str | os.PathLike[str],
    *,
    fusion: bool = False,
    device: int | None = None,
) -> list[str]:
    """msprobe's command line; ``fusion`` False keeps every ONNX node's output (no ORT fusion)."""
    command = [
        os.environ.get(MSPROBE_ENV, "msprobe"),
        "compare",
        "-m",
        "offline_model",
        "-gp",
        str(golden),
        "-tp",
        str(target),
        "-i",
        ",".join(str(p) for p in inputs),
        "-o",
        str(out_dir),
        "--onnx_fusion_switch",
        str(fusion),
    ]
    if device is not None:
        command += ["--rank", str(device)]
    return command


def find_result_csv(out_dir: str | os.PathLike[str]) -> Path:
    """The newest ``result_*.csv`` under ``out_dir`` (msprobe puts it in a timestamped folder)."""
    found = sorted(Path(out_dir).rglob("result_*.csv"), key=lambda p: (p.parent.name, p.name))
    if not found:
        raise BadInput(f"msprobe wrote no result_*.csv under {out_dir}")
    return found[-1]


def _columns(header: list[str], path: Path) -> dict[str, int]:
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        index.setdefault(name.strip(), position)
    missing = [name for name in REQUIRED_COLUMNS if name not in index]
    if missing:
        raise BadInput(f"{path} is not an msprobe result: no column {', '.join(missing)}")
    return index


def _metric(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text.strip() or "NaN"


def read_result(path: str | os.PathLike[str]) -> list[Layer]:
    """One Layer per output row, in the file's (execution) order."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise BadInput(f"cannot read msprobe result {path}: {exc.strerror}") from exc
    if not rows:
        raise BadInput(f"{path} is empty: not an msprobe result")
    col = _columns(rows[0], path)
    layers = []
    for row in rows[1:]:
        cell = {name: row[i] if i < len(row) else "" for name, i in col.items()}
        if ":input" in cell.get("TensorIndex", ""):
            continue
        metrics: Metrics = {key: _metric(cell[column]) for column, key in METRIC_COLUMNS.items()}
        truth = cell["GroundTruth"].strip()
        onnx_nodes = [] if truth in ("", NO_COUNTERPART) else [n.strip() for n in truth.split(",") if n.strip()]
        note = cell.get("CompareFailReason", "").strip() or None
        layers.append(Layer(cell["NPUDump"], cell["OpType"], onnx_nodes, metrics, _tensor_index(cell), note))
    return layers


def _tensor_index(cell: dict[str, str]) -> int:
    tail = cell.get("TensorIndex", "").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def run_msprobe(command: list[str], deadline: Deadline | None = None) -> None:
    """msprobe to its end, or, given a ``deadline`` (a pipeline cell holding its device), stopped there
    with its whole process group (``toolrun.run_bounded``: ToolTimedOut)."""
    if shutil.which(command[0]) is None:
        raise BadInput(
            f"{command[0]} not found: install mindstudio-probe on the Ascend host (pip install "
            f"mindstudio-probe) or set {MSPROBE_ENV}"
        )
    if deadline is not None:
        done = run_bounded(command, deadline, tool="msprobe")
    else:
        done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise BadInput(f"msprobe compare failed (exit {done.returncode}): {tail[-1] if tail else 'no output'}")


def compare_om(
    golden: str | os.PathLike[str],
    target: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
    images: int,
    work_dir: str | os.PathLike[str],
    *,
    device: int | None = None,
    deadline: Deadline | None = None,
) -> list[Layer]:
    """msprobe once per image (on ``device``, each run under ``deadline``), then each layer's worst metrics
    over the images."""
    for path, role in ((golden, "golden"), (target, "model")):
        if not Path(path).is_file():
            raise BadInput(f"{role} model not found: {path}")
    runs = []
    for k, sample in enumerate(first_inputs(prep_dir, images)):
        out_dir = Path(work_dir) / f"image_{k}"
        out_dir.mkdir(parents=True, exist_ok=True)
        run_msprobe(compare_command(golden, target, [sample], out_dir, device=device), deadline)
        runs.append(read_result(find_result_csv(out_dir)))
    return merge_runs(runs)


def merge_runs(runs: list[list[Layer]]) -> list[Layer]:
    """Rows matched by (op, tensor index) in the first run's order."""
    if len(runs) == 1:
        return runs[0]
    by_key = [{(layer.node, layer.tensor_index): layer for layer in run} for run in runs]
    merged = []
    for layer in runs[0]:
        same = [rows[(layer.node, layer.tensor_index)] for rows in by_key if (layer.node, layer.tensor_index) in rows]
        notes = sorted({s.note for s in same if s.note})
        merged.append(
            Layer(
                layer.node,
                layer.op_type,
                layer.onnx_nodes,
                worst_of([s.metrics for s in same]),
                layer.tensor_index,
                "; ".join(notes) or None,
            )
        )
    return merged
