"""ErfNet_postprocess.py: mIoU of an ais_bench output folder, with erfnet's iouEval semantics exactly.

Per image (guide-semantics.md, "Postprocessing"): the label PNG through PIL ``convert('P')`` and
torchvision ``Resize(512, NEAREST)`` (PIL's nearest, which keeps the odd rows and columns of a 2x
downscale), 255 -> 19; the prediction is the argmax over the 20 channels (first index on ties, as
``torch.max`` and ``np.argmax``). Both go into a 20x20 confusion matrix by ``np.bincount``; the sums over
the whole set give, for c in 0..18, tp = cm[c, c], fp = column c over valid labels 0..18 minus tp,
fn = row c minus tp (a pixel predicted 19 on a valid label is a miss), and the pixels labelled 19 count
nowhere. iou_c = tp / (tp + fp + fn + 1e-15); mIoU is the plain mean of the 19 (an absent class is 0).

The printed line is ``iou is  0.7220``: the guide prints ``iou is  tensor(0.7220, dtype=torch.float64)``,
i.e. ``print("iou is ", value)`` with torch's four decimals; we keep the two spaces and the four
decimals and drop the tensor wrapper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .cityscapes import (CLASS_NAMES, LABEL_IDS_SUFFIX, TRAIN_IDS_SUFFIX,
                         label_ids_to_train_ids, label_name_for, resized_size)
from .errors import ErfnetError
from .outputs import read_summary
from .parallel import run_parallel

NUM_CLASSES = 20
IGNORE_INDEX = 19
OUT_H, OUT_W = 512, 1024
PIXELS = OUT_H * OUT_W
# Output kind by file size: the guide's om gives FP16 logits; FP32 and an ArgMax-ended model also occur.
_KINDS = {
    NUM_CLASSES * PIXELS * 2: ("logits", np.float16),
    NUM_CLASSES * PIXELS * 4: ("logits", np.float32),
    PIXELS * 8: ("labels", np.int64),
    PIXELS * 4: ("labels", np.int32),
}


@dataclass(frozen=True)
class EvalResult:
    miou: float                 # fraction, 0..1
    per_class: list[float]      # 19 fractions, in trainId order (CLASS_NAMES)
    images: int


# ------------------------------------------------------------------------------------- per image

def _ordered_keys(bits: np.ndarray, width: int) -> np.ndarray:
    """Integers ordered like the IEEE floats whose bits they are (-0 == +0, every NaN the largest)."""
    sign_shift = width - 1
    magnitude = (1 << sign_shift) - 1
    keys = bits ^ ((bits >> sign_shift) & magnitude)
    keys[keys == -1] = 0  # -0.0 ties with +0.0
    exp_mask = {16: 0x7C00, 32: 0x7F800000}[width]
    keys[(bits & magnitude) > exp_mask] = magnitude  # NaN wins, as in np.argmax / torch.max
    return keys


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """``np.argmax(logits, axis=0)`` for (C, H, W) float16/float32, about 3x faster: one pass per channel
    over integer keys, strict ``>`` keeping the first index on ties."""
    width = logits.dtype.itemsize * 8
    bits = logits.view({16: np.int16, 32: np.int32}[width]).reshape(logits.shape[0], -1)
    best = _ordered_keys(bits[0], width)
    index = np.zeros(bits.shape[1], dtype=np.uint8)
    better = np.empty(bits.shape[1], dtype=bool)
    for c in range(1, bits.shape[0]):
        keys = _ordered_keys(bits[c], width)
        np.greater(keys, best, out=better)
        np.maximum(best, keys, out=best)
        index[better] = c
    return index.reshape(logits.shape[1:])


def read_prediction(path: str | os.PathLike) -> np.ndarray:
    """One output file as a (512, 1024) class map, its kind told apart by its size."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ErfnetError(f"output file missing: {path}") from None
    if size not in _KINDS:
        raise ErfnetError(f"{path}: {size} bytes is neither 20x512x1024 FP16/FP32 logits nor a 512x1024 "
                          f"int32/int64 label map")
    kind, dtype = _KINDS[size]
    data = np.fromfile(path, dtype=dtype)
    if kind == "logits":
        return argmax_channels(data.reshape(NUM_CLASSES, OUT_H, OUT_W))
    if data.min() < 0 or data.max() >= NUM_CLASSES:
        raise ErfnetError(f"{path}: label map values outside 0..{NUM_CLASSES - 1}")
    return data.astype(np.uint8).reshape(OUT_H, OUT_W)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """The guide's label transform: convert('P'), Resize(512, NEAREST), 255 -> 19."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if path.name.endswith(LABEL_IDS_SUFFIX):  # derived exactly as preprocess derives it
                im = Image.fromarray(label_ids_to_train_ids(np.asarray(im.convert("L"))))
            im = im.convert("P")
            size = resized_size(*im.size)
            if im.size != size:
                im = im.resize(size, Image.NEAREST)
            label = np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ErfnetError(f"label file missing: {path}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ErfnetError(f"{path}: unreadable or truncated label PNG ({' '.join(str(exc).split())})") from None
    label[label == 255] = IGNORE_INDEX
    if label.max() > IGNORE_INDEX:
        raise ErfnetError(f"{path}: label values outside 0..18 and 255")
    return label


def confusion(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """20x20 counts, rows = label, columns = prediction."""
    return np.bincount(label.ravel().astype(np.intp) * NUM_CLASSES + pred.ravel(),
                       minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def confusion_for_image(output_path, label_path) -> np.ndarray:
    """One image's confusion matrix (what each worker computes; benchmarks time this)."""
    pred, label = read_prediction(output_path), read_label(label_path)
    if pred.shape != label.shape:
        raise ErfnetError(f"{label_path}: label resizes to {label.shape[1]}x{label.shape[0]}, "
                          f"the prediction is {pred.shape[1]}x{pred.shape[0]}")
    return confusion(pred, label)


