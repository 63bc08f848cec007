"""Cityscapes as the guide uses it: discovery, the trainId table, ErfNet_preprocess.py, synthetic samples.

The transform is the guide's, bit for bit (guide-semantics.md, "Preprocessing"): PIL ``convert('RGB')``,
torchvision ``Resize(512, BILINEAR)`` -- on a PIL image that *is* PIL's ``resize`` to the size computed
below -- then ``ToTensor()``: uint8 / 255 in float32, CHW, written raw as ``PREP_DIR/<stem>.bin``.

Resumable: every output is written atomically, so an output that exists with its exact expected size
and is not older than its source is complete and is skipped on a rerun.

The manifest (``PREP_DIR/manifest.json``) is the dataset's fingerprint for later steps:
``fingerprint`` is sha256 over the sorted lines ``<name>\\t<sha256 of name.bin>\\t<sha256 of its
label output>\\n`` -- the bytes the model and the evaluator actually consume, so it changes when the
data *or* the transform changes, and does not change when files are merely moved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .errors import ErfnetError
from .fsutil import atomic_path, read_json, sha256_file, write_json_atomic
from .parallel import run_parallel

SHORT_SIDE = 512
INPUT_SIZE = (1024, 512)  # (width, height) the model takes
BIN_BYTES = 3 * INPUT_SIZE[1] * INPUT_SIZE[0] * 4  # 6,291,456
IMAGE_SUFFIX = "leftImg8bit"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
MANIFEST_NAME = "manifest.json"
SYNTHETIC_MARKER = "erfnet-synthetic-dataset.json"
IGNORE_TRAIN_ID = 255
NUM_TRAIN_CLASSES = 19

# PIL failures on unreadable or truncated files come as any of these, depending on where decoding stops.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _train_labels():
    from cityscapesscripts.helpers.labels import labels

    return labels


CLASS_NAMES: tuple[str, ...] = tuple(
    name for _, name in sorted((l.trainId, l.name) for l in _train_labels() if 0 <= l.trainId < NUM_TRAIN_CLASSES))


def _label_id_lut() -> np.ndarray:
    """labelId -> trainId for every uint8 value; ids without a trainId (or unknown) become 255."""
    lut = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
    for label in _train_labels():
        if 0 <= label.id < 256 and 0 <= label.trainId < NUM_TRAIN_CLASSES:
            lut[label.id] = label.trainId
    return lut


_LABEL_ID_LUT = _label_id_lut()
_TO_FLOAT = np.arange(256, dtype=np.float32) / np.float32(255)  # ToTensor's float32 division, tabulated


def label_ids_to_train_ids(arr: np.ndarray) -> np.ndarray:
    """What cityscapesScripts' createTrainIdLabelImgs draws, from the labelIds image instead of polygons."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ErfnetError("labelIds outside 0..255")
        arr = arr.astype(np.uint8)
    return _LABEL_ID_LUT[arr]


# ------------------------------------------------------------------------------------------- sizes

def resized_size(width: int, height: int, short: int = SHORT_SIDE) -> tuple[int, int]:
    """torchvision ``Resize(short)``'s output (width, height): shorter side to ``short``, long side truncated."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def image_stem(path: str | os.PathLike) -> str:
    """The guide's output name: the file name without its extension."""
    return Path(path).name.rsplit(".", 1)[0]


def label_name_for(infile: str | os.PathLike) -> str:
    """ErfNet_postprocess.py's rule: ``basename.split('.')[0][:-11] + 'gtFine_labelTrainIds.png'``."""
    return os.path.basename(str(infile)).split(".")[0][: -len(IMAGE_SUFFIX)] + TRAIN_IDS_SUFFIX[1:]


# ------------------------------------------------------------------------------------- one image

def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")  # convert() loads fully, so truncation surfaces here


