"""ErfNet_postprocess.py: mIoU of an ais_bench output folder, with erfnet's iouEval semantics exactly.

Per image (docs/reference/guide-semantics.md, "Postprocessing (mIoU)"): the label PNG through PIL ``convert('P')`` and
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from .datasets import LabelSpec, label_spec
from .errors import BadInput
from .fsutil import StrPath
from .outputs import SummaryEntry, output_file_name, output_folder_of, read_summary
from .parallel import run_parallel
from .records import LabelMode, output_format


def _kinds(spec: LabelSpec) -> dict[int, tuple[str, type]]:
    """Output kind by file size (records.output_format, the one definition): the guide's om gives FP16 logits,
    labels_on_device int32 label maps; FP32 logits and int64 labels (twice their sizes) also occur."""
    logits, labels = (
        output_format(LabelMode.LOGITS, spec).bytes_per_image,
        output_format(LabelMode.LABELS, spec).bytes_per_image,
    )
    return {
        logits: ("logits", np.float16),
        2 * logits: ("logits", np.float32),
        labels: ("labels", np.int32),
        2 * labels: ("labels", np.int64),
    }


@dataclass(frozen=True)
class EvalResult:
    miou: float  # fraction, 0..1
    per_class: list[float]  # one fraction per scored class, in label order (spec.class_names)
    images: int
    class_names: tuple[str, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()  # the summed channels x channels counts the scores come from
    label_mode: str = "logits"  # records.LabelMode: what the outputs held (logits argmaxed here, or labels)


# ------------------------------------------------------------------------------------- per image

_Job = tuple[Path, Path, LabelSpec]  # (output, label, spec): one image for a worker


def _ordered_keys(bits: np.ndarray, width: int) -> np.ndarray:
    """Integers ordered like the IEEE floats whose bits they are (-0 == +0, every NaN the largest)."""
    sign_shift = width - 1
    magnitude = (1 << sign_shift) - 1
    keys: np.ndarray = bits ^ ((bits >> sign_shift) & magnitude)
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


def read_prediction(path: str | os.PathLike[str], spec: LabelSpec | None = None) -> np.ndarray:
    """One output file as a (height, width) class map, its kind told apart by its size."""
    spec = spec or label_spec()
    channels, (out_w, out_h) = spec.channels, spec.size
    kinds = _kinds(spec)
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise BadInput(f"output file missing: {path}") from exc
    if size not in kinds:
        raise BadInput(
            f"{path}: {size} bytes is neither {channels}x{out_h}x{out_w} FP16/FP32 logits nor a "
            f"{out_h}x{out_w} int32/int64 label map"
        )
    kind, dtype = kinds[size]
    data: np.ndarray = np.fromfile(path, dtype=dtype)
    if kind == "logits":
        # argmax would rank NaN first and count it as a class: a non-finite output is an error, not a score.
        if not (np.isfinite(data.min()) and np.isfinite(data.max())):
            bad = int(np.count_nonzero(~np.isfinite(data)))
            raise BadInput(f"{path}: {bad} NaN/Inf logit(s) of {data.size}: the model's output is broken")
        return argmax_channels(data.reshape(channels, out_h, out_w))
    if data.min() < 0 or data.max() >= channels:
        raise BadInput(f"{path}: label map values outside 0..{channels - 1}")
    return data.astype(np.uint8).reshape(out_h, out_w)


def read_label(path: str | os.PathLike[str], spec: LabelSpec | None = None) -> np.ndarray:
    """The guide's label transform: convert('P'), Resize(512, NEAREST), 255 -> 19 (for Cityscapes)."""
    spec = spec or label_spec()
    path = Path(path)
    try:
        im = spec.open_label(path)
        size = spec.label_size(*im.size)
        if im.size != size:
            im = im.resize(size, Image.Resampling.NEAREST)  # the same filter (0) as Image.NEAREST
        label = np.array(im, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise BadInput(f"label file missing: {path}") from exc
    except ValueError as exc:
        raise BadInput(f"{path}: {exc}") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise BadInput(f"cannot read label {path}: {exc}") from exc
        raise BadInput(f"{path}: unreadable or truncated label PNG ({' '.join(str(exc).split())})") from exc
    label[label == spec.void_value] = spec.ignore_index
    if label.max() > spec.ignore_index:
        raise BadInput(f"{path}: label values outside 0..{spec.ignore_index - 1} and {spec.void_value}")
    return label


def confusion(pred: np.ndarray, label: np.ndarray, spec: LabelSpec | None = None) -> np.ndarray:
    """channels x channels counts, rows = label, columns = prediction."""
    n = (spec or label_spec()).channels
    return np.bincount(label.ravel().astype(np.intp) * n + pred.ravel(), minlength=n * n).reshape(n, n)


def confusion_for_image(output_path: StrPath, label_path: StrPath, spec: LabelSpec | None = None) -> np.ndarray:
    """One image's confusion matrix (what each worker computes; benchmarks time this)."""
    pred, label = read_prediction(output_path, spec), read_label(label_path, spec)
    if pred.shape != label.shape:
        raise BadInput(
            f"{label_path}: label resizes to {label.shape[1]}x{label.shape[0]}, "
            f"the prediction is {pred.shape[1]}x{pred.shape[0]}"
        )
    return confusion(pred, label, spec)


def _confusion_job(job: _Job) -> np.ndarray:
    return confusion_for_image(*job)


# ------------------------------------------------------------------------------------------ score


def iou_from_confusion(cm: np.ndarray, spec: LabelSpec | None = None) -> tuple[float, list[float]]:
    """erfnet's iouEval.getIoU over an accumulated confusion matrix."""
    ignore = (spec or label_spec()).ignore_index
    cm = np.asarray(cm, dtype=np.int64)
    valid = cm[:ignore, :]  # rows labelled with the ignore index are ignored everywhere
    tp = np.diag(valid[:, :ignore]).astype(np.float64)
    fp = valid[:, :ignore].sum(axis=0) - tp
    fn = valid.sum(axis=1) - tp
    iou = tp / (tp + fp + fn + 1e-15)
    return float(np.mean(iou)), [float(v) for v in iou]


def _pair_entries(
    summary_path: StrPath, entries: list[SummaryEntry], labels: dict[str, Path], gt_dir: StrPath, spec: LabelSpec
) -> list[_Job]:
    """(output, label, spec) per summary entry; each label exactly once, each output inside the output
    folder and named after its input, as ais_bench names it."""
    folder = output_folder_of(summary_path).resolve()
    jobs: list[tuple[Path, Path | None, LabelSpec]] = []
    missing: list[str] = []
    seen: dict[str, Path] = {}
    for entry in entries:
        name = spec.label_name(entry.infile)
        if name in seen:
            raise BadInput(
                f"{summary_path} lists {entry.infile} more than once (as {seen[name]} too): "
                f"each label is counted exactly once"
            )
        seen[name] = entry.infile
        out = entry.outfiles[0]
        if not out.resolve().is_relative_to(folder):
            raise BadInput(f"{summary_path}: output {out} of {entry.infile} lies outside the output folder {folder}")
        if out.name != output_file_name(entry.infile, 0):
            raise BadInput(
                f"{summary_path}: output {out.name} does not belong to input {entry.infile.name} "
                f"(expected {output_file_name(entry.infile, 0)})"
            )
        if name not in labels:
            missing.append(name)
        jobs.append((out, labels.get(name), spec))
    if missing:
        raise BadInput(f"label file(s) missing under {gt_dir}: {', '.join(missing)}")
    return cast(list[_Job], jobs)  # no label is None: a missing one raised just above


def _check_coverage(
    summary_path: StrPath, jobs: list[_Job], labels: dict[str, Path], gt_dir: StrPath, limit: int | None
) -> None:
    """Fewer outputs than labels is an error unless a limit asked for exactly that many."""
    expected = len(labels) if not limit else min(limit, len(labels))
    if len(jobs) != expected:
        covered = {label for _out, label, _spec in jobs}
        left = sorted(p.name for p in labels.values() if p not in covered)
        raise BadInput(
            f"{summary_path} has outputs for {len(jobs)} image(s) but GT_DIR {gt_dir} holds "
            f"{len(labels)} label(s)"
            + (f" (limit {limit})" if limit else "")
            + (f"; no output for {', '.join(left[:5])}" + (" ..." if len(left) > 5 else "") if left else "")
            + "; pass the image limit the run used, or evaluate against its own label folder"
        )


def evaluate_summary(
    summary_path: StrPath,
    gt_dir: StrPath,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    spec: LabelSpec | None = None,
) -> EvalResult:
    """mIoU of the outputs a summary lists against the labels under GT_DIR. ``limit``: the run covered only
    the first N images on purpose; ``spec``: the dataset's label spec, by default the default dataset's."""
    spec = spec or label_spec()
    entries = read_summary(summary_path)
    if not entries:
        raise BadInput(f"{summary_path} lists no outputs")
    labels = spec.index_labels(Path(gt_dir))
    jobs = _pair_entries(summary_path, entries, labels, gt_dir, spec)
    _check_coverage(summary_path, jobs, labels, gt_dir, limit)
    missing_out = [str(out) for out, _label, _spec in jobs if not Path(out).is_file()]
    if missing_out:
        raise BadInput(f"output file(s) missing: {', '.join(missing_out)}")
    mode = output_label_mode([out for out, _label, _spec in jobs], spec)
    total = np.zeros((spec.channels, spec.channels), dtype=np.int64)
    for cm in run_parallel(_confusion_job, jobs, workers, progress, "evaluate"):
        total += cm
    miou, per_class = iou_from_confusion(total, spec)
    return EvalResult(
        miou=miou,
        per_class=per_class,
        images=len(jobs),
        class_names=spec.class_names,
        confusion=tuple(tuple(int(v) for v in row) for row in total),
        label_mode=mode,
    )


def output_label_mode(paths: Sequence[StrPath], spec: LabelSpec) -> str:
    """``logits`` or ``labels``: what every output holds (by size); a mix is an error, since the run records
    one mode per mIoU and the gate never compares across modes."""
    kinds = _kinds(spec)
    found = {kinds.get(Path(p).stat().st_size, ("unknown",))[0] for p in paths}
    found.discard("unknown")  # read_prediction names such a file itself
    if len(found) > 1:
        raise BadInput(f"the outputs mix logits and label maps ({paths[0]} ...): one cell, one kind of output")
    return found.pop() if found else "logits"


def prediction_disagreement(summary_a: StrPath, summary_b: StrPath, spec: LabelSpec | None = None) -> tuple[int, int]:
    """(pixels whose class differs, pixels) between two runs' outputs over the same inputs, e.g. label maps
    from an ArgMax on the device against the host-side argmax of FP16 logits (exact ties flip there:
    ArgMax sees the values before they are rounded to FP16, the host sees them after)."""
    spec = spec or label_spec()
    b_by_input = {entry.infile.name: entry.outfiles[0] for entry in read_summary(summary_b)}
    differing = total = 0
    for entry in read_summary(summary_a):
        if entry.infile.name not in b_by_input:
            raise BadInput(f"{summary_b} has no output for input {entry.infile.name}")
        a = read_prediction(entry.outfiles[0], spec)
        b = read_prediction(b_by_input[entry.infile.name], spec)
        differing += int(np.count_nonzero(a != b))
        total += a.size
    return differing, total


def format_report(result: EvalResult) -> str:
    """The guide's line, then the per-class table in percent as erfnet's eval_iou.py shows it."""
    lines = [f"iou is  {result.miou:.4f}", f"{'class':<15} {'IoU %':>7}"]
    lines += [f"{name:<15} {100 * v:7.2f}" for name, v in zip(result.class_names, result.per_class, strict=True)]
    lines.append(f"{'mean':<15} {100 * result.miou:7.2f}   ({result.images} images)")
    return "\n".join(lines)
