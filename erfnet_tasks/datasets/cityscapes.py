"""Cityscapes as the guide uses it: discovery, the trainId table, ErfNet_preprocess.py, synthetic samples.

The transform is the guide's, bit for bit (docs/reference/guide-semantics.md, "Preprocessing"): PIL ``convert('RGB')``,
torchvision ``Resize(512, BILINEAR)`` -- on a PIL image that *is* PIL's ``resize`` to the size computed
below -- then ``ToTensor()``: uint8 / 255 in float32, CHW, written raw as ``PREP_DIR/<stem>.bin``.

Resumable by content, never by mtimes or sizes: the manifest records, per item, the sha256 of its source
image and label and of the outputs made from them. A rerun skips an item only where its sources hash to
the recorded values and its outputs still hash to what was written; anything else is redone. A source
replaced by a corrected file with an older mtime (``cp -p``, ``rsync -t``, ``tar x``) is therefore redone.

Discovery follows symbolic links that resolve inside the data roots (``ERFNET_DATA_ROOTS`` and the folders
named by the caller) and refuses, with one line, links that leave them. No image is ever dropped without
being named: files the guide's ``*png`` does not select but that look like images are reported as bad.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..errors import BadInput, ErfnetError
from ..fsutil import StrPath, atomic_path, folder_lock, read_json, remove_stale_parts, sha256_file, write_json_atomic
from ..parallel import run_parallel
from ..settings import inside_roots, load_settings, refuse_outside_roots

if TYPE_CHECKING:
    from . import LabelSpec

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
PREP_FORMAT = 2  # bump when the transform or the manifest's per-item records change: every item is redone
APPLEDOUBLE_PREFIX = "._"  # macOS metadata files beside the real ones, never images
# Modes PIL's convert('RGB') maps faithfully (8 bits per channel or less). 16-bit and float modes (I;16,
# I, F) are clipped to 255 by convert('RGB'), so the guide's transform cannot represent them.
RGB_FAITHFUL_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})

# PIL failures on unreadable or truncated files come as any of these, depending on where decoding stops.
# An OSError with an errno (ENOSPC, EIO, EACCES...) is an I/O failure, never a bad image: see _io_failure.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _io_failure(exc: BaseException) -> bool:
    """True for an operating-system I/O error (it has an errno); PIL's decode errors are OSErrors without one."""
    return isinstance(exc, OSError) and exc.errno is not None


def _train_labels() -> list[Any]:
    from cityscapesscripts.helpers.labels import labels

    table: list[Any] = labels  # cityscapesScripts ships no types: its namedtuples are Any here
    return table


CLASS_NAMES: tuple[str, ...] = tuple(
    name
    for _, name in sorted(
        (label.trainId, label.name) for label in _train_labels() if 0 <= label.trainId < NUM_TRAIN_CLASSES
    )
)


def _label_id_lut() -> tuple[NDArray[Any], NDArray[Any]]:
    """labelId -> trainId for every uint8 value (ids without a trainId become 255), and which ids the
    Cityscapes table knows at all."""
    lut = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    for label in _train_labels():
        if 0 <= label.id < 256:
            known[label.id] = True
            if 0 <= label.trainId < NUM_TRAIN_CLASSES:
                lut[label.id] = label.trainId
    return lut, known


_LABEL_ID_LUT, _KNOWN_LABEL_IDS = _label_id_lut()
_TO_FLOAT = np.arange(256, dtype=np.float32) / np.float32(255)  # ToTensor's float32 division, tabulated


def label_ids_to_train_ids(arr: NDArray[Any]) -> NDArray[Any]:
    """What cityscapesScripts' createTrainIdLabelImgs draws, from the labelIds image instead of polygons."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("labelIds outside 0..255")
        arr = arr.astype(np.uint8)
    # An id outside the table would silently become "ignore" and vanish from the score: refuse it.
    unknown = np.flatnonzero(np.bincount(arr.ravel(), minlength=256).astype(bool) & ~_KNOWN_LABEL_IDS)
    if unknown.size:
        listed = ", ".join(map(str, unknown[:5])) + (" ..." if unknown.size > 5 else "")
        raise ValueError(
            f"labelIds value(s) {listed} are not in the Cityscapes label table "
            f"(0..{int(np.flatnonzero(_KNOWN_LABEL_IDS).max())})"
        )
    train_ids: NDArray[np.uint8] = _LABEL_ID_LUT[arr]
    return train_ids


# ------------------------------------------------------------------------------------------- sizes


def resized_size(width: int, height: int, short: int = SHORT_SIDE) -> tuple[int, int]:
    """torchvision ``Resize(short)``'s output (width, height): shorter side to ``short``, long side truncated."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def image_stem(path: StrPath) -> str:
    """The guide's output name: the file name without its extension."""
    return Path(path).name.rsplit(".", 1)[0]