def _confusion_job(job) -> np.ndarray:
    return confusion_for_image(*job)


# ------------------------------------------------------------------------------------------ score

def iou_from_confusion(cm: np.ndarray) -> tuple[float, list[float]]:
    """erfnet's iouEval.getIoU over an accumulated confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    valid = cm[:IGNORE_INDEX, :]  # rows labelled 19 are ignored everywhere
    tp = np.diag(valid[:, :IGNORE_INDEX]).astype(np.float64)
    fp = valid[:, :IGNORE_INDEX].sum(axis=0) - tp
    fn = valid.sum(axis=1) - tp
    iou = tp / (tp + fp + fn + 1e-15)
    return float(np.mean(iou)), [float(v) for v in iou]


def _index_labels(gt_dir: Path) -> dict[str, Path]:
    """Every label under GT_DIR by file name; a labelIds file stands in where no trainIds file exists."""
    if not gt_dir.is_dir():
        raise ErfnetError(f"GT_DIR {gt_dir} is not a directory")
    train, ids = {}, {}
    for dirpath, dirnames, filenames in os.walk(gt_dir):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(TRAIN_IDS_SUFFIX):
                train.setdefault(name, Path(dirpath) / name)
            elif name.endswith(LABEL_IDS_SUFFIX):
                ids.setdefault(name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX, Path(dirpath) / name)
    return {**ids, **train}


def evaluate_summary(summary_path, gt_dir, workers: int | None = None, progress: bool = True) -> EvalResult:
    entries = read_summary(summary_path)
    if not entries:
        raise ErfnetError(f"{summary_path} lists no outputs")
    labels = _index_labels(Path(gt_dir))
    jobs, missing = [], []
    for entry in entries:
        name = label_name_for(entry.infile)
        if name not in labels:
            missing.append(name)
        jobs.append((entry.outfiles[0], labels.get(name)))
    if missing:
        raise ErfnetError(f"label file(s) missing under {gt_dir}: {', '.join(missing)}")
    missing_out = [str(out) for out, _ in jobs if not Path(out).is_file()]
    if missing_out:
        raise ErfnetError(f"output file(s) missing: {', '.join(missing_out)}")
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for cm in run_parallel(_confusion_job, jobs, workers, progress, "evaluate"):
        total += cm
    miou, per_class = iou_from_confusion(total)
    return EvalResult(miou=miou, per_class=per_class, images=len(jobs))


def format_report(result: EvalResult) -> str:
    """The guide's line, then the per-class table in percent as erfnet's eval_iou.py shows it."""
    lines = [f"iou is  {result.miou:.4f}", f"{'class':<15} {'IoU %':>7}"]
    lines += [f"{name:<15} {100 * v:7.2f}" for name, v in zip(CLASS_NAMES, result.per_class)]
    lines.append(f"{'mean':<15} {100 * result.miou:7.2f}   ({result.images} images)")
    return "\n".join(lines)
