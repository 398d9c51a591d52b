#!/usr/bin/env python3
"""Performance benchmark of `sanity`: our speed against the physical limit and against the peers, side by side.

    python scripts/benchmark.py --quick --out DIR     # a few minutes on 2 CPU cores (smaller images / counts)
    python scripts/benchmark.py --out DIR             # the full set (Inception at 299 px, 100 MNIST images, ...)

Writes DIR/benchmark.csv and DIR/benchmark.md. In one process run it measures, on the current device:

  limit   raw batched forward+backward passes of the workload in pure TensorFlow (one tf.function, data already
          on the device, best batch size of a sweep, no pipeline around it);
  sanity  the package's real code: sanity_cli.methods.explain, sanity_cli.pipeline.run_model_randomization,
          sanity_cli.metrics.compare;
  peers   PAIR `saliency` (Gradient / SmoothGrad / Integrated Gradients; default settings, batch-1 calls, and its
          IG batch_size option) and Quantus' MPRT (cascading, top-down) with a gradient explainer, on the same
          model, images and hyperparameters. Peers are optional (`pip install -e ".[bench]"`); a missing peer
          gives "not installed" rows.

Workloads: (a) SmoothGrad of Gradient, (b) Integrated Gradients, each on Inception v3 (random weights) and the
MNIST CNN; (c) a full cascading run of the MNIST CNN with gradient + SmoothGrad over all stages; (d) similarity
metrics for many map pairs (vectorised vs a per-pair scipy / scikit-image loop); (m) peak memory when the number
of samples / steps doubles.

Before anything is timed, ours and the peers are checked to compute the same maps (PAIR SmoothGrad fed the same
noise, PAIR IG through an exact identity with our trapezoid IG, Quantus' per-layer Spearman scores recomputed
with our engine and rank correlation, the per-pair metric loop against metrics.compare). A failed check stops
the run with exit code 1: speed is not bought with wrong answers.
"""

from __future__ import annotations

import argparse
import csv
import contextlib
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field, fields
from pathlib import Path
from unittest import mock

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLUMNS = ["workload", "system", "batch_size", "items", "item", "wall_s_median", "wall_s_min", "wall_s_max",
           "items_per_s", "ratio_to_limit", "ratio_peer_to_ours", "peak_rss_mb", "peak_numpy_mb", "status", "note"]
LIMIT, OURS = "limit", "sanity"

SIZES = {
    # inc_*: Inception v3 (random weights); mnist_images: (a)/(b) MNIST CNN; casc_*: (c); pairs: (d)
    "tiny": dict(inc_size=75, inc_images=1, inc_batches=[1, 4], mnist_images=4, mnist_batches=[1, 32],
                 samples=4, steps=4, casc_images=4, casc_samples=2, pairs=24, repeats=1, train_images=400,
                 mem_images=4, pair_batch=25),
    "quick": dict(inc_size=150, inc_images=1, inc_batches=[1, 8, 16, 32], mnist_images=20,
                  mnist_batches=[1, 32, 128, 256, 512], samples=50, steps=50, casc_images=20, casc_samples=10,
                  pairs=300, repeats=3, train_images=2000, mem_images=20, pair_batch=25),
    "full": dict(inc_size=299, inc_images=2, inc_batches=[1, 8, 16, 32, 64], mnist_images=100,
                 mnist_batches=[1, 32, 128, 256, 512, 1024], samples=50, steps=50, casc_images=100,
                 casc_samples=50, pairs=2000, repeats=3, train_images=4000, mem_images=100, pair_batch=25),
}
SIGMA = 0.15
MNIST_RANGE, INCEPTION_RANGE = (0.0, 1.0), (-1.0, 1.0)


class CheckFailed(RuntimeError):
    """Ours and a peer (or a reference computation) disagree: the benchmark must not report a speed."""


# --------------------------------------------------------------------------- rows, ratios, output

@dataclass
class Row:
    workload: str
    system: str
    batch_size: int | str = ""
    items: int | str = ""
    item: str = "image"
    wall_s_median: float | str = ""
    wall_s_min: float | str = ""
    wall_s_max: float | str = ""
    items_per_s: float | str = ""
    ratio_to_limit: float | str = ""
    ratio_peer_to_ours: float | str = ""
    peak_rss_mb: float | str = ""
    peak_numpy_mb: float | str = ""
    status: str = "ok"
    note: str = ""
    role: str = field(default="peer", repr=False)  # limit | ours | peer | info (not written)


def timed_row(workload: str, system: str, role: str, times: list[float], items: int, *, item: str = "image",
              batch_size="", note: str = "", peak_rss_mb="", peak_numpy_mb="") -> Row:
    median = statistics.median(times)
    return Row(workload, system, batch_size, items, item, median, min(times), max(times),
               items / median if median > 0 else float("inf"), peak_rss_mb=peak_rss_mb,
               peak_numpy_mb=peak_numpy_mb, note=note, role=role)


def missing_row(workload: str, system: str, status: str, note: str = "") -> Row:
    return Row(workload, system, status=status, note=note, role="peer")


def add_ratios(rows: list[Row]) -> list[Row]:
    """ratio_to_limit = median / the workload's limit median (ours and peers); ratio_peer_to_ours = peer median /
    ours median (peers only)."""
    by_workload: dict[str, dict[str, Row]] = {}
    for row in rows:
        if row.role in (LIMIT, "ours") and row.status == "ok":
            by_workload.setdefault(row.workload, {})[row.role] = row
    for row in rows:
        if row.status != "ok" or row.wall_s_median == "":
            continue
        ref = by_workload.get(row.workload, {})
        if row.role in ("ours", "peer") and LIMIT in ref:
            row.ratio_to_limit = row.wall_s_median / ref[LIMIT].wall_s_median
        if row.role == "peer" and "ours" in ref:
            row.ratio_peer_to_ours = row.wall_s_median / ref["ours"].wall_s_median
    return rows


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: (f"{getattr(row, c):.6g}" if isinstance(getattr(row, c), float)
                                 else getattr(row, c)) for c in COLUMNS})
    os.replace(tmp, path)


