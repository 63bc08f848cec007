"""fsutil.DirectWriter: the bytes on disk are exactly ``ndarray.tofile``'s, with or without O_DIRECT."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from erfnet_tasks import fsutil
from erfnet_tasks.fsutil import DirectWriter

SHM = Path("/dev/shm")  # tmpfs on every Linux host (and container): it refuses O_DIRECT


def _expected(array, dtype, tmp_path, name="expected.bin"):
    path = tmp_path / name
    np.ascontiguousarray(array, dtype=dtype).tofile(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    "shape,src,dst",
    [
        ((20, 512, 1024), np.float16, np.float16),  # the guide's per-image FP16 logits: whole 4 KiB blocks
        ((20, 513, 7), np.float32, np.float16),  # converted on the way, and a tail that is not a whole block
        ((3, 5), np.float32, np.float32),  # smaller than one block: buffered
        ((512, 1024), np.int32, np.int32),  # ArgMax label maps
    ],
)
def test_bytes_equal_tofile(tmp_path, shape, src, dst):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 50).astype(src)
    writer = DirectWriter()
    writer.write(tmp_path / "out.bin", array, dst)
    writer.close()
    assert (tmp_path / "out.bin").read_bytes() == _expected(array, dst, tmp_path)


def test_non_contiguous_slices_and_a_growing_staging_buffer(tmp_path):
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((4, 20, 64, 130)).astype(np.float32)
    writer = DirectWriter()
    # a slot of a batch, then a transposed view, then something larger than the staging buffer so far
    cases = [batch[2], batch[1].transpose(0, 2, 1), rng.standard_normal((40, 64, 130)).astype(np.float32)]
    for i, array in enumerate(cases):
        writer.write(tmp_path / f"{i}.bin", array, np.float16)
    writer.close()
    for i, array in enumerate(cases):
        assert (tmp_path / f"{i}.bin").read_bytes() == _expected(array, np.float16, tmp_path)


def test_overwrites_a_longer_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"x" * 100_000)
    array = np.arange(4096, dtype=np.int32)
    DirectWriter().write(path, array)
    assert path.read_bytes() == array.tobytes()


def test_falls_back_to_buffered_writes_where_o_direct_is_refused(tmp_path, monkeypatch):
    real_open = os.open
    refused = []

    def open_without_o_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(fsutil.os, "open", open_without_o_direct)
    array = np.random.default_rng(2).standard_normal((20, 64, 64)).astype(np.float32)
    writer = DirectWriter()
    writer.write(tmp_path / "a.bin", array, np.float16)
    writer.write(tmp_path / "b.bin", array, np.float16)
    assert writer.direct is False
    assert refused == [tmp_path / "a.bin"]  # asked once, then remembered
    for name in ("a.bin", "b.bin"):
        assert (tmp_path / name).read_bytes() == _expected(array, np.float16, tmp_path)


def test_a_real_tmpfs_which_refuses_o_direct(tmp_path):
    array = np.random.default_rng(3).standard_normal((20, 64, 64)).astype(np.float16)
    target = SHM / f"erfnet-direct-{os.getpid()}.bin"
    try:
        DirectWriter().write(target, array)
        assert target.read_bytes() == array.tobytes()
    finally:
        target.unlink(missing_ok=True)


def test_other_errors_are_not_swallowed(tmp_path):
    with pytest.raises(FileNotFoundError):
        DirectWriter().write(tmp_path / "missing" / "out.bin", np.zeros(8192, np.uint8))


def test_page_aligned_arrays_are_written_without_a_staging_copy(tmp_path):
    from erfnet_tasks.fsutil import aligned_empty

    batch = aligned_empty((2, 20, 64, 64), np.float16)  # 163,840 bytes per image: whole 4 KiB blocks
    batch[...] = np.random.default_rng(4).standard_normal(batch.shape)
    writer = DirectWriter()
    writer.write(tmp_path / "0.bin", batch[0], np.float16)
    writer.write(tmp_path / "1.bin", batch[1], np.float16)
    assert writer._staging is None  # no copy was needed
    for i in range(2):
        assert (tmp_path / f"{i}.bin").read_bytes() == batch[i].tobytes()
