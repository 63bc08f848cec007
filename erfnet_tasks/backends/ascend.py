"""The Ascend toolchain: ``atc`` (and AOE) to compile, ``python3 -m ais_bench`` to infer, ``npu-smi`` and
the CANN install files to describe the host. Interfaces: docs/reference/ascend-interfaces.md.

Every command is an argv list (never a shell), and the chip name and batch size are validated before any
process starts, because they end up on a command line. Nothing here has run on real Ascend hardware: it is
tested against the stand-ins in ``tests/standins`` that follow the interface document.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import deadlines, outputs, settings
from ..chips import CHIP_PATTERN
from ..errors import BadInput, CompileFailed, ErfnetError, InferFailed, ToolTimedOut, Transient
from ..fsutil import StrPath, atomic_path
from ..profiles import OpTime, read_msprof_op_summary
from ..toolrun import run_bounded
from . import CompileResult, InferResult, check_batch_size, check_output_type, check_runs

NAME = "ascend"
RUNS_ON = "npu"
BUILDS_ARTIFACT = True
TARGETS: dict[str, str] = {}  # its targets are chips: Ascend<chip>[+AOE] (targets.py)
ERROR_CODE_PATTERN = re.compile(r"\b([EW]\d{5})\b")
INPUT_NAME = "actual_input_1"
INPUT_CHW = (3, 512, 1024)
DEFAULT_ASCEND_ROOT = Path("/usr/local/Ascend")
_PERF_LINE = re.compile(
    r"(?P<name>H2D_latency|NPU_compute_time|D2H_latency) \(ms\): min = (?P<min>\S+), max = (?P<max>\S+), "
    r"mean = (?P<mean>\S+), median = (?P<median>\S+), percentile\(99%\) = (?P<p99>\S+)"
)
# 2023+: "throughput 1000*batchsize.mean(1.0)/NPU_compute_time.mean(3.5): 285.7"; 2022: "...batchsize(1)/..."
_THROUGHPUT_LINE = re.compile(
    r"throughput 1000\*batchsize(?:\.mean)?\((?P<batch>[^)]*)\)/NPU_compute_time\.mean\((?P<mean>[^)]*)\): "
    r"(?P<value>[-+0-9.eE]+|inf|nan)"
)
# Order matters: an om that cannot get device memory also reports "load model from file failed".
_FAILURE_PATTERNS = (
    (
        "oom",
        re.compile(
            r"malloc device buffer failed|can't malloc buffer|memory allocation failed|"
            r"out of memory|ACL_ERROR_RT_MEMORY_ALLOCATION|memory alloc",
            re.I,
        ),
    ),
    ("device_open_failed", re.compile(r"acl open device \d+ failed|set device \d+ failed", re.I)),
    ("model_load_failed", re.compile(r"load model from file failed", re.I)),
)


# --------------------------------------------------------------------------- validation


def check_chip(chip: object) -> str:
    if chip is None:
        raise BadInput("the Ascend backend needs --chip, the soc_version such as Ascend310P3 (see erfnet environment)")
    if not isinstance(chip, str) or not CHIP_PATTERN.fullmatch(chip):
        raise BadInput(f"chip must look like Ascend310P3 ({CHIP_PATTERN.pattern}), got {chip!r}")
    return chip


def _check_device(device: str | int | None) -> str:
    text = "0" if device is None else str(device).strip()
    if not re.fullmatch(r"\d+(,\d+)*", text):
        raise BadInput(f"Ascend device must be an id such as 0 or 0,1, got {device!r}")
    return text


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BadInput(f"'{name}' is not on PATH: source the CANN set_env.sh (ascend-toolkit) first")
    return path


def device_for(target: Mapping[str, Any]) -> int:
    """Device 0: what a caller without a lease gets (the CLI); the pipeline leases a device of the cell's
    chip instead (erfnet_tasks/devices.py)."""
    return 0


# --------------------------------------------------------------------------- compile


def atc_argv(
    onnx_path: StrPath, output_base: StrPath, *, chip: str, batch_size: int, integer_output: bool = False
) -> list[str]:
    """The guide's atc command, minus the shell quoting of --input_shape and with --log=error.

    ``integer_output``: the graph ends in ArgMax -> Cast(int32) (labels_on_device). atc's ``--output_type``
    sets the om's output type whatever the graph's (FP16 would turn the label map back into halves, and
    older CANN accepts only FP32/FP16/UINT8/INT8 there); without it the om keeps the last operator's type,
    so the flag is left out and the om outputs int32 labels."""
    argv = [
        "atc",
        "--framework=5",
        f"--model={onnx_path}",
        f"--output={output_base}",
        "--input_format=NCHW",
        f"--input_shape={INPUT_NAME}:{batch_size},{','.join(map(str, INPUT_CHW))}",
        "--log=error",
        f"--soc_version={chip}",
    ]
    return argv if integer_output else [*argv, "--output_type=FP16"]


def has_integer_output(onnx_path: StrPath) -> bool:
    """Whether the ONNX graph's first output is an integer tensor (an ArgMax-ended model)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # unreadable or missing: atc reports it, with its own error code
        return False
    elem = model.graph.output[0].type.tensor_type.elem_type if model.graph.output else 0
    return elem in (onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8)


