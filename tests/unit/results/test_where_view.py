"""A finding's "where" for people: the one line the notification and the CLI print, the op-time table and
the first diverging layer's metrics."""

from __future__ import annotations

from erfnet_tasks.results import tables
from erfnet_tasks.results.where_view import findings_text, layer_table, ops_table, where_line

OPS = {
    "ops": [
        {"op_type": "Conv", "op_name": None, "baseline_us": 160.0, "current_us": 208.0, "share": 1.0, "change": "grew"},
        {"op_type": "BatchNorm", "op_name": None, "baseline_us": None, "current_us": 4.0, "share": 4 / 48},
        {"op_type": "Conv", "op_name": "conv1", "baseline_us": 100.0, "current_us": 130.0, "share": 0.625},
        {"op_type": "BNRelu", "op_name": "bnr", "baseline_us": 5.0, "current_us": None, "share": -5 / 48},
    ],
    "first_diverging": None,
}
LAYER = {
    "node": "/encoder/layers.3/conv1x3_1/Conv",
    "op_type": "Conv2D",
    "onnx_nodes": ["/encoder/layers.3/conv1x3_1/Conv", "/encoder/layers.3/Relu"],
    "cosine": 0.4123,
    "relative_euclidean": 1.25,
    "max_abs_error": 3.5,
    "rmse": None,
}


def test_the_line_names_the_grown_op_types_then_the_top_ops_and_what_appeared_or_vanished():
    assert where_line(OPS) == (
        "slower op types: Conv 160.0 -> 208.0 us (+30%, 100% of the growth); BatchNorm appeared (4.0 us). "
        "top ops: conv1 (Conv) 100.0 -> 130.0 us (+30%, 62% of the growth); bnr (BNRelu) vanished (was 5.0 us)"
    )


def test_the_line_names_the_first_diverging_layer_or_says_why_there_is_none():
    assert where_line({"ops": [], "first_diverging": LAYER}) == (
        "first diverging layer /encoder/layers.3/conv1x3_1/Conv (Conv2D; ONNX nodes "
        "/encoder/layers.3/conv1x3_1/Conv, /encoder/layers.3/Relu): cosine 0.4123, relative_euclidean 1.25"
    )
    assert where_line({"ops": [], "first_diverging": None, "note": "the cell was not diagnosed"}) == (
        "the cell was not diagnosed"
    )
    assert where_line(None) == ""


def test_the_op_table_keeps_the_growth_order_with_both_times():
    table = ops_table(OPS)
    assert table.headers[:4] == ["op type", "op", "baseline (us)", "this run (us)"]
    text_rows = [[tables.text(v) for v in row] for row in table.rows]
    assert text_rows[0] == ["Conv", "(all)", "160.0", "208.0", "+48.0", "100", "grew"]
    assert text_rows[1][:5] == ["BatchNorm", "(all)", "", "4.0", "+4.0"]
    assert text_rows[3][:5] == ["BNRelu", "bnr", "5.0", "", "-5.0"]


def test_the_layer_table_holds_its_metrics_and_nan_as_blank():
    [row] = [[tables.text(v) for v in r] for r in layer_table(LAYER).rows]
    assert row[:4] == ["/encoder/layers.3/conv1x3_1/Conv", "Conv2D", "0.4123", "3.5"]
    assert row[layer_table(LAYER).headers.index("rmse")] == ""


def test_findings_text_prints_each_finding_then_its_where():
    text = findings_text(
        [
            {"rule": "throughput_drop", "message": "Ascend310P3 batch 1: 80 fps is 20% below 100", "where": OPS},
            {"rule": "accuracy_below_reference", "message": "mIoU 50.00 is below", "where": {"first_diverging": LAYER}},
            {"rule": "cell_failed", "message": "Ascend310P3 batch 4: oom now", "where": None},
        ]
    )
    lines = text.splitlines()
    assert lines[0] == "throughput_drop: Ascend310P3 batch 1: 80 fps is 20% below 100"
    assert lines[1].startswith("  where: slower op types: Conv 160.0 -> 208.0 us")
    assert lines[2].startswith("    op type ") and "baseline (us)  this run (us)  growth (us)" in lines[2]  # indented
    assert "  where: first diverging layer /encoder/layers.3/conv1x3_1/Conv (Conv2D" in text
    assert text.endswith("cell_failed: Ascend310P3 batch 4: oom now")
    assert findings_text([]) == "no regression findings"
