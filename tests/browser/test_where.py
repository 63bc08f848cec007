"""The run page's "where it regressed" section in headless Chromium against a real ``airflow api-server``:
a failing cell's per-layer cosine curve (an inline SVG, the first diverging layer marked) from a real
layer-by-layer diagnosis, and its op-time comparison; a screenshot is saved under artifacts/."""

from __future__ import annotations

import base64
from pathlib import Path

import harness
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.helpers.api_server import plugin_api_server
from tests.helpers.chromium import log_in_to_airflow
from tests.helpers.run_documents import make_doc

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
USER, PASSWORD = "tester", "erfnet-where-test"
BASE_RUN, RUN = "scheduled__2026-11-30T02:00:00+00:00", "asset_triggered__2026-12-01T09:00:00+00:00"
SMALL = (64, 128)  # ERFNet is fully convolutional: a small input keeps the diagnosis fast
PERTURBED_CONV = "/encoder/layers.3/conv1x3_1/Conv"
CELL = ("Ascend310P3", 1)


def small_models(exported, folder: Path) -> tuple[Path, Path]:
    """The golden at 64x128, and a copy whose PERTURBED_CONV's weights are noise-perturbed."""
    model = onnx.load(str(exported))
    for io in [*model.graph.input, *model.graph.output]:
        dims = io.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = SMALL
    del model.graph.value_info[:]
    golden = folder / "golden.onnx"
    onnx.save(model, str(golden))
    node = next(n for n in model.graph.node if n.name == PERTURBED_CONV)
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    value = numpy_helper.to_array(weight)
    noisy = value + np.random.default_rng(1).normal(0, 2 * value.std(), value.shape).astype(value.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    bad = folder / "perturbed.onnx"
    onnx.save(model, str(bad))
    return golden, bad


def documents(exported, folder: Path) -> list[dict]:
    """Two runs of one cell: the later one's Conv ops 30% slower and one conv perturbed (a real diagnosis
    and real op names from ONNX Runtime's profiler)."""
    from erfnet_tasks.backends import get_backend
    from erfnet_tasks.diagnose.onnx_layers import compare_models
    from erfnet_tasks.diagnose.report import as_document

    golden, bad = small_models(exported, folder)
    prep = harness.write_prep(folder / "prep", ["a.bin", "b.bin"], shape=(3, *SMALL))[0].parent
    diagnosis = as_document(compare_models(golden, bad, prep, 2))
    ops = get_backend("onnxruntime").profile(golden, prep, folder / "profile", batch_size=1, images=2)
    base = make_doc(BASE_RUN, "2026-11-30T02:00:00+00:00", "8.0.RC2", [(*CELL, 0.7221, 300.0, "ok")])
    now = make_doc(RUN, "2026-12-01T09:00:00+00:00", "8.0.RC3", [(*CELL, 0.4830, 246.0, "ok")])
    for doc, conv_factor in ((base, 1.0), (now, 1.3)):
        doc["op_profiles"] = [
            {
                "target": CELL[0],
                "batch_size": CELL[1],
                **op.as_dict(),
                "mean_us": op.mean_us * (conv_factor if op.op_type in ("Conv", "FusedConv") else 1.0),
            }
            for op in ops
        ]
    now["diagnoses"] = [{"target": CELL[0], "batch_size": CELL[1], "images": 2, **diagnosis}]
    return [base, now]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, exported_onnx):
    """``airflow api-server`` on a free port (own AIRFLOW_HOME, SimpleAuthManager user) over the two runs."""
    from erfnet_tasks.results import db, publish, regression

    home = tmp_path_factory.mktemp("airflow_home_where")
    results_url = f"sqlite:///{home / 'results.sqlite'}"
    for doc in documents(exported_onnx, home):
        publish.publish_run(doc, results_url)
    with db.session_scope(results_url) as session:
        regression.find_regressions(session, RUN, regression.Rules())
    with plugin_api_server(home, results_url, USER, PASSWORD) as base:
        yield base


def test_a_failing_cell_shows_its_cosine_curve_and_op_time_table(api_server, browser):
    from urllib.parse import quote

    log_in_to_airflow(browser, api_server, USER, PASSWORD)
    browser.navigate(f"{api_server}/erfnet/runs/{quote(RUN, safe='')}")
    section = "#where-Ascend310P3-b1"
    browser.wait_for(f"!!document.querySelector('{section} svg.cosine-curve polyline')")
    curve = browser.evaluate(
        f"(() => {{ const s = document.querySelector('{section} svg.cosine-curve'); return {{"
        "points: [...s.querySelectorAll('polyline.curve')].map(p => p.points.numberOfItems),"
        "mark: s.querySelector('.first-diverging-mark text').textContent,"
        "markX: s.querySelector('.first-diverging-mark circle').cx.baseVal.value,"
        "width: s.getBoundingClientRect().width }; })()"
    )
    assert sum(curve["points"]) > 100  # every layer of ERFNet with a cosine
    assert curve["mark"].endswith(PERTURBED_CONV) and 0 < curve["markX"] < curve["width"]
    first = browser.evaluate(f"document.querySelector('{section} .first-diverging').textContent")
    assert first.startswith(f"first diverging layer {PERTURBED_CONV} (Conv")
    ops = browser.evaluate(
        f"[...document.querySelectorAll('{section} table tr')].map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    assert ops[0][:4] == ["op type", "op", "baseline (us)", "this run (us)"]
    assert ops[1][0] in ("Conv", "FusedConv") and ops[1][1] == "(all)" and ops[1][4].startswith("+")
    growth = [float(row[4]) for row in ops[1:] if row[1] != "(all)"]
    assert growth and growth == sorted(growth, reverse=True)  # the ops, most growth first

    ARTIFACTS.mkdir(exist_ok=True)
    box = browser.evaluate(
        f"(() => {{ const r = document.querySelector('{section}').getBoundingClientRect();"
        " return [r.x, r.y + scrollY, r.width, r.height]; })()"
    )
    clip = {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}
    data = browser.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
    shot = ARTIFACTS / "erfnet-plugin-where.png"
    shot.write_bytes(base64.b64decode(data))
    assert shot.stat().st_size > 20_000
