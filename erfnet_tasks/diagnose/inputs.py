"""The diagnosis's inputs: the first N preprocessed samples of PREP_DIR, read as ais_bench reads them.

``.bin`` files are raw float32 CHW in the golden's input shape (the guide's preprocessing); ``.npy``
files carry their own shape. Files are taken in ais_bench's natural sort order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from ..backends._local import list_inputs
from ..errors import BadInput

Sample = npt.NDArray[np.float32]


def first_inputs(prep_dir: str | os.PathLike[str], images: int) -> list[Path]:
    files: list[Path] = list_inputs(prep_dir)
    if images > len(files):
        raise BadInput(f"--images {images} but {prep_dir} holds only {len(files)} .bin/.npy input(s)")
    return files[:images]


def sample_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """The golden's one input, less its batch axis; every dimension must be fixed to read a raw .bin."""
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1:
        raise BadInput(f"the golden model has {len(inputs)} inputs; diagnose handles models with one input")
    dims = inputs[0].type.tensor_type.shape.dim[1:]
    if not dims or any(not d.HasField("dim_value") for d in dims):
        raise BadInput(f"the golden's input {inputs[0].name!r} has no fixed sample shape to read .bin files with")
    return tuple(int(d.dim_value) for d in dims)


def read_sample(path: Path, shape: tuple[int, ...]) -> Sample:
    """One sample as a batch of one, float32."""
    if path.suffix == ".npy":
        array: Sample = np.asarray(np.load(path), dtype=np.float32)
        if array.size != int(np.prod(shape)):
            raise BadInput(f"{path}: {array.size} values, the model's input takes {int(np.prod(shape))}")
        return array.reshape(1, *shape)
    expected = int(np.prod(shape)) * 4
    size = path.stat().st_size
    if size != expected:
        raise BadInput(f"{path}: {size} bytes, the model's float32 input {shape} takes {expected}")
    return np.fromfile(path, dtype=np.float32).reshape(1, *shape)
