"""scripts/benchmark.py and its scripts/bench/ package: the pieces in-process at tiny sizes (rows, ratios, CSV,
checks, the metric loop), the peer checks when the peers are installed, and one tiny end-to-end run of the MNIST
workloads."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # as `python scripts/benchmark.py` sees it

from bench import measure, peers, table  # noqa: E402


def _rows():
    return [
        table.timed_row("w", "limit", "limit", [1.0, 2.0, 3.0], 10),
        table.timed_row("w", "sanity", "ours", [2.0, 2.5, 4.0], 10),
        table.timed_row("w", "peer", "peer", [10.0, 20.0, 30.0], 10),
        table.missing_row("w", "other peer", "not installed"),
    ]


def test_timed_row_uses_median_min_max():
    row = table.timed_row("w", "s", "ours", [3.0, 1.0, 2.0], 4)
    assert (row.wall_s_median, row.wall_s_min, row.wall_s_max) == (2.0, 1.0, 3.0)
    assert row.items_per_s == pytest.approx(2.0)


def test_ratios():
    limit, ours, peer, missing = table.add_ratios(_rows())
    assert ours.ratio_to_limit == pytest.approx(2.5 / 2.0)
    assert peer.ratio_to_limit == pytest.approx(20.0 / 2.0)
    assert peer.ratio_peer_to_ours == pytest.approx(20.0 / 2.5)
    assert limit.ratio_to_limit == "" and ours.ratio_peer_to_ours == "" and missing.ratio_to_limit == ""


def test_csv_and_markdown(tmp_path):
    rows = table.add_ratios(_rows())
    table.write_csv(rows, tmp_path / "benchmark.csv")
    table.write_markdown(rows, ["- MET: x"], ["check"], {"mode": "tiny"}, tmp_path / "benchmark.md")
    with open(tmp_path / "benchmark.csv") as handle:
        written = list(csv.DictReader(handle))
    required = {"workload", "system", "wall_s_median", "wall_s_min", "wall_s_max", "items_per_s", "ratio_to_limit"}
    assert required <= set(written[0])
    assert float(written[1]["ratio_to_limit"]) == pytest.approx(1.25)
    assert written[3]["status"] == "not installed"
    text = (tmp_path / "benchmark.md").read_text()
    assert "| w | sanity |" in text and "not installed" in text and "MET: x" in text


def test_check_maps_accepts_equal_and_rejects_wrong_maps():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 8, 8, 1)).astype(np.float32)
    measure.check_maps("same", maps, maps + 1e-7, log=lambda *_: None)
    with pytest.raises(measure.CheckFailed):
        measure.check_maps("scaled", 1.1 * maps, maps, log=lambda *_: None)
    with pytest.raises(measure.CheckFailed):
        measure.check_maps("shuffled", maps[::-1], maps, log=lambda *_: None)
    with pytest.raises(measure.CheckFailed):
        measure.check_maps("shape", maps[:2], maps, log=lambda *_: None)
    with pytest.raises(measure.CheckFailed):
        measure.check_values("values", np.array([0.5, np.nan]), np.array([0.5, 0.2]), atol=1e-6,
                             log=lambda *_: None)


def test_per_pair_loop_matches_metrics_compare():
    from sanity_cli import metrics

    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 28, 28, 1))
    b = a + rng.standard_normal(a.shape)
    loop = peers.per_pair_metrics(a, b)
    similarities = [name for name in metrics.METRIC_NAMES if metrics.METRICS[name].higher_is_more_similar]
    assert sorted(loop) == sorted(similarities)  # entropy_rise is checked against scipy in test_efficient_mprt
    for name in similarities:
        np.testing.assert_allclose(metrics.compare(a, b, name)[0], loop[name], atol=1e-9)


def test_limit_runner_does_the_requested_passes():
    calls = []

    class Grad:
        def __call__(self, x, t):
            calls.append(int(x.shape[0]))
            return x

    measure.limit_runner(Grad(), (4, 4, 1), passes=10, batch=4)()
    assert calls == [4, 4, 2]


def test_pair_identity_and_same_noise():
    """PAIR's IG equals the identity built from our trapezoid IG, and PAIR's SmoothGrad fed our noise equals ours;
    a wrong map is rejected."""
    pytest.importorskip("saliency.core")
    import keras
    from sanity_cli import architectures

    keras.utils.set_random_seed(0)
    model = architectures.get("mnist_cnn").build()
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    targets = np.array([3, 7], np.int32)
    cmf = peers.pair_call_model_function(model, compiled=True)
    ours = peers.ours_explain(model, images, targets, "smoothgrad", peers.smoothgrad_params(3), 4)
    theirs = peers.pair_smoothgrad(images, targets, cmf, 3, same_noise_seed=0)
    measure.check_maps("sg", ours, theirs, log=lambda *_: None)
    with pytest.raises(measure.CheckFailed):  # PAIR with its own noise is a different map
        measure.check_maps("sg other noise", ours, peers.pair_smoothgrad(images, targets, cmf, 3), log=lambda *_: None)
    ig = peers.pair_ig_from_ours(model, images, targets, 5, 0.0, 4)
    measure.check_maps("ig", ig, peers.pair_ig(images, targets, cmf, 5, 0.0, batch_size=5), log=lambda *_: None)
    eager = peers.pair_call_model_function(model, compiled=False)
    measure.check_maps("ig eager", ig, peers.pair_ig(images, targets, eager, 5, 0.0), log=lambda *_: None)


def test_quantus_efficient_mprt_agrees_with_entropy_rise_on_the_same_maps():
    """Quantus 0.6's EfficientMPRT and sanity's entropy_rise score the same explanations to 1e-9 (the check the
    benchmark runs before timing); a different score would raise."""
    pytest.importorskip("quantus")
    import keras
    from sanity_cli import architectures

    keras.utils.set_random_seed(0)
    model = architectures.get("mnist_cnn").build()
    images = np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32)
    lines = peers.check_quantus_efficient_mprt(model, images, np.arange(6, dtype=np.int32), log=lambda *_: None)
    worst = float(lines[0].split("max diff ")[1].split(" ")[0])
    assert worst <= 1e-9


def test_quantus_random_logit_agrees_with_spearman_abs_on_the_same_maps():
    """Quantus 0.6's RandomLogit and sanity's spearman_abs (rank-preserving normalisation) score the same
    explanations to 1e-9."""
    pytest.importorskip("quantus")
    import keras
    from sanity_cli import architectures

    keras.utils.set_random_seed(0)
    model = architectures.get("mnist_cnn").build()
    images = np.random.default_rng(1).random((6, 28, 28, 1), dtype=np.float32)
    lines = peers.check_quantus_random_logit(model, images, np.arange(6, dtype=np.int32), log=lambda *_: None)
    assert float(lines[0].split("max diff ")[1].split(" ")[0]) <= 1e-9


def test_tiny_end_to_end_mnist(tmp_path):
    """The script itself, MNIST workloads only (peers included when installed), at the hidden --tiny size."""
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--tiny", "--only",
                             "a,b,c,d,m,p,mnist", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "benchmark.csv") as handle:
        written = list(csv.DictReader(handle))
    workloads = {row["workload"] for row in written}
    assert {"a_smoothgrad4_mnist_cnn", "b_ig4_mnist_cnn"} <= workloads
    assert any(w.startswith("c_cascading") for w in workloads) and any(w.startswith("d_metric") for w in workloads)
    cascading = next(row for row in written if row["workload"].startswith("c_cascading") and row["system"].startswith(
        "sanity"))
    assert re.search(r"explaining the 5 stages [0-9.]+ s, re-initialising the blocks [0-9.]+ s, comparing the stages "
                     r"[0-9.]+ s; the limit stage by stage", cascading["note"]), cascading["note"]
    ours = [row for row in written if row["system"].startswith("sanity") and row["workload"].startswith("a_")]
    assert ours and float(ours[0]["ratio_to_limit"]) > 0
    peers = [row for row in written if "saliency" in row["system"] or "quantus" in row["system"]]
    assert peers and all(row["status"] in ("ok", "not installed") for row in peers)
    assert "## Targets" in (out / "benchmark.md").read_text()
    half = [row for row in written if row["workload"].startswith("p_precision") and "mixed" in row["system"]]
    assert len(half) == 2 and all("largest map error" in row["note"] for row in half)