def label_name_for(infile: StrPath) -> str:
    """ErfNet_postprocess.py's rule: ``basename.split('.')[0][:-11] + 'gtFine_labelTrainIds.png'``."""
    return os.path.basename(str(infile)).split(".")[0][: -len(IMAGE_SUFFIX)] + TRAIN_IDS_SUFFIX[1:]


# ------------------------------------------------------------------------------------- one image


def check_rgb_mode(mode: str) -> None:
    """Refuse an image mode the guide's ``convert('RGB')`` would clip (16-bit and float greyscale)."""
    if mode not in RGB_FAITHFUL_MODES:
        raise ValueError(
            f"image mode {mode} (16-bit or float) would be clipped to 8 bits by the guide's "
            f"convert('RGB'); convert it to 8-bit RGB first"
        )


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        check_rgb_mode(im.mode)
        return im.convert("RGB")  # convert() loads fully, so truncation surfaces here


def to_input(rgb: Image.Image) -> NDArray[Any]:
    """Resize(512, BILINEAR) + ToTensor on an RGB PIL image: float32 (3, 512, 1024)."""
    size = resized_size(*rgb.size)
    if size != INPUT_SIZE:
        raise BadInput(
            f"image of {rgb.size[0]}x{rgb.size[1]} resizes to {size[0]}x{size[1]}, not {INPUT_SIZE[0]}x{INPUT_SIZE[1]}"
        )
    if rgb.size != size:  # torchvision returns the image untouched when the short side already fits
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    hwc = np.asarray(rgb, dtype=np.uint8)
    return _TO_FLOAT[hwc.transpose(2, 0, 1)]


def preprocess_one(path: StrPath) -> NDArray[Any]:
    """The guide's transform for one image file (benchmarks and tests call this directly)."""
    return to_input(_open_rgb(Path(path)))


def load_label_image(path: Path) -> NDArray[Any]:
    """A label PNG as a 2-D uint8 array, fully decoded."""
    with Image.open(path) as im:
        im.load()
        if im.mode not in ("L", "P"):
            raise ValueError(f"label mode {im.mode}, expected 8-bit single channel")
        return np.asarray(im)


# ------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Pair:
    name: str  # stem of the image = stem of the .bin
    image: Path
    label: Path  # *_gtFine_labelTrainIds.png if present, else *_gtFine_labelIds.png
    label_out_name: str


def data_roots_for(*named: StrPath) -> tuple[Path, ...]:
    """The roots links may resolve into: ERFNET_DATA_ROOTS (else the data directory) and the named folders."""
    return tuple(load_settings().data_roots) + tuple(Path(d).resolve() for d in named)


def _link_problem(path: Path, roots: tuple[Path, ...]) -> str | None:
    """Why a symbolic link may not be followed, or None; a link out of the roots is refused outright."""
    target = path.resolve()
    refuse_outside_roots(f"symbolic link {path}", target, roots)
    return None if target.exists() else f"broken symbolic link (to {target})"


def _walk_files(root: Path, roots: tuple[Path, ...], bad: list[dict[str, Any]]) -> Iterator[Path]:
    """Every file under ``root``, following links inside ``roots`` (each real folder once), sorted."""
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        if here.is_symlink():
            _link_problem(here, roots)
        real = here.resolve()
        if real in seen:  # a link back up, or two links to one folder: its files are listed once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            problem = _link_problem(path, roots) if path.is_symlink() else None
            if problem:
                bad.append({"path": str(path), "reason": problem})
            else:
                yield path


def _not_an_image_reason(name: str) -> str | None:
    """Why a file that looks like an image is not one of the guide's ``*png`` inputs, or None."""
    if name.startswith(APPLEDOUBLE_PREFIX):
        return "a macOS AppleDouble metadata file (._*), not an image: delete it"
    if not name.endswith("png") and Path(name).suffix.lower() in Image.registered_extensions():
        return f"an image the guide's *png does not select ({Path(name).suffix}): convert or rename it to .png"
    return None