def markdown_table(rows: list[Row]) -> str:
    shown = ["workload", "system", "batch_size", "items", "wall_s_median", "wall_s_min", "wall_s_max",
             "items_per_s", "ratio_to_limit", "ratio_peer_to_ours", "peak_rss_mb", "status"]
    head = ["workload", "system", "batch", "items", "median s", "min s", "max s", "items/s", "/limit",
            "peer/ours", "peak RSS MB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(getattr(row, c)) for c in shown) + " |")
    return "\n".join(lines)


def write_markdown(rows: list[Row], targets: list[str], checks: list[str], context: dict, path: Path) -> None:
    notes = [f"- **{r.workload} / {r.system}**: {r.note}" for r in rows if r.note]
    text = "\n".join([
        f"# sanity benchmark ({context.get('mode', '?')})", "",
        " ".join(f"{k}: {v};" for k, v in context.items() if k != "mode"), "",
        markdown_table(rows), "",
        "`/limit` = wall time / the limit's wall time (raw batched forward+backward passes in one tf.function, "
        "best batch size); `peer/ours` = peer wall time / sanity's wall time (> 1: sanity is faster).", "",
        "## Targets", "", *targets, "",
        "## Correctness checks (before timing)", "", *[f"- {c}" for c in checks], "",
        "## Notes", "", *notes, ""])
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- measurement helpers

def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):  # not Linux: resource's lifetime peak is the best we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


class RssPeak:
    """Peak resident set size above the level at entry, sampled every 10 ms by a thread."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def __enter__(self):
        self.base = self.peak = _rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.delta_mb = self.peak - self.base


def repeat_timed(fn, repeats: int) -> tuple[list[float], float, object]:
    """Wall times of `repeats` calls, the largest RSS rise of any call, and the last call's result."""
    times, peak, result = [], 0.0, None
    for _ in range(repeats):
        with RssPeak() as rss:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, rss.delta_mb)
    return times, peak, result


def numpy_peak_mb(fn) -> float:
    """Peak of the memory numpy (and Python) allocate during fn, via tracemalloc (TensorFlow's own buffers are
    not traced; they are bounded by the batch size)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


def check_maps(name: str, ours: np.ndarray, theirs: np.ndarray, *, rtol: float = 1e-3, min_corr: float = 0.9999,
               log=print) -> str:
    """Raise CheckFailed unless the two batches of maps agree: max |a - b| <= rtol * max |b| and Pearson r of the
    flattened maps >= min_corr. Returns a one-line summary."""
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if a.shape != b.shape:
        raise CheckFailed(f"{name}: shapes differ, ours {a.shape} vs peer {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise CheckFailed(f"{name}: non-finite values")
    scale = np.abs(b).max()
    rel = float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.size > 1 and a.std() > 0 and b.std() > 0 else 1.0
    line = f"{name}: max|ours - peer| / max|peer| = {rel:.2e} (<= {rtol:g}), Pearson r = {corr:.6f} (>= {min_corr})"
    if not (rel <= rtol and corr >= min_corr):
        raise CheckFailed(line)
    log(f"check ok  {line}")
    return line


def check_values(name: str, ours: np.ndarray, theirs: np.ndarray, atol: float, log=print) -> str:
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if a.shape != b.shape:
        raise CheckFailed(f"{name}: shapes differ, ours {a.shape} vs reference {b.shape}")
    both_nan = np.isnan(a) & np.isnan(b)
    if np.any(np.isnan(a) != np.isnan(b)):
        raise CheckFailed(f"{name}: undefined (NaN) values differ")
    diff = float(np.abs(np.where(both_nan, 0, a - b)).max()) if a.size else 0.0
    line = f"{name}: max |ours - reference| = {diff:.2e} over {a.size} values (<= {atol:g})"
    if not diff <= atol:
        raise CheckFailed(line)
    log(f"check ok  {line}")
    return line


# --------------------------------------------------------------------------- TensorFlow pieces

def grad_function(model):
    """The limit's kernel: d logit_c / d x for a batch, one tf.function (same maths as sanity's engine)."""
    import tensorflow as tf

    @tf.function(input_signature=(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                                  tf.TensorSpec([None], tf.int32)))
    def grad(x, targets):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.gather(model(x, training=False), targets, axis=1, batch_dims=1)
        return tape.gradient(score, x)

    return grad


def limit_runner(grad, input_shape, passes: int, batch: int, seed: int = 0):
    """A callable doing `passes` forward+backward passes in batches of `batch` on inputs already on the device."""
    import tensorflow as tf

    batch = max(1, min(batch, passes))
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch, *input_shape), np.float32))
    t = tf.zeros([batch], tf.int32)
    full, tail = divmod(passes, batch)
    xt, tt = x[:tail], t[:tail]

    def run():
        out = None
        for _ in range(full):
            out = grad(x, t).numpy()
        if tail:
            out = grad(xt, tt).numpy()
        return out

    return run


def throughput_sweep(grad, input_shape, batches: list[int], min_images: int, label: str, log) -> dict[int, float]:
    """images/s of grad at each batch size (after one warm-up call per size)."""
    rates = {}
    for b in batches:
        calls = max(2, math.ceil(min_images / b))
        run = limit_runner(grad, input_shape, calls * b, b)
        limit_runner(grad, input_shape, b, b)()  # warm-up (first call per shape)
        start = time.perf_counter()
        run()
        rates[b] = calls * b / (time.perf_counter() - start)
        log(f"limit     {label}: batch {b}: {rates[b]:.1f} images/s")
    return rates


def pair_call_model_function(model, compiled: bool):
    """PAIR's call_model_function contract: (x_batch, call_model_args, expected_keys) -> {INPUT_OUTPUT_GRADIENTS}.
    compiled=False is the eager GradientTape of PAIR's own TF2 examples; compiled=True routes it through one
    traced tf.function (the most favourable setting for the peer)."""
    import tensorflow as tf
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    grad = grad_function(model) if compiled else None

    def call_model_function(x_batch, call_model_args=None, expected_keys=None):
        target = int(call_model_args["target"])
        x = tf.convert_to_tensor(np.asarray(x_batch, np.float32))
        if compiled:
            g = grad(x, tf.fill([len(x_batch)], target))
        else:
            with tf.GradientTape() as tape:
                tape.watch(x)
                score = model(x)[:, target]
            g = tape.gradient(score, x)
        return {INPUT_OUTPUT_GRADIENTS: g.numpy()}

    return call_model_function


def pair_smoothgrad(images, targets, cmf, samples: int, same_noise_seed=None) -> np.ndarray:
    """PAIR GradientSaliency.GetSmoothedMask per image (its only mode: one batch-1 call per sample), plain mean
    (magnitude=False, i.e. SmoothGrad of the gradient as in the paper). With same_noise_seed, numpy.random.normal
    is fed from sanity's per-image noise stream so both see identical noisy inputs."""
    import saliency.core as saliency

    method = saliency.GradientSaliency()
    out = []
    for i, (x, t) in enumerate(zip(images, targets)):
        kwargs = dict(stdev_spread=SIGMA, nsamples=samples, magnitude=False)
        if same_noise_seed is None:
            out.append(method.GetSmoothedMask(x, cmf, {"target": int(t)}, **kwargs))
            continue
        stream = np.random.default_rng(list(np.atleast_1d(same_noise_seed).astype(int)) + [i])

        def normal(loc=0.0, scale=1.0, size=None, _stream=stream):  # sanity's noise, rounded as sanity rounds it
            return (loc + scale * _stream.standard_normal(size)).astype(np.float32)

        with mock.patch("numpy.random.normal", normal):
            out.append(method.GetSmoothedMask(x, cmf, {"target": int(t)}, **kwargs))
    return np.stack(out).astype(np.float32)


