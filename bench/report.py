"""BENCHMARKS.md from bench/results.json: every number printed here is one that bench/run.py measured."""

from __future__ import annotations

import json


def _s(st: dict, fmt: str = ".2f") -> str:
    return f"{st['median']:{fmt}} ({st['min']:{fmt}}–{st['max']:{fmt}})"


def targets(r: dict) -> list[dict]:
    """The issue's targets against this run's medians."""
    out = []
    inf = r["inference"]["runs"]
    for bs in ("bs1", "bs4"):
        out.append(
            {
                "target": f"ORT backend vs bare ORT loop, {bs} (end to end)",
                "value": inf[bs]["ours_vs_bare"],
                "best": inf[bs].get("ours_vs_bare_best"),
                "threshold": 0.95,
            }
        )
        out.append(
            {
                "target": f"ORT backend vs PyTorch eager, {bs} (end to end)",
                "value": inf[bs]["ours_vs_torch"],
                "best": inf[bs].get("ours_vs_torch_best"),
                "threshold": 1.5,
            }
        )
    pre = r["preprocessing"]
    out.append(
        {
            "target": f"preprocessing, {pre['workers_all']} workers vs 1",
            "value": pre["scaling_all_vs_1"],
            "best": pre.get("scaling_all_vs_1_best"),
            "threshold": 1.7,
        }
    )
    ev = r["evaluation"]
    for key, value in ev["vs_guide"].items():
        if key.startswith("ours_fp16"):
            out.append(
                {
                    "target": f"evaluation from FP16, {key.removeprefix('ours_fp16_').replace('_', ' ')} "
                    f"vs the guide's iouEval",
                    "value": value,
                    "best": ev.get("vs_guide_best", {}).get(key),
                    "threshold": 5.0,
                }
            )
    for stage, f in r["memory"]["flat"].items():
        out.append(
            {"target": f"memory flat in images: {stage}", "value": f["growth_mib"], "threshold": None, "met": f["flat"]}
        )
    for t in out:
        t.setdefault("met", t["threshold"] is None or t["value"] >= t["threshold"])
    return out


