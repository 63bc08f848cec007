"""A cold nightly on the real cluster, today's DAG against the new one -> bench/lab_night.json, BENCHMARKS.md.

The cluster is deploy/local_cluster.py's (api-server, scheduler, dag-processor, a CPU worker and two
simulated NPU hosts: host A with two Ascend310P3 devices, host B with one Ascend310), the Ascend tools are
the timing stand-ins (tests/standins/standin_timing.py: atc, AOE and the device take their modeled times
x ``--scale``; every measurement is timed as if it read the val set's 500 images). Each contender gets a
fresh cluster and a cold run: targets Ascend310 and Ascend310P3 with AOE, batch sizes 1, 4 and 8 (12
cells, 6 of them AOE-tuned). "Today's DAG" is the whole source tree at ``--old`` (default 83a5848, the
commit before the per-cell DAG), taken with ``git archive``: its DAG, library and plugin; the new one is
this checkout. Both run under this checkout's cluster, Airflow settings and stand-ins.

While the run goes, the results database is polled every second for the run's published cells. After it:
- time to the first published cell, and until every plain (non-AOE) cell is published;
- the makespan (trigger to the DAG run's end) against a lower bound from the stand-ins' own timelines:
  the time to the first tool run, plus the larger of the busiest device's busy time and the longest
  chain of one cell's steps (its compile steps, then its measurement, which cannot overlap);
- where the gap goes: the binding device's idle time (work of its chip ready but not started: Airflow's
  scheduling and task start; nothing ready: upstream not done) and the tail after its last use; per cell,
  from its compile's end to its measurement's start, the part when every device of its chip was busy
  (queueing for a device) and the rest (Airflow); the Airflow hops of every task (scheduled -> queued ->
  started) from the REST API;
- the issue's targets: a chip's plain cells all published before its first AOE tuning ends, the first
  cell published within a minute of its compile, the makespan within 1.2x of the bound.

    .venv/bin/python bench/lab_night.py [--scale 0.0167] [--slots 3] [--contenders old new] [--old 83a5848]
    make bench-lab

Not part of `make bench`: two cold runs and two cluster starts take about 10 minutes here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
STANDINS = REPO / "tests" / "standins"
sys.path[:0] = [str(BENCH), str(REPO / "deploy"), str(STANDINS)]

from local_cluster import LocalCluster, Worker  # noqa: E402  deploy/local_cluster.py
from standin_timing import read_timeline  # noqa: E402

RESULTS = BENCH / "lab_night.json"
MARKDOWN = REPO / "BENCHMARKS.md"
START, END = "<!-- lab-night:start -->", "<!-- lab-night:end -->"
DAG_ID = "erfnet_offline_inference"
OLD_COMMIT = "83a5848"
HOSTS = {"host-a": "Ascend310P3,Ascend310P3", "host-b": "Ascend310"}
TARGETS = ["Ascend310", "Ascend310P3"]
BATCH_SIZES = [1, 4, 8]
VAL_IMAGES = 500  # each measurement is timed as if it read the Cityscapes val set
IMAGES = 2  # the images it really computes (ONNX Runtime on this machine's CPU)
DEFAULT_SCALE = 1 / 60  # a lab's minute is a second here: an AOE cell's hour takes a minute
FIRST_CELL_WITHIN_S = 60.0
MAKESPAN_RATIO_TARGET = 1.2


def log(msg: str) -> None:
    print(f"[lab_night {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- analysis


def cell_of(run: dict) -> tuple[str, int]:
    """The (target, batch) a tool run worked for: atc and AOE compile it, ais_bench measures it."""
    aoe = run["tool"] == "aoe" or bool(run.get("tuned"))
    return (run["chip"] + ("+AOE" if aoe else ""), int(run["batch"]))


def _merged_length(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _overlap(spans: list[tuple[float, float]], a: float, b: float) -> float:
    return _merged_length([(max(a, s), min(b, e)) for s, e in spans if min(b, e) > max(a, s)])


def _all_busy_spans(per_device: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The spans during which every one of the devices was busy."""
    if not per_device:
        return []
    common = sorted(per_device[0])
    for spans in per_device[1:]:
        common = [(max(a, c), min(b, d)) for a, b in common for c, d in spans if min(b, d) > max(a, c)]
    return common