def pair_ig(images, targets, cmf, steps: int, black: float, batch_size: int = 1) -> np.ndarray:
    """PAIR IntegratedGradients.GetMask per image: x_steps points linspace(0, 1, steps), equal weights 1/steps,
    batch_size=1 by default (its batching option: up to batch_size path points per call)."""
    import saliency.core as saliency

    method = saliency.IntegratedGradients()
    return np.stack([method.GetMask(x, cmf, {"target": int(t)}, x_baseline=np.full_like(x, black),
                                    x_steps=steps, batch_size=batch_size)
                     for x, t in zip(images, targets)]).astype(np.float32)


def ours_explain(model, images, targets, kind: str, params: dict, batch: int) -> np.ndarray:
    from sanity_cli import methods

    return methods.explain(model, images, targets, kind, params, batch_size=batch, seed=0)


def smoothgrad_params(samples: int) -> dict:
    return {"base": "gradient", "samples": samples, "sigma": SIGMA, "base_params": {}}


def ig_params(steps: int, black: float, rule: str = "midpoint") -> dict:
    return {"steps": steps, "baseline": black, "rule": rule, "output": "logit"}


def pair_ig_from_ours(model, images, targets, steps: int, black: float, batch: int) -> np.ndarray:
    """PAIR's IG rebuilt exactly from sanity's trapezoid IG (same points a_k = k/(S-1)):
    PAIR = d/S sum_k g_k, trapezoid T = d/(S-1) (sum_k g_k - (g_0 + g_{S-1})/2)
    => PAIR = (S-1)/S T + d (g_0 + g_{S-1}) / (2S), with g_0 at the baseline and g_{S-1} at the image."""
    trap = ours_explain(model, images, targets, "integrated_gradients", ig_params(steps, black, "trapezoid"), batch)
    baseline = np.full_like(images, black)
    g_end = ours_explain(model, images, targets, "gradient", {}, batch)
    g_base = ours_explain(model, baseline, targets, "gradient", {}, batch)
    delta = images - baseline
    return ((steps - 1) / steps * trap + delta * (g_base + g_end) / (2 * steps)).astype(np.float32)


# --------------------------------------------------------------------------- the benchmark

