"""ERFNet exactly as upstream (Eromera/erfnet_pytorch@d4a46faf, eval/erfnet.py) and checkpoint loading.

The upstream checkpoint is a state dict saved from a DataParallel model, so its keys start with
``module.``; the 2017 file predates BatchNorm's ``num_batches_tracked``. Loading is all-or-nothing:
every key is checked before a single tensor is copied, so a wrong file never yields a half-loaded model.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInput, first_line

NUM_CLASSES = 20
INPUT_SHAPE = (3, 512, 1024)
BN_EPS = 1e-3


class DownsamplerBlock(nn.Module):
    def __init__(self, ninput: int, noutput: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ninput, noutput - ninput, (3, 3), stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(noutput, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class non_bottleneck_1d(nn.Module):  # upstream's name, kept so checkpoint keys read the same
    def __init__(self, chann: int, dropprob: float, dilated: int) -> None:
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(chann, chann, (3, 1), stride=1, padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(chann, chann, (1, 3), stride=1, padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(chann, eps=BN_EPS)
        self.conv3x1_2 = nn.Conv2d(
            chann, chann, (3, 1), stride=1, padding=(dilated, 0), bias=True, dilation=(dilated, 1)
        )
        self.conv1x3_2 = nn.Conv2d(
            chann, chann, (1, 3), stride=1, padding=(0, dilated), bias=True, dilation=(1, dilated)
        )
        self.bn2 = nn.BatchNorm2d(chann, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropprob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.bn2(self.conv1x3_2(out))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


class Encoder(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        self.layers = nn.ModuleList([DownsamplerBlock(16, 64)])
        self.layers.extend(non_bottleneck_1d(64, 0.03, 1) for _ in range(5))
        self.layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            self.layers.extend(non_bottleneck_1d(128, 0.3, d) for d in (2, 4, 8, 16))
        # Present in the checkpoint, used only by the encoder-only training stage.
        self.output_conv = nn.Conv2d(128, num_classes, 1, stride=1, padding=0, bias=True)

    def forward(self, x: torch.Tensor, predict: bool = False) -> torch.Tensor:
        out = self.initial_block(x)
        for layer in self.layers:
            out = layer(out)
        result: torch.Tensor = self.output_conv(out) if predict else out
        return result


class UpsamplerBlock(nn.Module):
    def __init__(self, ninput: int, noutput: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(ninput, noutput, 3, stride=2, padding=1, output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(noutput, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Decoder(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                UpsamplerBlock(128, 64),
                non_bottleneck_1d(64, 0, 1),
                non_bottleneck_1d(64, 0, 1),
                UpsamplerBlock(64, 16),
                non_bottleneck_1d(16, 0, 1),
                non_bottleneck_1d(16, 0, 1),
            ]
        )
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, padding=0, output_padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        result: torch.Tensor = self.output_conv(x)
        return result


class ERFNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.encoder = Encoder(num_classes)
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor, only_encode: bool = False) -> torch.Tensor:
        result: torch.Tensor = self.encoder(x, predict=True) if only_encode else self.decoder(self.encoder(x))
        return result


# --------------------------------------------------------------------------------------------------
# checkpoints


def _read_state_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises anything from IndexError to UnpicklingError on junk
        raise BadInput(
            f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: "
            f"{first_line(exc) if str(exc).strip() else 'unreadable'})"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInput(f"{path} is not an ERFNet state dict (expected a mapping of names to tensors)")
    return obj


def _strip_module_prefix(state: dict[str, Any]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k[len("module.") :] if k.startswith("module.") else k, v) for k, v in state.items())


def _summarise(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_finite_state(state: dict[str, Any], source: str = "checkpoint") -> None:
    """Refuse NaN/Inf anywhere in the checkpoint (a BatchNorm statistic, say), naming the tensors."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BadInput(f"{source} holds NaN or Inf values in {_summarise(bad)}")


def validate_state_dict(state: dict[str, Any], model: ERFNet, source: str = "checkpoint") -> None:
    """Raise BadInput naming every missing, unexpected or mis-shaped key (num_batches_tracked optional)."""
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = sorted(
        f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_summarise(wrong_shape)}")
    if problems:
        raise BadInput(f"{source} does not match ERFNet({NUM_CLASSES}): " + "; ".join(problems))


def load_erfnet(path: str | os.PathLike[str]) -> ERFNet:
    """Build ERFNet(20) in eval mode from an upstream-layout checkpoint, or raise BadInput."""
    path = Path(path)
    state = _strip_module_prefix(_read_state_dict(path))
    model = ERFNet(NUM_CLASSES)
    validate_state_dict(state, model, source=str(path))
    check_finite_state(state, source=str(path))
    full = model.state_dict()
    full.update({k: v.to(full[k].dtype) for k, v in state.items()})
    model.load_state_dict(full, strict=True)
    return model.eval()


def write_random_checkpoint(
    path: str | os.PathLike[str], seed: int = 0, *, with_num_batches_tracked: bool = False
) -> Path:
    """Write a RANDOMLY INITIALISED, UNTRAINED ERFNet checkpoint in the upstream layout.

    It exists for tests and the demo; its predictions are noise. BatchNorm statistics and scales are
    randomised too (including tiny and negative gammas) so the export and the BN fix have real work.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ERFNet(NUM_CLASSES)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=gen) * 1.5 + 0.25
            # A few scales inside the guide's |gamma| <= 0.01 band, one of them negative.
            module.weight.data[0] = 0.004
            if n > 2:
                module.weight.data[1] = -0.003
            module.bias.data = torch.randn(n, generator=gen) * 0.1
            assert module.running_mean is not None and module.running_var is not None  # track_running_stats
            module.running_mean.data = torch.randn(n, generator=gen) * 0.1
            module.running_var.data = torch.rand(n, generator=gen) * 0.5 + 0.5
    state = OrderedDict(
        (f"module.{k}", v.clone())
        for k, v in model.state_dict().items()
        if with_num_batches_tracked or not k.endswith("num_batches_tracked")
    )
    from .fsutil import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)