def _index_labels(
    gt_dir: Path, roots: tuple[Path, ...] = (), bad: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Path], dict[str, Path]]:
    """(trainIds files by name, labelIds files by the trainIds name they stand in for) under GT_DIR."""
    train: dict[str, Path] = {}
    ids: dict[str, Path] = {}
    bad = [] if bad is None else bad
    for path in _walk_files(gt_dir, roots or data_roots_for(gt_dir), bad):
        if path.name.startswith(APPLEDOUBLE_PREFIX):
            bad.append({"path": str(path), "reason": _not_an_image_reason(path.name)})
        elif path.name.endswith(TRAIN_IDS_SUFFIX):
            train.setdefault(path.name, path)
        elif path.name.endswith(LABEL_IDS_SUFFIX):
            ids.setdefault(path.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX, path)
    return train, ids


def index_labels(gt_dir: Path) -> dict[str, Path]:
    """Every label under GT_DIR by trainIds file name; a labelIds file stands in where no trainIds file exists."""
    if not Path(gt_dir).is_dir():
        raise BadInput(f"GT_DIR {gt_dir} is not a directory")
    train, ids = _index_labels(Path(gt_dir), data_roots_for(gt_dir))  # links followed as preprocess follows them
    return {**ids, **train}


def open_label(path: Path) -> Image.Image:
    """A label file as a 'P' image of trainIds (255: no class); a labelIds file is derived exactly as
    preprocess derives it."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P"):  # convert() would clip a 16-bit label silently
            raise ValueError(f"label mode {im.mode}, expected 8-bit single channel")
        if Path(path).name.endswith(LABEL_IDS_SUFFIX):
            return Image.fromarray(label_ids_to_train_ids(np.asarray(im.convert("L")))).convert("P")
        return im.convert("P")


def discover(img_dir: StrPath, gt_dir: StrPath) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Pair every ``*png`` under IMG_DIR with its label under GT_DIR; return (pairs, bad entries)."""
    img_dir, gt_dir = Path(img_dir), Path(gt_dir)
    for d, what in ((img_dir, "IMG_DIR"), (gt_dir, "GT_DIR")):
        if not d.is_dir():
            raise BadInput(f"{what} {d} is not a directory")
    roots = data_roots_for(img_dir, gt_dir)
    bad: list[dict[str, Any]] = []
    images = []
    for path in _walk_files(img_dir, roots, bad):
        reason = _not_an_image_reason(path.name)
        if reason:
            bad.append({"path": str(path), "reason": reason})
        elif path.name.endswith("png"):
            images.append(path)
    if not images:
        raise BadInput(f"IMG_DIR {img_dir} holds no *png image" + (f": {_format_bad(bad)}" if bad else ""))
    train, ids = _index_labels(gt_dir, roots, bad)
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


def dataset_dirs(root: StrPath) -> tuple[Path, Path]:
    """(leftImg8bit/val, gtFine/val) of a Cityscapes tree, as the guide's commands name them."""
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / "val", root / "gtFine" / "val"
    missing = [str(d) for d in (img_dir, gt_dir) if not d.is_dir()]
    if missing:
        raise BadInput(f"not a Cityscapes tree, missing: {', '.join(missing)}")
    return img_dir, gt_dir


def is_synthetic(img_dir: StrPath) -> bool:
    """True where ``write_sample_data`` made the tree (its marker sits at the tree's root)."""
    here = Path(img_dir).resolve()
    return any((d / SYNTHETIC_MARKER).is_file() for d in (here, *here.parents))


# ------------------------------------------------------------------------------------ preprocess


def _unchanged(out: Path, prior: dict[str, Any] | None, source_key: str, source_sha: str, out_key: str) -> bool:
    """Whether ``out`` was made from a source with this content and still holds what was written."""
    if not prior or prior.get(source_key) != source_sha or not out.is_file():
        return False
    return sha256_file(out) == prior.get(out_key)


def _write_bin(pair: Pair, prep_dir: Path, image_sha: str, prior: dict[str, Any] | None) -> tuple[str, bool]:
    out = prep_dir / f"{pair.name}.bin"
    if prior is not None and _unchanged(out, prior, "image_sha256", image_sha, "bin_sha256"):
        return str(prior["bin_sha256"]), False
    data = preprocess_one(pair.image).tobytes()
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), True


def _check_label(arr: NDArray[Any], image_size: tuple[int, int]) -> None:
    if (arr.shape[1], arr.shape[0]) != image_size:
        raise ValueError(f"label is {arr.shape[1]}x{arr.shape[0]}, its image {image_size[0]}x{image_size[1]}")
    counts = np.bincount(arr.ravel(), minlength=256)
    if counts[NUM_TRAIN_CLASSES:IGNORE_TRAIN_ID].any():
        raise ValueError("trainIds outside 0..18 and 255")


