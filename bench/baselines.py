"""The guide's own ways, written independently of erfnet_tasks, as the baselines our stages are measured
against (docs/reference/guide-semantics.md): ErfNet_preprocess.py's single-process PIL loop and ErfNet_postprocess.py
with erfnet_pytorch's iouEval (one-hot scatter, tp/fp/fn sums per image)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NUM_CLASSES = 20
IGNORE_INDEX = 19


def guide_preprocess(img_dir, out_dir) -> int:
    """ErfNet_preprocess.py: every *png, convert('RGB'), Resize(512, BILINEAR), ToTensor, tofile."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for root, _, files in os.walk(img_dir):
        for name in sorted(files):
            if not name.endswith("png"):
                continue
            img = Image.open(os.path.join(root, name)).convert("RGB")
            w, h = img.size
            size = (int(512 * w / h), 512) if w > h else (512, int(512 * h / w))
            img = img.resize(size, Image.BILINEAR)
            arr = (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)
            np.ascontiguousarray(arr).tofile(out_dir / (name.rsplit(".", 1)[0] + ".bin"))
            count += 1
    return count


class GuideIouEval:
    """erfnet_pytorch eval/iouEval.py, as upstream writes it (CPU)."""

    def __init__(self, n_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX):
        import torch

        self.n_classes = n_classes
        self.ignore_index = ignore_index if n_classes > ignore_index else -1
        classes = n_classes if self.ignore_index == -1 else n_classes - 1
        self.tp = torch.zeros(classes).double()
        self.fp = torch.zeros(classes).double()
        self.fn = torch.zeros(classes).double()

    def add_batch(self, x, y) -> None:  # x = preds, y = targets, both (N, 1, H, W) long
        import torch

        x_onehot = torch.zeros(x.size(0), self.n_classes, x.size(2), x.size(3))
        x_onehot.scatter_(1, x, 1).float()
        y_onehot = torch.zeros(y.size(0), self.n_classes, y.size(2), y.size(3))
        y_onehot.scatter_(1, y, 1).float()
        if self.ignore_index != -1:
            ignores = y_onehot[:, self.ignore_index].unsqueeze(1)
            x_onehot = x_onehot[:, : self.ignore_index]
            y_onehot = y_onehot[:, : self.ignore_index]
        else:
            ignores = 0

        def total(t):
            return torch.sum(
                torch.sum(torch.sum(t, dim=0, keepdim=True), dim=2, keepdim=True), dim=3, keepdim=True
            ).squeeze()

        self.tp += total(x_onehot * y_onehot).double().cpu()
        self.fp += total(x_onehot * (1 - y_onehot - ignores)).double().cpu()
        self.fn += total((1 - x_onehot) * y_onehot).double().cpu()

    def get_iou(self):
        import torch

        iou = self.tp / (self.tp + self.fp + self.fn + 1e-15)
        return torch.mean(iou), iou


def guide_evaluate(summary_path, gt_dir) -> float:
    """ErfNet_postprocess.py over an ais_bench summary of FP16 logits; returns the mIoU as a float."""
    import json

    import torch
    from PIL import Image

    summary = json.loads(Path(summary_path).read_text())
    ev = GuideIouEval()
    for entry in summary["filesinfo"].values():
        out = np.fromfile(entry["outfiles"][0], dtype=np.float16).reshape(1, NUM_CLASSES, 512, 1024)
        pred = torch.from_numpy(out).max(1)[1].unsqueeze(1).data
        label_name = os.path.basename(entry["infiles"][0]).split(".")[0][:-11] + "gtFine_labelTrainIds.png"
        label = Image.open(os.path.join(gt_dir, label_name)).convert("P")
        w, h = label.size
        size = (int(512 * w / h), 512) if w > h else (512, int(512 * h / w))
        label = label.resize(size, Image.NEAREST)
        target = torch.from_numpy(np.array(label)).long().unsqueeze(0)
        target[target == 255] = IGNORE_INDEX
        ev.add_batch(pred, target.unsqueeze(0))
    miou, _ = ev.get_iou()
    return float(miou)