def render(r: dict) -> str:
    m, mm = r["machine"], r["matmul"]
    L = [
        "# Benchmarks",
        "",
        f"Produced by `{r['command']}` (`make bench` first waits up to 2 minutes for a quiet machine) on "
        f"{r['started_at']} (git {m.get('git_commit')}), in "
        f"{r['total_seconds'] / 60:.1f} minutes. Every figure below is generated from `bench/results.json` "
        f"of that run. Figures are median (min–max) over {r['settings']['repeats']} interleaved repeats "
        f"({r['settings'].get('inference_repeats', r['settings']['repeats'])} for inference) unless noted.",
        "",
    ]
    if r.get("quick"):
        L += ["**QUICK MODE: tiny settings for development; not representative.**", ""]
    quiet = (
        "quiet"
        if r.get("quiet_at_start")
        else "NOT quiet (other engineers' jobs were running; figures are noisier and lower than on an idle machine)"
    )
    L += [
        f"Load average (1/5/15 min) before: {r['load_before']}, after: {r['load_after']}; the machine was "
        f"{quiet} at the start (threshold {r.get('threshold')}, waited {r.get('waited_s')} s).",
        "",
    ]
    L += [
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']} ({'KVM guest, ' if m.get('hypervisor') else ''}{m['physical_cores']} physical "
        f"cores, {m['logical_cpus']} logical, AVX2 {m['flags_avx2']}, AVX-512 {m['flags_avx512']}), "
        f"{m['memory_gib']} GiB RAM",
        f"- {m['os']}; Python {m['python']}, numpy {m['numpy']} ({m.get('numpy_blas')}), torch {m['torch']} "
        f"({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}, Pillow {m['pillow']}",
        f"- float32 matmul ({mm['n']}x{mm['n']} sgemm): numpy {_s(mm['numpy_gflops'], '.1f')} GFLOP/s, "
        f"torch {_s(mm['torch_gflops'], '.1f')} GFLOP/s. The limit used below is the better median, "
        f"**{mm['limit_gflops']:.1f} GFLOP/s**, i.e. at most {mm['limit_gflops'] / r['gflop_per_image']:.2f} "
        f"ErfNet images/s at {r['gflop_per_image']} GFLOP per image.",
        "",
    ]

    L += [
        "## Targets",
        "",
        "Ratios of medians decide 'met'; 'best' is the ratio of the best repeats (the ones "
        "least disturbed by other jobs on this shared machine).",
        "",
        "| target | measured (median) | best | needed | met |",
        "|---|---|---|---|---|",
    ]
    for t in r["targets"]:
        need = "flat (≤ +10% + 16 MiB)" if t["threshold"] is None else f"≥ {t['threshold']}"
        value = f"{t['value']:+.1f} MiB" if t["threshold"] is None else f"{t['value']:.2f}x"
        best = f"{t['best']:.2f}x" if t.get("best") is not None else ""
        L.append(f"| {t['target']} | {value} | {best} | {need} | {'yes' if t['met'] else '**no**'} |")
    L.append("")

    inf = r["inference"]
    L += [
        "## ErfNet 512x1024 inference (CPU)",
        "",
        f"{inf['images']} preprocessed images per run. *End to end*: images / wall time of the whole call "
        f"(model load, one warm-up batch, reading the inputs, and for our backend writing FP16 outputs and the "
        f"summary). *Steady*: batch size / mean `session.run` (or forward) time. Fraction = steady images/s x "
        f"{r['gflop_per_image']} GFLOP / matmul limit.",
        "",
        "| batch | contender | end to end img/s | steady img/s | fraction of matmul limit |",
        "|---|---|---|---|---|",
    ]
    names = {
        "ours": "our ORT backend `infer`",
        "bare": "bare ORT `session.run` loop",
        "torch": "PyTorch eager (inference_mode)",
    }
    for bs, per in inf["runs"].items():
        for who, label in names.items():
            p = per[who]
            L.append(
                f"| {bs[2:]} | {label} | {_s(p['end_to_end_ips'], '.3f')} | {_s(p['steady_ips'], '.3f')} | "
                f"{p['fraction_of_matmul_limit']:.1%} |"
            )
        L.append(
            f"| {bs[2:]} | ratio ours / bare, ours / PyTorch | {per['ours_vs_bare']:.3f}, "
            f"{per['ours_vs_torch']:.2f} | | |"
        )
    L.append("")

    pre = r["preprocessing"]
    L += [
        "## Preprocessing (full-size 2048x1024 synthetic PNGs)",
        "",
        f"{pre['images']} images per run, each contender in its own process. The guide's loop converts, resizes "
        f"and writes the .bin only; ours "
        f"also copies/derives the trainId labels, hashes every output for the manifest and writes atomically.",
        "",
        "| contender | img/s |",
        "|---|---|",
    ]
    for key, st in pre["ips"].items():
        L.append(f"| {key.replace('_', ' ')} | {_s(st)} |")
    L += [
        "",
        f"Scaling {pre['workers_all']} workers vs 1: **{pre['scaling_all_vs_1']:.2f}x**; ours vs the guide: "
        f"{pre['ours_1_vs_guide']:.2f}x (1 worker), {pre['ours_all_vs_guide']:.2f}x (all).",
        "",
    ]

    ev = r["evaluation"]
    acc = ev["accuracy"]
    L += [
        "## Evaluation (mIoU, 512x1024 outputs)",
        "",
        f"{ev['images']} images per run.",
        "",
        "| contender | img/s | vs guide |",
        "|---|---|---|",
    ]
    for key, st in ev["ips"].items():
        vs = ev["vs_guide"].get(key)
        L.append(f"| {key.replace('_', ' ')} | {_s(st)} | {'1.00x' if vs is None else f'{vs:.2f}x'} |")
    L += [
        "",
        "### ArgMax export (`erfnet export --argmax`): bytes and accuracy",
        "",
        "| output | bytes per image | mIoU |",
        "|---|---|---|",
        f"| FP16 logits (the guide's) | {acc['bytes_per_image']['fp16_logits']:,.0f} | {acc['miou_fp16_logits']:.6f} "
        f"(guide's iouEval: {acc['miou_guide_iouEval_fp16']:.6f}) |",
        f"| FP32 logits | {acc['bytes_per_image']['fp32_logits']:,.0f} | {acc['miou_fp32_logits']:.6f} |",
        f"| ArgMax int32 label map | {acc['bytes_per_image']['argmax_int32']:,.0f} | {acc['miou_argmax_int32']:.6f} |",
        "",
        f"The ArgMax model's labels score exactly what the FP32 logits score (per-class identical: "
        f"{acc['per_class_identical_argmax_vs_fp32']}). Against the FP16 logits' argmax, "
        f"{acc['pixels_differing_argmax_vs_fp16_argmax']:,} of {acc['pixels_total']:,} pixels differ: those whose "
        f"two best logits round to the same FP16 value, where the FP16 argmax takes the first channel. The "
        f"random weights used here make such near-ties far more common than trained weights do.",
        "",
    ]

    mem = r["memory"]
    small, large = mem["images"]
    L += [
        "## Bytes written and peak memory per stage",
        "",
        f"Each stage in its own process (peak RSS = VmHWM of /proc/self/status, which includes the Python "
        f"interpreter and "
        f"imported libraries), at {small} and {large} images. Bytes written = size of the files the stage "
        f"leaves, per image; syscall bytes = `wchar` of /proc/self/io per image.",
        "",
        "| stage | images | peak RSS MiB | bytes written / image | syscall bytes / image | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in mem["rows"]:
        sys_b = row["syscall_bytes_written_per_image"]
        L.append(
            f"| {row['stage']} | {row['images']} | {row['peak_rss_mib']:.0f} | "
            f"{row['bytes_written_per_image']:,.0f} | {'' if sys_b is None else f'{sys_b:,.0f}'} | "
            f"{row['seconds']:.1f} |"
        )
    L += ["", f"| stage | RSS growth from {small} to {large} images | flat |", "|---|---|---|"]
    for stage, f in mem["flat"].items():
        L.append(f"| {stage} | {f['growth_mib']:+.1f} MiB | {'yes' if f['flat'] else '**no**'} |")
    L.append("")

    dag = r["dag"]
    L += ["## The DAG's own overhead", ""]
    if "error" in dag:
        L += [f"Not measured: {dag['error']}", ""]
    else:
        L += [
            f"`{dag['command']}` (fresh ERFNET_DATA_DIR, SQLite metadata and results) took "
            f"**{dag['demo_wall_s']:.1f} s**; the same stages called directly in one process on the same "
            f"work took {dag['direct_total_s']:.1f} s, so the DAG adds **{dag['overhead_s']:.1f} s** "
            f"({dag['overhead_fraction']:.0%} of the demo's wall time): process start, Airflow's metadata "
            f"migration, parsing the DAG, task bookkeeping, results publishing. The tasks' own spans in its log "
            f"sum to {dag['task_spans_total_s']:.1f} s.",
            "",
            "| direct stage | s |",
            "|---|---|",
        ]
        L += [f"| {k} | {v:.2f} |" for k, v in dag["direct_s"].items()]
        L += ["", "| DAG task (span in the demo log) | s |", "|---|---|"]
        L += [f"| {k} | {v:.2f} |" for k, v in dag["task_spans_s"].items()]
        L.append("")

    L += parallel_contexts()
    L += cell_storage()
    L += diagnose()
    if r.get("history"):
        L += [
            "## Before / after the changes this benchmark prompted",
            "",
            "'Before' is an earlier run of this suite on this machine (`bench/history.json`, copied from "
            "that run's results.json); 'after' is this run, or the run named where a later change followed. "
            "Absolute images/s move with the VM's state between runs (compare each run's sgemm rate in its "
            "results.json); the ratios, measured side by side within one run, are the figures to compare.",
            "",
            "| change | figure | before | after | file |",
            "|---|---|---|---|---|",
        ]
        for h in r["history"]:
            L.append(
                f"| {h['change']} | {h['figure']} | {h['before']} ({h['before_run']}) | {_after(h, r)} | {h['file']} |"
            )
        L.append("")
    return "\n".join(L) + _history_scale() + _lab_night()


def _history_scale() -> str:
    """The section bench/history_scale.py measures (its own JSON), kept when `make bench` rewrites the file."""
    from pathlib import Path

    path = Path(__file__).with_name("history_scale.json")
    if not path.exists():
        return ""
    import history_scale  # beside this file; imports the app only when measuring

    return "\n" + history_scale.render(json.loads(path.read_text())) + "\n"


def _lab_night() -> str:
    """The section bench/lab_night.py measures (its own JSON, `make bench-lab`), kept when `make bench` rewrites
    the file."""
    from pathlib import Path

    path = Path(__file__).with_name("lab_night.json")
    if not path.exists():
        return ""
    import lab_night  # beside this file

    return "\n" + lab_night.render(json.loads(path.read_text())) + "\n"


def _after(h: dict, r: dict) -> str:
    """A superseded change keeps the figure its own 'after' run measured; the latest is read from this run."""
    if "after" in h:
        return f"{h['after']} ({h['after_run']})"
    after = r
    for key in h["after_path"]:
        after = after[key]
    return f"{after:.3f} (this run)"


def parallel_contexts(path=None) -> list[str]:
    """The section of bench/parallel_contexts.py's own run (bench/parallel_contexts.json), when there is one."""
    import json
    from pathlib import Path

    path = Path(path or Path(__file__).with_name("parallel_contexts.json"))
    if not path.is_file():
        return []
    p = json.loads(path.read_text())
    cores = p["cores"]
    L = [
        "## Parallel preprocessing where tasks run",
        "",
        f"`.venv/bin/python bench/parallel_contexts.py --images {p['images']} --repeats {p['repeats']}` "
        f"(run separately from `make bench`; {p['when']}, git {p['git']}, load average before "
        f"{p['load_before']}, after {p['load_after']}): `preprocess` of {p['images']} synthetic 2048x1024 "
        f"images with 1 worker and with {cores}, median of {p['repeats']} interleaved repeats, in the three "
        "kinds of process a task runs in. A Celery prefork child is daemonic; the standard library's pool "
        "refused it children (issue 13), billiard's pool does not. billiard's pool costs about 0.8 s per call "
        "to start and stop (its handler threads poll), about 1% of a 500-image preprocess.",
        "",
    ]
    if max(p["load_before"][0], p["load_after"][0]) > cores:
        L += [
            f"**This run is not a measure of the code**: the machine was busy (load average above its {cores} "
            "cores, other jobs running), so a second worker process had no idle core to use. Rerun "
            "on a quiet machine.",
            "",
        ]
    L += [f"| context | daemonic | 1 worker img/s | {cores} workers img/s | speed-up |", "|---|---|---|---|---|"]
    names = {
        "cli": "CLI / `airflow dags test` (ordinary process)",
        "daemonic": "daemonic billiard process (as a Celery prefork child)",
        "celery_worker": "task in a real `celery worker --pool prefork`",
    }
    for key, c in p["contexts"].items():
        ips = c["img_per_s"]
        L.append(
            f"| {names.get(key, key)} | {c['daemonic']} | {ips['1']:.2f} | {ips[str(cores)]:.2f} "
            f"| {c['speedup']:.2f}x |"
        )
    L.append("")
    return L


def diagnose(path=None) -> list[str]:
    """The section of bench/diagnose.py's own run (bench/diagnose.json), when there is one."""
    import json
    from pathlib import Path

    path = Path(path or Path(__file__).with_name("diagnose.json"))
    if not path.is_file():
        return []
    d = json.loads(path.read_text())
    L = [
        "## Locating a regression: `erfnet diagnose` (issue 27)",
        "",
        f"`.venv/bin/python bench/diagnose.py --images {d['images']} --repeats {d['repeats']}` (run separately "
        f"from `make bench`; {d['when']}, git {d['git']}, {d['cores']} cores, load average before "
        f"{d['load_before']}, after {d['load_after']}): `{d['command']}` in its own process, on "
        f"{d['images']} synthetic full-size images (2048x1024 PNGs preprocessed to 512x1024 inputs), against the "
        "random checkpoint's fixed export; the model has one conv's weights perturbed "
        f"(`{d['perturbed_node']}`): for ONNX Runtime, the `cpu` backend's compiled model (batch 1); for "
        "PyTorch, the checkpoint. Seconds: the whole command (imports, loading, the pairing export for "
        f"PyTorch, every layer's metrics), median (min-max) of {d['repeats']} interleaved repeats.",
        "",
    ]
    if max(d["load_before"][0], d["load_after"][0]) > d["cores"]:
        L += [
            f"**These seconds are not a measure of the code**: the machine was busy (load average above its "
            f"{d['cores']} cores, other engineers' jobs running).",
            "",
        ]
    L += ["| backend | layers | wall s | peak RSS MiB | first diverging (every repeat) |", "|---|---|---|---|---|"]
    for name, b in d["backends"].items():
        firsts = set(b["first_diverging"])
        first = f"`{firsts.pop()}`" if len(firsts) == 1 else ", ".join(map(str, b["first_diverging"]))
        L.append(
            f"| {name} | {b['layers']} | {b['median_s']:.1f} ({min(b['seconds']):.1f}-{max(b['seconds']):.1f}) | "
            f"{max(b['peak_rss_mib'])} | {first} |"
        )
    L.append("")
    return L


def cell_storage(path=None) -> list[str]:
    """The section of bench/cell_storage.py's own run (bench/cell_storage.json), when there is one."""
    import json
    from pathlib import Path

    path = Path(path or Path(__file__).with_name("cell_storage.json"))
    if not path.is_file():
        return []
    p = json.loads(path.read_text())
    ways, mib = p["ways"], 2**20
    cells = len(p["batch_sizes"])
    L = [
        "## Outputs that do not fill the disk (issue 17)",
        "",
        f"`.venv/bin/python bench/cell_storage.py --images {p['images']} --batch-sizes "
        f"{','.join(map(str, p['batch_sizes']))}` (run separately from `make bench`; {p['when']}, git {p['git']}, "
        f"{p['cores']} cores, load average before {p['load_before']}, after {p['load_after']}): ONNX Runtime CPU "
        f"(`cpu`), {p['images']} synthetic images, {cells} cells (batch sizes {p['batch_sizes']}), each way through "
        "the pipeline's own functions. `today`: infer every cell, then evaluate, keep everything (the path before "
        "issue 17); `keep_outputs`: `measure_cell` keeping the logits; `default`: `measure_cell` deleting them "
        "once counted; `labels_on_device`: ArgMax compiled in, int32 label maps, deleted. Peak disk: the largest "
        "byte count under the run's folder, sampled every 50 ms. CPU wall times on a 2-core machine; an "
        "NPU's device time is far smaller, so there the write, read and delete are the cell's time.",
        "",
    ]
    if max(p["load_before"][0], p["load_after"][0]) > p["cores"]:
        L += [
            f"**The wall times of this run are not a measure of the code**: the machine was busy (load average "
            f"above its {p['cores']} cores, other engineers' test suites running), so they vary by tens of seconds "
            "between cells of the same way. The bytes and the peak disk do not depend on the load.",
            "",
        ]
    L += [
        "| way | bytes written / image | wall s / cell (mean) | peak disk MiB | left on disk MiB | mIoU (bs1) |",
        "|---|---|---|---|---|---|",
    ]
    for name, w in ways.items():
        mean = sum(w["seconds_per_cell"]) / len(w["seconds_per_cell"])
        L.append(
            f"| {name} | {w['bytes_per_image']:,} ({w['bytes_per_image'] / mib:.2f} MiB) | {mean:.2f} | "
            f"{w['peak_bytes'] / mib:.1f} | {w['left_bytes'] / mib:.1f} | {w['miou'][0]!r} |"
        )
    ratio = ways["default"]["bytes_per_image"] / ways["labels_on_device"]["bytes_per_image"]
    tie = p["tie_pixels"] / p["pixels"] if p["pixels"] else 0.0
    L += [
        "",
        f"- Bytes written per image: FP16 logits / int32 labels = {ratio:.0f}x.",
        f"- Tie rate: {p['tie_pixels']} of {p['pixels']} pixels ({tie:.4%}) differ between the device-side "
        "ArgMax (ONNX Runtime, on float32 logits) and the host-side argmax of the FP16 logits. Rounding to FP16 "
        "keeps the order of distinct values and only creates ties, so every such pixel is one whose two best "
        "logits round to the same FP16 value (the first index wins on the host). mIoU (bs1): "
        f"{ways['labels_on_device']['miou'][0]!r} with labels, {ways['default']['miou'][0]!r} with logits.",
        f"- The mIoU with `keep_outputs` and with deletion is the same to the last digit: "
        f"{ways['keep_outputs']['miou'] == ways['default']['miou']}.",
    ]
    L += [*_demo_label_modes(tie), ""]
    return L


def _demo_label_modes(tie_rate: float) -> list[str]:
    """bench/demo_label_modes.py's comparison of `erfnet demo` with and without --labels-on-device."""
    import json
    from pathlib import Path

    path = Path(__file__).with_name("demo_label_modes.json")
    if not path.is_file():
        return []
    d = json.loads(path.read_text())
    moved = d["moved_pixels_at_least"] / d["pixels"]
    return [
        f"- `erfnet demo` against `erfnet demo --labels-on-device` (`.venv/bin/python bench/demo_label_modes.py`, "
        f"{d['when']}; {d['images']} synthetic images, `cpu` at batch 1): mIoU {d['miou_labels']!r} with labels, "
        f"{d['miou_logits']!r} with logits. From the two stored confusion matrices, at least "
        f"{d['moved_pixels_at_least']:,} of {d['pixels']:,} pixels ({moved:.4%}) were counted in another class: "
        f"{'within' if moved <= tie_rate else 'ABOVE'} the tie rate above ({tie_rate:.4%})."
    ]
