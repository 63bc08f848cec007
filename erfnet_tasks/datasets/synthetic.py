"""SYNTHETIC street-like images and labels in the Cityscapes layout, for tests and the demo.

They are not Cityscapes data: an mIoU measured on them says nothing about the model. The tree carries
``cityscapes.SYNTHETIC_MARKER`` at its root, so every run on it is recorded as synthetic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from ..errors import BadInput
from ..fsutil import StrPath, atomic_path, write_json_atomic
from .cityscapes import LABEL_IDS_SUFFIX, SYNTHETIC_MARKER, TRAIN_IDS_SUFFIX, label_ids_to_train_ids

SAMPLE_CITIES = ("frankfurt", "lindau", "munster")
# (labelId, colour) of the regions drawn; includes ids without a trainId so that 255 occurs.
_SCENE_CLASSES = [
    (7, (128, 64, 128)),
    (8, (244, 35, 232)),
    (11, (70, 70, 70)),
    (12, (102, 102, 156)),
    (13, (190, 153, 153)),
    (17, (153, 153, 153)),
    (19, (250, 170, 30)),
    (20, (220, 220, 0)),
    (21, (107, 142, 35)),
    (22, (152, 251, 152)),
    (23, (70, 130, 180)),
    (24, (220, 20, 60)),
    (25, (255, 0, 0)),
    (26, (0, 0, 142)),
    (27, (0, 0, 70)),
    (28, (0, 60, 100)),
    (31, (0, 80, 100)),
    (32, (0, 0, 230)),
    (33, (119, 11, 32)),
    (0, (0, 0, 0)),
    (1, (0, 0, 0)),
    (4, (111, 74, 0)),
    (9, (250, 170, 160)),
]


def _sample_scene(rng: np.random.Generator, width: int, height: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """A street-like layout: sky, buildings, road, then random objects; returns (labelIds, RGB)."""
    ids = Image.new("L", (width, height), 23)  # sky
    draw = ImageDraw.Draw(ids)
    horizon = int(height * rng.uniform(0.35, 0.55))
    x = 0
    while x < width:  # a skyline of buildings, walls and vegetation
        w = int(width * rng.uniform(0.05, 0.2))
        top = int(horizon * rng.uniform(0.1, 0.8))
        draw.rectangle([x, top, x + w, horizon], fill=int(rng.choice([11, 11, 12, 21])))
        x += w
    draw.rectangle([0, horizon, width, height], fill=7)  # road
    draw.polygon([(0, horizon), (int(width * 0.2), horizon), (0, height)], fill=8)  # sidewalk
    for _ in range(int(rng.integers(8, 20))):
        label = _SCENE_CLASSES[int(rng.integers(len(_SCENE_CLASSES)))][0]
        cx, cy = rng.uniform(0, width), rng.uniform(horizon * 0.6, height)
        rx, ry = width * rng.uniform(0.01, 0.08), height * rng.uniform(0.02, 0.15)
        if rng.random() < 0.5:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=label)
        else:
            pts = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in np.sort(rng.uniform(0, 2 * np.pi, 6))]
            draw.polygon(pts, fill=label)
    for _ in range(3):  # one-pixel poles: thin structures are where nearest-neighbour parity matters
        px = int(rng.integers(0, width))
        draw.line([(px, int(height * 0.2)), (px, horizon + 10)], fill=17, width=1)
    label_ids = np.asarray(ids)

    palette = np.zeros((256, 3), dtype=np.float32)
    for label, colour in _SCENE_CLASSES:
        palette[label] = colour
    base = palette[label_ids]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.75 + 0.35 * (xx / width) * (1 - yy / height) + 0.1 * np.sin(xx / (width / 7) + yy / (height / 3))
    rgb = base * shade[..., None] + rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    speckle = rng.normal(0, 3, (height, width, 3)).astype(np.float32)  # sensor noise after the blur
    photo_arr = np.clip(np.asarray(photo, dtype=np.float32) + speckle, 0, 255).astype(np.uint8)
    return label_ids, photo_arr


def write_sample_data(out_dir: StrPath, images: int, size: tuple[int, int] = (2048, 1024), seed: int = 0) -> Path:
    """A SYNTHETIC Cityscapes-layout tree (leftImg8bit/val, gtFine/val) for tests and the demo."""
    if images <= 0:
        raise BadInput("--images must be positive")
    width, height = size
    if width < 8 or height < 8:
        raise BadInput(f"sample size {width}x{height} is too small")
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    for i in range(images):
        city = SAMPLE_CITIES[i % len(SAMPLE_CITIES)]
        stem = f"{city}_000000_{i:06d}"
        label_ids, photo = _sample_scene(rng, width, height)
        img_path = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        gt = root / "gtFine" / "val" / city
        for path, arr in (
            (img_path, photo),
            (gt / f"{stem}{LABEL_IDS_SUFFIX}", label_ids),
            (gt / f"{stem}{TRAIN_IDS_SUFFIX}", label_ids_to_train_ids(label_ids)),
        ):
            with atomic_path(path) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)
    write_json_atomic(
        root / SYNTHETIC_MARKER,
        {
            "synthetic": True,
            "generator": "erfnet sample-data",
            "images": images,
            "size": [width, height],
            "seed": seed,
            "note": "SYNTHETIC images and labels in the Cityscapes layout; not Cityscapes data",
        },
    )
    return root
