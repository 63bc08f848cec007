"""The results database and plugin at the scale of years of nightlies -> bench/history_scale.json, BENCHMARKS.md.

For each size (1 year = 365 runs, 5 years = 1,825 runs) into a fresh PostgreSQL database (and SQLite
with --sqlite): generate the nightly documents (bench/nightlies.py), import them with ONE
`erfnet results import DIR` process (timed, first 400 files, then the rest), then request every
plugin page and JSON endpoint through the app in-process (FastAPI's TestClient, no network; median
and max of the repeats, after one warm-up request), and measure the database's size.

    .venv/bin/python bench/history_scale.py [--years 1 5] [--repeats 5] [--sqlite] [--keep-pg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "plugins"))

import nightlies  # noqa: E402

RESULTS = BENCH / "history_scale.json"
MARKDOWN = REPO / "BENCHMARKS.md"
PG_ADMIN = os.environ.get("ERFNET_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
START, END = "<!-- history-scale:start -->", "<!-- history-scale:end -->"


def _pages(first_run: str, run_id: str) -> dict[str, str]:
    day = first_run[:10]
    return {
        "latest run (/)": "/",
        "one run (/runs/ID)": f"/runs/{run_id}",
        "history, default 90 days": "/history",
        "history, last year": "/history?days=365",
        "history, since the first run": f"/history?since={day}",
        "history, since the first run, batch 64": f"/history?since={day}&batch=64",
        "accuracy.csv": f"/runs/{run_id}/accuracy.csv",
        "perf.csv": f"/runs/{run_id}/perf.csv",
        "API /api/runs (50)": "/api/runs",
        "API /api/runs/latest": "/api/runs/latest",
        "API /api/history, 90 days, all batches": "/api/history",
        "API /api/history since the first run (a page: 100 runs)": f"/api/history?since={day}",
        "API /api/cann (all versions, all batches)": "/api/cann",
    }


def _import(url: str, folder: Path) -> float:
    env = {**os.environ, "ERFNET_RESULTS_DB_URL": url}
    start = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "erfnet"), "results", "import", str(folder)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"import failed: {done.stderr.strip()[-500:]}")
    print("   ", done.stdout.strip().splitlines()[-1], f"in {seconds:.1f} s")
    return seconds


def _time_pages(url: str, repeats: int) -> dict[str, dict]:
    from erfnet_ui.app import URL_PREFIX, create_app
    from fastapi.testclient import TestClient

    from erfnet_tasks.results import db, queries

    with db.session_scope(url) as session:
        runs = queries.list_runs(session, limit=100_000, counts=False)
    first, latest = runs[-1]["started_at"], next(r["id"] for r in runs if r["status"] != "skipped")
    client = TestClient(create_app(require_user=lambda: None, database_url=lambda: url), root_path=URL_PREFIX)
    out = {}
    for name, path in _pages(first, latest).items():
        response = client.get(path)  # warm-up: the engine's pool, Jinja's template cache
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - start) * 1000)
        out[name] = {
            "path": path,
            "median_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1),
            "bytes": len(response.content),
        }
        print(f"    {name:45s} {out[name]['median_ms']:8.1f} ms  {out[name]['bytes']:>9,d} B")
    out["API /api/history since the first run, every page"] = _walk_pages(
        client, f"/api/history?since={first[:10]}", repeats
    )
    return out


def _walk_pages(client, path: str, repeats: int) -> dict:
    """Follow ``next`` from the first page to the last: the slowest page, and the whole walk."""
    from erfnet_ui.app import URL_PREFIX

    walks, slowest, pages, size = [], 0.0, 0, 0
    for _ in range(repeats):
        url, pages, size, start = path, 0, 0, time.perf_counter()
        while url:
            t = time.perf_counter()
            response = client.get(url)
            slowest = max(slowest, (time.perf_counter() - t) * 1000)
            body = response.json()
            pages, size = pages + 1, size + len(response.content)
            url = body["next"].removeprefix(URL_PREFIX) if body["next"] else None
        walks.append((time.perf_counter() - start) * 1000)
    print(f"    every page: {pages} pages, slowest {slowest:.1f} ms, whole walk {statistics.median(walks):.0f} ms")
    return {
        "path": path,
        "median_ms": round(statistics.median(walks), 1),
        "max_ms": round(slowest, 1),
        "bytes": size,
        "pages": pages,
    }


def _size(url: str) -> int:
    import sqlalchemy as sa

    from erfnet_tasks.results import db

    if url.startswith("sqlite"):
        return Path(url.removeprefix("sqlite:///")).stat().st_size
    with db.get_engine(url).connect() as conn:
        return conn.execute(sa.select(sa.func.pg_database_size(sa.func.current_database()))).scalar_one()


def _database(kind: str, tmp: Path):
    import sqlalchemy as sa

    if kind == "sqlite":
        return f"sqlite:///{tmp / 'results.sqlite'}", lambda: None
    name = f"erfnet_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop():
        from erfnet_tasks.results import db

        db.get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    return url, drop


def measure(years: int, kind: str, repeats: int, keep: bool) -> dict:
    n = 365 * years
    print(f"== {years} year(s): {n} nightly runs into {kind}")
    with tempfile.TemporaryDirectory(prefix="erfnet-history-") as tmp:
        tmp = Path(tmp)
        docs = nightlies.nightly_documents(n)
        head, rest = tmp / "first400", tmp / "rest"
        nightlies.write_documents(docs[:400], head)
        nightlies.write_documents(docs[400:], rest)
        url, drop = _database(kind, tmp)
        try:
            first = _import(url, head)
            later = _import(url, rest) if n > 400 else 0.0
            again = _import(url, head)  # every run already present: the cost of a re-run over a backlog
            pages = _time_pages(url, repeats)
            size = _size(url)
        finally:
            if not keep:
                drop()
    print(f"    database size {size / 1e6:.1f} MB")
    return {
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "years": years,
        "runs": n,
        "database": kind,
        "import_first_400_s": round(first, 2),
        "import_rest_s": round(later, 2),
        "import_rest_runs": len(docs[400:]),
        "documents": len(docs),
        "reimport_400_present_s": round(again, 2),
        "database_bytes": size,
        "pages": pages,
    }


def render(results: dict) -> str:
    rows = results["runs"]
    cols = [f"{r['years']} y ({r['runs']} nights, {r.get('documents', r['runs'])} runs, {r['database']})" for r in rows]
    L = [
        START,
        "## History at scale (results database and plugin pages)",
        "",
        f"`bench/history_scale.py`, {results['when']}: generated nightlies (`bench/nightlies.py`: 24 cells = 4 "
        "targets x 6 batch sizes, CANN changing monthly, injected regressions and OOM cells) imported with one "
        "`erfnet results import DIR` process each (a few nights have no run: outages the generator leaves out), "
        "then every page requested in-process through the plugin app "
        f"(median of {results['repeats']} after a warm-up). "
        "Targets at 5 years: every page < 300 ms, history < 1 s, 400 files imported in one call < 60 s. "
        "The machine has 2 cores; the load average on the last row says how quiet it was. Before this change "
        "(issue 20): the history showed only the newest 200 runs, its chart code took 37 s at 1,825 runs "
        "(quadratic), and importing a year meant 365 processes (273 s).",
        "",
        "| figure | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    L.append("| import 400 files, one call (s) | " + " | ".join(f"{r['import_first_400_s']:.1f}" for r in rows) + " |")
    L.append(
        "| import the other runs, one call (s) | "
        + " | ".join(f"{r['import_rest_s']:.1f} ({r['import_rest_runs']} runs)" for r in rows)
        + " |"
    )
    L.append(
        "| import the 400 again, all already present (s) | "
        + " | ".join(f"{r['reimport_400_present_s']:.1f}" for r in rows)
        + " |"
    )
    L.append("| database size (MB) | " + " | ".join(f"{r['database_bytes'] / 1e6:.1f}" for r in rows) + " |")
    for name in rows[0]["pages"]:
        if "every page" in name:
            L.append(
                f"| {name} (ms, whole walk / slowest page; pages; size) | "
                + " | ".join(
                    f"{r['pages'][name]['median_ms']:.0f} / {r['pages'][name]['max_ms']:.0f}; "
                    f"{r['pages'][name]['pages']} pages; {r['pages'][name]['bytes'] / 1000:.0f} kB"
                    for r in rows
                )
                + " |"
            )
            continue
        L.append(
            f"| {name} (ms, median / max; size) | "
            + " | ".join(
                f"{r['pages'][name]['median_ms']:.0f} / {r['pages'][name]['max_ms']:.0f}; "
                f"{r['pages'][name]['bytes'] / 1000:.0f} kB"
                for r in rows
            )
            + " |"
        )
    L.append(
        "| load average of the 2-core machine at the end (1, 5, 15 min) | "
        + " | ".join(", ".join(str(x) for x in r.get("load_average", [])) for r in rows)
        + " |"
    )
    L += ["", END]
    return "\n".join(L)


def write_markdown(results: dict) -> None:
    text = MARKDOWN.read_text(encoding="utf-8") if MARKDOWN.exists() else "# Benchmarks\n"
    section = render(results)
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    MARKDOWN.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--keep-pg", action="store_true", help="leave the databases (for a look with psql)")
    parser.add_argument("--report-only", action="store_true", help="rewrite BENCHMARKS.md from the JSON")
    args = parser.parse_args()
    if args.report_only:
        write_markdown(json.loads(RESULTS.read_text()))
        return
    kind = "sqlite" if args.sqlite else "postgresql"
    results = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "repeats": args.repeats,
        "runs": [measure(y, kind, args.repeats, args.keep_pg) for y in args.years],
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)
    print(f"wrote {RESULTS} and the history section of {MARKDOWN}")


if __name__ == "__main__":
    main()
