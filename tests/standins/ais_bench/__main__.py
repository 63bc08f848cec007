"""TEST DOUBLE: ``python3 -m ais_bench`` (see __init__.py). Not Huawei's code; mimics its interface."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from standin_cann import behaviour, device_model
from standin_device import chip_of, occupy, openable_devices
from standin_faults import apply as apply_switches
from standin_msprof import type_share, write_op_summary
from standin_om import read_om, record_invocation
from standin_timing import batch_compute_ms, device_seconds, scale, tool_run

logger = logging.getLogger("ais_bench")
OOM_CHIP, OOM_BATCH = "Ascend310", 64
DTYPES = {"FP16": np.float16, "FP32": np.float32}


def str2bool(text: str) -> bool:
    if text.lower() in ("1", "true"):
        return True
    if text.lower() in ("0", "false"):
        return False
    raise argparse.ArgumentTypeError(f"{text} is not a boolean (1/0/true/false)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ais_bench", description="stand-in ais_bench (test double)")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", default=None)
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=int, default=1)
    p.add_argument("--warmup_count", type=int, default=1)
    p.add_argument("--device", "-d", default="0")
    p.add_argument("--batchsize", type=int, default=None)
    p.add_argument("--dymBatch", type=int, default=0)
    p.add_argument("--dymShape", default=None)
    p.add_argument("--dymHW", default=None)
    p.add_argument("--dymDims", default=None)
    p.add_argument("--outputSize", default=None)
    p.add_argument("--display_all_summary", type=str2bool, default=False)
    p.add_argument("--output_batchsize_axis", type=int, default=0)
    p.add_argument("--pure_data_type", default="zero", choices=["zero", "random"])
    p.add_argument("--debug", type=str2bool, default=False)
    p.add_argument("--acl_json_path", default=None)
    p.add_argument("--profiler", type=str2bool, default=False)
    p.add_argument("--dump", type=str2bool, default=False)
    return p


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_inputs(spec: str) -> list[str]:
    files = []
    for part in spec.split(","):
        if os.path.isdir(part):
            names = sorted((n for n in os.listdir(part) if n.endswith((".bin", ".npy"))), key=natural_key)
            files += [os.path.join(part, n) for n in names]
        elif part.endswith((".bin", ".npy")):
            files.append(part)
    return files


def fatal(message: str) -> None:
    logger.error(message)
    raise RuntimeError("[1][ACL: invalid parameter]")


def open_device(device: int) -> None:
    if device >= openable_devices():
        fatal(f"acl open device {device} failed")
    logger.info(f"open device {device} success")


def load_model(path: str, device: int, how: dict, profiling: bool = False):
    # An om loads only on a device of the chip it was built for (device N is the Nth chip npu-smi lists).
    oom_batch = int(os.environ.get("STANDIN_NPU_OOM_BATCH", OOM_BATCH))
    try:
        header, onnx_bytes = read_om(path)
    except (OSError, ValueError):
        fatal(f"load model from file failed, model file is {path}")
    batch = header.get("batch") or 1
    if header.get("soc_version") != chip_of(device):
        fatal(f"load model from file failed, model file is {path}")
    if header.get("soc_version") == OOM_CHIP and batch >= oom_batch:
        # The 310's device memory does not hold ErfNet at batch 64 (the guide's table).
        size = batch * 20 * 512 * 1024 * 2
        logger.error(f"malloc device buffer failed. size is {size}")
        fatal(f"load model from file failed, model file is {path}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = profiling
    if profiling:  # no layout rewrites, so the profiled ops keep the model's node names as an om's ops do
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"standin_ais_bench_{os.getpid()}")
    model = device_model(onnx_bytes, how).SerializeToString()  # as the stand-in CANN computes it
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    logger.info(f"load model {path} success")
    return header, session, batch


def stats(values) -> dict:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "percentile(99%)": float(np.percentile(a, 99)),
        "count": int(a.size),
    }


def stat_line(name: str, s: dict) -> str:
    return (
        f"{name} (ms): min = {s['min']}, max = {s['max']}, mean = {s['mean']}, median = {s['median']}, "
        f"percentile(99%) = {s['percentile(99%)']}"
    )


def read_batch(files: list[str], batch: int, sample_shape: tuple) -> np.ndarray:
    data = np.zeros((batch, *sample_shape), dtype=np.float32)
    sample_bytes = data[0].nbytes
    for slot, path in enumerate(files):
        array = np.load(path) if path.endswith(".npy") else np.fromfile(path, dtype=np.uint8)
        if array.nbytes != sample_bytes:
            fatal(f"arg0 tensorsize: {data.nbytes} filesize: {array.nbytes} not match")
        data[slot] = (
            array.view(np.float32).reshape(sample_shape) if array.dtype == np.uint8 else array.reshape(sample_shape)
        )
    return data


def slowed_share(model: str, device: int, how: dict, feed: str, sample: np.ndarray) -> float:
    """The stand-in CANN's slowed op type's part of the compute time, from one profiled run."""
    if not how.get("slow_op_type") or how["slow_factor"] == 1.0:
        return 0.0
    _, session, _ = load_model(model, device, how, profiling=True)
    session.run(None, {feed: sample})
    trace = session.end_profiling()
    share = type_share(trace, how["slow_op_type"])
    os.remove(trace)
    return share


def write_profile(args, session, device: int, how: dict) -> None:
    """msprof's op summary under OUTPUT/profiler/ from this session's ONNX Runtime trace."""
    trace = session.end_profiling()
    summary_csv = write_op_summary(
        args.output or ".", trace, model=args.model, device=device, skip_runs=args.warmup_count, how=how
    )
    os.remove(trace)
    logger.info(f"profiler output: {summary_csv}")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s", stream=sys.stdout, force=True)
    record_invocation("ais_bench")
    args = build_parser().parse_args(argv)
    era = os.environ.get("STANDIN_AIS_BENCH_ERA", "2023")
    logger.info("acl init success")
    device = int(args.device.split(",")[0])
    if args.profiler and args.dump:
        fatal("--profiler and --dump cannot be used together")
    open_device(device)
    with occupy(device, "ais_bench"), tool_run("ais_bench", device=device, chip=chip_of(device)) as timed:
        return run(args, era, device, timed)


def run(args, era: str, device: int, timed) -> int:
    how = behaviour()
    header, session, batch = load_model(args.model, device, how, profiling=args.profiler)
    tuned = header.get("tool") == "aoe"  # an AOE-tuned om runs at the guide's 310P-AOE figures
    timed.entry.update(batch=batch, tuned=tuned, model=args.model)
    delayed = apply_switches("ais_bench", args.model, header.get("soc_version"), batch)  # hang / delay
    feed = session.get_inputs()[0]
    sample_shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in feed.shape[1:])
    if header.get("input_shape"):
        sample_shape = tuple(int(d) for d in header["input_shape"].rsplit(":", 1)[1].split(",")[1:])
    # atc without --output_type keeps the last operator's type (an ArgMax model's int32); with it, that type.
    out_dtype = DTYPES.get(header["output_type"]) if header.get("output_type") else None
    logger.info("create model description success")

    files = list_inputs(args.input) if args.input else []
    groups = [files[i : i + batch] for i in range(0, len(files), batch)] or [[]]
    folder = None
    if args.output:
        folder = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
        os.makedirs(folder, exist_ok=True)
        logger.info(f"output path:{folder}")

    first = read_batch(groups[0], batch, sample_shape)[: max(1, len(groups[0]))]
    for _ in range(args.warmup_count):
        session.run(None, {feed.name: first})
    slowed = slowed_share(args.model, device, how, feed.name, first)
    slowdown = 1 + (how["slow_factor"] - 1) * slowed  # the stand-in CANN's slowed op type, on the whole batch
    # With timing on, the device's compute time is the guide's, whatever the CPU took (standin_timing.py).
    modeled_ms = batch_compute_ms(chip_of(device), batch, tuned) * slowdown if scale() > 0 else None
    compute, h2d, d2h, filesinfo = [], [], [], {}
    for group in groups:
        # Only the rows that hold an input are computed: the padding rows' outputs are never written, and
        # a full batch of 64 at 512x1024 would need more memory than a test machine has.
        host = read_batch(group, batch, sample_shape)[: max(1, len(group))]
        for _ in range(args.loop):
            t0 = time.perf_counter()
            device_input = host.copy()  # the stand-in "H2D" copy
            t1 = time.perf_counter()
            results = session.run(None, {feed.name: device_input})
            time.sleep((how["slow_factor"] - 1) * slowed * (time.perf_counter() - t1))  # the slowed op type
            t2 = time.perf_counter()
            results = [np.asarray(r, dtype=out_dtype or r.dtype).copy() for r in results]  # "D2H"
            t3 = time.perf_counter()
            h2d.append((t1 - t0) * 1000)
            compute.append(modeled_ms if modeled_ms is not None else (t2 - t1) * 1000)
            d2h.append((t3 - t2) * 1000)
        if folder and group:
            for slot, infile in enumerate(group):
                stem = os.path.basename(infile).split(".")[0]
                outfiles = []
                for i, result in enumerate(results):
                    out = os.path.join(folder, f"{stem}_{i}.bin")
                    result[slot].tofile(out)
                    outfiles.append(out)
                filesinfo[str(len(filesinfo))] = {"infiles": [infile], "outfiles": outfiles}

    if args.profiler:
        write_profile(args, session, device, how)
    timed.pace(device_seconds(chip_of(device), batch, tuned, len(files), args.loop, slowdown), delayed)
    batchsize = args.batchsize if args.batchsize else batch
    s_compute, s_h2d, s_d2h = stats(compute), stats(h2d), stats(d2h)
    throughput = 1000 * batchsize / s_compute["mean"] if s_compute["mean"] else 0.0
    if folder:
        summary = {
            "filesinfo": filesinfo,
            "args": sys.argv,
            "NPU_compute_time": s_compute,
            "H2D_latency": s_h2d,
            "D2H_latency": s_d2h,
            "throughput": throughput,
            "npu_compute_time_list": compute,
            "pid": os.getpid(),
        }
        if era == "2022":
            for block in ("NPU_compute_time", "H2D_latency", "D2H_latency"):
                summary[block] = {k: v for k, v in summary[block].items() if k != "count"}
            path = os.path.join(folder, "sumary.json")
        else:
            path = folder.rstrip("/") + "_summary.json"
        with open(path, "w") as fh:
            json.dump(summary, fh)
    logger.info("-----------------Performance Summary------------------")
    if args.display_all_summary:
        logger.info(stat_line("H2D_latency", s_h2d))
    logger.info(stat_line("NPU_compute_time", s_compute))
    if args.display_all_summary:
        logger.info(stat_line("D2H_latency", s_d2h))
    if era == "2022":
        logger.info(f"throughput 1000*batchsize({batchsize})/NPU_compute_time.mean({s_compute['mean']}): {throughput}")
    else:
        logger.info(
            f"throughput 1000*batchsize.mean({float(batchsize)})/NPU_compute_time.mean({s_compute['mean']}): "
            f"{throughput}"
        )
    logger.info("------------------------------------------------------")
    logger.info("unload model success, model Id is 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