class Benchmark:
    def __init__(self, size: dict, mode: str, peers: bool, log=print):
        self.size, self.mode, self.peers, self.log = size, mode, peers, log
        self.rows: list[Row] = []
        self._pending_limit = None
        self.best: dict[str, tuple] = {}
        self.checks: list[str] = []
        self.facts: dict[str, float] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="sanity_bench_"))
        self.has_saliency = self.has_quantus = False
        if peers:
            self.has_saliency = _importable("saliency.core")
            self.has_quantus = _importable("quantus")

    # ---------------------------------------------------------------- setup
    def cfg(self, *overrides: str):
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from sanity_cli import config as config_service

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_service.config_dir()), version_base="1.3"):
            return compose(config_name="sanity", overrides=[
                "model=mnist_cnn", "data=mnist", "data.source=bundled", "test=cascading", "plots=false",
                f"cache_dir={self.tmp / 'models'}", f"train.max_train_images={self.size['train_images']}",
                "train.epochs=1", *overrides])

    def mnist(self):
        """The MNIST CNN trained once (1 epoch, small budget, temporary cache) through the real pipeline."""
        if not hasattr(self, "_mnist"):
            from sanity_cli import pipeline

            cfg = self.cfg()
            dataset = pipeline.load_data(cfg)
            trained = pipeline.load_model(cfg, dataset, "true")
            self._mnist = (cfg, dataset, trained)
            self.log(f"setup     MNIST CNN: test accuracy {trained.info['test_accuracy']:.3f}")
        return self._mnist

    def mnist_images(self, n: int):
        from sanity_cli import pipeline

        cfg, dataset, trained = self.mnist()
        ids = pipeline.choose_images(dataset, n, 0)
        images = pipeline.to_model_space(dataset.x_test[ids], MNIST_RANGE)
        targets = pipeline.choose_targets(cfg, trained.model, images, dataset.y_test[ids])
        return trained.model, images, targets, ids

    def inception(self):
        if not hasattr(self, "_inception"):
            import keras
            from sanity_cli import inception, pipeline
            from sanity_cli.photos import load_photos

            size = self.size["inc_size"]
            if size == 299:
                model = inception.build("none")  # the pipeline's own model=inception model.weights=none
            else:  # --quick: same architecture and code path at a smaller input
                keras.utils.set_random_seed(0)
                model = keras.applications.InceptionV3(weights=None, input_shape=(size, size, 3),
                                                       classifier_activation=None)
            photos = load_photos(None, size=size, max_images=self.size["inc_images"], log=lambda *_: None)
            images = pipeline.to_model_space(photos.x_test[: self.size["inc_images"]], INCEPTION_RANGE)
            from sanity_cli.methods.engine import engine_for

            targets = engine_for(model).predict_logits(images, batch_size=8).argmax(1).astype(np.int32)
            self._inception = (model, images, targets)
            self.log(f"setup     InceptionV3 (random weights) at {size} px, {len(images)} photos")
        return self._inception

    # ---------------------------------------------------------------- limit
    def limit(self, label: str, model, batches: list[int]) -> tuple[object, int, dict]:
        grad = grad_function(model)
        rates = throughput_sweep(grad, model.input_shape[1:], batches, min_images=max(batches) * 2,
                                 label=label, log=self.log)
        best = max(rates, key=rates.get)
        self.best[label] = (grad, best, rates)
        for b, rate in rates.items():
            self.rows.append(Row(f"throughput_{label}", f"tf.function fwd+bwd, batch {b}", b, "", "image",
                                 items_per_s=rate, role="info",
                                 note="best batch" if b == best else ""))
        self.facts[f"{label}_batch1_rate"] = rates.get(1, float("nan"))
        self.facts[f"{label}_best_rate"] = rates[best]
        return grad, best, rates

    def time_limit(self, workload: str, grad, model, passes: int, batch: int, items: int, item="image"):
        """The limit row; its repeats run interleaved with the next `ours` row's (see time_system), so slow drift
        of the machine (frequency, neighbours) hits both alike."""
        run = limit_runner(grad, model.input_shape[1:], passes, batch)
        run()  # warm-up for this exact shape
        row = Row(workload, f"limit: {passes} passes, tf.function", batch, items, item, role=LIMIT)
        self._pending_limit = (row, run, [], [0.0])
        self.rows.append(row)
        if self.size["repeats"] == 1 or item == "__now__":
            self._finish_limit()

    def _finish_limit(self, extra_times=()):
        row, run, times, rss = self._pending_limit
        for _ in range(max(0, self.size["repeats"] - len(times))):
            t, r, _ = repeat_timed(run, 1)
            times += t
            rss[0] = max(rss[0], r)
        done = timed_row(row.workload, row.system, LIMIT, times, row.items, item=row.item,
                         batch_size=row.batch_size, peak_rss_mb=rss[0])
        self.rows[self.rows.index(row)] = done
        self._pending_limit = None

    def time_system(self, workload, system, role, fn, items, *, batch="", note="", item="image", check=None,
                    repeats=None):
        pending = getattr(self, "_pending_limit", None)
        if pending is not None and role == "ours" and pending[0].workload == workload:
            times, rss = [], 0.0
            for _ in range(repeats or self.size["repeats"]):  # limit, ours, limit, ours, ...
                t, r, _ = repeat_timed(pending[1], 1)
                pending[2].extend(t)
                pending[3][0] = max(pending[3][0], r)
                t, r, result = repeat_timed(fn, 1)
                times += t
                rss = max(rss, r)
            self._finish_limit()
        else:
            if pending is not None:
                self._finish_limit()
            times, rss, result = repeat_timed(fn, repeats or self.size["repeats"])
        if check is not None:
            check(result)
        self.rows.append(timed_row(workload, system, role, times, items, item=item, batch_size=batch, note=note,
                                   peak_rss_mb=rss))
        self.log(f"timed     {workload} / {system}: median {statistics.median(times):.3f} s")
        return result

    # ---------------------------------------------------------------- (a) and (b)
    def gradient_workloads(self, label: str, model, images, targets, batches, black: float):
        s, n = self.size, len(images)
        grad, best, rates = self.limit(label, model, batches)
        samples, steps = s["samples"], s["steps"]
        cmf = {c: pair_call_model_function(model, c) for c in (True, False)} if self.has_saliency else {}

        # ---- checks before timing
        ours_sg = ours_explain(model, images, targets, "smoothgrad", smoothgrad_params(samples), best)
        if self.has_saliency:
            theirs = pair_smoothgrad(images, targets, cmf[True], samples, same_noise_seed=0)
            # rtol: batch-1 and batched convolutions round differently; a deep random-weight net amplifies it
            rtol = 1e-3 if label.startswith("mnist") else 5e-3
            self.checks.append(check_maps(f"{label} SmoothGrad-{samples}: sanity vs PAIR GetSmoothedMask, same noise",
                                          ours_sg, theirs, rtol=rtol, log=self.log))
            ig_ref = pair_ig_from_ours(model, images, targets, steps, black, best)
            theirs = pair_ig(images, targets, cmf[True], steps, black, batch_size=min(best, steps))
            self.checks.append(check_maps(f"{label} IG-{steps}: sanity (trapezoid identity) vs PAIR GetMask",
                                          ig_ref, theirs, rtol=rtol, log=self.log))
        else:
            ig_ref, rtol = None, 1e-3

        # ---- (a) SmoothGrad
        wl = f"a_smoothgrad{samples}_{label}"
        passes = n * samples
        self.time_limit(wl, grad, model, passes, best, n)
        sg_params = smoothgrad_params(samples)
        self.time_system(wl, "sanity: methods.explain smoothgrad", "ours",
                         lambda: ours_explain(model, images, targets, "smoothgrad", sg_params, best), n, batch=best,
                         check=lambda out: check_maps(f"{wl} timed output", out, ours_sg, rtol=1e-5, log=_quiet))
        if self.has_saliency:
            for compiled, name in ((True, "tf.function"), (False, "eager")):
                self.time_system(wl, f"saliency (PAIR) GetSmoothedMask, {name} call_model_function", "peer",
                                 lambda c=compiled: pair_smoothgrad(images, targets, cmf[c], samples), n, batch=1,
                                 repeats=None if compiled else 1,
                                 note=("defaults (batch-1 calls; no batching option), magnitude=False; " if compiled
                                       else "as in PAIR's TF2 examples, 1 repeat; ") + "own np.random noise")
        else:
            self.rows.append(missing_row(wl, "saliency (PAIR)", "not installed"))
        if 1 in rates and label.startswith("inception"):
            # the reference ratio: PAIR's SmoothGrad vs the same gradients in batches of 25
            self.time_limit(wl, grad, model, passes, min(s["pair_batch"], passes), n, item="__now__")
            self.rows[-1].item = "image"
            self.rows[-1].system = f"same {passes} passes, tf.function, batch {min(s['pair_batch'], passes)}"
            self.rows[-1].role = "info"

        # ---- (b) Integrated Gradients
        wl = f"b_ig{steps}_{label}"
        passes = n * steps
        self.time_limit(wl, grad, model, passes, best, n)
        igp = ig_params(steps, black)
        self.time_system(wl, "sanity: methods.explain integrated_gradients", "ours",
                         lambda: ours_explain(model, images, targets, "integrated_gradients", igp, best), n,
                         batch=best)
        if self.has_saliency:
            variants = [(True, 1, "tf.function, defaults (batch_size=1)"), (False, 1, "eager, defaults (batch_size=1)"),
                        (True, min(best, steps), f"tf.function, batch_size={min(best, steps)}")]
            for compiled, b, name in variants:
                chk = (lambda out: check_maps(f"{wl} PAIR timed output", out, ig_ref, rtol=rtol, log=_quiet)) \
                    if ig_ref is not None else None
                self.time_system(wl, f"saliency (PAIR) IG GetMask, {name}", "peer",
                                 lambda c=compiled, bb=b: pair_ig(images, targets, cmf[c], steps, black, bb), n,
                                 batch=b, check=chk, repeats=None if compiled else 1,
                                 note="" if compiled else "as in PAIR's TF2 examples; 1 repeat")
        else:
            self.rows.append(missing_row(wl, "saliency (PAIR)", "not installed"))

    def run_a_b(self, only: set[str]):
        if "mnist" in only:
            model, images, targets, _ = self.mnist_images(self.size["mnist_images"])
            self.gradient_workloads("mnist_cnn", model, images, targets, self.size["mnist_batches"], MNIST_RANGE[0])
        if "inception" in only:
            model, images, targets = self.inception()
            self.gradient_workloads(f"inception_v3_{self.size['inc_size']}px", model, images, targets,
                                    self.size["inc_batches"], INCEPTION_RANGE[0])

    # ---------------------------------------------------------------- (c) cascading
    def run_c(self):
        from sanity_cli import models, pipeline

        s = self.size
        n, samples = s["casc_images"], s["casc_samples"]
        _, dataset, trained = self.mnist()
        model = trained.model
        grad, best, _ = self.best.get("mnist_cnn") or self.limit("mnist_cnn", model, s["mnist_batches"])
        cfg = self.cfg("method=[gradient,smoothgrad_gradient]", "metric=[spearman_abs]", f"n_images={n}",
                       f"method.smoothgrad_gradient.samples={samples}", f"batch_size={best}")
        ids = pipeline.choose_images(dataset, n, cfg.seed)
        images = pipeline.to_model_space(dataset.x_test[ids], MNIST_RANGE)
        targets = pipeline.choose_targets(cfg, model, images, dataset.y_test[ids])
        runs = pipeline.applicable_methods(cfg, model)
        stages = 1 + len(models.randomization_blocks(model))
        wl = f"c_cascading_mnist_cnn_{n}img_grad+sg{samples}"
        passes = stages * n * (1 + samples)

        def ours():
            return cascading_table(cfg, trained, runs, images, targets, ids, self.tmp)

        self.time_limit(wl, grad, model, passes, best, n, item="image (all stages)")
        table = self.time_system(wl, "sanity: pipeline.run_model_randomization", "ours", ours, n, batch=best,
                                 item="image (all stages)",
                                 note=f"{stages} stages (trained + {stages - 1} blocks), gradient + smoothgrad_gradient,"
                                      " spearman_abs, re-init randomization")
        last = table[table["stage"] == stages - 1].groupby("method")["value"].mean()
        if not self.has_quantus:
            self.rows.append(missing_row(wl, "quantus MPRT", "not installed"))
            return
        import quantus

        rng = np.random.default_rng(0)
        x_np, y_np = images, targets

        def q_gradient(model, inputs, targets, **kwargs):
            # Quantus hands channel-first inputs to explain_func for its randomized copies (the original model
            # gets them in the model's layout): accept both and answer in the layout received.
            import tensorflow as tf

            inputs = np.asarray(inputs, np.float32)
            moved = inputs.shape[1:] != tuple(model.input_shape[1:])
            x = tf.convert_to_tensor(np.moveaxis(inputs, 1, -1) if moved else inputs)
            with tf.GradientTape() as tape:
                tape.watch(x)
                score = tf.gather(model(x, training=False), np.asarray(targets, np.int32), axis=1, batch_dims=1)
            grads = tape.gradient(score, x).numpy()
            return np.moveaxis(grads, -1, 1) if moved else grads

        def q_smoothgrad(model, inputs, targets, **kwargs):
            inputs = np.asarray(inputs, np.float32)
            span = (inputs.reshape(len(inputs), -1).max(1) - inputs.reshape(len(inputs), -1).min(1))
            scale = (SIGMA * span).reshape(-1, 1, 1, 1)
            total = 0.0
            for _ in range(samples):
                noisy = inputs + (scale * rng.standard_normal(inputs.shape)).astype(np.float32)
                total = total + q_gradient(model, noisy, targets)
            return total / samples

        def mprt(explain_func):
            metric = quantus.MPRT(layer_order="top_down", seed=42, abs=True, normalise=True,
                                  disable_warnings=True, display_progressbar=False)
            scores = metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=None, channel_first=False,
                            explain_func=explain_func, explain_func_kwargs={}, batch_size=64)
            return scores

        # check: Quantus' per-layer scores == our engine's gradients on Quantus' randomized models + our rank
        # correlation (the same statistic on the same model states)
        import keras

        keras.utils.set_random_seed(1234)  # Quantus' clone_model draws fresh weights: make them reproducible
        q_scores = mprt(q_gradient)
        self.checks.extend(self.check_quantus(model, x_np, y_np, q_scores))

        def theirs():
            return {"gradient": mprt(q_gradient), "smoothgrad_gradient": mprt(q_smoothgrad)}

        result = self.time_system(wl, "quantus MPRT (top_down) x2 explainers", "peer", theirs, n, batch=64,
                                  item="image (all stages)",
                                  note="gradient + SmoothGrad explain_func (eager GradientTape, batched by Quantus' "
                                       "batch_size=64), Spearman of |maps|, randomization by permuting weights")
        q_last = {k: float(np.nanmean(list(v.values())[-1])) for k, v in result.items()}
        self.checks.append(f"(c) statistics at full randomization: mean Spearman gradient / smoothgrad: sanity "
                           f"(spearman_abs, re-init) {last.get('gradient', float('nan')):.3f} / "
                           f"{last.get('smoothgrad_gradient', float('nan')):.3f}; Quantus MPRT (permutation) "
                           f"{q_last['gradient']:.3f} / {q_last['smoothgrad_gradient']:.3f} (reported, not compared: "
                           f"the randomization schemes differ)")

    def check_quantus(self, model, x, y, q_scores) -> list[str]:
        """Recompute Quantus' per-layer scores on the very model states its generator yields (same seeds) with
        sanity's engine and rank correlation; also report whether those states keep the trained weights of the
        layers not yet randomized (cascading MPRT requires it)."""
        import keras
        from quantus.helpers.model.tf_model import TensorFlowModel
        from sanity_cli import metrics

        wrapped = TensorFlowModel(model=model, channel_first=False, softmax=False, model_predict_kwargs={})
        reference = ours_explain(model, x, y, "gradient", {}, 256)
        worst, layers, finding = 0.0, 0, ""
        keras.utils.set_random_seed(1234)
        for layer_name, random_model in wrapped.get_random_layer_generator(order="top_down", seed=42):
            if layers == 0:
                kept = [np.array_equal(a.numpy(), b.numpy()) for layer in model.layers if layer.name != layer_name
                        for a, b in zip(layer.weights, random_model.get_layer(layer.name).weights)
                        if len(a.shape) > 1]
                if not all(kept):
                    finding = (f"PEER DEFECT (reported, not fatal): quantus {_version('quantus')} MPRT on a Keras "
                               f"model randomizes a clone_model() copy that does not carry the trained weights: at "
                               f"its first stage ('{layer_name}' permuted) {kept.count(False)} of {len(kept)} kernels "
                               f"of the other layers are freshly initialized, so every Quantus stage explains an "
                               f"essentially random model (sanity restores and re-initializes the trained weights "
                               f"block by block). Timing is unaffected.")
            maps = ours_explain(random_model, x, y, "gradient", {}, 256)
            ours, _ = metrics._spearman(np.abs(reference).sum(-1), np.abs(maps).sum(-1))  # noqa: SLF001
            theirs = np.asarray(q_scores[layer_name], np.float64)
            if ours.shape != theirs.shape:
                raise CheckFailed(f"quantus MPRT layer {layer_name}: {theirs.shape} scores vs ours {ours.shape}")
            worst = max(worst, float(np.nanmax(np.abs(ours - theirs))))
            layers += 1
        line = (f"quantus MPRT Spearman per image and layer ({layers} layers x {len(x)} images) vs sanity engine "
                f"gradients + metrics rank correlation on the same randomized models: max diff {worst:.2e} (<= 1e-3)")
        if not worst <= 1e-3:
            raise CheckFailed(line)
        self.log(f"check ok  {line}")
        if finding:
            self.log(finding)
        return [line] + ([finding] if finding else [])

    # ---------------------------------------------------------------- (d) metrics
    def run_d(self):
        from sanity_cli import metrics

        pairs = self.size["pairs"]
        rng = np.random.default_rng(0)
        from scipy import ndimage

        a = ndimage.gaussian_filter(rng.standard_normal((pairs, 28, 28, 1)), sigma=(0, 1.5, 1.5, 0))
        b = a + 0.5 * ndimage.gaussian_filter(rng.standard_normal(a.shape), sigma=(0, 1, 1, 0))
        names = ["spearman_abs", "spearman", "ssim", "hog_pearson"]  # the paper's four
        ours = {m: metrics.compare(a, b, m)[0] for m in names}
        loop = per_pair_metrics(a, b, names)
        for m in names:
            self.checks.append(check_values(f"(d) {m}: metrics.compare vs per-pair scipy/skimage loop", ours[m],
                                            loop[m], atol=1e-6, log=self.log))
        for m in names:
            wl = f"d_metric_{m}_{pairs}pairs_28px"
            self.time_system(wl, "sanity: metrics.compare (vectorised)", "ours",
                             lambda m=m: metrics.compare(a, b, m), pairs, item="map pair")
            self.time_system(wl, "per-pair scipy/scikit-image loop", "peer",
                             lambda m=m: per_pair_metrics(a, b, [m]), pairs, item="map pair")
        wl = f"d_metrics_all4_{pairs}pairs_28px"
        self.time_system(wl, "sanity: metrics.compare (vectorised)", "ours",
                         lambda: [metrics.compare(a, b, m) for m in names], pairs, item="map pair")
        self.time_system(wl, "per-pair scipy/scikit-image loop", "peer", lambda: per_pair_metrics(a, b, names),
                         pairs, item="map pair")

    # ---------------------------------------------------------------- (m) memory
    def run_m(self):
        model, images, targets, _ = self.mnist_images(self.size["mem_images"])
        # a batch well below images x samples, so that doubling samples means more chunks, not bigger ones
        batch = max(1, min(64, len(images) * min(self.size["samples"], self.size["steps"]) // 4))
        for kind, key, base in (("smoothgrad", "samples", self.size["samples"]),
                                ("integrated_gradients", "steps", self.size["steps"])):
            peaks = {}
            for count in (base, 2 * base):
                params = smoothgrad_params(count) if kind == "smoothgrad" else ig_params(count, 0.0)
                ours_explain(model, images, targets, kind, params, batch)  # warm (tracing is not the workload)
                with RssPeak() as rss:
                    peaks[count] = numpy_peak_mb(lambda: ours_explain(model, images, targets, kind, params, batch))
                self.rows.append(Row(f"m_memory_{kind}", f"sanity: {key}={count}", batch, len(images),
                                     peak_numpy_mb=peaks[count], peak_rss_mb=rss.delta_mb, role="info",
                                     note=f"{len(images)} MNIST images, batch_size={batch}"))
            self.facts[f"mem_{kind}"] = peaks[2 * base] / peaks[base] if peaks[base] > 0 else float("nan")
            self.log(f"memory    {kind}: numpy peak {peaks[base]:.2f} MB ({key}={base}) -> {peaks[2 * base]:.2f} MB "
                     f"({key}={2 * base})")

    # ---------------------------------------------------------------- targets
    def targets(self) -> list[str]:
        def med(workload_prefix, role, system_prefix=""):
            for r in self.rows:
                if r.workload.startswith(workload_prefix) and r.role == role and r.status == "ok" \
                        and r.system.startswith(system_prefix) and r.wall_s_median != "":
                    return r
            return None

        out = []

        def line(ok, text):
            out.append(f"- {'MET' if ok else 'MISSED'}: {text}")

        for prefix in ("a_", "b_", "c_"):
            for r in self.rows:
                if r.workload.startswith(prefix) and r.role == "ours" and r.ratio_to_limit != "":
                    line(r.ratio_to_limit <= 1.25, f"ours/limit <= 1.25 on {r.workload}: {r.ratio_to_limit:.2f}")
        for r in self.rows:  # PAIR defaults = batch-1 calls, with the faster (tf.function) call_model_function
            if r.workload[:2] in ("a_", "b_") and "mnist" in r.workload and r.role == "peer" \
                    and r.ratio_peer_to_ours != "" and r.batch_size == 1:
                if "tf.function" in r.system:
                    line(r.ratio_peer_to_ours >= 5, f">= 5x faster than PAIR defaults on {r.workload} "
                         f"({r.system}): {r.ratio_peer_to_ours:.1f}x")
                else:
                    out.append(f"- INFO: {r.workload}, {r.system}: {r.ratio_peer_to_ours:.1f}x")
        for r in self.rows:
            if r.workload.startswith("c_") and r.role == "peer" and r.ratio_peer_to_ours != "":
                line(r.ratio_peer_to_ours >= 10, f">= 10x faster than Quantus MPRT on {r.workload}: "
                     f"{r.ratio_peer_to_ours:.1f}x")
        for r in self.rows:
            if r.workload.startswith("d_") and r.role == "peer" and r.ratio_peer_to_ours != "":
                line(r.ratio_peer_to_ours >= 10, f"metrics >= 10x faster than the per-pair loop on {r.workload}: "
                     f"{r.ratio_peer_to_ours:.1f}x")
        for r in self.rows:
            if r.workload.startswith("a_") and "inception" in r.workload and r.role == "peer" \
                    and r.ratio_peer_to_ours != "" and "tf.function" in r.system:
                ref = next((x for x in self.rows if x.workload == r.workload and x.system.startswith("same ")), None)
                label = r.workload.split("_", 2)[2]
                b1, best = self.facts.get(f"{label}_batch1_rate"), self.facts.get(f"{label}_best_rate")
                if ref is not None and b1:
                    out.append(f"- INFO: {r.workload}: PAIR SmoothGrad / same passes in batches of "
                               f"{ref.batch_size} = {r.wall_s_median / ref.wall_s_median:.2f}x; throughput batch 1 "
                               f"{b1:.1f} images/s vs best batch {best:.1f} images/s ({best / b1:.2f}x): on a CPU the "
                               f"gap to PAIR is bounded by this; PAIR/ours = {r.ratio_peer_to_ours:.2f}x")
        for kind in ("smoothgrad", "integrated_gradients"):
            ratio = self.facts.get(f"mem_{kind}")
            if ratio is not None:
                line(ratio < 1.5, f"peak memory bounded, {kind}: numpy peak at 2x samples/steps = {ratio:.2f}x "
                                  f"the peak at 1x (batch_size fixed)")
        return out


def cascading_table(cfg, trained, runs, images, targets, image_ids, tmp: Path):
    """sanity's real cascading loop, pipeline.run_model_randomization, returning its metrics table. Each call
    gets a fresh, empty unit store, so no stage is ever skipped as already done; its saving cost (and the
    self-checks' logits pass per stage) is part of the measured time."""
    from sanity_cli import pipeline
    from sanity_cli.checks import SelfChecks
    from sanity_cli.rundir import config_fingerprint
    from sanity_cli.units import UnitStore

    run_dir = Path(tempfile.mkdtemp(prefix="cascading_", dir=tmp))
    units = UnitStore(run_dir, config_fingerprint(cfg), log=lambda *_: None)
    units.open()
    try:
        return pipeline.run_model_randomization(cfg, trained, runs, images, targets, image_ids, units,
                                                SelfChecks(lambda *_: None)).table()
    finally:
        units.run_dir.remove_units()
        units.release()


def per_pair_metrics(a: np.ndarray, b: np.ndarray, which=None) -> dict[str, np.ndarray]:
    """What a user writes without sanity: for each map pair, normalise (the paper's visualisation functions),
    then scipy.stats.spearmanr, skimage.metrics.structural_similarity, skimage.feature.hog + scipy.stats.pearsonr."""
    from scipy import stats
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    which = which or ["spearman_abs", "spearman", "ssim", "hog_pearson", "hog_spearman"]

    def absolute(m):
        m = np.abs(m).sum(-1)
        vmax, vmin = np.percentile(m, 99), m.min()
        return np.clip((m - vmin) / (vmax - vmin), 0, 1) if vmax > vmin else np.zeros_like(m)

    def diverging(m):
        m = m.sum(-1)
        span = np.percentile(np.abs(m), 99)
        return np.clip(m / span, -1, 1) if span > 0 else np.zeros_like(m)

    def spearman(x, y):
        if x.std() == 0 or y.std() == 0:
            return np.nan
        return stats.spearmanr(x.ravel(), y.ravel())[0]

    def hog_pearson(x, y):
        fx, fy = (hog(z, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2)) for z in (x, y))
        return stats.pearsonr(fx, fy)[0] if fx.std() > 0 and fy.std() > 0 else np.nan

    def hog_spearman(x, y):
        fx, fy = (hog(z, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2)) for z in (x, y))
        return stats.spearmanr(fx, fy)[0] if fx.std() > 0 and fy.std() > 0 else np.nan

    out = {m: np.empty(len(a)) for m in which}
    for i in range(len(a)):
        na = nb = None
        if {"spearman_abs", "ssim", "hog_pearson", "hog_spearman"} & set(which):
            na, nb = absolute(a[i]).astype(np.float32), absolute(b[i]).astype(np.float32)
        if "spearman_abs" in which:
            out["spearman_abs"][i] = spearman(na, nb)
        if "spearman" in which:
            out["spearman"][i] = spearman(diverging(a[i]).astype(np.float32), diverging(b[i]).astype(np.float32))
        if "ssim" in which:
            out["ssim"][i] = structural_similarity(na.astype(np.float64), nb.astype(np.float64), data_range=1.0)
        if "hog_pearson" in which:
            out["hog_pearson"][i] = hog_pearson(na.astype(np.float64), nb.astype(np.float64))
        if "hog_spearman" in which:
            out["hog_spearman"][i] = hog_spearman(na.astype(np.float64), nb.astype(np.float64))
    return out


