"""``erfnet diagnose``: the first diverging layer of a compiled model against its FP32 ONNX golden."""

from __future__ import annotations

import argparse
import tempfile

from ..argtypes import positive_int
from ..errors import BadInput
from .report import Layer, format_table, to_json

BACKENDS = ("onnxruntime", "torch", "ais_bench")
DEFAULT_IMAGES = 2
# PyTorch module outputs do not map one-to-one onto the exported nodes, so no table is better than a guess.
TORCH_UNSUPPORTED = (
    "--backend torch: no faithful per-layer mapping: ERFNet's ReLU, Add and Concat are functional "
    "(no module to hook) and the exporter folds BatchNorm into Conv; export the checkpoint "
    "(erfnet export) and diagnose it with --backend onnxruntime"
)


def diagnose(golden: str, model: str, backend: str, prep_dir: str, images: int = DEFAULT_IMAGES) -> list[Layer]:
    if backend == "onnxruntime":
        from .onnx_layers import compare_models  # onnx/onnxruntime load only for this backend

        return compare_models(golden, model, prep_dir, images)
    if backend == "ais_bench":
        from .msprobe import compare_om

        with tempfile.TemporaryDirectory(prefix="erfnet-msprobe-") as work:
            return compare_om(golden, model, prep_dir, images, work)
    if backend == "torch":
        raise BadInput(TORCH_UNSUPPORTED)
    raise BadInput(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")


def cmd_diagnose(args: argparse.Namespace) -> int:
    layers = diagnose(args.golden, args.model, args.backend, args.input, args.images)
    print(to_json(layers) if args.json else format_table(layers))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diagnose",
        help="compare every layer of a compiled model with its FP32 ONNX golden on "
        "ONNX Runtime and name the first diverging layer (msprobe's metrics)",
    )
    p.add_argument("--golden", required=True, metavar="GOLDEN.onnx", help="the FP32 ONNX model")
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="the compiled model: .onnx (onnxruntime), .om (ais_bench, through msprobe)",
    )
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--input", required=True, metavar="PREP_DIR", help="preprocessed .bin/.npy inputs")
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
