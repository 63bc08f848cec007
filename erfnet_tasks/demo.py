"""``erfnet demo``: the whole DAG, in-process, on the embedded default.

It prepares a SYNTHETIC Cityscapes-layout dataset and a RANDOMLY INITIALISED checkpoint (unless given
real ones), migrates a SQLite Airflow metadata database under the data directory, and runs the real DAG
with ``airflow dags test`` (one process, no scheduler) on ONNX Runtime and PyTorch CPU. Results land in
ERFNET_RESULTS_DB_URL, else the SQLite results file. The accuracy of random weights on synthetic images
is meaningless; the point is that every step runs. With real weights and the real val set the same
command reproduces the guide (72.20 mIoU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .deployment import DAG_ID, local_airflow_env
from .errors import BadInput
from .params import validate_params
from .settings import Settings, data_dir, load_settings, repo_dir

DEMO_IMAGES = 4
DEMO_BATCH_SIZES = [1, 4]
DEMO_TARGETS = ["cpu", "torch-cpu"]


def prepare_inputs(base: Path, images: int) -> tuple[Path, Path]:
    """A synthetic dataset and a random checkpoint under ``base`` (kept between demo runs)."""
    from .datasets.synthetic import write_sample_data
    from .model import write_random_checkpoint

    dataset = base / "synthetic-cityscapes"
    if not (dataset / "leftImg8bit" / "val").is_dir() or len(list((dataset / "leftImg8bit").rglob("*.png"))) != images:
        print(f"demo: writing a SYNTHETIC Cityscapes-layout dataset of {images} images to {dataset}")
        shutil.rmtree(dataset, ignore_errors=True)
        write_sample_data(dataset, images)
    weights = base / "erfnet_random_untrained.pth"
    if not weights.is_file():
        print(f"demo: writing a RANDOMLY INITIALISED, UNTRAINED checkpoint to {weights}")
        write_random_checkpoint(weights, seed=0)
    return dataset, weights


def demo_settings() -> Settings:
    """The caller's settings with the data directory as one more root: the demo writes its inputs there."""
    settings = load_settings()
    return Settings(settings.data_dir, tuple(dict.fromkeys((*settings.data_roots, data_dir()))))


def airflow_environment(base: Path, dags_folder: Path) -> dict[str, str]:
    settings = demo_settings()
    env = local_airflow_env(
        base / "airflow_home",
        dags_folder=dags_folder,
        inherit=os.environ,
        data=settings.data_dir,
        data_roots=settings.data_roots,
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)  # the demo's metadata is its own SQLite file
    return env


def _airflow(*args: str, env: dict[str, str]) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), *args], env=env, check=False)
    if proc.returncode != 0:
        raise BadInput(
            f"`airflow {args[0]} {args[1] if len(args) > 1 else ''}` failed with exit code "
            f"{proc.returncode} (its output is above)"
        )


def _validate_conf(conf: dict[str, object]) -> None:
    """The trigger form's checks, before Airflow starts: a bad --targets or --batch-sizes is one line now,
    not a failed DAG run minutes later. The data directory is a root, as airflow_environment makes it."""
    validate_params(conf, demo_settings().data_roots)


def run_demo(
    *,
    weights: str | None = None,
    dataset_root: str | None = None,
    images: int = DEMO_IMAGES,
    targets: list[str] | None = None,
    batch_sizes: list[int] | None = None,
    labels_on_device: bool = False,
    keep_outputs: bool = False,
) -> dict[str, Any]:
    repo = repo_dir()
    if repo is None:
        raise BadInput("erfnet demo runs from a source checkout (it needs the repository's dags/ folder)")
    base = data_dir() / "demo"
    base.mkdir(parents=True, exist_ok=True)
    if weights is None or dataset_root is None:
        sample_dataset, sample_weights = prepare_inputs(base, images)
        dataset_root = dataset_root or str(sample_dataset)
        weights = weights or str(sample_weights)
    random_weights = Path(weights).name == "erfnet_random_untrained.pth"
    conf = {
        "weights": str(Path(weights).resolve()),
        "dataset_root": str(Path(dataset_root).resolve()),
        "targets": targets or DEMO_TARGETS,
        "batch_sizes": batch_sizes or DEMO_BATCH_SIZES,
        "image_limit": 0,
        "force": True,
        "labels_on_device": labels_on_device,
        "keep_outputs": keep_outputs,
    }
    if random_weights:
        # Random weights score ~0 mIoU by construction; gating them against 72.20 would only say so.
        conf["reference_miou"] = 0.0
        print("demo: random weights, so the accuracy gate's reference is 0 for this run (the guide's is 72.20)")
    _validate_conf(conf)
    env = airflow_environment(base, repo / "dags")
    from .results import db

    print(f"demo: results database {db.masked(db.resolve_url())}")
    db.upgrade()
    print("demo: migrating the Airflow metadata database (SQLite, under data/demo/airflow_home)")
    _airflow("db", "migrate", env=env)
    print(f"demo: running the DAG {DAG_ID} in-process with {json.dumps(conf)}")
    _airflow("dags", "test", DAG_ID, "--conf", json.dumps(conf), env=env)
    return conf
