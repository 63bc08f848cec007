"""The nightly skip: a run with the same weights, dataset, matrix and per-chip CANN as the last complete
run ends early (unless ``force``)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import exc as sa_exc

from .errors import first_line
from .records import Environment, Model, Prepared, RunStatus, is_result
from .results import db, queries

log = logging.getLogger(__name__)


def previous_complete_run(url: str | None = None) -> dict[str, Any] | None:
    """The newest run whose every cell is a result: an incomplete run is never a reason to skip."""
    if db.current_revision(url) is None:  # a results database nobody has published to yet
        return None
    with db.session_scope(url) as session:
        newest_complete = next(
            (r for r in queries.list_runs(session, limit=100) if r["status"] == RunStatus.COMPLETE), None
        )
        return queries.run_document(session, newest_complete["id"]) if newest_complete else None


def unchanged_since_last_run(env: Environment, model: Model, prep: Prepared, url: str | None = None) -> str | None:
    """The id of the last complete run with the same weights, dataset and matrix, whose cells of each chip
    ran on the CANN version that chip has now (``changed_chips``), or None.

    A results database that cannot be read gives None: the run measures (as a forced run does) and its
    results.json waits for `erfnet results import`; skipping needs proof that nothing changed."""
    if env.params["force"]:
        return None
    try:
        previous = previous_complete_run(url)
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DatabaseError) as exc:
        log.warning(
            "results database unreachable (%s): measuring anyway; import results.json later with "
            "`erfnet results import`",
            first_line(exc),
        )
        return None
    if not previous:
        return None
    run = previous["run"]
    planned = sorted((t.name, b) for t in env.targets for b in env.params["batch_sizes"])
    measured = sorted((c["target"], c["batch_size"]) for c in previous.get("perf", []))
    same = (
        all(is_result(c["status"]) for c in previous.get("perf", []))
        and run.get("weights_sha256") == env.weights_sha256
        and run.get("dataset_fingerprint") == prep.fingerprint
        and planned == measured
        and not changed_chips(env, previous)
    )
    return str(run["id"]) if same else None


def changed_chips(env: Environment, previous: dict[str, Any]) -> list[str]:
    """The chips whose CANN differs from their cells' in ``previous`` (each cell's own version, else, for
    cells published before cells recorded one, its run's): a CANN upgrade on one host measures again."""
    chip_of = {t.name: t.chip for t in env.targets}
    was: dict[str, set[str | None]] = {}
    for cell in previous.get("perf", []):
        chip = chip_of.get(cell["target"])
        if chip:
            was.setdefault(chip, set()).add(cell.get("cann_version") or previous["run"].get("cann_version"))
    now = {h.chip: h.cann_version for h in env.hosts}
    return sorted(chip for chip in env.npu_chips if was.get(chip) != {now.get(chip)})
