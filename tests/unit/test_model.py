"""ERFNet and the upstream checkpoint layout (reference/erfnet-checkpoint-keys.tsv)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from erfnet_tasks.cli import main
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.model import ERFNet, load_erfnet, write_random_checkpoint

KEYS_TSV = Path(__file__).resolve().parents[1] / "data" / "erfnet-checkpoint-keys.tsv"


def upstream_layout() -> dict[str, tuple[list[int], str]]:
    rows = {}
    for line in KEYS_TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows[key] = (json_list(shape), dtype)
    return rows


def json_list(text: str) -> list[int]:
    inner = text.strip()[1:-1].strip()
    return [int(x) for x in inner.split(",")] if inner else []


def test_random_checkpoint_has_exactly_the_upstream_keys_and_shapes(tmp_path):
    path = write_random_checkpoint(tmp_path / "ck.pth", with_num_batches_tracked=True)
    state = torch.load(path, weights_only=True)
    expected = upstream_layout()
    assert list(state) == list(expected)  # same keys, same order as the upstream file
    for key, tensor in state.items():
        shape, dtype = expected[key]
        assert list(tensor.shape) == shape, key
        assert str(tensor.dtype).replace("torch.", "") == dtype, key


def test_default_random_checkpoint_is_the_2017_layout_without_num_batches_tracked(random_checkpoint):
    state = torch.load(random_checkpoint, weights_only=True)
    assert all(k.startswith("module.") for k in state)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    assert "module.encoder.output_conv.weight" in state


def test_loads_every_accepted_layout_to_the_same_network(tmp_path, random_checkpoint):
    state = torch.load(random_checkpoint, weights_only=True)
    bare = OrderedDict((k[len("module.") :], v) for k, v in state.items())
    variants = {
        "prefixed.pth": state,
        "bare.pth": bare,
        "wrapped.pth": {"state_dict": state, "epoch": 150},
    }
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    outputs = []
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        model = load_erfnet(tmp_path / name)
        assert not model.training
        with torch.inference_mode():
            outputs.append(model(x))
    assert outputs[0].shape == (1, 20, 64, 128)
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    # The loaded tensors are the file's tensors, not a fresh initialisation.
    model = load_erfnet(tmp_path / "prefixed.pth")
    assert torch.equal(model.decoder.output_conv.weight, state["module.decoder.output_conv.weight"])
    assert torch.equal(model.encoder.layers[1].bn1.running_var, state["module.encoder.layers.1.bn1.running_var"])


def test_batchnorm_eps_and_block_structure_follow_upstream():
    model = ERFNet()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)
    dilations = [layer.conv3x1_2.dilation[0] for layer in model.encoder.layers if hasattr(layer, "conv3x1_2")]
    assert dilations == [1] * 5 + [2, 4, 8, 16] * 2
    assert sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.encoder.output_conv.parameters()
    ) == pytest.approx(2.07e6, rel=0.01)


def _bad_checkpoints(tmp_path: Path, state: dict) -> dict[str, tuple[Path, str]]:
    cases = {}
    p = tmp_path / "text.pth"
    p.write_text("this is not a checkpoint\n")
    cases["not a checkpoint"] = (p, "not a PyTorch checkpoint")
    p = tmp_path / "truncated.pth"
    torch.save(state, p)
    p.write_bytes(p.read_bytes()[:5000])
    cases["truncated"] = (p, "not a PyTorch checkpoint")
    missing = OrderedDict(state)
    del missing["module.decoder.output_conv.bias"]
    p = tmp_path / "missing.pth"
    torch.save(missing, p)
    cases["missing key"] = (p, "missing keys: decoder.output_conv.bias")
    extra = OrderedDict(state)
    extra["module.decoder.extra_head.weight"] = torch.zeros(3)
    p = tmp_path / "extra.pth"
    torch.save(extra, p)
    cases["unexpected key"] = (p, "unexpected keys: decoder.extra_head.weight")
    wrong = OrderedDict(state)
    wrong["module.decoder.output_conv.weight"] = torch.zeros(16, 19, 2, 2)
    p = tmp_path / "wrong_shape.pth"
    torch.save(wrong, p)
    cases["wrong shape"] = (p, "decoder.output_conv.weight [16, 19, 2, 2] (expected [16, 20, 2, 2])")
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    cases["not a state dict"] = (p, "not an ERFNet state dict")
    cases["no file"] = (tmp_path / "absent.pth", "checkpoint not found")
    return cases


def test_every_bad_checkpoint_is_one_line_naming_the_problem(tmp_path, random_checkpoint):
    state = torch.load(random_checkpoint, weights_only=True)
    for label, (path, expected) in _bad_checkpoints(tmp_path, state).items():
        with pytest.raises(ErfnetError) as info:
            load_erfnet(path)
        message = str(info.value)
        assert expected in message, (label, message)
        assert "\n" not in message, label


def test_cli_reports_a_bad_checkpoint_without_traceback(tmp_path, random_checkpoint, capsys):
    state = torch.load(random_checkpoint, weights_only=True)
    del state["module.encoder.initial_block.bn.weight"]
    torch.save(state, tmp_path / "bad.pth")
    code = main(["export", str(tmp_path / "bad.pth"), str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("erfnet: error:")
    assert "encoder.initial_block.bn.weight" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.onnx").exists()