def analyse(t0: float, run_end: float, timeline: list[dict], published: dict, tis: list[dict]) -> dict:
    """The figures of one run (module docstring). ``t0``: the trigger; ``published``: (target, batch) ->
    first time seen in the results database; ``tis``: the run's task instances from the REST API."""
    ran = [r for r in timeline if r["start"] >= t0]
    first_tool = min(r["start"] for r in ran)
    devices: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in ran:
        if r["device"] is not None:
            devices.setdefault((r["host"], r["device"]), []).append((r["start"], r["end"]))
    chips = {(r["host"], r["device"]): r["chip"] for r in ran if r["device"] is not None}
    busy = {d: _merged_length(s) for d, s in devices.items()}
    compiles: dict[tuple[str, int], list[dict]] = {}
    measures: dict[tuple[str, int], dict] = {}
    for r in ran:
        if r["tool"] in ("atc", "aoe"):
            compiles.setdefault(cell_of(r), []).append(r)
        elif r["tool"] == "ais_bench" and r["ok"]:
            measures[cell_of(r)] = r  # the last ok one (a retried cell's)
    chains = {
        cell: sum(c["end"] - c["start"] for c in steps)
        + (measures[cell]["end"] - measures[cell]["start"] if cell in measures else 0.0)
        for cell, steps in compiles.items()
    }
    busiest = max(busy, key=busy.get)
    longest = max(chains, key=chains.get)
    prefix = first_tool - t0
    bound = prefix + max(busy[busiest], chains[longest])
    makespan = run_end - t0

    cells = []
    for cell, steps in sorted(compiles.items()):
        ready = max(s["end"] for s in steps)
        m = measures.get(cell)
        row = {"cell": f"{cell[0]} bs{cell[1]}", "aoe": cell[0].endswith("+AOE"), "compiled_s": ready - t0}
        if m:
            chip_devices = [s for d, s in devices.items() if chips[d] == m["chip"] and d[0] == m["host"]]
            waited = m["start"] - ready
            queued = _overlap(_all_busy_spans(chip_devices), ready, m["start"])
            row |= {"measure_start_s": m["start"] - t0, "queued_for_device_s": queued, "not_started_s": waited - queued}
            row |= _task_hops(_task_of(steps[-1], tis), _task_of(m, tis), steps[-1], m, published.get(cell))
        if cell in published:
            row["published_s"] = published[cell] - t0
            row["published_after_compile_s"] = published[cell] - ready
        cells.append(row)

    return {
        "first_tool_s": prefix,
        "makespan_s": makespan,
        "bound_s": bound,
        "ratio": makespan / bound,
        "bound_by": (
            f"device {busiest[0]}:{busiest[1]} busy {busy[busiest]:.1f} s"
            if busy[busiest] >= chains[longest]
            else f"chain of {longest[0]} bs{longest[1]} {chains[longest]:.1f} s"
        ),
        "device_busy_s": {f"{h}:{d} ({chips[(h, d)]})": b for (h, d), b in sorted(busy.items())},
        "device_idle_s": {
            f"{h}:{d} ({chips[(h, d)]})": (max(e for _, e in s) - first_tool) - busy[(h, d)]
            for (h, d), s in sorted(devices.items())
        },
        "longest_chain_s": chains[longest],
        "gap": _gap(t0, run_end, first_tool, devices[busiest], chips[busiest], compiles, measures),
        "cells": cells,
        "first_published_s": min(published.values()) - t0 if published else None,
        "plain_published_s": _plain_published(published, t0, compiles),
        "targets": targets(cells, makespan, bound),
        "airflow_hops_s": _hops(tis),
    }


