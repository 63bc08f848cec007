"""`erfnet demo` with and without --labels-on-device (issue 17's done-when) -> bench/demo_label_modes.json.

    .venv/bin/python bench/demo_label_modes.py

Runs the demo twice in a throwaway data directory and results database (the same synthetic images and
random checkpoint both times), then compares the `cpu` cells: mIoU from label maps (ArgMax compiled into
the model) against mIoU from the guide's FP16 logits (argmax on the host), and the pixels whose counted
class moved, from the two stored confusion matrices (half their L1 distance: a lower bound on the pixels
whose label differs). bench/report.py puts the comparison beside the tie rate of bench/cell_storage.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "demo_label_modes.json"


def run_demo(env: dict, *flags: str) -> None:
    erfnet = Path(sys.executable).with_name("erfnet")
    done = subprocess.run([str(erfnet), "demo", *flags], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"erfnet demo {' '.join(flags)} failed: {done.stderr.strip()[-800:]}")


def cpu_cells(url: str) -> dict[str, dict]:
    """label mode -> the cpu batch-1 accuracy cell of the run made in that mode."""
    from erfnet_tasks.results import db, queries

    with db.session_scope(url) as session:
        runs = queries.list_runs(session, limit=10, counts=False)
        docs = [queries.run_document(session, r["id"]) for r in runs]
    return {
        cell["label_mode"]: cell
        for doc in docs
        for cell in doc["accuracy"]
        if (cell["target"], cell["batch_size"]) == ("cpu", 1)
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="erfnet-demo-modes-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'results.sqlite'}"
        env = {**os.environ, "ERFNET_DATA_DIR": str(Path(tmp) / "data"), "ERFNET_RESULTS_DB_URL": url}
        run_demo(env)
        run_demo(env, "--labels-on-device")
        cells = cpu_cells(url)
    logits, labels = cells["logits"], cells["labels"]
    moved = (
        sum(
            abs(a - b)
            for row_a, row_b in zip(logits["confusion"], labels["confusion"], strict=True)
            for a, b in zip(row_a, row_b, strict=True)
        )
        // 2
    )
    pixels = sum(map(sum, logits["confusion"]))
    result = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "images": logits["images"],
        "miou_logits": logits["miou"],
        "miou_labels": labels["miou"],
        "pixels": pixels,
        "moved_pixels_at_least": moved,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
