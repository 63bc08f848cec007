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
FloatArray = npt.NDArray[np.float32]


def compare_tensors(target: npt.ArrayLike, golden: npt.ArrayLike) -> Metrics:
    """Every metric of ``target`` against ``golden``, both flattened.

    Element-wise work is in float32 (the tensors' own precision, and half the memory traffic of float64:
    a full-size ErfNet has some 290 million output values per image); sums are numpy's pairwise ones.
    """
    a = np.asarray(target, dtype=np.float32).ravel()
    b = np.asarray(golden, dtype=np.float32).ravel()
    nan = math.nan
    if a.size != b.size or a.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return {**{key: nan for key in NUMERIC_METRICS}, "standard_deviation": "NaN"}
    abs_diff = np.abs(a - b)
    relative = _relative_errors(abs_diff, b)
    norm_a, norm_b, norm_diff = _norm(a), _norm(b), _norm(abs_diff)
    return {
        "cosine": cosine_similarity(a, b, norm_a, norm_b),
        "max_abs_error": float(abs_diff.max()),
        "accumulated_relative_error": _sum(relative),
        "relative_euclidean": _relative_euclidean(norm_diff, norm_b),
        "kl_divergence": kl_divergence(a, b),
        "standard_deviation": standard_deviation_text(a, b, norm_a, norm_b),
        "mean_abs_error": _sum(abs_diff) / a.size,
        "rmse": norm_diff / math.sqrt(a.size),
        "max_relative_error": float(relative.max()),
        "mean_relative_error": _sum(relative) / a.size,
    }


def _sum(x: FloatArray) -> float:
    return float(np.sum(x, dtype=np.float64))


def _norm(x: FloatArray) -> float:
    return (
        math.sqrt(float(np.dot(x.astype(np.float64), x.astype(np.float64))))
        if x.size < 4096
        else math.sqrt(max(float(np.dot(x, x)), 0.0))
    )


def cosine_similarity(a: FloatArray, b: FloatArray, norm_a: float | None = None, norm_b: float | None = None) -> float:
    """Two (near-)zero tensors are identical (1.0); one alone gives no direction (NaN)."""
    norm_a = _norm(a) if norm_a is None else norm_a
    norm_b = _norm(b) if norm_b is None else norm_b
    if norm_a <= FLOAT_EPSILON and norm_b <= FLOAT_EPSILON:
        return 1.0
    if norm_a <= FLOAT_EPSILON or norm_b <= FLOAT_EPSILON:
        return math.nan
    return min(float(np.dot(a, b)) / (norm_a * norm_b), 1.0)


def _relative_errors(abs_diff: FloatArray, b: FloatArray) -> FloatArray:
    """|a-b| / |b| where |b| > eps, else 0 (dividing by an infinite denominator gives the 0)."""
    denominator = np.abs(b)
    denominator[denominator <= FLOAT_EPSILON] = np.inf
    return np.divide(abs_diff, denominator, out=denominator)


def _relative_euclidean(norm_diff: float, norm_b: float) -> float:
    if norm_b <= FLOAT_EPSILON:
        return 0.0 if norm_diff <= FLOAT_EPSILON else math.nan
    return norm_diff / norm_b


def _normalised(x: FloatArray) -> FloatArray:
    low, high = float(x.min()), float(x.max())
    scaled = (x - low) / np.float32(high - low) if high != low else x.copy()
    return np.maximum(scaled, np.float32(FLOAT_EPSILON), out=scaled)


def kl_divergence(a: FloatArray, b: FloatArray) -> float:
    """KL(target || golden) of the min-max normalised tensors taken as distributions:
    sum p log(p/q) with p = u/U, q = v/V is (sum u (log u - log v)) / U + log(V / U)."""
    u, v = _normalised(a), _normalised(b)
    total_u, total_v = _sum(u), _sum(v)
    log_ratio = np.log(np.divide(u, v, out=v), out=v)
    value = float(np.dot(u, log_ratio)) / total_u + math.log(total_v / total_u)
    return 0.0 if abs(value) < FLOAT_EPSILON else value


def _mean_std(x: FloatArray, norm: float) -> tuple[float, float]:
    """From the sum and the norm already taken: var = E[x^2] - E[x]^2."""
    mean = _sum(x) / x.size
    return mean, math.sqrt(max(norm * norm / x.size - mean * mean, 0.0))


def standard_deviation_text(
    a: FloatArray, b: FloatArray, norm_a: float | None = None, norm_b: float | None = None
) -> str:
    """msprobe's text: ``(mean;std),(mean;std)``, the target first."""
    (mean_a, std_a) = _mean_std(a, _norm(a) if norm_a is None else norm_a)
    (mean_b, std_b) = _mean_std(b, _norm(b) if norm_b is None else norm_b)
    return f"({mean_a:.3f};{std_a:.3f}),({mean_b:.3f};{std_b:.3f})"


def is_precision_error(op_type: str, metrics: Metrics) -> bool:
    """msprobe's default rule; Data/TransData/PartitionCall rows and NaN cosines never count."""
    cosine = _number(metrics.get("cosine"))
    if op_type in NEVER_COUNTED_OP_TYPES or math.isnan(cosine):
        return False
    return (
        cosine < COSINE_MIN
        or _number(metrics.get("relative_euclidean")) > RELATIVE_EUCLIDEAN_MAX
        or _number(metrics.get("kl_divergence")) > KL_MAX
        or _number(metrics.get("rmse")) > RMSE_MAX
        or _number(metrics.get("mean_relative_error")) > MEAN_RELATIVE_MAX
    )


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