def to_input(rgb: Image.Image) -> np.ndarray:
    """Resize(512, BILINEAR) + ToTensor on an RGB PIL image: float32 (3, 512, 1024)."""
    size = resized_size(*rgb.size)
    if size != INPUT_SIZE:
        raise ErfnetError(f"image of {rgb.size[0]}x{rgb.size[1]} resizes to {size[0]}x{size[1]}, "
                          f"not {INPUT_SIZE[0]}x{INPUT_SIZE[1]}")
    if rgb.size != size:  # torchvision returns the image untouched when the short side already fits
        rgb = rgb.resize(size, Image.BILINEAR)
    hwc = np.asarray(rgb, dtype=np.uint8)
    return _TO_FLOAT[hwc.transpose(2, 0, 1)]


def preprocess_one(path: str | os.PathLike) -> np.ndarray:
    """The guide's transform for one image file (benchmarks and tests call this directly)."""
    return to_input(_open_rgb(Path(path)))


def load_label_image(path: Path) -> np.ndarray:
    """A label PNG as a 2-D uint8 array, fully decoded."""
    with Image.open(path) as im:
        im.load()
        if im.mode not in ("L", "P"):
            raise ValueError(f"label mode {im.mode}, expected 8-bit single channel")
        return np.asarray(im)


# ------------------------------------------------------------------------------------- discovery

@dataclass(frozen=True)
class Pair:
    name: str                 # stem of the image = stem of the .bin
    image: Path
    label: Path | None        # *_gtFine_labelTrainIds.png if present, else *_gtFine_labelIds.png
    label_out_name: str


def _walk_files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _index_labels(gt_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    train, ids = {}, {}
    for path in _walk_files(gt_dir):
        if path.name.endswith(TRAIN_IDS_SUFFIX):
            train.setdefault(path.name, path)
        elif path.name.endswith(LABEL_IDS_SUFFIX):
            ids.setdefault(path.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX, path)
    return train, ids


def discover(img_dir, gt_dir) -> tuple[list[Pair], list[dict]]:
    """Pair every ``*png`` under IMG_DIR with its label under GT_DIR; return (pairs, bad entries)."""
    img_dir, gt_dir = Path(img_dir), Path(gt_dir)
    for d, what in ((img_dir, "IMG_DIR"), (gt_dir, "GT_DIR")):
        if not d.is_dir():
            raise ErfnetError(f"{what} {d} is not a directory")
    images = [p for p in _walk_files(img_dir) if p.name.endswith("png")]
    if not images:
        raise ErfnetError(f"IMG_DIR {img_dir} holds no *png image")
    train, ids = _index_labels(gt_dir)
    bad: list[dict] = []
    stems = Counter(image_stem(p) for p in images)
    pairs, wanted = [], set()
    for path in images:
        name, label_name = image_stem(path), label_name_for(path)
        wanted.add(label_name)
        if stems[name] > 1:
            bad.append({"path": str(path), "reason": f"another image also becomes {name}.bin"})
            continue
        label = train.get(label_name) or ids.get(label_name)
        if label is None:
            bad.append({"path": str(path), "reason": f"no label {label_name} (or its labelIds) under {gt_dir}"})
            continue
        pairs.append(Pair(name, path, label, label_name))
    for label_name, path in sorted({**ids, **train}.items()):
        if label_name not in wanted:
            bad.append({"path": str(path), "reason": "label without an image"})
    return pairs, bad


def dataset_dirs(root) -> tuple[Path, Path]:
    """(leftImg8bit/val, gtFine/val) of a Cityscapes tree, as the guide's commands name them."""
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / "val", root / "gtFine" / "val"
    missing = [str(d) for d in (img_dir, gt_dir) if not d.is_dir()]
    if missing:
        raise ErfnetError(f"not a Cityscapes tree, missing: {', '.join(missing)}")
    return img_dir, gt_dir


def is_synthetic(img_dir) -> bool:
    """True where ``write_sample_data`` made the tree (its marker sits at the tree's root)."""
    here = Path(img_dir).resolve()
    return any((d / SYNTHETIC_MARKER).is_file() for d in (here, *here.parents))


# ------------------------------------------------------------------------------------ preprocess

def _is_complete(out: Path, source: Path, size: int | None) -> bool:
    try:
        st = out.stat()
    except FileNotFoundError:
        return False
    if size is not None and st.st_size != size:
        return False
    return st.st_mtime >= source.stat().st_mtime


def _write_bin(pair: Pair, prep_dir: Path) -> tuple[str, bool]:
    out = prep_dir / f"{pair.name}.bin"
    if _is_complete(out, pair.image, BIN_BYTES):
        return sha256_file(out), False
    data = preprocess_one(pair.image).tobytes()
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), True


