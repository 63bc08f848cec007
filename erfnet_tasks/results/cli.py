"""``erfnet results ...``: query and feed the results database.

Thin handlers over db / queries / tables / publish; erfnet_tasks.cli calls ``register``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from ..argtypes import percent, positive_int

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    results = subparsers.add_parser("results", help="the results database: list, show, compare, import, export runs")
    results.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="database URL (default: $ERFNET_RESULTS_DB_URL, the Airflow connection "
        "erfnet_results, else data/results.sqlite)",
    )
    sub = results.add_subparsers(dest="results_command", required=True, metavar="ACTION")

    p = sub.add_parser("init", help="create or migrate the schema (Alembic upgrade to head)")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("list", help="the newest runs")
    p.add_argument("--limit", type=_row_limit, default=20)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", help="one run's accuracy and performance tables (like the guide's 6.3 and 7)")
    p.add_argument("--run", default="latest", metavar="ID|latest")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument(
        "--reference-target",
        metavar="TARGET",
        default=None,
        help="add throughput ratio columns against this target (e.g. Ascend310)",
    )
    p.add_argument(
        "--reference-miou",
        type=percent,
        default=None,
        metavar="PERCENT",
        help="reference mIoU in percent (default: the run's own, else the guide's 72.20)",
    )
    p.add_argument(
        "--tolerance",
        type=percent,
        default=None,
        metavar="POINTS",
        help="accepted mIoU shortfall in points (default: the run's own, else the guide's 1.0)",
    )
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("reference", help="the guide's published figures, as stored in the database (migration 0002)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_reference)

    p = sub.add_parser("compare", help="two runs cell by cell")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser(
        "import",
        help="publish run documents (results.json files written while the database "
        "was down, or an export); directories are searched for *.json",
    )
    p.add_argument("file", metavar="FILE", nargs="+", help="a run document, an export, or a directory of them")
    p.add_argument(
        "--replace", action="store_true", help="overwrite runs already in the database (default: skip them and say so)"
    )
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", help="runs as JSON documents or CSV cells")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument(
        "--run", action="append", metavar="ID|latest", help="a run to export (repeatable; default: every run)"
    )
    p.set_defaults(handler=cmd_export)


def _row_limit(text: str) -> int:
    """A positive row count the database's LIMIT can take (a BIGINT)."""
    from .models import BIGINT_MAX

    value = positive_int(text)
    if value > BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"expected at most {BIGINT_MAX}, got {text[:40]!r}")
    return value


def _url(args: argparse.Namespace) -> str:
    from . import db

    return db.normalize_url(args.db) if args.db else db.resolve_url()


def _reading_session(args: argparse.Namespace) -> contextlib.AbstractContextManager[Session]:
    from . import db

    url = _url(args)
    db.require_schema(url)
    return db.session_scope(url)