def _gap(t0, run_end, first_tool, spans, chip, compiles, measures) -> dict:
    """Where the binding device's time beyond its busy time went: its idle spans split by whether work
    of its chip was ready (compiled, not yet measured: Airflow's hops) or not (upstream not done), and
    the tail after its last use (evaluation, store, close, the hops between them)."""
    spans = sorted(spans)
    idle = [(first_tool, spans[0][0])] + [(a[1], b[0]) for a, b in itertools.pairwise(spans)]
    ready = [
        (max(s["end"] for s in steps), measures[cell]["start"])
        for cell, steps in compiles.items()
        if cell in measures and measures[cell]["chip"] == chip
    ]
    ready_idle = sum(_overlap(ready, a, b) for a, b in idle if b > a)
    total_idle = sum(b - a for a, b in idle if b > a)
    return {
        "idle_work_ready_s": ready_idle,
        "idle_nothing_ready_s": total_idle - ready_idle,
        "tail_after_last_use_s": run_end - spans[-1][1],
    }


def _plain_published(published: dict, t0: float, compiles: dict) -> float | None:
    plain = [c for c in compiles if not c[0].endswith("+AOE")]
    if not plain or any(c not in published for c in plain):
        return None
    return max(published[c] for c in plain) - t0


def targets(cells: list[dict], makespan: float, bound: float) -> list[dict]:
    """The issue's targets, from the per-cell figures (seconds from the trigger): a chip's plain cells all
    published before its first AOE tuning ends; the first cell published within a minute of the first
    compile (the earliest a cell can be measured, whichever cell that is); the makespan within 1.2x."""
    out = []
    never = float("inf")
    for chip in sorted({c["cell"].split(" ")[0].removesuffix("+AOE") for c in cells}):
        tunings = [c["compiled_s"] for c in cells if c["cell"].split(" ")[0] == f"{chip}+AOE"]
        plain = [c.get("published_s", never) for c in cells if c["cell"].split(" ")[0] == chip]
        if not tunings or not plain:
            continue
        last = max(plain)
        out.append(
            {
                "target": f"{chip}: plain cells all published before its first AOE tuning ends",
                "value": f"last plain {'never' if last == never else f'{last:.0f} s'}, "
                f"first tuning ended {min(tunings):.0f} s",
                "met": last < min(tunings),
            }
        )
    published = [c for c in cells if "published_s" in c]
    if published:
        first = min(published, key=lambda c: c["published_s"])
        lag = first["published_s"] - min(c["compiled_s"] for c in cells)
        out.append(
            {
                "target": f"first cell published within {FIRST_CELL_WITHIN_S:.0f} s of the first compile",
                "value": f"{first['cell']}: {lag:.0f} s",
                "met": lag <= FIRST_CELL_WITHIN_S,
            }
        )
    out.append(
        {
            "target": f"makespan within {MAKESPAN_RATIO_TARGET}x of the lower bound",
            "value": f"{makespan / bound:.2f}x ({makespan:.0f} s / {bound:.0f} s)",
            "met": makespan / bound <= MAKESPAN_RATIO_TARGET,
        }
    )
    return out


def _task_of(run: dict, tis: list[dict]) -> dict | None:
    """The task instance that started a tool run: its host and pid (the stand-in's ``task_pid``), and the
    run inside its span (a pid may come again later)."""
    for ti in tis:
        start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
        same = (ti.get("hostname"), ti.get("pid")) == (run["host"], run.get("task_pid"))
        if same and start and end and start <= run["start"] and run["end"] <= end:
            return ti
    return None


