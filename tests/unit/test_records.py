"""records.py: the status vocabulary and the rule that a cell which never reached a device is no result."""

from __future__ import annotations

import json

import pytest

from erfnet_tasks.errors import InferFailed
from erfnet_tasks.records import INFER_FAILURES, INFRASTRUCTURE_FAILURES, CellStatus, RunStatus, is_result, run_status


def test_statuses_are_plain_strings_on_the_wire():
    assert json.dumps({"status": CellStatus.MODEL_LOAD_FAILED}) == '{"status": "model_load_failed"}'
    assert {s.value for s in RunStatus} == {"complete", "incomplete", "failed", "running"}


def test_oom_and_compile_refusals_are_results_device_failures_are_not():
    assert is_result(CellStatus.OOM) and is_result("compile_failed") and is_result("ok")
    assert (
        {s for s in CellStatus if not is_result(s)}
        == INFRASTRUCTURE_FAILURES
        == {
            "model_load_failed",
            "device_open_failed",
            "infer_failed",
            "no_space",
            "timed_out",
            "host_lost",
            "task_failed",
        }
    )  # nothing was measured


@pytest.mark.parametrize(
    "statuses, expected",
    [
        (["ok", "oom"], "complete"),
        (["ok", "compile_failed"], "complete"),
        (["oom"], "failed"),
        (["ok", "device_open_failed"], "incomplete"),
        (["infer_failed"], "incomplete"),
    ],
)
def test_run_status(statuses, expected):
    assert run_status(statuses) == expected


def test_infer_failed_carries_one_of_the_backend_statuses():
    # host_lost and task_failed are the store's verdict on a task that handed back nothing, never a backend's
    assert {"oom", *INFRASTRUCTURE_FAILURES} - {"host_lost", "task_failed"} == INFER_FAILURES
    assert InferFailed("x", status="device_open_failed").status == "device_open_failed"
    with pytest.raises(ValueError, match="unknown infer status"):
        InferFailed("x", status="compile_failed")
