"""Atomic file writes, content hashes, and uncached writes of large outputs.

A step that is killed half-way must never leave a file that a later step (or a rerun) trusts, so every
output is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .errors import BadInput

# What a path argument may be: the str, Path or os.PathLike callers already have.
StrPath = str | os.PathLike[str]

_CHUNK = 1 << 20
PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_part(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _create_part(target: Path) -> Path:
    """A new empty ``.<name>.<random>.part`` beside ``target``, created with mode 0666 minus the umask
    (mkstemp's 0600 would lock out a worker running as another user once the file is renamed)."""
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}{PART_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def remove_stale_parts(folder: StrPath) -> int:
    """Delete the ``.part`` files a killed writer left in ``folder``; the caller must hold the folder's lock."""
    removed = 0
    for path in Path(folder).glob(f".*{PART_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def folder_lock(folder: StrPath) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (its ``.lock`` file) for one writer at a time."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_bytes_atomic(path: StrPath, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: StrPath, obj: object, *, indent: int | None = 2) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=indent, sort_keys=False) + "\n").encode())


def read_json(path: StrPath, what: str, *, missing: str | None = None) -> Any:
    """Parse a JSON file; a missing or garbled one is a BadInput that names it (and ``what`` it should be)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BadInput(missing or f"{what} not found: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not {what} ({exc})") from exc


def sha256_file(path: StrPath) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DirectWriter:
    """Writes whole files with O_DIRECT where the file system allows it, and buffered where it does not.

    Inference writes 20 MB of logits per image (10 GB per 500-image cell). Buffered, each file costs the
    writing thread a copy into freshly allocated page-cache pages, later write-back, and the eviction of
    the host's other caches. With O_DIRECT the disk reads our page-aligned staging buffer and the writing
    thread sleeps on I/O instead of holding a CPU that inference needs (BENCHMARKS.md, before / after).
    One staging buffer is reused, so memory stays flat; one instance per thread.
    """

    ALIGN = 4096  # a multiple of every logical block size O_DIRECT may demand, and of the page size

    def __init__(self) -> None:
        self.direct = hasattr(os, "O_DIRECT")
        self._staging: mmap.mmap | None = None

    def write(self, path: StrPath, array: NDArray[Any], dtype: npt.DTypeLike | None = None) -> None:
        """Write ``array`` (converted to ``dtype``) as raw bytes, like ``ndarray.tofile``."""
        dtype = np.dtype(dtype or array.dtype)
        nbytes = array.size * dtype.itemsize
        if self.direct and nbytes >= self.ALIGN:
            if self.writable_as_is(array, dtype):
                data = array.reshape(-1).view(np.uint8)
            else:
                data = self._staging_view(nbytes)[:nbytes]
                np.copyto(data.view(dtype).reshape(array.shape), array, casting="unsafe")
            try:
                self._write_direct(path, data)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False  # this file system (tmpfs, some FUSE) refuses O_DIRECT: buffered from now on
        np.ascontiguousarray(array, dtype=dtype).tofile(path)

    @classmethod
    def writable_as_is(cls, array: NDArray[Any], dtype: npt.DTypeLike) -> bool:
        """Whether O_DIRECT can take ``array``'s memory without a staging copy (see ``aligned_empty``)."""
        return array.dtype == dtype and array.flags.c_contiguous and array.ctypes.data % cls.ALIGN == 0

    def _staging_view(self, nbytes: int) -> NDArray[Any]:
        size = -(-nbytes // self.ALIGN) * self.ALIGN
        if self._staging is None or len(self._staging) < size:
            # The old map is not closed but dropped: a view of it may still be referenced (by a traceback, say),
            # and mmap.close() would then raise; it is unmapped when the last view goes.
            self._staging = mmap.mmap(-1, size)  # anonymous mmap: page-aligned, as O_DIRECT requires
        return np.frombuffer(self._staging, dtype=np.uint8)

    def _write_direct(self, path: StrPath, data: NDArray[Any]) -> None:
        aligned = len(data) // self.ALIGN * self.ALIGN
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
        try:
            _write_all(fd, data[:aligned].data)
            if aligned < len(data):  # the tail is not a whole block: write it through the page cache
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                _write_all(fd, data[aligned:].data)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._staging = None  # see _staging_view


def aligned_empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> NDArray[Any]:
    """An uninitialised array in page-aligned memory (an anonymous mmap) that DirectWriter writes uncopied."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    return np.frombuffer(mmap.mmap(-1, max(count * dtype.itemsize, 1)), dtype=dtype, count=count).reshape(shape)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]
