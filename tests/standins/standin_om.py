"""TEST DOUBLE. The stand-in ``.om`` format shared by the stand-in atc, aoe and ais_bench.

A real om is an opaque, chip-specific binary; the stand-in one is a magic line, one JSON header line
(soc_version, batch, output_type, input name and shape) and then the ONNX bytes it was made from, so the
stand-in ais_bench can compute real outputs with ONNX Runtime.
"""

from __future__ import annotations

import json
import os
import sys
import time

MAGIC = b"STANDIN-OM v1\n"


def write_om(path: str, header: dict, onnx_bytes: bytes) -> None:
    tmp = f"{path}.part{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(MAGIC)
        fh.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        fh.write(onnx_bytes)
    os.replace(tmp, path)


def read_om(path: str) -> tuple[dict, bytes]:
    """(header, onnx bytes); ValueError for anything that is not a stand-in om."""
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a stand-in om")
        header = json.loads(fh.readline())
        return header, fh.read()


def record_invocation(tool: str) -> None:
    """Append this invocation to $STANDIN_RECORD (one JSON line), so tests can see what ran."""
    record = os.environ.get("STANDIN_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tool": tool, "argv": sys.argv[1:], "time": time.time()}) + "\n")


def parse_flags(argv: list[str]) -> tuple[dict, list[str]]:
    """atc/aoe take ``--name=value`` (``--name value`` also accepted); returns (flags, bad tokens)."""
    flags, bad = {}, []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            bad.append(token)
        elif "=" in token:
            name, value = token[2:].split("=", 1)
            flags[name] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[token[2:]] = argv[i + 1]
            i += 1
        else:
            flags[token[2:]] = ""
        i += 1
    return flags, bad


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``actual_input_1:1,3,512,1024`` -> (name, dims); ValueError when malformed (quotes included)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise ValueError(text)
    values = [int(d) for d in dims.split(",")]
    if any(v <= 0 and v != -1 for v in values):
        raise ValueError(text)
    return name, values
