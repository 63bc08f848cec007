"""The ais_bench output layout (erfnet_tasks/outputs.py): names, statistics, both summary eras."""

from __future__ import annotations

import json

import pytest

from erfnet_tasks import outputs
from erfnet_tasks.errors import ErfnetError


def test_output_names_drop_everything_after_the_first_dot():
    assert (
        outputs.output_file_name("prep/frankfurt_000000_000294_leftImg8bit.bin")
        == "frankfurt_000000_000294_leftImg8bit_0.bin"
    )
    assert outputs.output_file_name("a.b.npy", 2) == "a_2.bin"


def test_latency_stats_like_numpy_and_zero_when_empty():
    assert outputs.latency_stats([]) == {
        "min": 0.0,
        "max": 0.0,
        "mean": 0.0,
        "median": 0.0,
        "percentile(99%)": 0.0,
        "count": 0,
    }
    stats = outputs.latency_stats([1.0, 2.0, 3.0, 10.0])
    assert (stats["min"], stats["max"], stats["mean"], stats["median"], stats["count"]) == (1.0, 10.0, 4.0, 2.5, 4)
    assert stats["percentile(99%)"] == pytest.approx(9.79)


def test_new_layout_summary_round_trips_and_is_found(tmp_path):
    folder = outputs.make_output_folder(tmp_path / "out")
    second = outputs.make_output_folder(tmp_path / "out")
    assert folder != second and folder.parent == second.parent  # a timestamp folder is never reused
    out = folder / "x_0.bin"
    out.write_bytes(b"\0" * 4)
    summary = outputs.build_summary(
        [outputs.SummaryEntry(tmp_path / "x.bin", (out,))],
        compute_ms=[4.0, 4.0],
        h2d_ms=[],
        d2h_ms=[],
        batch_size=2,
        args=["onnxruntime"],
    )
    assert summary["throughput"] == 500.0 and summary["H2D_latency"]["count"] == 0
    path = outputs.write_summary(folder, summary)
    assert path == folder.parent / f"{folder.name}_summary.json"
    assert outputs.output_folder_of(path) == folder
    assert outputs.read_summary(path) == [outputs.SummaryEntry(tmp_path / "x.bin", (out,))]


def test_2022_layout_summary_inside_the_folder_with_relative_paths(tmp_path):
    folder = tmp_path / "out" / "2022_01_01-00_00_00"
    folder.mkdir(parents=True)
    (folder / "x_0.bin").write_bytes(b"\0")
    (folder / outputs.OLD_SUMMARY_NAME).write_text(
        json.dumps({"filesinfo": {"0": {"infiles": ["prep/x.bin"], "outfiles": ["out/2022_01_01-00_00_00/x_0.bin"]}}})
    )
    latest = outputs.find_latest_summary(tmp_path / "out")
    assert latest == folder / outputs.OLD_SUMMARY_NAME
    assert outputs.read_summary(latest)[0].outfiles == (folder / "x_0.bin",)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"args": []}, "not an ais_bench summary"),
        ({"filesinfo": {"0": {"infiles": []}}}, "lacks infiles/outfiles"),
        ({"filesinfo": {"0": {"infiles": [], "outfiles": []}}}, "has no files"),
    ],
)
def test_bad_summaries_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "s_summary.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ErfnetError, match=message):
        outputs.read_summary(path)
    with pytest.raises(ErfnetError, match="no ais_bench summary"):
        outputs.find_latest_summary(tmp_path / "empty")
