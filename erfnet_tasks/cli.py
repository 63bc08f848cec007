"""The ``erfnet`` command: one subcommand per script of the guide.

Handlers stay thin: parse, call the library, print. Every ErfnetError becomes one line on stderr and a
non-zero exit; nothing here ever builds a shell command.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import ErfnetError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- 3.1

def cmd_export(args) -> int:
    from .onnx_export import export_onnx

    report = export_onnx(args.weights, args.out, opset=args.opset)
    print(f"exported {report.path} (opset {report.opset}); ONNX Runtime vs PyTorch at batch "
          f"{', '.join(map(str, report.batch_sizes))}: max abs error {report.max_abs_error:.3g}, "
          f"max relative error {report.max_rel_error:.3g}")
    return 0


def cmd_fix_bn(args) -> int:
    from .onnx_export import fix_bn

    changed = fix_bn(args.src, args.out)
    print(f"wrote {args.out}: {changed} BatchNorm weight value(s) raised to 0.01")
    return 0


def cmd_random_weights(args) -> int:
    from .model import write_random_checkpoint

    path = write_random_checkpoint(args.out, seed=args.seed, with_num_batches_tracked=args.num_batches_tracked)
    print(f"wrote {path}: a RANDOMLY INITIALISED, UNTRAINED ERFNet checkpoint in the upstream layout "
          f"(for tests and the demo; its predictions are noise)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erfnet", description="ErfNet offline-inference regression pipeline (the guide's scripts as one command).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("export", help="ErfNet_pth2onnx.py: checkpoint -> ONNX, verified against PyTorch")
    p.add_argument("weights", metavar="WEIGHTS.pth")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--opset", type=_positive_int, default=11, help="ONNX opset (default 11, as the guide)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("fix-bn", help="modify_bn_weights.py: BatchNorm scales with |v| <= 0.01 become 0.01")
    p.add_argument("src", metavar="IN.onnx")
    p.add_argument("out", metavar="OUT.onnx")
    p.set_defaults(handler=cmd_fix_bn)

    p = sub.add_parser("random-weights",
                       help="write a RANDOMLY INITIALISED, UNTRAINED checkpoint in the upstream layout (tests, demo)")
    p.add_argument("out", metavar="OUT.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-batches-tracked", action="store_true",
                   help="include BatchNorm's num_batches_tracked keys (the 2017 upstream file has none)")
    p.set_defaults(handler=cmd_random_weights)

    # Each later step adds its subcommands below, in the guide's order.
    # <section: preprocess, evaluate, sample-data (issue 3)>
    # <section: compile, infer, environment (issue 4)>
    # <section: results (issue 5)>
    # <section: demo (issue 6)>
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ErfnetError as exc:
        print(f"erfnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("erfnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