def _write_label(
    pair: Pair, gt_out_dir: Path, image_size: tuple[int, int], label_source_sha: str, prior: dict[str, Any] | None
) -> str:
    out = gt_out_dir / pair.label_out_name
    if prior is not None and _unchanged(out, prior, "label_source_sha256", label_source_sha, "label_sha256"):
        return str(prior["label_sha256"])
    arr = load_label_image(pair.label)
    derive = not pair.label.name.endswith(TRAIN_IDS_SUFFIX)
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
        check_rgb_mode(im.mode)
        return im.size


def _process_pair(job: tuple[Pair, Path, Path, dict[str, Any] | None]) -> dict[str, Any]:
    """Worker: one image and its label. Bad data is reported as ``bad``; an I/O failure (disk full, EIO)
    as ``fatal``, because it says nothing about the image and must stop the step."""
    pair, prep_dir, gt_out_dir, prior = job
    try:
        return _process_checked(pair, prep_dir, gt_out_dir, prior)
    except OSError as exc:
        if not _io_failure(exc):
            raise
        return {"name": pair.name, "fatal": f"I/O error while preprocessing {pair.image}: {exc}"}


def _process_checked(pair: Pair, prep_dir: Path, gt_out_dir: Path, prior: dict[str, Any] | None) -> dict[str, Any]:
    image_sha, label_source_sha = sha256_file(pair.image), sha256_file(pair.label)
    try:
        size = _image_size(pair.image)
        if resized_size(*size) != INPUT_SIZE:
            raise ValueError(
                f"unexpected size {size[0]}x{size[1]} (the guide's resize makes "
                f"{'x'.join(map(str, resized_size(*size)))}, the model takes 1024x512)"
            )
        bin_sha, written = _write_bin(pair, prep_dir, image_sha, prior)
    except ErfnetError as exc:
        return {"name": pair.name, "bad": {"path": str(pair.image), "reason": str(exc)}}
    except _DECODE_ERRORS as exc:
        if _io_failure(exc):
            raise
        return {"name": pair.name, "bad": {"path": str(pair.image), "reason": _reason(exc)}}
    try:
        label_sha = _write_label(pair, gt_out_dir, size, label_source_sha, prior)
    except (ErfnetError, *_DECODE_ERRORS) as exc:
        if _io_failure(exc):
            raise
        return {"name": pair.name, "bad": {"path": str(pair.label), "reason": _reason(exc)}}
    return {
        "name": pair.name,
        "image": str(pair.image),
        "image_sha256": image_sha,
        "label_source_sha256": label_source_sha,
        "bin_sha256": bin_sha,
        "label_sha256": label_sha,
        "written": written,
    }


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ValueError, ErfnetError)) else f"unreadable or truncated PNG ({text})"


def _format_bad(bad: list[dict[str, Any]]) -> str:
    return "; ".join(f"{b['path']}: {b['reason']}" for b in bad)


def _remove_stale_outputs(
    prep_dir: Path, gt_out_dir: Path, gt_dir: Path, rows: list[dict[str, Any]], previous: dict[str, dict[str, Any]]
) -> int:
    """An ais_bench run feeds every .bin in the folder and the evaluator counts every label in GT_OUT_DIR:
    outputs left from another selection must go. Only labels the last manifest says we wrote are removed
    (GT_OUT_DIR may be the source label folder itself)."""
    names = {r["name"] for r in rows}
    labels = {label_name_for(r["image"]) for r in rows}
    ours = {label_name_for(item["image"]) for item in previous.values() if isinstance(item, dict) and "image" in item}
    if inside_roots(gt_out_dir.resolve(), (gt_dir.resolve(),)):
        ours = set()  # GT_OUT_DIR is (inside) the source label folder: its files are the user's, never removed
    stale = [p for p in prep_dir.glob("*.bin") if p.stem not in names]
    stale += [gt_out_dir / name for name in sorted(ours - labels) if (gt_out_dir / name).is_file()]
    for path in stale:
        path.unlink()
    return len(stale)


def _previous_items(prep_dir: Path) -> dict[str, dict[str, Any]]:
    """The per-item records of the last manifest written here, if it was written by this format."""
    try:
        data = read_json(prep_dir / MANIFEST_NAME, "a preprocessing manifest")
    except ErfnetError:
        return {}  # none, or garbled: every item is redone
    if not isinstance(data, dict) or data.get("prep_format") != PREP_FORMAT or not isinstance(data.get("items"), dict):
        return {}
    items: dict[str, dict[str, Any]] = data["items"]
    return items


def fingerprint(rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["name"]):
        digest.update(f"{row['name']}\t{row['bin_sha256']}\t{row['label_sha256']}\n".encode())
    return digest.hexdigest()


