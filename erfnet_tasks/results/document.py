"""The run document (docs/architecture.md): validation, normalisation and JSON-safe values.

Everything that comes from outside — a DAG's XCom, a results.json file, an import — passes through
``normalize_document`` before it touches the database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import BadInput
from ..records import (
    ACCURACY_FIELDS,
    COMPILED_FIELDS,
    DIAGNOSIS_FIELDS,
    OP_PROFILE_FIELDS,
    PERF_FIELDS,
    PERF_METRICS,
    CellStatus,
    CompileStatus,
    LabelMode,
    RunStatus,
    run_status,
)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:+\-]{1,250}$")
LATEST = "latest"

RUN_FIELDS = (
    "id",
    "dag_id",
    "started_at",
    "finished_at",
    "status",
    "params",
    "cann_version",
    "driver_version",
    "host",
    "backends",
    "model_sha256",
    "weights_sha256",
    "dataset_fingerprint",
    "images",
    "synthetic",
    "class_names",
)
# COMPILED_FIELDS, ACCURACY_FIELDS, PERF_FIELDS: the published rows' fields (records.CompiledRow ...).
CELL_ENVIRONMENT = ("host", "device", "cann_version", "driver_version")  # where a perf cell was measured
FINDING_FIELDS = ("rule", "target", "batch_size", "message", "value", "threshold", "baseline_run_id", "where")
# Documents written before runs stored their class names all measured Cityscapes: readers name their
# per-class columns with this frozen copy of its 19 trainId names (a test keeps it equal to the dataset's).
LEGACY_CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
RUN_STATUSES = tuple(RunStatus)
PERF_STATUSES = tuple(CellStatus)
COMPILED_STATUSES = tuple(CompileStatus)


def validate_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise BadInput(f"invalid run id {str(run_id)[:80]!r}: use 1-250 letters, digits and _ . : + -")
    return run_id


def parse_time(value: object, field: str) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string or datetime; naive values are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise BadInput(f"run.{field} is not an ISO 8601 time: {value[:60]!r}") from exc
    else:
        raise BadInput(f"run.{field} must be an ISO 8601 string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back what it stored: UTC without an offset
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def normalize_document(doc: object) -> dict[str, Any]:
    """A validated copy of ``doc`` with every field of the contract present (missing ones None)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("run"), dict):
        raise BadInput('a run document is a JSON object with a "run" object')
    run = {name: doc["run"].get(name) for name in RUN_FIELDS}
    validate_run_id(run["id"])
    # Never stamped with "now": an imported run would then pose as the latest one.
    started = parse_time(run["started_at"], "started_at")
    if started is None:
        raise BadInput(f"run {run['id']}: run.started_at is missing (the time the run started, ISO 8601)")
    run["started_at"] = format_time(started)
    run["finished_at"] = format_time(parse_time(run["finished_at"], "finished_at"))
    run["status"] = _choice(run["status"] or RunStatus.COMPLETE, RUN_STATUSES, "run.status")
    for name in ("params", "backends"):
        if run[name] is not None and not isinstance(run[name], dict):
            raise BadInput(f"run.{name} must be an object")
    run["images"] = _optional_int(run["images"], "run.images")
    run["synthetic"] = None if run["synthetic"] is None else bool(run["synthetic"])
    run["class_names"] = _class_names(run["class_names"])
    if run["class_names"] is None:  # optional: a document that never had them is written back as it was
        del run["class_names"]
    perf = _cells(doc, "perf", PERF_FIELDS, _check_perf)
    if run["status"] == RunStatus.COMPLETE and perf:
        # A cell that never reached a device is not a result, whatever the document claims.
        run["status"] = run_status([c["status"] for c in perf]).value
    normalized = {
        "run": run,
        "compiled": _cells(doc, "compiled", COMPILED_FIELDS, _check_compiled),
        "accuracy": _cells(doc, "accuracy", ACCURACY_FIELDS, _check_accuracy),
        "perf": perf,
        "op_profiles": _op_profiles(doc),
        "diagnoses": _cells(doc, "diagnoses", DIAGNOSIS_FIELDS, _check_diagnosis),
        "findings": _findings(doc),
    }
    check_storable(normalized)
    return normalized


