"""Cityscapes as the guide uses it: discovery, the trainId table, ErfNet_preprocess.py, synthetic samples.

The transform is the guide's, bit for bit (docs/reference/guide-semantics.md, "Preprocessing"): PIL ``convert('RGB')``,
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
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ErfnetError
from ..fsutil import atomic_path, read_json, sha256_file, write_json_atomic

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
    """(trainIds files by name, labelIds files by the trainIds name they stand in for) under GT_DIR."""
    train, ids = {}, {}
    for path in _walk_files(gt_dir):
        if path.name.endswith(TRAIN_IDS_SUFFIX):
            train.setdefault(path.name, path)
        elif path.name.endswith(LABEL_IDS_SUFFIX):
            ids.setdefault(path.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX, path)
    return train, ids


def index_labels(gt_dir: Path) -> dict[str, Path]:
    """Every label under GT_DIR by trainIds file name; a labelIds file stands in where no trainIds file exists."""
    if not Path(gt_dir).is_dir():
        raise ErfnetError(f"GT_DIR {gt_dir} is not a directory")
    train, ids = _index_labels(Path(gt_dir))
    return {**ids, **train}


def open_label(path: Path) -> Image.Image:
    """A label file as a 'P' image of trainIds (255: no class); a labelIds file is derived exactly as
    preprocess derives it."""
    with Image.open(path) as im:
        if Path(path).name.endswith(LABEL_IDS_SUFFIX):
            im = Image.fromarray(label_ids_to_train_ids(np.asarray(im.convert("L"))))
        return im.convert("P")


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


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_parallel(func, jobs: list, workers: int | None, progress: bool, desc: str):
    """Yield ``func(job)`` for every job, in any order, across processes, with a progress bar on stderr."""
    from tqdm import tqdm

    workers = min(workers or default_workers(), max(1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False)
    try:
        if workers == 1:
            for job in jobs:
                yield func(job)
                bar.update()
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork, not spawn/forkserver: those re-import __main__, which breaks `python -` and unguarded
        # scripts (benchmarks, notebooks). The executor forks all workers before its own thread starts,
        # and workers touch only numpy/PIL and their own files, never a lock held by the parent.
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for result in pool.map(func, jobs, chunksize=max(1, min(8, len(jobs) // (workers * 4)))):
                yield result
                bar.update()
    finally:
        bar.close()


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


def _spec():
    from . import LabelSpec

    return LabelSpec(name="cityscapes", class_names=CLASS_NAMES, ignore_index=NUM_TRAIN_CLASSES,
                     void_value=IGNORE_TRAIN_ID, size=INPUT_SIZE, label_name=label_name_for,
                     index_labels=index_labels, open_label=open_label, label_size=resized_size)


LABEL_SPEC = _spec()
