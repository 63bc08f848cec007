"""Preprocessing speed-up of run_parallel's worker processes where tasks really run.

    .venv/bin/python bench/parallel_contexts.py [--images 24] [--repeats 3]

Three contexts, the same call (`erfnet_tasks.datasets.cityscapes.preprocess` on synthetic Cityscapes images) with
1 worker and with every core: the CLI (an ordinary process, as `erfnet` and `airflow dags test`), a
daemonic billiard process (what Celery's prefork pool makes; the standard library refuses it children),
and a task in a real `celery worker --pool prefork` with a Redis broker (its own empty Redis database).
Writes bench/parallel_contexts.json, and its section of BENCHMARKS.md (bench/report.py renders it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "parallel_contexts.json"
REDIS = os.environ.get("ERFNET_BENCH_REDIS", "127.0.0.1:6379")


def timed_preprocess(tree: str, out: str, workers: int) -> dict:
    """Seconds for one preprocess of the tree, and whether this process is daemonic."""
    from erfnet_tasks.datasets.cityscapes import preprocess
    from erfnet_tasks.parallel import is_daemonic

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = preprocess(
        Path(tree) / "leftImg8bit" / "val",
        Path(out) / "prep",
        Path(tree) / "gtFine" / "val",
        Path(out) / "gt",
        workers=workers,
        progress=False,
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "images": manifest["images"], "daemonic": is_daemonic(), "pid": os.getpid()}


# ------------------------------------------------------------------------------- the Celery app
# Imported by the worker started below (`celery -A parallel_contexts`), configured from its environment.
try:
    from celery import Celery

    app = Celery(
        "parallel_contexts",
        broker=os.environ.get("BENCH_BROKER", "memory://"),
        backend=os.environ.get("BENCH_BROKER", "cache+memory://"),
    )
    celery_task = app.task(name="bench.timed_preprocess")(timed_preprocess)
except ImportError:  # pragma: no cover - celery comes with the airflow extra
    app = None


def in_celery_worker(tree: Path, work: Path, worker_counts: list[int], repeats: int) -> dict[int, list[dict]]:
    import redis

    host, _, port = REDIS.partition(":")
    db = next(d for d in range(15, 0, -1) if redis.Redis(host=host, port=int(port), db=d).dbsize() == 0)
    broker = f"redis://{REDIS}/{db}"
    env = {**os.environ, "BENCH_BROKER": broker, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"}
    log = (work / "celery-worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "parallel_contexts",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
        ],
        cwd=HERE,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        app.conf.broker_url = app.conf.result_backend = broker
        out: dict[int, list[dict]] = {n: [] for n in worker_counts}
        for _ in range(repeats):
            for n in worker_counts:
                result = celery_task.delay(str(tree), str(work / "celery_out"), n).get(timeout=600)
                out[n].append(result)
                print(f"celery worker, {n} worker(s): {result['images'] / result['seconds']:.2f} img/s", flush=True)
        return out
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(60)
        log.close()
        redis.Redis(host=host, port=int(port), db=db).flushdb()


def _daemonic_child(queue, tree, out, workers):
    queue.put(timed_preprocess(tree, out, workers))


def in_daemonic_process(tree: Path, work: Path, workers: int) -> dict:
    import billiard

    ctx = billiard.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_daemonic_child, args=(queue, str(tree), str(work / "daemon_out"), workers), daemon=True)
    child.start()
    result = queue.get(timeout=600)
    child.join()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-celery", action="store_true", help="skip the real Celery worker (no Redis here)")
    args = parser.parse_args(argv)
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.parallel import default_workers

    cores = default_workers()
    load_before = [round(x, 2) for x in os.getloadavg()]
    counts = [1, cores]
    with tempfile.TemporaryDirectory(prefix="erfnet-bench-par-") as tmp:
        work = Path(tmp)
        tree = work / "cityscapes"
        write_sample_data(tree, args.images)
        raw: dict[str, dict[int, list[dict]]] = {"cli": {n: [] for n in counts}, "daemonic": {n: [] for n in counts}}
        for _ in range(args.repeats):  # interleaved, so that load from others spreads over every contender
            for n in counts:
                raw["cli"][n].append(timed_preprocess(str(tree), str(work / "cli_out"), n))
                raw["daemonic"][n].append(in_daemonic_process(tree, work, n))
                print(
                    f"cli {n}: {args.images / raw['cli'][n][-1]['seconds']:.2f} img/s, daemonic {n}: "
                    f"{args.images / raw['daemonic'][n][-1]['seconds']:.2f} img/s",
                    flush=True,
                )
        if not args.no_celery:
            raw["celery_worker"] = in_celery_worker(tree, work, counts, args.repeats)
    summary = {}
    for context, per in raw.items():
        ips = {str(n): statistics.median(args.images / r["seconds"] for r in runs) for n, runs in per.items()}
        summary[context] = {
            "daemonic": per[counts[-1]][0]["daemonic"],
            "img_per_s": ips,
            "speedup": ips[str(cores)] / ips["1"],
        }
        print(
            f"{context}: daemonic={summary[context]['daemonic']} 1 worker {ips['1']:.2f} img/s, {cores} workers "
            f"{ips[str(cores)]:.2f} img/s, speed-up {summary[context]['speedup']:.2f}x"
        )
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    RESULTS.write_text(
        json.dumps(
            {
                "images": args.images,
                "repeats": args.repeats,
                "cores": cores,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "git": git.stdout.strip(),
                "load_before": load_before,
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
                "contexts": summary,
                "raw": raw,
            },
            indent=1,
        )
        + "\n"
    )
    # BENCHMARKS.md is rendered from bench/results.json (make bench) plus this file: rewrite it with both.
    subprocess.run([sys.executable, str(HERE / "run.py"), "--report-only"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
