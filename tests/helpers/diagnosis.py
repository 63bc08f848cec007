"""``erfnet diagnose`` run as users run it, and the small ERFNet models its tests compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper

SMALL = (64, 128)  # ERFNet is fully convolutional: a small input keeps the real-model tests fast


def erfnet_diagnose(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run(
        [sys.executable, "-m", "erfnet_tasks.cli", "diagnose", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def diagnose_json(golden, model, prep, backend="onnxruntime", images=2, extra=()) -> dict:
    done = erfnet_diagnose(
        [
            "--golden",
            str(golden),
            "--model",
            str(model),
            "--backend",
            backend,
            "--input",
            str(prep),
            "--images",
            str(images),
            "--json",
            *extra,
        ]
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def small_erfnet(exported, out):
    """The exported ERFNet with a SMALL input (and output) instead of 512x1024."""
    model = onnx.load(str(exported))
    for io in [*model.graph.input, *model.graph.output]:
        dims = io.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = SMALL
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out


def perturb_weights(src, out, node_name, *, noise: float = 2.0):
    """A copy of the ONNX model whose node ``node_name`` has noisy weights (``noise`` x their std)."""
    model = onnx.load(str(src))
    node = next(n for n in model.graph.node if n.name == node_name)
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    value = numpy_helper.to_array(weight)
    noisy = value + np.random.default_rng(1).normal(0, noise * value.std(), value.shape).astype(value.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    onnx.save(model, str(out))
    return out


def perturb_checkpoint(src, out, key, *, noise: float = 2.0):
    """A copy of the checkpoint whose tensor ``key`` (upstream layout, ``module.`` prefix) is noisy."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    value = state[key]
    generator = torch.Generator().manual_seed(1)
    state[key] = value + torch.randn(value.shape, generator=generator) * noise * value.std()
    torch.save(state, out)
    return out
