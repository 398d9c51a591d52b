"""Measurement: wall time, peak memory, the correctness checks run before timing, and the raw TensorFlow limit
(batched forward+backward passes in one tf.function)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import tracemalloc

import numpy as np


class CheckFailed(RuntimeError):
    """Ours and a peer (or a reference computation) disagree: the benchmark must not report a speed."""


def quiet(*_args, **_kwargs):
    pass


# --------------------------------------------------------------------------- time and memory

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


# --------------------------------------------------------------------------- correctness checks

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


# --------------------------------------------------------------------------- the limit

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
