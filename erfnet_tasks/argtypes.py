"""argparse ``type=`` helpers shared by ``erfnet`` and ``erfnet results`` (a module of their own, so
that neither CLI module imports the other)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` in pixels."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return width, height


def percent(text: str) -> float:
    """A percentage or a number of mIoU points (0 to 100), as the fraction the library works in."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 100, got {text!r}") from exc
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 100, got {text!r}")
    return value / 100.0
