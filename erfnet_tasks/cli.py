"""The ``erfnet`` command: one subcommand per script of the guide.

Handlers stay thin: parse, call the library, print. Every ErfnetError becomes one line on stderr and a
non-zero exit; nothing here ever builds a shell command.
"""

from __future__ import annotations

import argparse
import json
import sys

from .argtypes import non_negative_int, positive_int, size
from .backends import backend_names
from .errors import ErfnetError, first_line

# ---------------------------------------------------------------------------------------------- 3.1


def cmd_export(args: argparse.Namespace) -> int:
    from .onnx_export import export_onnx

    report = export_onnx(args.weights, args.out, opset=args.opset, argmax=args.argmax)
    if report.argmax:
        print(
            f"exported {report.path} (opset {report.opset}, ends in ArgMax: int32 label maps); labels vs "
            f"PyTorch's argmax at batch {', '.join(map(str, report.batch_sizes))}: largest logit gap at a "
            f"differing pixel {report.max_abs_error:.3g} (near-ties only)"
        )
        return 0
    print(
        f"exported {report.path} (opset {report.opset}); ONNX Runtime vs PyTorch at batch "
        f"{', '.join(map(str, report.batch_sizes))}: max abs error {report.max_abs_error:.3g}, "
        f"max relative error {report.max_rel_error:.3g}"
    )
    return 0


def cmd_fix_bn(args: argparse.Namespace) -> int:
    from .onnx_export import fix_bn

    changed = fix_bn(args.src, args.out)
    print(f"wrote {args.out}: {changed} BatchNorm weight value(s) raised to 0.01")
    return 0


def cmd_random_weights(args: argparse.Namespace) -> int:
    from .model import write_random_checkpoint

    path = write_random_checkpoint(args.out, seed=args.seed, with_num_batches_tracked=args.num_batches_tracked)
    print(
        f"wrote {path}: a RANDOMLY INITIALISED, UNTRAINED ERFNet checkpoint in the upstream layout "
        f"(for tests and the demo; its predictions are noise)"
    )
    return 0


