"""TEST DOUBLE. The hang and delay switches of the stand-in tools (ais_bench, atc, aoe): a device that
hangs, or one that is slow, for the models a test picks.

A switch is the environment variable ``STANDIN_<TOOL>_HANG`` / ``STANDIN_<TOOL>_DELAY`` (TOOL: AIS_BENCH,
ATC, AOE) or, so that a running simulated host can be switched without restarting its worker, the file
``<tool>.hang`` / ``<tool>.delay`` in that host's state folder (``STANDIN_NPU_STATE``, standin_device.py).
Both hold rules separated by commas or new lines; every matching rule applies:

- a hang rule is a SELECTOR: the run holds its device (ais_bench, aoe), starts a child process that
  ignores SIGTERM, records ``{"tool": "hang", "user", "pid", "pgid", "child"}`` in STANDIN_RECORD and
  sleeps for ever, so only a SIGKILL of its whole process group ends it;
- a delay rule is SELECTOR=SECONDS: the run holds its device that much longer, then goes on as usual.

SELECTOR: ``*`` (every run), ``CHIP:BATCH`` with ``*`` for either part (``Ascend310P3:2``), or any other
text, a substring of the model path (ais_bench's ``--model``, atc's and aoe's ``--output``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from standin_device import _record, _state_dir

_CHIP_BATCH = re.compile(r"^(Ascend[0-9A-Za-z]+|\*):(\d+|\*)$")
_CHILD = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(60)\n"


def _rules(tool: str, kind: str) -> list[str]:
    text = os.environ.get(f"STANDIN_{tool.upper()}_{kind.upper()}", "")
    path = os.path.join(_state_dir(), f"{tool}.{kind}")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            text += "\n" + fh.read()
    return [rule.strip() for rule in re.split(r"[,\n]", text) if rule.strip()]


def _matches(selector: str, model: str, chip: str | None, batch: int | None) -> bool:
    if selector == "*":
        return True
    match = _CHIP_BATCH.fullmatch(selector)
    if match:
        return match[1] in ("*", chip) and match[2] in ("*", str(batch))
    return selector in model


def delay_seconds(tool: str, model: str, chip: str | None, batch: int | None) -> float:
    total = 0.0
    for rule in _rules(tool, "delay"):
        selector, _, seconds = rule.rpartition("=")
        if selector and _matches(selector, model, chip, batch):
            total += float(seconds)
    return total


def should_hang(tool: str, model: str, chip: str | None, batch: int | None) -> bool:
    return any(_matches(rule, model, chip, batch) for rule in _rules(tool, "hang"))


def hang(tool: str) -> None:
    """Never return: a child that ignores SIGTERM, then this process asleep (a device that never answers)."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD])
    _record({"tool": "hang", "user": tool, "pid": os.getpid(), "pgid": os.getpgid(0), "child": child.pid})
    print(f"[INFO] stand-in {tool}: hang switch on, never returning", flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        time.sleep(60)


def apply(tool: str, model: str, chip: str | None, batch: int | None) -> float:
    """The switches for one run: hang for ever, or wait the delay (call it while the device is held);
    returns the seconds delayed."""
    if should_hang(tool, model, chip, batch):
        hang(tool)
    seconds = delay_seconds(tool, model, chip, batch)
    if seconds > 0:
        time.sleep(seconds)
    return seconds