def _check_label(arr: np.ndarray, image_size: tuple[int, int]) -> None:
    if (arr.shape[1], arr.shape[0]) != image_size:
        raise ValueError(f"label is {arr.shape[1]}x{arr.shape[0]}, its image {image_size[0]}x{image_size[1]}")
    counts = np.bincount(arr.ravel(), minlength=256)
    if counts[NUM_TRAIN_CLASSES:IGNORE_TRAIN_ID].any():
        raise ValueError("trainIds outside 0..18 and 255")


def _write_label(pair: Pair, gt_out_dir: Path, image_size: tuple[int, int]) -> str:
    out = gt_out_dir / pair.label_out_name
    derive = not pair.label.name.endswith(TRAIN_IDS_SUFFIX)
    if _is_complete(out, pair.label, None if derive else pair.label.stat().st_size):
        return sha256_file(out)
    arr = load_label_image(pair.label)
    if derive:
        arr = label_ids_to_train_ids(arr)
    _check_label(arr, image_size)
    with atomic_path(out) as tmp:
        if derive:
            Image.fromarray(arr).save(tmp, format="PNG")
        else:
            shutil.copyfile(pair.label, tmp)
    return sha256_file(out)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _process_pair(job) -> dict:
    """Worker: one image and its label; never raises for bad data, reports it instead."""
    pair, prep_dir, gt_out_dir = job
    try:
        size = _image_size(pair.image)
        if resized_size(*size) != INPUT_SIZE:
            raise ValueError(f"unexpected size {size[0]}x{size[1]} (the guide's resize makes "
                             f"{'x'.join(map(str, resized_size(*size)))}, the model takes 1024x512)")
        bin_sha, written = _write_bin(pair, prep_dir)
    except ErfnetError as exc:
        return {"name": pair.name, "bad": {"path": str(pair.image), "reason": str(exc)}}
    except _DECODE_ERRORS as exc:
        return {"name": pair.name, "bad": {"path": str(pair.image), "reason": _reason(exc)}}
    try:
        label_sha = _write_label(pair, gt_out_dir, size)
    except (ErfnetError, *_DECODE_ERRORS) as exc:
        return {"name": pair.name, "bad": {"path": str(pair.label), "reason": _reason(exc)}}
    return {"name": pair.name, "bin_sha256": bin_sha, "label_sha256": label_sha, "written": written}


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"unreadable or truncated PNG ({text})"


def _format_bad(bad: list[dict]) -> str:
    return "; ".join(f"{b['path']}: {b['reason']}" for b in bad)


def _remove_stale_bins(prep_dir: Path, names: set[str]) -> int:
    """An ais_bench run feeds every .bin in the folder: one left from another selection must go."""
    removed = 0
    for path in prep_dir.glob("*.bin"):
        if path.stem not in names:
            path.unlink()
            removed += 1
    return removed


def fingerprint(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["name"]):
        digest.update(f"{row['name']}\t{row['bin_sha256']}\t{row['label_sha256']}\n".encode())
    return digest.hexdigest()