def check_storable(doc: dict[str, Any]) -> None:
    """Every value fits its column, read from the models themselves (one definition of the schema's
    limits): string lengths, 32-bit integers, finite numbers, no NUL, in JSON fields too."""
    from .models import Accuracy, CellDiagnosis, CompiledModel, Finding, OpProfile, Performance, Run

    sections = (
        ("run", Run, [doc["run"]]),
        ("compiled", CompiledModel, doc["compiled"]),
        ("accuracy", Accuracy, doc["accuracy"]),
        ("perf", Performance, doc["perf"]),
        ("op_profiles", OpProfile, doc["op_profiles"]),
        ("diagnoses", CellDiagnosis, doc["diagnoses"]),
        ("findings", Finding, doc["findings"]),
    )
    for key, model, items in sections:
        columns = model.__table__.columns
        for i, item in enumerate(items):
            where = key if key == "run" else f"{key}[{i}]"
            for name, value in item.items():
                if name in columns and value is not None:
                    _check_column(columns[name].type, value, f"{where}.{name}")


def _check_column(coltype: Any, value: Any, where: str) -> None:
    # Any: the checks below narrow through named conditions (too_long, an_integer), which mypy does not follow.
    import sqlalchemy as sa

    from .models import INT_MAX, INT_MIN

    too_long = isinstance(coltype, sa.String) and isinstance(value, str) and len(value) > (coltype.length or len(value))
    if too_long:
        raise BadInput(f"{where} is {len(value)} characters long; the database holds at most {coltype.length}")
    an_integer = isinstance(coltype, sa.Integer) and isinstance(value, int) and not isinstance(value, bool)
    if an_integer and not INT_MIN <= value <= INT_MAX:
        raise BadInput(f"{where} = {value} is outside the database's integer range")
    _check_json_value(value, where)