def _task_hops(compile_ti, measure_ti, compiled: dict, measured: dict, published: float | None) -> dict:
    """A cell's way from its compile's end to its publication, through its two tasks (seconds)."""
    if compile_ti is None or measure_ti is None:
        return {}
    compile_end = _ts(compile_ti["end_date"])
    scheduled, start, end = (_ts(measure_ti[k]) for k in ("scheduled_when", "start_date", "end_date"))
    hops = {
        "compile_task_after_tool_s": compile_end - compiled["end"],
        "until_measure_scheduled_s": scheduled - compile_end if scheduled else None,
        "measure_scheduled_to_started_s": start - scheduled if scheduled else None,
        "measure_task_to_tool_s": measured["start"] - start,
        "measure_task_after_tool_s": end - measured["end"],
    }
    if published is not None:
        hops["published_after_measure_task_s"] = published - end
    return hops


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _hops(tis: list[dict]) -> dict:
    """Medians and maxima over the run's task instances of Airflow's own hops."""
    hops: dict[str, list[float]] = {"scheduled_to_queued": [], "queued_to_started": []}
    for ti in tis:
        scheduled, queued, started = (_ts(ti.get(k)) for k in ("scheduled_when", "queued_when", "start_date"))
        if scheduled and queued and queued >= scheduled:
            hops["scheduled_to_queued"].append(queued - scheduled)
        if queued and started and started >= queued:
            hops["queued_to_started"].append(started - queued)
    return {k: {"median": statistics.median(v), "max": max(v), "n": len(v)} for k, v in hops.items() if v}


# ---------------------------------------------------------------------------------- the cluster


def old_tree(commit: str, dest: Path) -> Path:
    """The whole source tree at ``commit`` (git archive): today's DAG with the library it was written for."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _npu_host(tmp: Path, name: str, scale: float, figures: dict[str, str] | None = None) -> Worker:
    toolkit = tmp / name / "ascend-toolkit"
    toolkit.mkdir(parents=True)
    (toolkit / "version.cfg").write_text("# version: 1.0\nruntime_running_version=[7.6.0.1.220:8.0.0]\n")
    env = {
        "PATH": str(STANDINS / "bin"),
        "PYTHONPATH": str(STANDINS),
        "ASCEND_TOOLKIT_HOME": str(toolkit),
        "STANDIN_NPU_CHIP": HOSTS[name],
        "STANDIN_HOST": name,
        "STANDIN_NPU_STATE": str(tmp / name / "devices"),
        "ERFNET_DEVICE_LOCK_DIR": str(tmp / name / "leases"),
        "STANDIN_TIME_SCALE": f"{scale:g}",
        "STANDIN_NPU_IMAGES": str(VAL_IMAGES),
        **(figures or {}),
    }
    return Worker(name, "airflow-worker-npu", env, concurrency=4)  # its devices plus the compiles beside them


def _published(cluster: LocalCluster, run_id: str) -> dict:
    import sqlalchemy as sa

    from erfnet_tasks.results import db
    from erfnet_tasks.results.models import Performance

    with db.session_scope(cluster.results_url) as session:
        query = sa.select(Performance.target, Performance.batch_size).where(Performance.run_id == run_id)
        return {(t, int(b)) for t, b in session.execute(query)}


def run_contender(
    name: str,
    source: Path,
    work: Path,
    scale: float,
    timeout: float,
    slots: int = 3,
    device_env: dict | None = None,
    figures: dict[str, str] | None = None,
) -> dict:
    from erfnet_tasks.datasets.synthetic import write_sample_data
    from erfnet_tasks.model import write_random_checkpoint

    workers = [Worker("cpu-worker"), *(_npu_host(work, h, scale, figures) for h in HOSTS)]
    cluster = LocalCluster(work, workers, env={"ERFNET_NPU_SLOTS": str(slots), **(device_env or {})}, source=source)
    started = time.time()
    with cluster:
        log(f"{name}: cluster up in {time.time() - started:.0f} s ({cluster.base_url})")
        data = work / "data"
        write_sample_data(data / "cityscapes", IMAGES)
        write_random_checkpoint(data / "erfnet_random_untrained.pth", seed=3)
        cluster.wait_for_dag(DAG_ID)
        cluster.unpause(DAG_ID)
        conf = {
            "weights": str(data / "erfnet_random_untrained.pth"),
            "dataset_root": str(data / "cityscapes"),
            "targets": TARGETS,
            "batch_sizes": BATCH_SIZES,
            "aoe": True,
            "force": True,
            "reference_miou": 0.0,
            "image_limit": IMAGES,
        }
        _wait_for_quiet_scheduled_run(cluster)
        t0 = time.time()
        run_id = cluster.trigger(DAG_ID, conf)
        published: dict = {}
        deadline = time.monotonic() + timeout
        state = "queued"
        while state not in ("success", "failed"):
            cluster.check_alive()
            now = time.time()
            for cell in _published(cluster, run_id) - published.keys():
                published[cell] = now
            state = cluster.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
            if time.monotonic() > deadline:  # recorded as it stands: a run that stalls is a result too
                log(f"{name}: the run did not end in {timeout:.0f} s; recording it as it stands")
                state = f"still {state} after {timeout:.0f} s"
                break
            time.sleep(1)
        run = cluster.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        for cell in _published(cluster, run_id) - published.keys():
            published[cell] = time.time()
        tis = cluster.task_instances(DAG_ID, run_id)
        timeline = [r for h in HOSTS for r in read_timeline(work / h / "devices")]
    run_end = _ts(run["end_date"]) or time.time()
    log(f"{name}: run {state} in {run_end - t0:.0f} s, {len(published)} cells published")
    result = analyse(t0, run_end, timeline, published, tis)
    result |= {"state": state, "cells_published": len(published), "cluster_start_s": t0 - started}
    result["task_instances"] = [
        {k: ti.get(k) for k in ("task_id", "map_index", "state", "hostname", "queued_when", "start_date", "end_date")}
        for ti in tis
    ]
    return result


def _wait_for_quiet_scheduled_run(cluster: LocalCluster) -> None:
    """Unpausing starts the nightly's scheduled run (it fails at check_params: no configured defaults);
    the measured run must not queue behind it (max_active_runs=1)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = cluster.runs(DAG_ID)
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            return
        time.sleep(2)