def aoe_argv(
    onnx_path: StrPath, output_base: StrPath, *, batch_size: int, job_type: int, device: str | int | None = None
) -> list[str]:
    """AOE as the interface document gives it: job_type 1 tunes subgraphs, 2 operators; on ``--device``
    (it tunes on the device: the pipeline passes the one it leased, of the cell's chip)."""
    return [
        "aoe",
        "--framework=5",
        f"--model={onnx_path}",
        f"--job_type={job_type}",
        f"--output={output_base}",
        "--input_format=NCHW",
        f"--input_shape={INPUT_NAME}:{batch_size},{','.join(map(str, INPUT_CHW))}",
        *([f"--device={_check_device(device)}"] if device is not None else []),
    ]


def _run_logged(
    argv: list[str], log_path: Path, *, deadline: deadlines.Deadline, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a compile step under its deadline; its output (a stopped run's too) goes to the log."""
    argv = [_tool(argv[0]), *argv[1:]]
    try:
        proc = run_bounded(argv, deadline, env=env)
    except ToolTimedOut as exc:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n{exc.output}\n[stopped: {exc}]\n")
        raise
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n{proc.stdout}\n[exit status {proc.returncode}]\n")
    return proc


def _compile_failure(tool: str, proc: subprocess.CompletedProcess[str], log_path: Path) -> CompileFailed:
    codes = ERROR_CODE_PATTERN.findall(proc.stdout)
    code = next((c for c in codes if c.startswith("E")), codes[0] if codes else None)
    detail = next((line.strip() for line in proc.stdout.splitlines() if code and code in line), "")
    if not detail:
        lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        detail = lines[-1] if lines else "no output"
    message = f"{tool} failed (exit status {proc.returncode}"
    message += f", error code {code}): {detail}" if code else f"): {detail}"
    return CompileFailed(f"{message}; log: {log_path}", code=code, log_path=log_path)


def compile(
    onnx_path: StrPath,
    out_dir: StrPath,
    *,
    chip: str,
    batch_size: int,
    aoe: bool = False,
    device: str | int | None = None,
    integer_output: bool | None = None,
) -> CompileResult:
    """``atc`` (or AOE subgraph then operator tuning) -> ``OUT_DIR/ErfNet_bs{N}[_aoe].om``; the tool's
    output is kept in ``<om>.log`` beside it. ``integer_output``: the planned cell's OutputFormat (the
    pipeline passes it); None (`erfnet compile`, no plan) reads it from the model's graph."""
    check_chip(chip)
    check_batch_size(batch_size)
    src = Path(onnx_path)  # its existence is atc's to check: atc reports it with an error code
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / (f"ErfNet_bs{batch_size}_aoe" if aoe else f"ErfNet_bs{batch_size}")
    om = base.with_name(base.name + ".om")
    log_path = base.with_name(base.name + ".log")
    log_path.write_text("")
    om.unlink(missing_ok=True)  # a stale om must never pass for the result of a failed run
    started = time.perf_counter()
    if aoe:
        steps = [("aoe", aoe_argv(src, base, batch_size=batch_size, job_type=job, device=device)) for job in (1, 2)]
    else:
        labels = has_integer_output(src) if integer_output is None else integer_output
        steps = [("atc", atc_argv(src, base, chip=chip, batch_size=batch_size, integer_output=labels))]
    for tool, argv in steps:
        deadline = deadlines.aoe_deadline() if aoe else deadlines.atc_deadline()
        try:
            proc = _run_logged(argv, log_path, deadline=deadline)
        except ToolTimedOut as exc:
            om.unlink(missing_ok=True)
            raise CompileFailed(f"{exc}; log: {log_path}", log_path=log_path) from exc
        if proc.returncode != 0:
            om.unlink(missing_ok=True)
            raise _compile_failure(tool, proc, log_path)
    if not om.is_file():
        raise CompileFailed(f"{steps[-1][0]} reported success but wrote no {om}; log: {log_path}", log_path=log_path)
    return CompileResult(path=om, seconds=time.perf_counter() - started, log_path=log_path)


# --------------------------------------------------------------------------- infer


def ais_bench_python() -> str:
    return settings.ais_bench_python() or sys.executable


def ais_bench_argv(
    model: StrPath, input_dir: StrPath, output_dir: StrPath, *, batch_size: int, device: str, loop: int, warmup: int
) -> list[str]:
    return [
        ais_bench_python(),
        "-m",
        "ais_bench",
        "--model",
        str(model),
        "--input",
        str(input_dir),
        "--outfmt",
        "BIN",
        "--output",
        str(output_dir),
        "--batchsize",
        str(batch_size),
        "--device",
        device,
        "--loop",
        str(loop),
        "--warmup_count",
        str(warmup),
    ]


def classify_failure(text: str) -> str:
    for status, pattern in _FAILURE_PATTERNS:
        if pattern.search(text):
            return status
    return "infer_failed"


def _failure_detail(text: str) -> str:
    errors = [line.strip() for line in text.splitlines() if "[ERROR]" in line]
    if errors:
        return "; ".join(dict.fromkeys(errors[:3]))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def parse_performance(text: str) -> dict[str, Any]:
    """The Performance Summary printout: ``{name: stats}`` for the latency lines and ``throughput``."""
    found: dict[str, Any] = {}
    for match in _PERF_LINE.finditer(text):
        found[match["name"]] = {
            "min": float(match["min"]),
            "max": float(match["max"]),
            "mean": float(match["mean"]),
            "median": float(match["median"]),
            "percentile(99%)": float(match["p99"]),
        }
    throughput = list(_THROUGHPUT_LINE.finditer(text))
    if throughput:
        found["throughput"] = float(throughput[-1]["value"])
    return found


def _folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def find_run_output(root: Path, before: set[str]) -> tuple[Path, Path]:
    """The folder and summary this run created, in either era's layout."""
    new = sorted(_folders(root) - before)
    for name in reversed(new):
        folder = root / name
        for summary in (outputs.summary_path_for(folder), folder / outputs.OLD_SUMMARY_NAME):
            if summary.is_file():
                return folder, summary
    summary = outputs.find_latest_summary(root)
    return outputs.output_folder_of(summary), summary


def _stats(summary: dict[str, Any], printed: dict[str, Any], key: str) -> dict[str, Any]:
    block = summary.get(key) if isinstance(summary.get(key), dict) else printed.get(key)
    stats = {k: float((block or {}).get(k, 0.0)) for k in outputs.STAT_KEYS if k != "count"}
    count = (block or {}).get("count")
    if count is None and key == "NPU_compute_time":
        count = len(summary.get("npu_compute_time_list", []))
    stats["count"] = int(count or 0)
    return stats


def count_inputs(input_dir: StrPath) -> int:
    """The files ais_bench takes from a folder (``.bin``/``.npy``): the images its deadline is made of."""
    folder = Path(input_dir)
    return sum(1 for p in folder.iterdir() if p.suffix in (".bin", ".npy")) if folder.is_dir() else 0


def _run_ais_bench(argv: list[str], deadline: deadlines.Deadline, log_path: Path) -> subprocess.CompletedProcess[str]:
    """ais_bench under its deadline; a stopped run is the cell's ``timed_out``, with the numbers."""
    try:
        return run_bounded(argv, deadline, tool="ais_bench")
    except ToolTimedOut as exc:
        with atomic_path(log_path) as tmp:
            tmp.write_text(f"$ {' '.join(argv)}\n{exc.output}\n[stopped: {exc}]\n")
        raise InferFailed(f"{exc}; log: {log_path}", status="timed_out", log_path=log_path) from exc


def infer(
    model: StrPath,
    input_dir: StrPath,
    output_dir: StrPath,
    *,
    batch_size: int,
    device: str | int | None = None,
    loop: int = 1,
    warmup: int = 1,
    output_type: str = "fp16",
) -> InferResult:
    """``python3 -m ais_bench`` with the guide's flags. The om fixes the output dtype (atc's
    ``--output_type=FP16``), so ``output_type`` is only checked, not applied: ais_bench writes what the
    model returns."""
    check_batch_size(batch_size)
    check_output_type(output_type)
    check_runs(loop, warmup)
    dev = _check_device(device)
    model = Path(model)
    if not model.is_file():
        raise InferFailed(f"om not found: {model}", status="model_load_failed")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    before = _folders(root)
    argv = ais_bench_argv(model, input_dir, root, batch_size=batch_size, device=dev, loop=loop, warmup=warmup)
    log_path = root / f"ais_bench_{time.strftime(outputs.TIMESTAMP_FORMAT)}_{os.getpid()}.log"
    proc = _run_ais_bench(argv, deadlines.infer_deadline(count_inputs(input_dir), loop), log_path)
    with atomic_path(log_path) as tmp:
        tmp.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n[exit status {proc.returncode}]\n")
    if proc.returncode != 0:
        status = classify_failure(proc.stdout)
        raise InferFailed(
            f"ais_bench failed ({status}): {_failure_detail(proc.stdout)}; log: {log_path}",
            status=status,
            log_path=log_path,
        )
    try:
        folder, summary_path = find_run_output(root, before)
    except ErfnetError as exc:
        raise InferFailed(
            f"ais_bench exited 0 but wrote no summary under {root}; log: {log_path}", log_path=log_path
        ) from exc
    summary = outputs.load_summary(summary_path)
    printed = parse_performance(proc.stdout)
    compute = _stats(summary, printed, "NPU_compute_time")
    throughput = summary.get("throughput", printed.get("throughput"))
    if throughput is None:
        throughput = 1000.0 * batch_size / compute["mean"] if compute["mean"] else 0.0
    return InferResult(
        summary_path=summary_path,
        output_dir=folder,
        throughput_fps=float(throughput),
        compute_ms=compute,
        h2d_ms=_stats(summary, printed, "H2D_latency"),
        d2h_ms=_stats(summary, printed, "D2H_latency"),
    )


def profile_argv(model: StrPath, input_dir: StrPath, output_dir: StrPath, *, batch_size: int, device: str) -> list[str]:
    """ais_bench under msprof (``--profiler 1``): one warm-up, one loop; its profile goes to OUTPUT/profiler/."""
    argv = ais_bench_argv(model, input_dir, output_dir, batch_size=batch_size, device=device, loop=1, warmup=1)
    return [*argv, "--profiler", "1"]


def link_first_inputs(input_dir: StrPath, folder: Path, images: int) -> int:
    """ais_bench takes a folder: the first ``images`` inputs (its natural order) linked into ``folder``."""
    from ._local import profile_batches

    files = [f for group in profile_batches(input_dir, 1, images) for f in group]
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        (folder / path.name).symlink_to(path.resolve())
    return len(files)


def profile(
    model: StrPath,
    input_dir: StrPath,
    work_dir: StrPath,
    *,
    batch_size: int,
    images: int,
    device: str | int | None = None,
) -> list[OpTime]:
    """``python3 -m ais_bench ... --profiler 1`` over the first ``images`` inputs, under its deadline;
    msprof's ``op_summary_*.csv`` read by column name (diagnosis-interfaces.md)."""
    check_batch_size(batch_size)
    dev = _check_device(device)
    model = Path(model)
    if not model.is_file():
        raise InferFailed(f"om not found: {model}", status="model_load_failed")
    work = Path(work_dir)
    count = link_first_inputs(input_dir, work / "inputs", images)
    out = work / "output"
    out.mkdir(parents=True, exist_ok=True)
    argv = profile_argv(model, work / "inputs", out, batch_size=batch_size, device=dev)
    log_path = work / "ais_bench_profiler.log"
    proc = _run_ais_bench(argv, deadlines.profile_deadline(count), log_path)
    log_path.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n[exit status {proc.returncode}]\n")
    if proc.returncode != 0:
        raise InferFailed(
            f"ais_bench --profiler 1 failed: {_failure_detail(proc.stdout)}",
            status=classify_failure(proc.stdout),
            log_path=log_path,
        )
    return read_msprof_op_summary(out / "profiler" if (out / "profiler").is_dir() else out)


# --------------------------------------------------------------------------- environment


def _arch() -> str:
    machine = platform.machine().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


def cann_roots() -> list[Path]:
    """Where a CANN toolkit may live, in order: ASCEND_TOOLKIT_HOME, the classic and the 8.5+ layout."""
    roots = []
    if os.environ.get("ASCEND_TOOLKIT_HOME"):
        roots.append(Path(os.environ["ASCEND_TOOLKIT_HOME"]))
    roots += [DEFAULT_ASCEND_ROOT / "ascend-toolkit" / "latest", DEFAULT_ASCEND_ROOT / "cann"]
    return roots


def _version_from_cfg(path: Path) -> str | None:
    """``runtime_running_version=[7.6.0.1.220:8.0.0]``: the CANN version follows the colon."""
    for key in ("runtime_running_version", "toolkit_running_version", "compiler_running_version"):
        match = re.search(rf"^\s*{key}\s*=\s*\[[^:\]]*:([^\]]+)\]", path.read_text(errors="replace"), re.M)
        if match:
            return match.group(1).strip()
    return None


def _version_from_info(path: Path) -> str | None:
    match = re.search(r"^\s*version\s*=\s*(\S+)", path.read_text(errors="replace"), re.M)
    return match.group(1).strip() if match else None


def _cann_version_in(root: Path, arch: str) -> str | None:
    candidates = [(root / "version.cfg", _version_from_cfg)]
    infos = [root / f"{arch}-linux" / "ascend_toolkit_install.info"]
    infos += sorted(p for p in root.glob("*-linux/ascend_toolkit_install.info") if p not in infos)
    candidates += [(info, _version_from_info) for info in infos]
    for path, reader in candidates:
        if path.is_file():
            version = reader(path)
            if version:
                return version
    return None


def detect_cann_version(roots: list[Path] | None = None) -> str:
    """The installed CANN version (version.cfg first, then ascend_toolkit_install.info), or ErfnetError."""
    roots = cann_roots() if roots is None else [Path(r) for r in roots]
    arch = _arch()
    for root in roots:
        version = _cann_version_in(root, arch)
        if version:
            return version
    raise BadInput(
        "no CANN toolkit found (no version.cfg or ascend_toolkit_install.info under "
        f"{', '.join(map(str, roots))}); install CANN or set ASCEND_TOOLKIT_HOME"
    )


def _npu_smi_info() -> str | None:
    path = shutil.which("npu-smi")
    if path is None:
        return None
    try:
        proc = subprocess.run(
            [path, "info"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Transient(f"npu-smi info could not run: {exc}") from exc
    if proc.returncode != 0:
        raise Transient(f"npu-smi info failed (exit status {proc.returncode}): {_failure_detail(proc.stdout)}")
    return proc.stdout


# A chip row: NPU id, chip name, then a Health word (OK, Warning...). The paired row holds a bus id there.
_CHIP_ROW = re.compile(r"^\|\s*(\d+)\s+([0-9][0-9A-Za-z]*)\s*\|\s*([A-Za-z]+)\s*\|", re.M)


def parse_npu_smi_chips(text: str) -> list[str]:
    return [f"Ascend{m.group(2)}" for m in _CHIP_ROW.finditer(text)]


def detect_chips() -> list[str]:
    """soc_version of every chip ``npu-smi info`` lists (e.g. ['Ascend310P3']); [] without npu-smi."""
    text = _npu_smi_info()
    return parse_npu_smi_chips(text) if text else []


def detect_driver_version() -> str | None:
    """The driver version from ``/usr/local/Ascend/driver/version.info``, else npu-smi's header."""
    info = DEFAULT_ASCEND_ROOT / "driver" / "version.info"
    if info.is_file():
        match = re.search(r"^\s*Version\s*=\s*(\S+)", info.read_text(errors="replace"), re.M | re.I)
        if match:
            return match.group(1)
    text = _npu_smi_info()
    match = re.search(r"npu-smi\s+\S+\s+Version:\s*(\S+)", text or "")
    return match.group(1) if match else None


def version() -> str:
    """The CANN version, or 'unavailable' where there is none."""
    try:
        return detect_cann_version()
    except ErfnetError:
        return "unavailable"


def ais_bench_usable() -> bool:
    """The real tool answers ``python3 -m ais_bench --help``; PyPI's unrelated ais-bench-benchmark does not."""
    try:
        proc = subprocess.run(
            [ais_bench_python(), "-m", "ais_bench", "--help"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def available() -> bool:
    return shutil.which("atc") is not None and ais_bench_usable()
