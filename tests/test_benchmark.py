"""scripts/benchmark.py: its pieces in-process at tiny sizes (rows, ratios, CSV, checks, the metric loop), the
peer checks when the peers are installed, and one tiny end-to-end run of the MNIST workloads."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sanity_benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(bench):
    return [
        bench.timed_row("w", "limit", "limit", [1.0, 2.0, 3.0], 10),
        bench.timed_row("w", "sanity", "ours", [2.0, 2.5, 4.0], 10),
        bench.timed_row("w", "peer", "peer", [10.0, 20.0, 30.0], 10),
        bench.missing_row("w", "other peer", "not installed"),
    ]


def test_timed_row_uses_median_min_max(bench):
    row = bench.timed_row("w", "s", "ours", [3.0, 1.0, 2.0], 4)
    assert (row.wall_s_median, row.wall_s_min, row.wall_s_max) == (2.0, 1.0, 3.0)
    assert row.items_per_s == pytest.approx(2.0)


def test_ratios(bench):
    limit, ours, peer, missing = bench.add_ratios(_rows(bench))
    assert ours.ratio_to_limit == pytest.approx(2.5 / 2.0)
    assert peer.ratio_to_limit == pytest.approx(20.0 / 2.0)
    assert peer.ratio_peer_to_ours == pytest.approx(20.0 / 2.5)
    assert limit.ratio_to_limit == "" and ours.ratio_peer_to_ours == "" and missing.ratio_to_limit == ""


def test_csv_and_markdown(bench, tmp_path):
    rows = bench.add_ratios(_rows(bench))
    bench.write_csv(rows, tmp_path / "benchmark.csv")
    bench.write_markdown(rows, ["- MET: x"], ["check"], {"mode": "tiny"}, tmp_path / "benchmark.md")
    with open(tmp_path / "benchmark.csv") as handle:
        table = list(csv.DictReader(handle))
    required = {"workload", "system", "wall_s_median", "wall_s_min", "wall_s_max", "items_per_s", "ratio_to_limit"}
    assert required <= set(table[0])
    assert float(table[1]["ratio_to_limit"]) == pytest.approx(1.25)
    assert table[3]["status"] == "not installed"
    text = (tmp_path / "benchmark.md").read_text()
    assert "| w | sanity |" in text and "not installed" in text and "MET: x" in text


def test_check_maps_accepts_equal_and_rejects_wrong_maps(bench):
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 8, 8, 1)).astype(np.float32)
    bench.check_maps("same", maps, maps + 1e-7, log=lambda *_: None)
    with pytest.raises(bench.CheckFailed):
        bench.check_maps("scaled", 1.1 * maps, maps, log=lambda *_: None)
    with pytest.raises(bench.CheckFailed):
        bench.check_maps("shuffled", maps[::-1], maps, log=lambda *_: None)
    with pytest.raises(bench.CheckFailed):
        bench.check_maps("shape", maps[:2], maps, log=lambda *_: None)
    with pytest.raises(bench.CheckFailed):
        bench.check_values("values", np.array([0.5, np.nan]), np.array([0.5, 0.2]), atol=1e-6, log=lambda *_: None)


def test_per_pair_loop_matches_metrics_compare(bench):
    from sanity_cli import metrics

    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 28, 28, 1))
    b = a + rng.standard_normal(a.shape)
    loop = bench.per_pair_metrics(a, b)
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(metrics.compare(a, b, name)[0], loop[name], atol=1e-9)


def test_limit_runner_does_the_requested_passes(bench):
    calls = []

    class Grad:
        def __call__(self, x, t):
            calls.append(int(x.shape[0]))
            return x

    bench.limit_runner(Grad(), (4, 4, 1), passes=10, batch=4)()
    assert calls == [4, 4, 2]


def test_pair_identity_and_same_noise(bench):
    """PAIR's IG equals the identity built from our trapezoid IG, and PAIR's SmoothGrad fed our noise equals ours;
    a wrong map is rejected."""
    pytest.importorskip("saliency.core")
    import keras
    from sanity_cli import models

    keras.utils.set_random_seed(0)
    model = models.build("mnist_cnn")
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    targets = np.array([3, 7], np.int32)
    cmf = bench.pair_call_model_function(model, compiled=True)
    ours = bench.ours_explain(model, images, targets, "smoothgrad", bench.smoothgrad_params(3), 4)
    theirs = bench.pair_smoothgrad(images, targets, cmf, 3, same_noise_seed=0)
    bench.check_maps("sg", ours, theirs, log=lambda *_: None)
    with pytest.raises(bench.CheckFailed):  # PAIR with its own noise is a different map
        bench.check_maps("sg other noise", ours, bench.pair_smoothgrad(images, targets, cmf, 3), log=lambda *_: None)
    ig = bench.pair_ig_from_ours(model, images, targets, 5, 0.0, 4)
    bench.check_maps("ig", ig, bench.pair_ig(images, targets, cmf, 5, 0.0, batch_size=5), log=lambda *_: None)
    eager = bench.pair_call_model_function(model, compiled=False)
    bench.check_maps("ig eager", ig, bench.pair_ig(images, targets, eager, 5, 0.0), log=lambda *_: None)


def test_tiny_end_to_end_mnist(tmp_path):
    """The script itself, MNIST workloads only (peers included when installed), at the hidden --tiny size."""
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--tiny", "--only",
                             "a,b,c,d,m,mnist", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "benchmark.csv") as handle:
        table = list(csv.DictReader(handle))
    workloads = {row["workload"] for row in table}
    assert {"a_smoothgrad4_mnist_cnn", "b_ig4_mnist_cnn"} <= workloads
    assert any(w.startswith("c_cascading") for w in workloads) and any(w.startswith("d_metric") for w in workloads)
    ours = [row for row in table if row["system"].startswith("sanity") and row["workload"].startswith("a_")]
    assert ours and float(ours[0]["ratio_to_limit"]) > 0
    peers = [row for row in table if "saliency" in row["system"] or "quantus" in row["system"]]
    assert peers and all(row["status"] in ("ok", "not installed") for row in peers)
    assert "## Targets" in (out / "benchmark.md").read_text()
