"""The per-tensor metrics of msprobe's offline compare and its precision-error rule.

Definitions follow msprobe's (diagnosis-interfaces.md): relative errors count only elements whose golden
magnitude exceeds float32's epsilon; KL divergence compares the min-max normalised tensors as
distributions; the standard deviation column is msprobe's ``(mean;std),(mean;std)`` text, target first.
A metric that cannot be computed is NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FLOAT_EPSILON = float(np.finfo(np.float32).eps)

# Column name in msprobe's result_*.csv -> key in our JSON, in msprobe's column order.
METRIC_COLUMNS: dict[str, str] = {
    "CosineSimilarity": "cosine",
    "MaxAbsoluteError": "max_abs_error",
    "AccumulatedRelativeError": "accumulated_relative_error",
    "RelativeEuclideanDistance": "relative_euclidean",
    "KullbackLeiblerDivergence": "kl_divergence",
    "StandardDeviation": "standard_deviation",
    "MeanAbsoluteError": "mean_abs_error",
    "RootMeanSquareError": "rmse",
    "MaxRelativeError": "max_relative_error",
    "MeanRelativeError": "mean_relative_error",
}
NUMERIC_METRICS = tuple(key for key in METRIC_COLUMNS.values() if key != "standard_deviation")
# msprobe's defaults: a row is a precision error when any of these holds.
COSINE_MIN = 0.99
RELATIVE_EUCLIDEAN_MAX = 0.05
KL_MAX = 0.005
RMSE_MAX = 1.0
MEAN_RELATIVE_MAX = 1.0
NEVER_COUNTED_OP_TYPES = frozenset({"Data", "TransData", "PartitionCall"})

Metrics = dict[str, float | str]
FloatArray = npt.NDArray[np.float64]


def compare_tensors(target: npt.ArrayLike, golden: npt.ArrayLike) -> Metrics:
    """Every metric of ``target`` against ``golden``; both are flattened to float64."""
    a = np.asarray(target, dtype=np.float64).ravel()
    b = np.asarray(golden, dtype=np.float64).ravel()
    nan = math.nan
    if a.size != b.size or a.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return {**{key: nan for key in NUMERIC_METRICS}, "standard_deviation": "NaN"}
    diff = a - b
    relative = _relative_errors(a, b)
    return {
        "cosine": cosine_similarity(a, b),
        "max_abs_error": float(np.max(np.abs(diff))),
        "accumulated_relative_error": float(relative.sum()),
        "relative_euclidean": _relative_euclidean(diff, b),
        "kl_divergence": kl_divergence(a, b),
        "standard_deviation": standard_deviation_text(a, b),
        "mean_abs_error": float(np.mean(np.abs(diff))),
        "rmse": float(np.sqrt(np.mean(diff * diff))),
        "max_relative_error": float(relative.max()),
        "mean_relative_error": float(relative.mean()),
    }


def cosine_similarity(a: FloatArray, b: FloatArray) -> float:
    """Two (near-)zero tensors are identical (1.0); one alone gives no direction (NaN)."""
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a <= FLOAT_EPSILON and norm_b <= FLOAT_EPSILON:
        return 1.0
    if norm_a <= FLOAT_EPSILON or norm_b <= FLOAT_EPSILON:
        return math.nan
    return min(float(np.dot(a, b)) / (norm_a * norm_b), 1.0)


def _relative_errors(a: FloatArray, b: FloatArray) -> FloatArray:
    counted = np.abs(b) > FLOAT_EPSILON
    out = np.zeros_like(a)
    np.divide(np.abs(a - b), np.abs(b), out=out, where=counted)
    return out


def _relative_euclidean(diff: FloatArray, b: FloatArray) -> float:
    norm_b = float(np.linalg.norm(b))
    norm_diff = float(np.linalg.norm(diff))
    if norm_b <= FLOAT_EPSILON:
        return 0.0 if norm_diff <= FLOAT_EPSILON else math.nan
    return norm_diff / norm_b


def _normalised(x: FloatArray) -> FloatArray:
    low, high = float(x.min()), float(x.max())
    scaled = (x - low) / (high - low) if high != low else x
    return np.maximum(scaled, FLOAT_EPSILON)


def kl_divergence(a: FloatArray, b: FloatArray) -> float:
    """KL(target || golden) of the min-max normalised tensors taken as distributions."""
    p, q = _normalised(a), _normalised(b)
    p, q = p / p.sum(), q / q.sum()
    value = float(np.sum(p * np.log(p / q)))
    return 0.0 if abs(value) < FLOAT_EPSILON else value


def standard_deviation_text(a: FloatArray, b: FloatArray) -> str:
    return (f"({float(np.mean(a)):.3f};{float(np.std(a)):.3f}),"
            f"({float(np.mean(b)):.3f};{float(np.std(b)):.3f})")


def is_precision_error(op_type: str, metrics: Metrics) -> bool:
    """msprobe's default rule; Data/TransData/PartitionCall rows and NaN cosines never count."""
    cosine = _number(metrics.get("cosine"))
    if op_type in NEVER_COUNTED_OP_TYPES or math.isnan(cosine):
        return False
    return (cosine < COSINE_MIN
            or _number(metrics.get("relative_euclidean")) > RELATIVE_EUCLIDEAN_MAX
            or _number(metrics.get("kl_divergence")) > KL_MAX
            or _number(metrics.get("rmse")) > RMSE_MAX
            or _number(metrics.get("mean_relative_error")) > MEAN_RELATIVE_MAX)


def _number(value: object) -> float:
    """NaN compares false with every threshold, so an uncomputable metric never fires the rule."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def worst_of(per_image: list[Metrics]) -> Metrics:
    """One row over N images: the lowest cosine and the largest of every error (NaN if any image's is NaN)."""
    if len(per_image) == 1:
        return dict(per_image[0])
    merged: Metrics = {}
    for key in NUMERIC_METRICS:
        values = [_number(m.get(key)) for m in per_image]
        if any(math.isnan(v) for v in values):
            merged[key] = math.nan
        else:
            merged[key] = min(values) if key == "cosine" else max(values)
    merged["standard_deviation"] = "; ".join(str(m.get("standard_deviation", "NaN")) for m in per_image)
    return merged
