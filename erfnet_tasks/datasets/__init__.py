"""Datasets the pipeline measures on: their layout, label table, naming rule and class names.

A dataset module (``cityscapes``) exposes ``LABEL_SPEC``, what evaluation needs to score predictions
against its labels, and ``dataset_dirs``/``preprocess`` for the pipeline. ``evaluate`` takes a
``LabelSpec`` and never imports a dataset module; the class names travel with each run (``Prepared``
and the run document), so readers such as the plugin need no dataset module either.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..fsutil import StrPath

if TYPE_CHECKING:  # for the annotation only: readers of run documents need no PIL
    from PIL import Image

DEFAULT_DATASET = "cityscapes"


@dataclass(frozen=True)
class LabelSpec:
    """How one dataset's labels are scored (every callable is a module-level function: worker
    processes receive the spec by pickling)."""

    name: str
    class_names: tuple[str, ...]  # the scored classes, in label order
    ignore_index: int  # scores nowhere; also the model's last output channel
    void_value: int  # what label files hold for "no class"; read as ignore_index
    size: tuple[int, int]  # (width, height) of a prediction
    label_name: Callable[[StrPath], str]  # an input file's name -> its label file's name
    index_labels: Callable[[Path], dict[str, Path]]  # label file name -> path, under a folder
    open_label: Callable[[Path], Image.Image]  # a label file as a PIL image of class ids
    label_size: Callable[[int, int], tuple[int, int]]  # a label's (w, h) -> its size after resizing

    @property
    def channels(self) -> int:
        return self.ignore_index + 1


def label_spec(name: str = DEFAULT_DATASET) -> LabelSpec:
    spec: LabelSpec = importlib.import_module(f"{__name__}.{name}").LABEL_SPEC
    return spec
