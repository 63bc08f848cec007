"""TEST DOUBLE. How the stand-in CANN toolkit's device behaves: it can slow one op type and perturb one node.

Read from ``$ASCEND_TOOLKIT_HOME/standin_behaviour.json`` (so that "upgrading CANN", i.e. rewriting the
toolkit folder, changes the behaviour, as a real CANN upgrade would), then overridden by environment:
- ``slow_op_type`` / ``STANDIN_CANN_SLOW_OP_TYPE`` (e.g. ``Conv``) and ``slow_factor`` /
  ``STANDIN_CANN_SLOW_FACTOR`` (default 1.3): every op of that type takes this many times as long, in
  the profiler's op summary and in the measured compute time (the stand-in sleeps for the extra time);
- ``perturb_node`` / ``STANDIN_CANN_PERTURB_NODE`` (an ONNX node name) and ``perturb_factor`` /
  ``STANDIN_CANN_PERTURB_FACTOR`` (default -1.0): that node's output is multiplied by the factor on the
  "device" (its dump and everything after it, the inference outputs included).
Not Huawei's code.
"""

from __future__ import annotations

import json
import os

import onnx
from onnx import helper

DEFAULT_TOOLKIT = "/usr/local/Ascend/ascend-toolkit/latest"
BEHAVIOUR_FILE = "standin_behaviour.json"


def behaviour() -> dict:
    path = os.path.join(os.environ.get("ASCEND_TOOLKIT_HOME", DEFAULT_TOOLKIT), BEHAVIOUR_FILE)
    found = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            found = json.load(fh)
    for key, env in (
        ("slow_op_type", "STANDIN_CANN_SLOW_OP_TYPE"),
        ("slow_factor", "STANDIN_CANN_SLOW_FACTOR"),
        ("perturb_node", "STANDIN_CANN_PERTURB_NODE"),
        ("perturb_factor", "STANDIN_CANN_PERTURB_FACTOR"),
    ):
        if os.environ.get(env):
            found[key] = os.environ[env]
    found["slow_factor"] = float(found.get("slow_factor", 1.3))
    found["perturb_factor"] = float(found.get("perturb_factor", -1.0))
    return found


def slow_factor_of(op_type: str, how: dict) -> float:
    return how["slow_factor"] if how.get("slow_op_type") and op_type == how["slow_op_type"] else 1.0


def device_model(onnx_bytes: bytes, how: dict) -> onnx.ModelProto:
    """The model as the stand-in device computes it: the perturbed node's output scaled by the factor.

    The node keeps its name and its output tensor's name now holds the perturbed value, so dumps and
    every consumer see it; the inserted Mul is named ``<node>/standin_perturb``.
    """
    model = onnx.load_from_string(onnx_bytes)
    target = how.get("perturb_node")
    if not target:
        return model
    nodes = list(model.graph.node)
    for index, node in enumerate(nodes):
        if node.name != target:
            continue
        real, raw = node.output[0], node.output[0] + "/standin_raw"
        node.output[0] = raw
        factor = helper.make_tensor(f"{target}/standin_factor", onnx.TensorProto.FLOAT, [], [how["perturb_factor"]])
        model.graph.initializer.append(factor)
        mul = helper.make_node("Mul", [raw, factor.name], [real], name=f"{target}/standin_perturb")
        model.graph.node.insert(index + 1, mul)
        return model
    raise SystemExit(f"[ERROR] stand-in CANN: perturb_node {target!r} is not a node of the model")