def _quiet(*_args, **_kwargs):
    pass


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 (a broken peer install counts as absent)
        return False


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> str:
    from importlib import metadata

    parts = []
    for dist in ("tensorflow", "keras", "numpy", "saliency", "quantus"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller images and counts (a few minutes on 2 cores)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: seconds, same code paths
    parser.add_argument("--out", required=True, type=Path, help="directory for benchmark.csv and benchmark.md")
    parser.add_argument("--only", default="a,b,c,d,m",
                        help="comma list of workloads: a (SmoothGrad), b (IG), c (cascading), d (metrics), "
                             "m (memory); with 'mnist' or 'inception' to restrict a/b to one model")
    parser.add_argument("--no-peers", action="store_true", help="skip saliency and quantus even if installed")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per system (median reported)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    size = dict(SIZES[mode])
    if args.repeats:
        size["repeats"] = args.repeats
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if not only & {"mnist", "inception"}:
        only |= {"mnist", "inception"}
    started = time.time()
    import tensorflow as tf

    bench = Benchmark(size, mode, peers=not args.no_peers,
                      log=lambda msg: print(f"[{time.time() - started:6.1f}s] {msg}", flush=True))
    context = {"mode": mode, "device": ", ".join(d.device_type for d in tf.config.list_logical_devices()) or "cpu",
               "cpu": f"{os.cpu_count()} cores ({platform.machine()})", "versions": _versions(),
               "repeats": size["repeats"]}
    try:
        if only & {"a", "b"}:
            bench.run_a_b(only)
        if "c" in only:
            bench.run_c()
        if "d" in only:
            bench.run_d()
        if "m" in only:
            bench.run_m()
    except CheckFailed as err:
        print(f"benchmark: CHECK FAILED: {err}", file=sys.stderr)
        add_ratios(bench.rows)
        write_csv(bench.rows, args.out / "benchmark.csv")
        write_markdown(bench.rows, [], bench.checks + [f"FAILED: {err}"], context, args.out / "benchmark.md")
        return 1
    if bench._pending_limit is not None:
        bench._finish_limit()
    add_ratios(bench.rows)
    targets = bench.targets()
    context["total_s"] = round(time.time() - started, 1)
    write_csv(bench.rows, args.out / "benchmark.csv")
    write_markdown(bench.rows, targets, bench.checks, context, args.out / "benchmark.md")
    print(markdown_table(bench.rows))
    print("\n".join(targets))
    print(f"\nwrote {args.out / 'benchmark.csv'} and {args.out / 'benchmark.md'} in {context['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
