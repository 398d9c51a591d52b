"""The shared state of one benchmark run: sizes, rows, checks, facts for the targets, the loaded models and
images, the limit measurements; and the timing of a system against its workload's limit."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np

from sanity_cli import architectures

from .measure import grad_function, limit_runner, repeat_timed, throughput_sweep
from .peers import importable
from .table import LIMIT, Row, timed_row

SIZES = {
    # inc_*: Inception v3 (random weights); mnist_images: (a)/(b) MNIST CNN; casc_*: (c); pairs: (d)
    "tiny": dict(inc_size=75, inc_images=1, inc_batches=[1, 4], mnist_images=4, mnist_batches=[1, 32],
                 samples=4, steps=4, casc_images=4, casc_samples=2, pairs=24, repeats=1, train_images=400,
                 mem_images=4, pair_batch=25, whole_runs=[("smoke", 4, 2)]),
    "quick": dict(inc_size=150, inc_images=1, inc_batches=[1, 8, 16, 32], mnist_images=20,
                  mnist_batches=[1, 32, 128, 256, 512], samples=50, steps=50, casc_images=20, casc_samples=10,
                  pairs=300, repeats=3, train_images=2000, mem_images=20, pair_batch=25,
                  whole_runs=[("smoke", 8, 10), ("paper_size", 100, 50)]),
    "full": dict(inc_size=299, inc_images=2, inc_batches=[1, 8, 16, 32, 64], mnist_images=100,
                 mnist_batches=[1, 32, 128, 256, 512, 1024], samples=50, steps=50, casc_images=100,
                 casc_samples=50, pairs=2000, repeats=3, train_images=4000, mem_images=100, pair_batch=25,
                 whole_runs=[("smoke", 8, 10), ("paper_size", 200, 50)]),
}


class Context:
    def __init__(self, size: dict, peers: bool, log=print):
        self.size, self.log = size, log
        self.rows: list[Row] = []
        self.checks: list[str] = []
        self.facts: dict[str, float] = {}              # for the targets: limit rates, memory ratios
        self.best: dict[str, tuple] = {}               # label -> (grad function, best batch, rates) of its limit
        self.pending_limit = None                      # (row, run, times, [rss]) of a limit row still being timed
        self.tmp = Path(tempfile.mkdtemp(prefix="sanity_bench_"))
        self.has_saliency = peers and importable("saliency.core")
        self.has_quantus = peers and importable("quantus")
        self._mnist = self._inception = None

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
        if self._mnist is None:
            from sanity_cli import core
            from sanity_cli.spec import parse

            spec = parse(self.cfg())
            dataset = core.load_data(spec, spec.arch.input_shape, lambda *_: None)
            trained, _ = core.load_models(spec, dataset, lambda *_: None)
            self._mnist = (spec, dataset, trained)
            self.log(f"setup     MNIST CNN: test accuracy {trained.info['test_accuracy']:.3f}")
        return self._mnist

    def mnist_images(self, n: int):
        from sanity_cli import core

        spec, dataset, trained = self.mnist()
        ids = core.choose_images(dataset, n, 0)
        images = architectures.get("mnist_cnn").to_model_space(dataset.x_test[ids])
        targets = core.choose_targets(spec, trained.model, images, dataset.y_test[ids])
        return trained.model, images, targets

    def inception(self):
        if self._inception is None:
            import keras
            from sanity_cli import inception
            from sanity_cli.methods.engine import engine_for
            from sanity_cli.photos import load_photos

            size = self.size["inc_size"]
            if size == 299:
                model = inception.build("none")  # the pipeline's own model=inception model.weights=none
            else:  # --quick: same architecture and code path at a smaller input
                keras.utils.set_random_seed(0)
                model = keras.applications.InceptionV3(weights=None, input_shape=(size, size, 3),
                                                       classifier_activation=None)
            photos = load_photos(None, size=size, max_images=self.size["inc_images"], log=lambda *_: None)
            images = architectures.get("inception").to_model_space(photos.x_test[: self.size["inc_images"]])
            targets = engine_for(model).predict_logits(images).argmax(1).astype(np.int32)
            self._inception = (model, images, targets)
            self.log(f"setup     InceptionV3 (random weights) at {size} px, {len(images)} photos")
        return self._inception

    # ---------------------------------------------------------------- limit
    def limit(self, label: str, model, batches: list[int]) -> tuple[object, int, dict]:
        """The limit's throughput sweep over batch sizes (info rows); its best batch is the one timed."""
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

    def time_limit(self, workload: str, grad, model, passes: int, batch: int, items: int, item="image",
                   now: bool = False):
        """The limit row; its repeats run interleaved with the next `ours` row's (see time_system), so slow drift
        of the machine (frequency, neighbours) hits both alike. now: time it at once, alone."""
        run = limit_runner(grad, model.input_shape[1:], passes, batch)
        run()  # warm-up for this exact shape
        row = Row(workload, f"limit: {passes} passes, tf.function", batch, items, item, role=LIMIT)
        self.pending_limit = (row, run, [], [0.0])
        self.rows.append(row)
        if self.size["repeats"] == 1 or now:
            self.finish_limit()

    def finish_limit(self):
        """Time the pending limit row's remaining repeats and put its timed row in its place."""
        if self.pending_limit is None:
            return
        row, run, times, rss = self.pending_limit
        for _ in range(max(0, self.size["repeats"] - len(times))):
            t, r, _ = repeat_timed(run, 1)
            times += t
            rss[0] = max(rss[0], r)
        done = timed_row(row.workload, row.system, LIMIT, times, row.items, item=row.item,
                         batch_size=row.batch_size, peak_rss_mb=rss[0])
        self.rows[self.rows.index(row)] = done
        self.pending_limit = None

    def time_system(self, workload, system, role, fn, items, *, batch="", note="", item="image", check=None,
                    repeats=None):
        """Time fn (`repeats` calls, median reported), check its last result, add its row; returns that result."""
        pending = self.pending_limit
        if pending is not None and role == "ours" and pending[0].workload == workload:
            times, rss = [], 0.0
            for _ in range(repeats or self.size["repeats"]):  # limit, ours, limit, ours, ...
                t, r, _ = repeat_timed(pending[1], 1)
                pending[2].extend(t)
                pending[3][0] = max(pending[3][0], r)
                t, r, result = repeat_timed(fn, 1)
                times += t
                rss = max(rss, r)
            self.finish_limit()
        else:
            self.finish_limit()
            times, rss, result = repeat_timed(fn, repeats or self.size["repeats"])
        if check is not None:
            check(result)
        self.rows.append(timed_row(workload, system, role, times, items, item=item, batch_size=batch, note=note,
                                   peak_rss_mb=rss))
        self.log(f"timed     {workload} / {system}: median {statistics.median(times):.3f} s")
        return result
