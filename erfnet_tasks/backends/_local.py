"""What the in-process backends (ONNX Runtime, PyTorch) share: ais_bench's input batching and output
writing, so that their folders are indistinguishable from the NPU's.

ais_bench takes only ``.bin``/``.npy`` files in natural sort order, groups them into batches, pads a
last partial batch with zero-filled fake inputs whose outputs are never written, and saves one raw file
per output. Outputs are written by one background thread, with O_DIRECT where the file system allows
(``fsutil.DirectWriter``): that thread then mostly sleeps on the disk, so the timed loop neither waits
for it nor loses a CPU to it.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .. import outputs
from ..errors import BadInput, ErfnetError, InferFailed
from ..fsutil import DirectWriter, StrPath, aligned_empty
from . import InferResult

INPUT_SUFFIXES = (".bin", ".npy")
_WRITE_QUEUE_DEPTH = 2  # a batch is written much faster than it is computed; each queued batch is memory


HOST_DEVICES = ("cpu", "cuda")


def device_for(target: Mapping[str, Any]) -> str:
    """A host target names its device (``cpu`` or ``cuda``)."""
    return str(target["device"])


def parse_device(
    device: str | int | None, backend: str, cuda_available: Callable[[], bool], no_cuda: str
) -> tuple[str, int]:
    """``cpu``, ``cuda`` or ``cuda:N`` (None means cpu); ``no_cuda`` is the error when CUDA is asked for
    and ``cuda_available()`` says there is none."""
    text = "cpu" if device is None else str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind not in HOST_DEVICES or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise BadInput(f"{backend} device must be cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and not cuda_available():
        raise BadInput(no_cuda)
    return kind, int(index or 0)


def natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_inputs(input_dir: str | os.PathLike[str]) -> list[Path]:
    folder = Path(input_dir)
    if not folder.is_dir():
        raise BadInput(f"input folder not found: {folder}")
    files = sorted((p for p in folder.iterdir() if p.suffix in INPUT_SUFFIXES and p.is_file()), key=natural_key)
    if not files:
        raise BadInput(f"no .bin or .npy inputs in {folder}")
    return files


def batches(files: list[Path], batch_size: int) -> list[list[Path]]:
    return [files[i : i + batch_size] for i in range(0, len(files), batch_size)]


def profile_batches(input_dir: str | os.PathLike[str], batch_size: int, images: int) -> list[list[Path]]:
    """The profiled pass's batches: the first ``images`` inputs, at least one (padded) batch's worth."""
    if isinstance(images, bool) or not isinstance(images, int) or images <= 0:
        raise BadInput(f"the profiled pass needs a positive number of images, got {images!r}")
    return batches(list_inputs(input_dir)[:images], batch_size)


def run_untimed(runner: Runner, groups: list[list[Path]], buffer: NDArray[Any], *, warmup: int = 1) -> None:
    """``warmup`` runs of the first batch, then each batch once; nothing is written or timed (the
    profiled pass: the backend's profiler is the clock)."""
    fill_batch(groups[0], buffer)
    for _ in range(warmup):
        runner.run(buffer, None)
    for group in groups:
        fill_batch(group, buffer)
        runner.run(buffer, None)


def with_progress(groups: list[list[Path]], desc: str) -> Iterator[list[Path]]:
    """The batches, with a progress bar in images on a terminal (silent in logs and pipes)."""
    from tqdm import tqdm

    with tqdm(total=sum(map(len, groups)), unit="img", desc=desc, disable=None, file=sys.stderr) as bar:
        for group in groups:
            yield group
            bar.update(len(group))


def read_into(path: Path, dest: NDArray[Any]) -> None:
    """Fill one sample slot from a file without an intermediate copy; wrong sizes fail like ais_bench."""
    if path.suffix == ".npy":
        array = np.load(path)
        if array.size != dest.size:
            raise InferFailed(f"arg0 tensorsize: {dest.nbytes} filesize: {array.nbytes} not match ({path})")
        dest[...] = array.reshape(dest.shape)
        return
    size = path.stat().st_size
    if size != dest.nbytes:
        raise InferFailed(f"arg0 tensorsize: {dest.nbytes} filesize: {size} not match ({path})")
    with open(path, "rb") as fh:
        fh.readinto(memoryview(dest.data).cast("B"))


def fill_batch(files: list[Path], buffer: NDArray[Any]) -> None:
    for slot, path in enumerate(files):
        read_into(path, buffer[slot])
    if len(files) < len(buffer):
        buffer[len(files) :] = 0  # ais_bench pads with zero-filled fake files


class OutputWriter:
    """Writes ``<stem>_<i>.bin`` files on a background thread, converting to the requested dtype there."""

    def __init__(self, folder: Path, dtype: npt.DTypeLike):
        self.folder = folder
        self.dtype = np.dtype(dtype)
        self._queue: queue.Queue[_WriteJob | None] = queue.Queue(maxsize=_WRITE_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="erfnet-output-writer", daemon=True)
        self._thread.start()

    def submit(self, files: list[Path], arrays: list[NDArray[Any]], release: Release | None = None) -> list[list[Path]]:
        """Queue the outputs of one batch (padding rows beyond ``len(files)`` are dropped); ``release(arrays)``
        is called once they are written, or skipped after an error."""
        if self._error is not None:
            raise self._error
        for array in arrays:
            self._check_finite(array[: len(files)], files)
        names = [[self.folder / outputs.output_file_name(f, i) for i in range(len(arrays))] for f in files]
        self._queue.put((names, arrays, release))
        return names

    def _check_finite(self, rows: NDArray[Any], files: list[Path]) -> None:
        """NaN/Inf (or a value FP16 cannot hold, which becomes Inf when written) fails the inference,
        naming the input: evaluation would otherwise count it as a class."""
        if not np.issubdtype(rows.dtype, np.floating) or rows.size == 0:
            return
        limit = float(np.finfo(self.dtype).max) if np.issubdtype(self.dtype, np.floating) else np.inf
        lo, hi = float(rows.min()), float(rows.max())  # NaN propagates through both
        if np.isfinite(lo) and np.isfinite(hi) and -limit <= lo and hi <= limit:
            return
        for slot, path in enumerate(files):
            row = rows[slot]
            if not (np.isfinite(row).all() and float(np.abs(row).max()) <= limit):
                raise InferFailed(f"non-finite output (NaN/Inf, or beyond {self.dtype.name}) for input {path}")
        raise InferFailed(f"non-finite output (NaN/Inf) in the batch of {files[0]}")

    def _run(self) -> None:
        files = DirectWriter()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                names, arrays, release = item
                if self._error is None:
                    self._write(files, names, arrays)
                if release is not None:
                    release(arrays)
        finally:
            files.close()

    def _write(self, files: DirectWriter, names: list[list[Path]], arrays: list[NDArray[Any]]) -> None:
        try:
            for slot, per_output in enumerate(names):
                for array, path in zip(arrays, per_output, strict=True):
                    # Only logits are converted: an ArgMax model's int32 labels are written as they are.
                    dtype = self.dtype if np.issubdtype(array.dtype, np.floating) else array.dtype
                    files.write(path, array[slot], dtype)
        except BaseException as exc:  # reported on the main thread by close()/submit()
            self._error = exc

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            # A full disk is the cell's own status (no_space): the other cells go on.
            status = "no_space" if getattr(self._error, "errno", None) == errno.ENOSPC else "infer_failed"
            raise InferFailed(f"could not write outputs to {self.folder}: {self._error}", status=status)


class OutputBuffers:
    """Sets of page-aligned output arrays, reused: inference fills one set while the writer thread writes
    another straight from its memory (O_DIRECT, no copy) and then gives it back; two sets keep memory flat."""

    def __init__(self, specs: list[tuple[tuple[int, ...], npt.DTypeLike]], sets: int = 2):
        self._free: queue.Queue[list[NDArray[Any]]] = queue.Queue()
        for _ in range(sets):
            self._free.put([aligned_empty(shape, dtype) for shape, dtype in specs])

    def take(self) -> list[NDArray[Any]]:
        return self._free.get()

    def give_back(self, arrays: list[NDArray[Any]]) -> None:
        self._free.put(arrays)


Release = Callable[[list[NDArray[Any]]], None]
_WriteJob = tuple[list[list[Path]], list[NDArray[Any]], Release | None]


@dataclass
class Timings:
    compute_ms: list[float]
    h2d_ms: list[float]
    d2h_ms: list[float]


class Runner(Protocol):
    """A backend's inference loop body: ``take`` a set of output arrays to fill (None: the backend makes
    fresh ones), ``run`` one batch (timed where ``timings`` is given), ``give_back`` the set once written."""

    def take(self) -> list[NDArray[Any]] | None: ...

    def run(
        self, batch: NDArray[Any], timings: Timings | None, into: list[NDArray[Any]] | None = None
    ) -> list[NDArray[Any]]: ...

    def give_back(self, arrays: list[NDArray[Any]] | None) -> None: ...


def finish(
    folder: Path, filesinfo: list[outputs.SummaryEntry], timings: Timings, *, batch_size: int, args: list[str]
) -> InferResult:
    summary = outputs.build_summary(
        filesinfo,
        compute_ms=timings.compute_ms,
        h2d_ms=timings.h2d_ms,
        d2h_ms=timings.d2h_ms,
        batch_size=batch_size,
        args=args,
    )
    path = outputs.write_summary(folder, summary)
    return InferResult(
        summary_path=path,
        output_dir=folder,
        throughput_fps=summary["throughput"],
        compute_ms=summary["NPU_compute_time"],
        h2d_ms=summary["H2D_latency"],
        d2h_ms=summary["D2H_latency"],
    )


def infer_args(
    backend: str,
    model: StrPath,
    input_dir: StrPath,
    output_dir: StrPath,
    batch_size: int,
    device: str | int,
    loop: int,
    warmup: int,
    output_type: str,
) -> list[str]:
    """The ``args`` recorded in the summary, in ais_bench's flag spelling."""
    return [
        backend,
        "--model",
        str(model),
        "--input",
        str(input_dir),
        "--output",
        str(output_dir),
        "--outfmt",
        "BIN",
        "--batchsize",
        str(batch_size),
        "--device",
        str(device),
        "--loop",
        str(loop),
        "--warmup_count",
        str(warmup),
        "--output_type",
        output_type,
    ]


def run_batches(
    runner: Runner,
    groups: list[list[Path]],
    buffer: NDArray[Any],
    *,
    output_dir: StrPath,
    output_type: str,
    loop: int,
    warmup: int,
    desc: str,
    on_error: Callable[[Exception], Exception],
) -> tuple[Path, list[outputs.SummaryEntry], Timings]:
    """The host inference loop: untimed warmup on the first batch, then every batch ``loop`` times, its
    outputs handed to the writer thread. ``runner`` has ``take() -> arrays|None``, ``run(batch, timings,
    into) -> arrays`` and ``give_back(arrays)``; ``on_error(exc)`` turns a backend's own exception into
    an InferFailed (an ErfnetError passes through as it is)."""
    fill_batch(groups[0], buffer)
    into = runner.take()
    for _ in range(warmup):
        runner.run(buffer, None, into)
    runner.give_back(into)
    folder = outputs.make_output_folder(output_dir)
    writer = OutputWriter(folder, np.float16 if output_type == "fp16" else np.float32)
    timings = Timings([], [], [])
    filesinfo: list[outputs.SummaryEntry] = []
    try:
        for group in with_progress(groups, desc):
            fill_batch(group, buffer)
            into = runner.take()  # waits while the writer still holds every buffer set
            for _ in range(loop):
                result = runner.run(buffer, timings, into)
            names = writer.submit(group, result, release=runner.give_back)
            filesinfo.extend(outputs.SummaryEntry(f, tuple(n)) for f, n in zip(group, names, strict=True))
    except Exception as exc:
        if isinstance(exc, ErfnetError):
            raise
        raise on_error(exc) from exc
    finally:
        writer.close()
    return folder, filesinfo, timings
