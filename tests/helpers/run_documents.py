"""Run documents for the results tests: built from a compact list of cells, and put in the order and shape
stored documents come back in."""

from __future__ import annotations

from erfnet_tasks.results.document import COMPILED_FIELDS, PERF_FIELDS


def make_doc(
    run_id: str, started_at: str, cann: str | None, cells, status: str = "complete", params: dict | None = None
) -> dict:
    """A run document; ``cells`` are (target, batch, miou or None, fps or None, perf status)."""
    accuracy = [
        {
            "target": t,
            "batch_size": b,
            "images": 3,
            "miou": m,
            "per_class": [m] * 19,
            "confusion": [[b] * 20 for _ in range(20)],
            "label_mode": "logits",
        }
        for t, b, m, _fps, _s in cells
        if m is not None
    ]
    perf = [
        {
            "target": t,
            "batch_size": b,
            "throughput_fps": fps,
            "compute_min_ms": 1.0,
            "compute_mean_ms": 2.0,
            "compute_median_ms": 2.0,
            "compute_p99_ms": 3.5,
            "h2d_mean_ms": 0.25,
            "d2h_mean_ms": 0.5,
            "status": s,
            "error": None if s == "ok" else f"{s} at batch {b}",
        }
        for t, b, _m, fps, s in cells
    ]
    compiled = [
        {
            "target": t,
            "batch_size": b,
            "backend": "onnxruntime",
            "chip": "cpu",
            "path": f"/m/{t}_{b}.onnx",
            "sha256": "ab" * 32,
            "seconds": 0.5,
            "cache_hit": False,
            "status": "ok",
            "error": None,
        }
        for t, b, _m, _fps, _s in cells
    ]
    return {
        "run": {
            "id": run_id,
            "dag_id": "erfnet_offline_inference",
            "started_at": started_at,
            "finished_at": started_at,
            "status": status,
            "params": params or {"batch_sizes": [1, 4]},
            "cann_version": cann,
            "driver_version": "23.0",
            "host": "npu-host",
            "backends": {"onnxruntime": "1.32.0"},
            "model_sha256": "cd" * 32,
            "weights_sha256": "ef" * 32,
            "dataset_fingerprint": "fp-1",
            "images": 3,
            "synthetic": True,
        },
        "compiled": compiled,
        "accuracy": accuracy,
        "perf": perf,
        "findings": [],
    }


def canonical(doc: dict) -> dict:
    """``doc`` with its cells in (target, batch) order, the order stored documents come back in, and the
    per-cell environment fields a document may leave out (issue 16) present as None, as they come back;
    so are the sections a document may leave out (op profiles and diagnoses, issue 27: empty) and each
    finding's "where" (None)."""
    fields = {"compiled": COMPILED_FIELDS, "perf": PERF_FIELDS, "findings": ("where",)}
    sections = {"op_profiles": [], "diagnoses": [], **doc}
    return {
        name: sorted(({**dict.fromkeys(fields.get(name, ())), **c} for c in value), key=_cell_key)
        if isinstance(value, list)
        else value
        for name, value in sections.items()
    }


def _cell_key(cell: dict) -> tuple:
    return cell["target"], cell["batch_size"]


def profile_rows(target: str, batch: int, **ops: tuple[str, float]) -> list[dict]:
    """A cell's op profile rows (the document's "op_profiles"): ``name=(op type, mean us per call)``, 4 calls."""
    total = sum(mean for _type, mean in ops.values())
    return [
        {
            "target": target,
            "batch_size": batch,
            "op_name": name,
            "op_type": op_type,
            "calls": 4,
            "total_us": 4 * mean,
            "mean_us": mean,
            "share": mean / total,
        }
        for name, (op_type, mean) in ops.items()
    ]


def diagnosis_row(target: str, batch: int, first: dict | None, layers: list[dict]) -> dict:
    """A cell's diagnosis (the document's "diagnoses"), on 2 images."""
    return {"target": target, "batch_size": batch, "images": 2, "first_diverging": first, "layers": layers}