def preprocess(img_dir, prep_dir, gt_dir, gt_out_dir, workers: int | None = None, limit: int | None = None,
               skip_bad: bool = False, progress: bool = True) -> dict:
    """ErfNet_preprocess.py: IMG_DIR -> PREP_DIR/*.bin, labels -> GT_OUT_DIR; returns the manifest."""
    pairs, bad = discover(img_dir, gt_dir)
    if limit is not None:
        pairs = pairs[:limit]
    prep_dir, gt_out_dir = Path(prep_dir), Path(gt_out_dir)
    prep_dir.mkdir(parents=True, exist_ok=True)
    gt_out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(pair, prep_dir, gt_out_dir) for pair in pairs]
    rows, written = [], 0
    for result in run_parallel(_process_pair, jobs, workers, progress, "preprocess"):
        if "bad" in result:
            bad.append(result["bad"])
        else:
            rows.append(result)
            written += result["written"]
    bad.sort(key=lambda b: b["path"])
    if bad and not skip_bad:
        raise ErfnetError(f"{len(bad)} bad input file(s) (rerun with --skip-bad to record and skip them): "
                          f"{_format_bad(bad)}")
    if not rows:
        raise ErfnetError(f"no usable image under {img_dir}: {_format_bad(bad)}")
    names = sorted(r["name"] for r in rows)
    removed = _remove_stale_bins(prep_dir, set(names))
    manifest = {
        "images": len(names),
        "names": names,
        "fingerprint": fingerprint(rows),
        "fingerprint_method": "sha256 over sorted '<name>\\t<sha256 of .bin>\\t<sha256 of label>\\n'",
        "bad": bad,
        "img_dir": str(img_dir),
        "gt_dir": str(gt_dir),
        "gt_out_dir": str(gt_out_dir),
        "limit": limit,
        "synthetic": is_synthetic(img_dir),
    }
    write_json_atomic(prep_dir / MANIFEST_NAME, manifest)
    manifest["written"], manifest["stale_removed"] = written, removed  # for the caller's report only
    return manifest


def read_manifest(prep_dir) -> dict:
    path = Path(prep_dir) / MANIFEST_NAME
    data = read_json(path, "a preprocessing manifest",
                     missing=f"no {MANIFEST_NAME} in {prep_dir}: run `erfnet preprocess` first")
    missing = [k for k in ("images", "names", "fingerprint", "bad") if k not in data]
    if missing:
        raise ErfnetError(f"{path} lacks {', '.join(missing)}")
    return data


# ----------------------------------------------------------------------------------- sample data

SAMPLE_CITIES = ("frankfurt", "lindau", "munster")
# (labelId, colour) of the regions drawn; includes ids without a trainId so that 255 occurs.
_SCENE_CLASSES = [(7, (128, 64, 128)), (8, (244, 35, 232)), (11, (70, 70, 70)), (12, (102, 102, 156)),
                  (13, (190, 153, 153)), (17, (153, 153, 153)), (19, (250, 170, 30)), (20, (220, 220, 0)),
                  (21, (107, 142, 35)), (22, (152, 251, 152)), (23, (70, 130, 180)), (24, (220, 20, 60)),
                  (25, (255, 0, 0)), (26, (0, 0, 142)), (27, (0, 0, 70)), (28, (0, 60, 100)),
                  (31, (0, 80, 100)), (32, (0, 0, 230)), (33, (119, 11, 32)), (0, (0, 0, 0)),
                  (1, (0, 0, 0)), (4, (111, 74, 0)), (9, (250, 170, 160))]


def _sample_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
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


def write_sample_data(out_dir, images: int, size: tuple[int, int] = (2048, 1024), seed: int = 0) -> Path:
    """A SYNTHETIC Cityscapes-layout tree (leftImg8bit/val, gtFine/val) for tests and the demo."""
    if images <= 0:
        raise ErfnetError("--images must be positive")
    width, height = size
    if width < 8 or height < 8:
        raise ErfnetError(f"sample size {width}x{height} is too small")
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    for i in range(images):
        city = SAMPLE_CITIES[i % len(SAMPLE_CITIES)]
        stem = f"{city}_000000_{i:06d}"
        label_ids, photo = _sample_scene(rng, width, height)
        img_path = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        gt = root / "gtFine" / "val" / city
        for path, arr in ((img_path, photo), (gt / f"{stem}{LABEL_IDS_SUFFIX}", label_ids),
                          (gt / f"{stem}{TRAIN_IDS_SUFFIX}", label_ids_to_train_ids(label_ids))):
            with atomic_path(path) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)
    write_json_atomic(root / SYNTHETIC_MARKER, {
        "synthetic": True, "generator": "erfnet sample-data", "images": images,
        "size": [width, height], "seed": seed,
        "note": "SYNTHETIC images and labels in the Cityscapes layout; not Cityscapes data",
    })
    return root
