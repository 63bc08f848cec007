"""Targets: the columns of the guide's tables, and the backend that measures each.

``Ascend310``, ``Ascend310P3`` ...   the NPU backend (atc + ais_bench) for that soc_version
``Ascend310P3+AOE``                  the same, compiled with AOE tuning (the guide's "310P-AOE" column)
``cpu`` / ``cuda``                   ONNX Runtime, the embedded default
``torch-cpu`` / ``torch-cuda``       PyTorch online inference (the guide's T4 column ran this way)
``auto``                             every chip ``npu-smi info`` reports, else ``cpu``

The host target names come from the backend registry (each backend's ``TARGETS``), so a new host
backend adds its targets, and the trigger form's pattern, without an edit here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .backends import host_targets, npu_backend
from .chips import CHIP_PATTERN
from .errors import BadInput

AOE_SUFFIX = "+AOE"
AUTO = "auto"


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # a registered backend (backends.REGISTRY)
    device: str  # cpu | cuda | npu
    chip: str | None = None
    aoe: bool = False

    @property
    def on_npu(self) -> bool:
        return self.device == "npu"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_target(name: str) -> Target:
    if not isinstance(name, str):
        raise BadInput(f"target must be a string, got {name!r}")
    hosts = host_targets()
    if name in hosts:
        backend, device = hosts[name]
        return Target(name, backend, device)
    chip, aoe = (name[: -len(AOE_SUFFIX)], True) if name.endswith(AOE_SUFFIX) else (name, False)
    if CHIP_PATTERN.fullmatch(chip):
        return Target(name, npu_backend().NAME, "npu", chip=chip, aoe=aoe)
    known = ", ".join([*hosts, AUTO, "Ascend<chip>", "Ascend<chip>+AOE"])
    raise BadInput(f"unknown target {name!r} (expected one of: {known})")


def expand_targets(names: list[str], *, aoe: bool, detected_chips: list[str]) -> list[Target]:
    """Resolve ``auto``, add an AOE column per chip when asked, drop duplicates, keep the order."""
    if not names:
        raise BadInput("no targets given")
    expanded: list[str] = []
    for name in names:
        if name == AUTO:
            expanded.extend(detected_chips or ["cpu"])
        else:
            expanded.append(name)
    targets: list[Target] = []
    for name in expanded:
        target = parse_target(name)
        targets.append(target)
        if aoe and target.on_npu and not target.aoe:
            targets.append(parse_target(target.name + AOE_SUFFIX))
    seen, unique = set(), []
    for t in targets:
        if t.name not in seen:
            seen.add(t.name)
            unique.append(t)
    return unique


def form_pattern() -> str:
    """The trigger form's JSON-schema pattern for one target: what ``parse_target`` accepts, or auto."""
    # JS regexes refuse an escaped -
    names = "|".join(re.escape(n).replace("\\-", "-") for n in [AUTO, *host_targets()])
    return rf"^({names}|{CHIP_PATTERN.pattern[1:-1]}(\{AOE_SUFFIX})?)$"


def host_target_labels() -> dict[str, str]:
    """Each host target with the backend and device that measure it, as the trigger form lists them."""
    return {name: f"{name} ({backend} on {device})" for name, (backend, device) in host_targets().items()}