# ------------------------------------------------------------------------------------------ 4, 6.1


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .datasets.cityscapes import preprocess

    m = preprocess(
        args.img_dir,
        args.prep_dir,
        args.gt_dir,
        args.gt_out_dir,
        workers=args.workers,
        limit=args.limit,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
    )
    print(
        f"preprocessed {m['images']} image(s) into {args.prep_dir} ({m['written']} written, "
        f"{m['images'] - m['written']} already complete), labels in {args.gt_out_dir}; "
        f"fingerprint {m['fingerprint']}"
        + (f"; {len(m['bad'])} bad file(s) skipped, listed in the manifest" if m["bad"] else "")
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_summary, format_report

    result = evaluate_summary(
        args.summary, args.gt_dir, workers=args.workers, progress=not args.quiet, limit=args.limit
    )
    if args.json:
        print(json.dumps({"miou": result.miou, "per_class": result.per_class, "images": result.images}))
    else:
        print(format_report(result))
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from .datasets.synthetic import write_sample_data

    root = write_sample_data(args.out_dir, args.images, size=args.size, seed=args.seed)
    print(
        f"wrote {args.images} SYNTHETIC image(s) with labels in the Cityscapes layout under {root} "
        f"(leftImg8bit/val, gtFine/val; not real Cityscapes data)"
    )
    return 0


# ---------------------------------------------------------------------------------------- 3.2, 5, 7


def cmd_compile(args: argparse.Namespace) -> int:
    from .backends import get_backend

    result = get_backend(args.backend).compile(
        args.model, args.out_dir, chip=args.chip, batch_size=args.batch_size, aoe=args.aoe
    )
    print(result.path)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .backends import get_backend

    result = get_backend(args.backend).infer(
        args.model,
        args.input,
        args.output,
        batch_size=args.batchsize,
        device=args.device,
        loop=args.loop,
        warmup=args.warmup,
        output_type=args.output_type,
    )
    print(
        f"outputs in {result.output_dir}, summary {result.summary_path}; throughput "
        f"{result.throughput_fps:.4g} images/s, compute mean {result.compute_ms['mean']:.4g} ms"
    )
    return 0


def cmd_environment(args: argparse.Namespace) -> int:
    from .backends.environment import describe_environment, format_environment

    env = describe_environment()
    print(json.dumps(env, indent=2) if args.format == "json" else format_environment(env))
    return 0


def cmd_worker_queues(args: argparse.Namespace) -> int:
    from .fleet import worker_queues

    print(",".join(worker_queues()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    batch_sizes = [positive_int(b) for b in args.batch_sizes.split(",") if b.strip()]
    conf = run_demo(
        weights=args.weights,
        dataset_root=args.dataset_root,
        images=args.images,
        targets=[t.strip() for t in args.targets.split(",") if t.strip()],
        batch_sizes=batch_sizes,
        labels_on_device=args.labels_on_device,
        keep_outputs=args.keep_outputs,
    )
    print("\ndemo: the run's tables (erfnet results show --run latest --format table):\n")
    code = main(["results", "show", "--run", "latest", "--format", "table"])
    if conf["weights"].endswith("erfnet_random_untrained.pth"):
        print(
            "\ndemo: these figures come from RANDOM weights on SYNTHETIC images: they show that every step "
            "runs, not accuracy. See the README for running on the real checkpoint and val set (72.20 mIoU)."
        )
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erfnet", description="ErfNet offline-inference regression pipeline (the guide's scripts as one command)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_model_commands(sub)
    _add_data_commands(sub)
    _add_backend_commands(sub)

    from .results.cli import register as register_results

    register_results(sub)
    _add_runs_commands(sub)
    from .diagnose.cli import register as register_diagnose

    register_diagnose(sub)

    p = sub.add_parser(
        "demo",
        help="run the whole DAG in-process on the embedded default (ONNX Runtime + PyTorch "
        "CPU); without --weights/--dataset-root on SYNTHETIC data and RANDOM weights",
    )
    p.add_argument("--weights", help="a real erfnet_pretrained.pth (default: a random, untrained checkpoint)")
    p.add_argument(
        "--dataset-root",
        help="a real Cityscapes root with leftImg8bit/val and gtFine/val (default: a small synthetic tree)",
    )
    p.add_argument("--images", type=positive_int, default=4, help="synthetic images to make (default 4)")
    p.add_argument("--targets", default="cpu,torch-cpu", help="comma-separated targets (default cpu,torch-cpu)")
    p.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument(
        "--labels-on-device",
        action="store_true",
        help="ArgMax compiled into the model: label maps instead of the guide's FP16 logits (beyond "
        "the guide; targets that build no model, such as torch-cpu, still output logits)",
    )
    p.add_argument(
        "--keep-outputs",
        action="store_true",
        help="keep every cell's inference outputs under data/runs (default: deleted once counted)",
    )
    p.set_defaults(handler=cmd_demo)
    return parser


def cmd_runs_prune(args: argparse.Namespace) -> int:
    from .retention import prune

    _plan, report = prune(args.older_than, dry_run=args.dry_run)
    print(report)
    return 0


def _add_runs_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .retention import DEFAULT_OLDER_THAN

    runs = sub.add_parser("runs", help="the run folders under the data directory")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    p = runs_sub.add_parser(
        "prune",
        help="remove run folders and compile-cache entries unused for a while; never "
        "each target's latest complete run, a cache entry it used, or a database row",
    )
    p.add_argument(
        "--older-than",
        default=DEFAULT_OLDER_THAN,
        metavar="AGE",
        help=f"unused for at least this long: 30d, 12h, 90m (default {DEFAULT_OLDER_THAN})",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(handler=cmd_runs_prune)


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="ErfNet_pth2onnx.py: checkpoint -> ONNX, verified against PyTorch")
    p.add_argument("weights", metavar="WEIGHTS.pth")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--opset", type=positive_int, default=11, help="ONNX opset (default 11, as the guide)")
    p.add_argument(
        "--argmax",
        action="store_true",
        help="end the model in ArgMax: int32 label maps instead of 20 FP16 channels (10x fewer bytes)",
    )
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("fix-bn", help="modify_bn_weights.py: BatchNorm scales with |v| <= 0.01 become 0.01")
    p.add_argument("src", metavar="IN.onnx")
    p.add_argument("out", metavar="OUT.onnx")
    p.set_defaults(handler=cmd_fix_bn)

    p = sub.add_parser(
        "random-weights", help="write a RANDOMLY INITIALISED, UNTRAINED checkpoint in the upstream layout (tests, demo)"
    )
    p.add_argument("out", metavar="OUT.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--num-batches-tracked",
        action="store_true",
        help="include BatchNorm's num_batches_tracked keys (the 2017 upstream file has none)",
    )
    p.set_defaults(handler=cmd_random_weights)


def _add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "preprocess", help="ErfNet_preprocess.py: images -> PREP_DIR/*.bin, trainId labels -> GT_OUT_DIR"
    )
    p.add_argument("img_dir", metavar="IMG_DIR")
    p.add_argument("prep_dir", metavar="PREP_DIR")
    p.add_argument("gt_dir", metavar="GT_DIR")
    p.add_argument("gt_out_dir", metavar="GT_OUT_DIR")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N images (sorted by path)")
    p.add_argument(
        "--skip-bad", action="store_true", help="record bad input files in the manifest and go on instead of failing"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_preprocess)

    p = sub.add_parser("evaluate", help="ErfNet_postprocess.py: mIoU of an ais_bench summary against the labels")
    p.add_argument("summary", metavar="SUMMARY_JSON")
    p.add_argument("gt_dir", metavar="GT_DIR")
    p.add_argument("--json", action="store_true", help='print {"miou", "per_class", "images"} (fractions)')
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="the run covered only the first N images (as preprocess --limit N); without it every "
        "label under GT_DIR must have an output",
    )
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "sample-data",
        help="write a SYNTHETIC dataset in the Cityscapes layout (tests, demo; not real data)",
        description="Writes SYNTHETIC street-like images and labels (labelIds and labelTrainIds) in "
        "the Cityscapes layout, for tests and the demo. They are not Cityscapes data: "
        "an mIoU measured on them says nothing about the model.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--images", type=positive_int, required=True)
    p.add_argument("--size", type=size, default=(2048, 1024), help="WIDTHxHEIGHT (default 2048x1024)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_sample_data)


def _add_backend_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backends = backend_names()
    p = sub.add_parser(
        "compile",
        help="atc (Ascend, optionally AOE) or ORT's optimiser: ONNX -> model for one chip "
        "and batch size; prints its path",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX (for --backend torch: the .pth)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--backend", choices=backends, default=backend_names()[0])
    p.add_argument(
        "--chip", default=None, help="Ascend soc_version such as Ascend310P3; onnxruntime/torch: cpu or cuda"
    )
    p.add_argument("--batch-size", type=positive_int, required=True)
    p.add_argument("--aoe", action="store_true", help="Ascend: tune with AOE (subgraphs, then operators)")
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser(
        "infer", help="ais_bench (or ONNX Runtime / PyTorch) over PREP_DIR, in ais_bench's output layout"
    )
    p.add_argument("--backend", choices=backends, default=backend_names()[0])
    p.add_argument("--model", required=True, help="the .om (ascend), .onnx (onnxruntime) or .pth (torch)")
    p.add_argument("--input", required=True, metavar="PREP_DIR")
    p.add_argument("--output", required=True, metavar="OUT_DIR")
    p.add_argument("--batchsize", type=positive_int, required=True)
    p.add_argument("--device", default=None, help="ascend: device id (0); onnxruntime/torch: cpu, cuda or cuda:N")
    p.add_argument("--loop", type=positive_int, default=1)
    p.add_argument("--warmup", type=non_negative_int, default=1)
    p.add_argument(
        "--output-type",
        choices=["fp16", "fp32"],
        default="fp16",
        help="dtype of the written outputs (ascend: fixed by the om, FP16 from atc)",
    )
    p.set_defaults(handler=cmd_infer)

    p = sub.add_parser("environment", help="CANN version, NPU chips, driver and available backends of this host")
    p.add_argument("--format", choices=["json", "text"], default="text")
    p.set_defaults(handler=cmd_environment)

    p = sub.add_parser(
        "worker-queues",
        help="the comma-separated Celery queues this host's NPU worker consumes: "
        "one per chip model npu-smi info lists (celery worker --queues "
        "$(erfnet worker-queues))",
    )
    p.set_defaults(handler=cmd_worker_queues)


def _is_database_error(exc: BaseException) -> bool:
    """An SQLAlchemy/DBAPI failure (database down, refused, locked): one line, not a traceback."""
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.SQLAlchemyError)


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
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        print(f"erfnet: error: results database: {first_line(exc)}", file=sys.stderr)
        return ErfnetError.exit_code
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
