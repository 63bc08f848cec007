"""``erfnet diagnose``: the first diverging layer of a compiled model against its FP32 ONNX golden.

Either the files themselves (``--golden --model --backend --input``) or a stored cell (``--run --target
--batch-size``), whose compiled model, golden and inputs ``stored.locate_cell`` finds.
"""

from __future__ import annotations

import argparse
import tempfile

from ..argtypes import positive_int
from ..backends import ALIASES
from ..errors import BadInput
from .report import Layer, format_table, to_json

BACKENDS = ("onnxruntime", "torch", "ais_bench")
DEFAULT_IMAGES = 2
FILES_FORM = ("golden", "model", "backend", "input")
CELL_FORM = ("run", "target", "batch_size")
EITHER_FORM = "give either --golden, --model, --backend and --input, or --run, --target and --batch-size"


def diagnose(
    golden: str, model: str, backend: str, prep_dir: str, images: int = DEFAULT_IMAGES, device: str | None = None
) -> list[Layer]:
    """``device``: where the torch backend runs the checkpoint (cpu, cuda[:N]); the others compare on the CPU."""
    kind = ALIASES.get(backend, backend)  # ais_bench is the registry's ascend
    if device is not None and kind != "torch":
        raise BadInput(f"--device applies to --backend torch only, not {backend}")
    if kind == "onnxruntime":
        from .onnx_layers import compare_models  # onnx/onnxruntime load only for this backend

        return compare_models(golden, model, prep_dir, images)
    if kind == "torch":
        from .torch_layers import compare_checkpoint  # torch loads only for this backend

        return compare_checkpoint(golden, model, prep_dir, images, device)
    if kind == "ascend":
        from .msprobe import compare_om

        with tempfile.TemporaryDirectory(prefix="erfnet-msprobe-") as work:
            return compare_om(golden, model, prep_dir, images, work)
    raise BadInput(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")


def diagnose_cell(
    run: str, target: str, batch_size: int, images: int = DEFAULT_IMAGES, url: str | None = None
) -> list[Layer]:
    from .stored import locate_cell

    cell = locate_cell(run, target, batch_size, url)
    device = cell.device if cell.backend == "torch" else None
    return diagnose(str(cell.golden), str(cell.model), cell.backend, str(cell.prep_dir), images, device)


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if getattr(args, name) is not None]


def cmd_diagnose(args: argparse.Namespace) -> int:
    files, cell = _given(args, FILES_FORM), _given(args, CELL_FORM)
    if len(cell) == len(CELL_FORM) and not files:
        if args.device is not None:
            raise BadInput("--device goes with --golden/--model: a stored cell is diagnosed on its own device")
        layers = diagnose_cell(args.run, args.target, args.batch_size, args.images, _url(args.db))
    elif len(files) == len(FILES_FORM) and not cell:
        if args.db is not None:
            raise BadInput("--db goes with --run: --golden/--model diagnose files, not a stored cell")
        layers = diagnose(args.golden, args.model, args.backend, args.input, args.images, args.device)
    else:
        raise BadInput(EITHER_FORM)
    print(to_json(layers) if args.json else format_table(layers))
    return 0


def _url(db_url: str | None) -> str:
    from ..results import db

    return db.normalize_url(db_url) if db_url else db.resolve_url()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diagnose",
        help="compare every layer of a compiled model (or a stored cell's) with its FP32 ONNX golden on "
        "ONNX Runtime and name the first diverging layer (msprobe's metrics)",
    )
    p.add_argument("--golden", metavar="GOLDEN.onnx", help="the FP32 ONNX model")
    p.add_argument(
        "--model",
        metavar="MODEL",
        help="the compiled model: .onnx (onnxruntime), .pth checkpoint (torch), .om (ais_bench, through msprobe)",
    )
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--input", metavar="PREP_DIR", help="preprocessed .bin/.npy inputs")
    p.add_argument("--device", metavar="DEVICE", help="--backend torch: cpu (default), cuda or cuda:N")
    p.add_argument("--run", metavar="RUN|latest", help="diagnose this stored run's cell (with --target, --batch-size)")
    p.add_argument("--target", metavar="T", help="the cell's target (cpu, torch-cpu, Ascend310P3...)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="the cell's batch size")
    p.add_argument("--db", metavar="URL", help="results database for --run (default: as `erfnet results`)")
    p.add_argument(
        "--images",
        type=positive_int,
        default=DEFAULT_IMAGES,
        help=f"compare on the first N inputs (default {DEFAULT_IMAGES})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"first_diverging": {...} or null, "layers": [...]} instead of the table',
    )
    p.set_defaults(handler=cmd_diagnose)