def _check_json_value(value: object, where: str) -> None:
    """No NUL in any string (PostgreSQL text refuses it), no NaN/Inf in any number, however deep."""
    if isinstance(value, str):
        if "\x00" in value:
            raise BadInput(f"{where} contains a NUL character")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadInput(f"{where} must be a finite number, got {value!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_json_value(str(k), where)
            _check_json_value(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_value(v, f"{where}[{i}]")


def _items(doc: dict[str, Any], key: str, fields: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(where, object) for each entry of the list ``doc[key]``: its ``fields``, target and batch checked."""
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise BadInput(f'"{key}" must be a list')
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadInput(f"{key}[{i}] must be an object")
        obj = {name: item.get(name) for name in fields}
        obj["target"] = _target(obj["target"], f"{key}[{i}].target")
        obj["batch_size"] = _batch(obj["batch_size"], f"{key}[{i}].batch_size")
        out.append((f"{key}[{i}]", obj))
    return out


def _cells(
    doc: dict[str, Any], key: str, fields: tuple[str, ...], check: Callable[[dict[str, Any], str], None]
) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for where, cell in _items(doc, key, fields):
        if (cell["target"], cell["batch_size"]) in seen:
            raise BadInput(f"{key} lists target {cell['target']} batch {cell['batch_size']} twice")
        seen.add((cell["target"], cell["batch_size"]))
        check(cell, where)
        cells.append(cell)
    return sorted(cells, key=lambda c: (c["target"], c["batch_size"]))


def _check_compiled(cell: dict[str, Any], where: str) -> None:
    cell["status"] = _choice(cell["status"] or CompileStatus.OK, COMPILED_STATUSES, f"{where}.status")
    cell["seconds"] = _optional_float(cell["seconds"], f"{where}.seconds")
    cell["cache_hit"] = None if cell["cache_hit"] is None else bool(cell["cache_hit"])


def _check_accuracy(cell: dict[str, Any], where: str) -> None:
    cell["images"] = _optional_int(cell["images"], f"{where}.images")
    cell["miou"] = _optional_float(cell["miou"], f"{where}.miou")
    if cell["miou"] is not None and not 0.0 <= cell["miou"] <= 1.0:
        raise BadInput(f"{where}.miou must be a fraction between 0 and 1, got {cell['miou']}")
    per_class = cell["per_class"]
    if per_class is not None:
        if not isinstance(per_class, list):
            raise BadInput(f"{where}.per_class must be a list of fractions")
        cell["per_class"] = [_optional_float(v, f"{where}.per_class") for v in per_class]
    cell["confusion"] = _confusion(cell["confusion"], f"{where}.confusion")
    # A cell stored before label modes existed was computed from the guide's logits.
    cell["label_mode"] = _choice(cell["label_mode"] or LabelMode.LOGITS, tuple(LabelMode), f"{where}.label_mode")


def _confusion(value: object, where: str) -> list[list[int]] | None:
    """A square matrix of non-negative pixel counts, or None (runs stored before matrices were)."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or any(not isinstance(row, list) or len(row) != len(value) for row in value)
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for row in value for v in row)
    ):
        raise BadInput(f"{where} must be a square matrix of non-negative integer pixel counts")
    return value


def _check_perf(cell: dict[str, Any], where: str) -> None:
    cell["status"] = _choice(cell["status"] or CellStatus.OK, PERF_STATUSES, f"{where}.status")
    for name in PERF_METRICS:
        cell[name] = _optional_float(cell[name], f"{where}.{name}")
    for name in CELL_ENVIRONMENT:
        if cell[name] is not None:
            cell[name] = str(cell[name])  # a device id may arrive as a number


def _op_profiles(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per op of a cell's profiled pass: each op once per cell, times and shares non-negative."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int, str]] = set()
    for where, row in _items(doc, "op_profiles", OP_PROFILE_FIELDS):
        for name in ("op_name", "op_type"):
            if not isinstance(row[name], str) or not row[name]:
                raise BadInput(f"{where}.{name} must be a non-empty string")
        key = (row["target"], row["batch_size"], row["op_name"])
        if key in seen:
            raise BadInput(f"op_profiles lists op {row['op_name']!r} of target {key[0]} batch {key[1]} twice")
        seen.add(key)
        calls = _optional_int(row["calls"], f"{where}.calls")
        if calls is None or calls < 0:
            raise BadInput(f"{where}.calls must be a count of op executions")
        row["calls"] = calls
        for name in ("total_us", "mean_us", "share"):
            value = _optional_float(row[name], f"{where}.{name}")
            if value is None or value < 0:
                raise BadInput(f"{where}.{name} must be a non-negative number")
            row[name] = value
        rows.append(row)
    return sorted(rows, key=lambda r: (r["target"], r["batch_size"], -r["total_us"], r["op_name"]))


def _check_diagnosis(cell: dict[str, Any], where: str) -> None:
    images = _optional_int(cell["images"], f"{where}.images")
    if images is None or images <= 0:
        raise BadInput(f"{where}.images must be a positive number of images")
    if cell["first_diverging"] is not None and not isinstance(cell["first_diverging"], dict):
        raise BadInput(f"{where}.first_diverging must be a layer object or null")
    layers = cell["layers"]
    if not isinstance(layers, list) or any(not isinstance(layer, dict) for layer in layers):
        raise BadInput(f"{where}.layers must be a list of layer objects")


def _findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    for where, finding in _items(doc, "findings", FINDING_FIELDS):
        finding["rule"] = str(finding["rule"] or "unknown")
        finding["message"] = str(finding["message"] or "")
        for name in ("rule", "message"):
            _check_json_value(finding[name], f"{where}.{name}")
        finding["value"] = _optional_float(finding["value"], f"{where}.value")
        finding["threshold"] = _optional_float(finding["threshold"], f"{where}.threshold")
        if finding["baseline_run_id"] is not None:
            validate_run_id(finding["baseline_run_id"])
        if finding["where"] is not None and not isinstance(finding["where"], dict):
            raise BadInput(f'{where}.where must be an object ({{"ops": [...], "first_diverging": ...}}) or null')
        findings.append(finding)
    return findings


def _class_names(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(n, str) and 0 < len(n) <= 100 for n in value):
        raise BadInput("run.class_names must be a list of names of 1-100 characters")
    return value


def _target(value: object, where: str) -> str:
    from .models import TARGET_MAX

    if not isinstance(value, str) or not value.strip() or len(value) > TARGET_MAX:
        raise BadInput(f"{where} must be a target name of 1-{TARGET_MAX} characters")
    return value


def _batch(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInput(f"{where} must be a positive integer, got {value!r}")
    return value


def _optional_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{where} must be an integer, got {value!r}")
    return value


def _optional_float(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInput(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _choice(value: object, allowed: tuple[str, ...], where: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise BadInput(f"{where} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)  # the plain string, also for an enum member
