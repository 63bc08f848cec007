"""Realistic nightly run documents at scale, for the history benchmark and the browser test.

``nightly_documents(n)`` returns the run documents of ``n`` nights ending on ``END`` (about 2% of nights
publish nothing: the nightly skip found nothing new to measure), one per night: 24 cells each
(4 targets x 6 batch sizes) with per-class IoU and compiled-model records, a CANN version that changes
every month, throughput that shifts with each version, injected regressions (a version that slows a
target by 15%, a night whose mIoU falls below the tolerance) and out-of-memory cells (Ascend310 at
batch 64 as in the guide, plus rare random ones). Deterministic for a given seed.

    python bench/nightlies.py 365 OUTDIR    # writes OUTDIR/<run>/results.json, ready for `erfnet results import OUTDIR`
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from erfnet_tasks.deployment import DAG_ID
from erfnet_tasks.records import run_status
from erfnet_tasks.results.reference import GUIDE_MIOU, GUIDE_MIOU_PERCENT

END = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
BATCHES = (1, 4, 8, 16, 32, 64)
# fps at batch 1 and how it grows per doubling of the batch; cpu is ~30x slower than the NPUs.
TARGETS = {"Ascend310": (220.0, -0.04), "Ascend310P3": (292.0, 0.03), "Ascend910B": (780.0, 0.06), "cpu": (13.0, 0.01)}
REFERENCE_MIOU = GUIDE_MIOU
CLASSES = 19


def cann_version(month: int) -> str:
    """One version per month, in the 7.0.RC1 .. 8.5.RC3 style of real CANN releases."""
    major, minor, rc = 7 + month // 12, (month % 12) // 3, month % 3 + 1
    return f"{major}.{minor}.RC{rc}"


def _version_factors(rng: random.Random, months: int) -> dict[tuple[int, str], float]:
    """Per month and target a speed factor; every 7th version slows one target by 15% (a regression)."""
    factors = {}
    for month in range(months):
        for target in TARGETS:
            factors[(month, target)] = rng.uniform(0.98, 1.04)
        if month % 7 == 3:
            factors[(month, rng.choice(list(TARGETS)))] *= 0.85
    return factors


def _cells(rng: random.Random, month: int, factors: dict, accuracy_dip: bool) -> tuple[list, list, list]:
    perf, acc, compiled = [], [], []
    for target, (fps1, growth) in TARGETS.items():
        for i, batch in enumerate(BATCHES):
            oom = (target == "Ascend310" and batch == 64) or (batch >= 32 and rng.random() < 0.01)
            compiled.append(
                {
                    "target": target,
                    "batch_size": batch,
                    "backend": "cpu" if target == "cpu" else "ascend",
                    "chip": None if target == "cpu" else target,
                    "path": f"/data/models/erfnet_bs{batch}_{target}.om",
                    "sha256": hashlib.sha256(f"{month}{target}{batch}".encode()).hexdigest(),
                    "seconds": round(rng.uniform(40, 200), 2),
                    "cache_hit": rng.random() < 0.9,
                    "status": "ok",
                    "error": None,
                }
            )
            if oom:
                perf.append(
                    {
                        "target": target,
                        "batch_size": batch,
                        "status": "oom",
                        "error": "aclrtMalloc failed, error code 207001",
                    }
                )
                continue
            fps = fps1 * (1 + growth) ** i * factors[(month, target)] * rng.uniform(0.985, 1.015)
            compute = 1000.0 * batch / fps
            perf.append(
                {
                    "target": target,
                    "batch_size": batch,
                    "throughput_fps": round(fps, 4),
                    "status": "ok",
                    "compute_min_ms": round(compute * 0.97, 4),
                    "compute_mean_ms": round(compute, 4),
                    "compute_median_ms": round(compute * 0.995, 4),
                    "compute_p99_ms": round(compute * 1.08, 4),
                    "h2d_mean_ms": round(0.9 * batch, 4),
                    "d2h_mean_ms": round(1.1 * batch, 4),
                    "error": None,
                }
            )
            miou = REFERENCE_MIOU + rng.uniform(-0.0003, 0.0003) - (0.013 if accuracy_dip else 0.0)
            per_class = [round(min(0.99, max(0.05, miou + rng.uniform(-0.25, 0.2))), 6) for _ in range(CLASSES)]
            acc.append(
                {"target": target, "batch_size": batch, "images": 500, "miou": round(miou, 6), "per_class": per_class}
            )
    return perf, acc, compiled


def nightly_documents(n: int, seed: int = 20, end: datetime = END) -> list[dict]:
    """``n`` nightly run documents, oldest first, the last one started at ``end``."""
    rng = random.Random(seed)
    first = end - timedelta(days=n - 1)
    factors = _version_factors(rng, n // 30 + 2)
    docs = []
    for day in range(n):
        started = first + timedelta(days=day)
        month = (started.year - first.year) * 12 + started.month - first.month
        run_id = f"scheduled__{started.isoformat()}"
        run = {
            "id": run_id,
            "dag_id": DAG_ID,
            "started_at": started.isoformat(),
            "finished_at": (started + timedelta(hours=3, minutes=rng.randint(0, 50))).isoformat(),
            "cann_version": cann_version(month),
            "driver_version": "24.1.rc2",
            "host": "npu-host-7",
            "params": {"reference_miou": GUIDE_MIOU_PERCENT, "tolerance": 1.0, "throughput_drop": 5},
            "backends": {"ascend": cann_version(month), "onnxruntime": "1.20.1"},
            "model_sha256": "c0ffee" * 10 + "beef",
            "weights_sha256": "be" * 32,
            "dataset_fingerprint": "cityscapes-val-500",
            "images": 500,
            "synthetic": False,
        }
        if rng.random() < 0.02:  # the nightly found nothing new to measure: it publishes nothing
            continue
        perf, acc, compiled = _cells(rng, month, factors, accuracy_dip=rng.random() < 0.015)
        status = run_status([p["status"] for p in perf]).value  # an oom cell is a result: still complete
        docs.append(
            {"run": {**run, "status": status}, "compiled": compiled, "accuracy": acc, "perf": perf, "findings": []}
        )
    return docs


def write_documents(docs: list[dict], folder: Path) -> list[Path]:
    """Each document as ``folder/<n>/results.json``, as the DAG leaves them after a database outage."""
    paths = []
    for i, doc in enumerate(docs):
        path = folder / f"{i:05d}" / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit("usage: python bench/nightlies.py N OUTDIR")
    written = write_documents(nightly_documents(int(sys.argv[1])), Path(sys.argv[2]))
    print(f"wrote {len(written)} run documents under {sys.argv[2]}")