def preprocess(
    img_dir: StrPath,
    prep_dir: StrPath,
    gt_dir: StrPath,
    gt_out_dir: StrPath,
    workers: int | None = None,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """ErfNet_preprocess.py: IMG_DIR -> PREP_DIR/*.bin, labels -> GT_OUT_DIR; returns the manifest."""
    pairs, bad = discover(img_dir, gt_dir)
    if limit is not None:
        pairs = pairs[:limit]
    prep_dir, gt_out_dir = Path(prep_dir), Path(gt_out_dir)
    gt_out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(prep_dir):  # one writer per folder: any .part file here is a killed run's
        remove_stale_parts(prep_dir)
        remove_stale_parts(gt_out_dir)
        previous = _previous_items(prep_dir)
        rows = _run_jobs(pairs, prep_dir, gt_out_dir, workers, progress, bad, previous)
        bad.sort(key=lambda b: b["path"])
        if bad and not skip_bad:
            raise BadInput(
                f"{len(bad)} bad input file(s) (rerun with --skip-bad to record and skip them): {_format_bad(bad)}"
            )
        if not rows:
            raise BadInput(f"no usable image under {img_dir}: {_format_bad(bad)}")
        removed = _remove_stale_outputs(prep_dir, gt_out_dir, Path(gt_dir), rows, previous)
        manifest = _manifest(rows, bad, img_dir, gt_dir, gt_out_dir, limit)
        write_json_atomic(prep_dir / MANIFEST_NAME, manifest)
    manifest["written"] = sum(r["written"] for r in rows)  # for the caller's report only
    manifest["stale_removed"] = removed
    return manifest


def _run_jobs(
    pairs: list[Pair],
    prep_dir: Path,
    gt_out_dir: Path,
    workers: int | None,
    progress: bool,
    bad: list[dict[str, Any]],
    previous: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every pair through the workers; bad ones go to ``bad``; the first I/O failure stops the step."""
    jobs = [(pair, prep_dir, gt_out_dir, previous.get(pair.name)) for pair in pairs]
    rows = []
    for result in run_parallel(_process_pair, jobs, workers, progress, "preprocess"):
        if "fatal" in result:
            raise BadInput(result["fatal"])
        if "bad" in result:
            bad.append(result["bad"])
        else:
            rows.append(result)
    return rows


def _manifest(
    rows: list[dict[str, Any]],
    bad: list[dict[str, Any]],
    img_dir: StrPath,
    gt_dir: StrPath,
    gt_out_dir: Path,
    limit: int | None,
) -> dict[str, Any]:
    names = sorted(r["name"] for r in rows)
    return {
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
        "prep_format": PREP_FORMAT,
        # What resume compares: the content of each item's sources and of the outputs made from them.
        "items": {
            r["name"]: {k: r[k] for k in ("image", "image_sha256", "label_source_sha256", "bin_sha256", "label_sha256")}
            for r in rows
        },
    }


def source_digest(img_dir: StrPath, gt_dir: StrPath, limit: int | None = None) -> str:
    """sha256 over the content of the images and labels ``preprocess`` would take (the prep cache's key)."""
    pairs, _bad = discover(img_dir, gt_dir)
    if limit is not None:
        pairs = pairs[:limit]
    digest = hashlib.sha256(f"prep_format {PREP_FORMAT}\nlimit {limit}\n".encode())
    for pair in pairs:
        digest.update(f"{pair.name}\t{sha256_file(pair.image)}\t{sha256_file(pair.label)}\n".encode())
    return digest.hexdigest()


def read_manifest(prep_dir: StrPath) -> dict[str, Any]:
    path = Path(prep_dir) / MANIFEST_NAME
    data = read_json(
        path, "a preprocessing manifest", missing=f"no {MANIFEST_NAME} in {prep_dir}: run `erfnet preprocess` first"
    )
    missing = [k for k in ("images", "names", "fingerprint", "bad") if k not in data]
    if missing:
        raise BadInput(f"{path} lacks {', '.join(missing)}")
    manifest: dict[str, Any] = data
    return manifest


def _spec() -> LabelSpec:
    from . import LabelSpec

    return LabelSpec(
        name="cityscapes",
        class_names=CLASS_NAMES,
        ignore_index=NUM_TRAIN_CLASSES,
        void_value=IGNORE_TRAIN_ID,
        size=INPUT_SIZE,
        label_name=label_name_for,
        index_labels=index_labels,
        open_label=open_label,
        label_size=resized_size,
    )


LABEL_SPEC = _spec()