def cmd_init(args: argparse.Namespace) -> int:
    from . import db

    url = _url(args)
    revision = db.upgrade(url)
    print(f"results database {db.masked(url)} is at revision {revision}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from . import queries, tables

    with _reading_session(args) as session:
        runs = queries.list_runs(session, limit=args.limit)
    if args.format == "json":
        print(json.dumps(runs, indent=2))
    elif runs:
        print(tables.render_text(tables.runs_table(runs)))
    else:
        print("no runs yet")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import queries, regression, tables

    with _reading_session(args) as session:
        doc = queries.run_document(session, args.run)
        progress = _progress_if_running(session, doc)
    if progress is not None and args.format != "table":
        _say_still_running(progress)
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    elif args.format == "csv":
        print(tables.render_csv(tables.cell_rows(doc)), end="")
    else:
        if progress is not None:  # its cells not stored yet show their state in the tables
            doc = dict(doc, pending=progress["pending"])
        # The run is judged by the rules it ran with, unless the user asks for others.
        rules = regression.rules_from_params(doc["run"].get("params"))
        reference = rules.reference_miou if args.reference_miou is None else args.reference_miou
        tolerance = rules.tolerance if args.tolerance is None else args.tolerance
        # Both tables are built before anything is printed, so bad options give one clean error line.
        accuracy = tables.accuracy_table(doc, reference, tolerance)
        perf = tables.perf_table(doc, args.reference_target)
        parts = [
            _run_heading(doc),
            *([_progress_line(progress)] if progress is not None else []),
            f"\nAccuracy (mIoU %, reference {reference * 100:.2f}, tolerance {tolerance * 100:.2f} points)",
            tables.render_text(accuracy),
            "\nPerformance (fps)",
            tables.render_text(perf),
        ]
        parts += ["\nWhere each cell ran", tables.render_text(tables.environment_table(doc))]
        if doc["findings"]:
            parts += ["\nRegression findings", tables.render_text(tables.findings_table(doc["findings"]))]
        print("\n".join(parts))
    return 0


def _progress_if_running(session: Session, doc: dict[str, Any]) -> dict[str, Any] | None:
    """``queries.run_progress`` of the document's run while it is running, else None."""
    from ..records import RunStatus
    from . import queries

    if doc["run"]["status"] != RunStatus.RUNNING:
        return None
    return queries.run_progress(session, doc["run"]["id"])


def _progress_line(progress: dict[str, Any]) -> str:
    """``RUNNING: 3 of 8 cells stored; queued 2, compiling 1, ...; last update ...``."""
    states = ", ".join(f"{state} {n}" for state, n in progress["states"].items() if n)
    line = f"RUNNING: {progress['done']} of {progress['total']} cells stored"
    if states:
        line += f"; {states}"
    if progress["updated_at"]:
        line += f"; last update {progress['updated_at']}"
    return line


def _say_still_running(progress: dict[str, Any]) -> None:
    """On stderr, so the JSON or CSV on stdout stays what it is: a running run's cells are not all there."""
    print(
        f"note: run {progress['run_id']} is still running: {progress['done']} of {progress['total']} "
        "cells stored so far",
        file=sys.stderr,
    )


def _run_heading(doc: dict[str, Any]) -> str:
    run = doc["run"]
    backends = ", ".join(f"{k} {v}" for k, v in (run.get("backends") or {}).items()) or "unknown"
    lines = [
        f"run {run['id']} ({run['status']}), started {run['started_at']}",
        f"CANN {run.get('cann_version') or 'n/a'}, driver {run.get('driver_version') or 'n/a'}, "
        f"host {run.get('host') or 'n/a'}, backends: {backends}",
        f"images {run.get('images') if run.get('images') is not None else 'n/a'}",
    ]
    from .tables import fleet_summary, printable

    covered = fleet_summary(doc)
    if covered:
        lines.append("covered (chip, host, CANN): " + "; ".join(f"{c} on {h}, CANN {v}" for c, h, v in covered))
    if run.get("synthetic"):
        lines.append("SYNTHETIC data and/or randomly initialised weights: these figures mean nothing about ERFNet")

    return "\n".join(printable(line) for line in lines)  # stored fields may hold escape sequences


def cmd_reference(args: argparse.Namespace) -> int:
    from . import queries, tables

    with _reading_session(args) as session:
        figures = queries.reference_figures(session)
    print(
        json.dumps(figures, indent=2) if args.format == "json" else tables.render_text(tables.reference_table(figures))
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import queries, tables

    with _reading_session(args) as session:
        doc_a = queries.run_document(session, args.run_a)
        doc_b = queries.run_document(session, args.run_b)
    table = tables.compare_table(doc_a, doc_b)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "run_a": doc_a["run"]["id"],
                    "run_b": doc_b["run"]["id"],
                    "headers": table.headers,
                    "rows": [[tables.text(value) for value in row] for row in table.rows],
                },
                indent=2,
            )
        )
    elif args.format == "csv":
        print(tables.render_csv(table), end="")
    else:
        print(tables.printable(f"A = {_compared(doc_a)}, B = {_compared(doc_b)}"))
        print(tables.render_text(table))
    return 0


def _compared(doc: dict[str, Any]) -> str:
    """A compared run: its id, CANN and, while it is running, that its cells are not all stored."""
    from ..records import RunStatus

    run = doc["run"]
    still = ", RUNNING: cells so far" if run["status"] == RunStatus.RUNNING else ""
    return f"{run['id']} (CANN {run.get('cann_version') or 'n/a'}{still})"


def cmd_import(args: argparse.Namespace) -> int:
    from . import db, importing

    url = _url(args)
    outcomes = importing.import_paths(args.file, url, replace=args.replace)
    print(f"{importing.summary(outcomes)} into {db.masked(url)}")
    # Skipping a run that is already there is success (importing twice is safe); a refusal is not.
    return 1 if any(o.status == importing.REFUSED for o in outcomes) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..records import RunStatus
    from . import queries, tables

    with _reading_session(args) as session:
        if args.run:
            docs = [queries.run_document(session, ref) for ref in args.run]
        else:
            # Every run means every result: a running run is left out (and said so) unless named.
            listed = queries.list_runs(session, limit=1_000_000, counts=False)
            for run in listed:
                if run["status"] == RunStatus.RUNNING:
                    print(
                        f"note: left out run {run['id']}: still running (name it with --run to export it)",
                        file=sys.stderr,
                    )
            docs = [queries.run_document(session, run["id"]) for run in listed if run["status"] != RunStatus.RUNNING]
        for doc in docs:
            if (progress := _progress_if_running(session, doc)) is not None:
                _say_still_running(progress)
    if args.format == "json":
        print(json.dumps({"runs": docs}, indent=2))
        return 0
    rows = [row for doc in docs for row in tables.cell_rows(doc).rows]
    print(tables.render_csv(tables.Table(tables.CELL_CSV_HEADERS, rows)), end="")
    return 0