# ------------------------------------------------------------------------------------- report


def render(results: dict) -> str:
    runs = results["contenders"]
    names = [n for n in ("old", "new") if n in runs]
    label = {"old": f"today's DAG ({results['old_commit']})", "new": f"per-cell DAG ({results['new_commit']})"}
    L = [
        START,
        "## A cold nightly on the real cluster (issue 26)",
        "",
        f"`{results['command']}` on {results['date']}, {results['minutes']:.1f} minutes. A fresh "
        "CeleryExecutor cluster per contender (deploy/local_cluster.py: scheduler, api-server, "
        "dag-processor, a CPU worker, host A with two Ascend310P3 stand-in devices, host B with one "
        f"Ascend310), one cold run each: targets Ascend310 and Ascend310P3 with AOE, batch sizes "
        f"{', '.join(map(str, BATCH_SIZES))} (12 cells, 6 AOE-tuned), the `npu_devices` pool at "
        f"{results.get('slots', 3)} slots, a task waiting for a device in-process "
        f"{results.get('device_wait_s') or 60:g} s before it gives its slot back and is rescheduled "
        f"{results.get('device_recheck_s') or 30:g} s later (ERFNET_DEVICE_WAIT_S, ERFNET_DEVICE_RECHECK_S; the "
        "new DAG only), the lab's Airflow settings (erfnet_tasks/lab_airflow.py, none "
        "tuned for latency). The stand-ins take their modeled "
        f"times (tests/standins/standin_timing.py) x {results['scale']:.4g}: atc "
        f"{60 * results['scale']:.1f} s, AOE {1200 * results['scale']:.0f} + {2400 * results['scale']:.0f} s "
        f"per cell on its device, a measurement of the 500-image val set "
        f"{(2 + 500 * 0.273 + 63 * 8 / 176.7) * results['scale']:.1f} s or so at the guide's fps (more "
        f"where this machine's ONNX Runtime over the {IMAGES} real images takes longer). The machine has "
        "2 cores shared with other work: every Airflow hop (parsing, task start, Celery) is slower "
        "here than on a lab's servers, and the scaled-down tools make those hops weigh more.",
        "",
        "| figure | " + " | ".join(label[n] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(title: str, fn) -> None:
        L.append(f"| {title} | " + " | ".join(fn(runs[n]) for n in names) + " |")

    def sec(v) -> str:
        return "never" if v is None else f"{v:.0f} s"

    row("run state, cells published", lambda r: f"{r['state']}, {r['cells_published']}")
    row("time to the first tool run (export, BN fix, preprocess, hops)", lambda r: sec(r["first_tool_s"]))
    row("time to the first published cell", lambda r: sec(r["first_published_s"]))
    row("time until every plain cell is published", lambda r: sec(r["plain_published_s"]))
    row("makespan (trigger to the run's end)", lambda r: sec(r["makespan_s"]))
    row("lower bound (first tool + max(busiest device, longest chain))", lambda r: sec(r["bound_s"]))
    row("bound set by", lambda r: r["bound_by"])
    row("**makespan / bound**", lambda r: f"**{r['ratio']:.2f}x**")
    row(
        "gap: binding device idle while a compiled cell of its chip waited",
        lambda r: sec(r["gap"]["idle_work_ready_s"]),
    )
    row("gap: binding device idle, nothing compiled for it yet", lambda r: sec(r["gap"]["idle_nothing_ready_s"]))
    row(
        "gap: after the binding device's last use (evaluate, store, close)",
        lambda r: sec(r["gap"]["tail_after_last_use_s"]),
    )
    for key, title in CELL_HOPS:
        row(f"per cell, median (max): {title}", lambda r, key=key: _median_max(r, key))
    for hop in ("queued_to_started",):
        row(
            f"every task, median (max): {hop.replace('_', ' ')}",
            lambda r, hop=hop: (
                f"{r['airflow_hops_s'][hop]['median']:.1f} s ({r['airflow_hops_s'][hop]['max']:.0f} s)"
                if hop in r["airflow_hops_s"]
                else ""
            ),
        )
    row("devices idle between the first tool and their last use", lambda r: _idle(r))
    L += ["", "Targets (issue 26):", "", "| target | " + " | ".join(label[n] for n in names) + " |"]
    L.append("|---|" + "---|" * len(names))
    met = {n: targets(runs[n]["cells"], runs[n]["makespan_s"], runs[n]["bound_s"]) for n in names}
    for title in [t["target"] for t in met[names[-1]]]:
        cells = []
        for n in names:
            t = next((t for t in met[n] if t["target"] == title), None)
            cells.append(f"{t['value']} ({'met' if t['met'] else '**not met**'})" if t else "")
        L.append(f"| {title} | " + " | ".join(cells) + " |")
    L += ["", results.get("notes", ""), "", END]
    return "\n".join(L)


CELL_HOPS = [
    ("published_after_compile_s", "compile's end to published"),
    ("queued_for_device_s", "compile's end to measurement: queued for a device (all of its chip's busy)"),
    ("not_started_s", "compile's end to measurement: a device free, the measurement not started"),
    ("compile_task_after_tool_s", "compile tool's end to its task's end"),
    ("until_measure_scheduled_s", "compile task's end to the measure task scheduled (dependencies, scheduler)"),
    ("measure_scheduled_to_started_s", "measure task scheduled to started (queue, pool, Celery, worker slot)"),
    ("measure_task_to_tool_s", "measure task's start to ais_bench's start (task start-up, device lease)"),
    ("measure_task_after_tool_s", "ais_bench's end to the measure task's end (evaluation)"),
    ("published_after_measure_task_s", "measure task's end to published"),
]


def _median_max(r: dict, key: str) -> str:
    values = [c[key] for c in r["cells"] if c.get(key) is not None]
    return f"{statistics.median(values):.0f} s ({max(values):.0f} s)" if values else ""


def _idle(r: dict) -> str:
    return ", ".join(f"{d.split(' ')[0]} {v:.0f} s" for d, v in r["device_idle_s"].items())


def write_markdown(results: dict) -> None:
    section = render(results)
    text = MARKDOWN.read_text(encoding="utf-8") if MARKDOWN.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    MARKDOWN.write_text(text, encoding="utf-8")


def _commit(ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="the stand-ins' time scale")
    parser.add_argument("--contenders", nargs="+", choices=["old", "new"], default=["old", "new"])
    parser.add_argument("--old", default=OLD_COMMIT, help="the commit of today's DAG")
    parser.add_argument("--slots", type=int, default=3, help="the npu_devices pool's slots (default 3: the devices)")
    # The lab's 60 s in-process wait and 30 s recheck are for tools that take minutes and hours; scaled
    # down with the tools they would be 1 s and 0.5 s, below one Airflow hop (a task start takes 1-7 s
    # here) and below the recheck's floor (settings.MIN_DEVICE_RECHECK_S).
    parser.add_argument("--device-wait", type=float, default=20, help="ERFNET_DEVICE_WAIT_S (default 20)")
    parser.add_argument(
        "--device-recheck", type=float, default=15, help="ERFNET_DEVICE_RECHECK_S (default 15, the least allowed)"
    )
    parser.add_argument(
        "--dag-defaults", action="store_true", help="leave ERFNET_DEVICE_WAIT_S/RECHECK_S at the DAG's defaults"
    )
    parser.add_argument(
        "--standin",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a stand-in figure (tests/standins/standin_timing.py), e.g. STANDIN_ATC_SECONDS=20; repeatable",
    )
    parser.add_argument("--tag", help="write bench/lab_night.<tag>.json only (BENCHMARKS.md is not touched)")
    parser.add_argument("--timeout", type=float, default=1200, help="the most one run may take, in seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (logs, timelines)")
    parser.add_argument("--report-only", action="store_true", help="BENCHMARKS.md from bench/lab_night.json")
    args = parser.parse_args(argv)
    if args.report_only:
        write_markdown(json.loads(RESULTS.read_text()))
        return 0
    figures = dict(item.split("=", 1) for item in args.standin)
    if any(not name.startswith("STANDIN_") for name in figures):
        parser.error("--standin takes NAME=VALUE with a STANDIN_ name")
    out = RESULTS if args.tag is None else RESULTS.with_name(f"lab_night.{args.tag}.json")
    began = time.time()
    results = {
        "command": " ".join([".venv/bin/python bench/lab_night.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scale": args.scale,
        "slots": args.slots,
        "device_wait_s": None if args.dag_defaults else args.device_wait,
        "device_recheck_s": None if args.dag_defaults else args.device_recheck,
        "standin_figures": figures,
        "old_commit": _commit(args.old),
        "new_commit": _commit("HEAD"),
        "load_before": list(os.getloadavg()),
        "contenders": {},
    }
    root = Path(tempfile.mkdtemp(prefix="lab_night_"))
    try:
        for name in args.contenders:
            source = old_tree(args.old, root / "source-old") if name == "old" else REPO
            device_env = (
                {}
                if args.dag_defaults
                else {
                    "ERFNET_DEVICE_WAIT_S": f"{args.device_wait:g}",
                    "ERFNET_DEVICE_RECHECK_S": f"{args.device_recheck:g}",
                }
            )
            results["contenders"][name] = run_contender(
                name, source, root / name, args.scale, args.timeout, args.slots, device_env, figures
            )
            out.with_suffix(".partial.json").write_text(json.dumps(results, indent=1) + "\n")  # should one fail
    finally:
        if args.keep:
            log(f"work folders kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["load_after"] = list(os.getloadavg())
    results["minutes"] = (time.time() - began) / 60
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    if args.tag is None:
        write_markdown(results)
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
