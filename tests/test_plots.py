"""Tests for sanity_cli.plots: files are written atomically, are non-trivial PNGs, and look right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sanity_cli import plots

STAGES5 = ["trained", "logits", "fc1", "conv2", "conv1"]
STAGES18 = ["trained", "logits"] + [f"mixed_{i}{c}" for i in range(7, 0, -1) for c in "ab"] + [
    "conv2d_2b",
    "conv2d_1a",
]
METHODS12 = [
    "gradient", "gradient_sg", "gradient_vg", "grad_x_input", "grad_x_input_sg", "ig",
    "ig_sg", "guided_backprop", "guided_gradcam", "gradcam", "deeplift", "lrp_epsilon_long_name",
]


# ---- helpers -------------------------------------------------------------------------------------
def _blob_maps(rng, n, s, h, w, signed):
    """Smooth maps: a bright blob (and a negative one when signed), values in [0,1] or [-1,1]."""
    yy, xx = np.mgrid[0:h, 0:w] / float(h)
    out = np.empty((n, s, h, w))
    for i in range(n):
        for j in range(s):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)
            if signed:
                g = g - np.exp(-((xx - (1 - cx)) ** 2 + (yy - (1 - cy)) ** 2) / 0.03)
            out[i, j] = g
    return out


def _read(path):
    img = np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255.0
    return img


def _check_png(path, min_px=200, min_std=0.05):
    assert path.exists(), f"{path} not written"
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert w > min_px and h > min_px, (w, h)
    assert path.stat().st_size < 5 * 1024 * 1024
    img = _read(path)
    assert img.std() > min_std, "image looks blank"
    return img


def _no_temp_files(tmp_path, expected):
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(expected), names


def _summary(rng, methods, metrics, stages, nan_cells=()):
    rows = []
    for metric in metrics:
        for m in methods:
            for st, bl in enumerate(stages):
                mean = float(np.exp(-st / 3.0) + 0.05 * rng.standard_normal())
                if (metric, m, st) in nan_cells or (metric, m, None) in nan_cells:
                    mean = np.nan
                rows.append(dict(stage=st, block=bl, method=m, metric=metric, mean=mean, std=0.1,
                                 ci_low=mean - 0.05, ci_high=mean + 0.05, n=20))
    return pd.DataFrame(rows)


def _size_inches(path):
    with Image.open(path) as im:
        dpi = im.info.get("dpi", (100, 100))[0]
        return im.size[0] / dpi, im.size[1] / dpi


# ---- saliency_grid -------------------------------------------------------------------------------
def test_grid_small_absolute_is_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.random((2, 32, 32, 1))
    maps = {m: _blob_maps(rng, 2, 5, 32, 32, signed=False) for m in ["gradient", "ig", "gbp"]}
    out = tmp_path / "grid.png"
    plots.saliency_grid(out, inputs, maps, STAGES5, "absolute",
                        row_labels={"gradient": "Gradient", "ig": "Integrated Gradients"},
                        input_captions=["goldfinch", "junco"], title="absolute grid")
    img = _check_png(out)
    chroma = img.max(axis=2) - img.min(axis=2)
    assert chroma.max() < 0.1, "absolute grid should be grayscale"
    _no_temp_files(tmp_path, ["grid.png"])


def test_grid_diverging_has_red_and_blue(tmp_path):
    rng = np.random.default_rng(1)
    inputs = rng.random((2, 32, 32, 3))
    maps = {m: _blob_maps(rng, 2, 5, 32, 32, signed=True) for m in ["gradient", "ig", "gbp"]}
    out = tmp_path / "div.png"
    plots.saliency_grid(out, inputs, maps, STAGES5, "diverging")
    img = _check_png(out)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    red = (r > 0.8) & (g < 0.3) & (b < 0.3)
    blue = (b > 0.8) & (r < 0.3) & (g < 0.3)
    assert red.sum() > 100 and blue.sum() > 100, (red.sum(), blue.sum())
    _no_temp_files(tmp_path, ["div.png"])


def test_grid_scales_with_counts(tmp_path):
    rng = np.random.default_rng(2)
    inputs = rng.random((1, 32, 32, 3))
    small = {m: _blob_maps(rng, 1, 5, 32, 32, signed=False) for m in METHODS12[:3]}
    big = {m: _blob_maps(rng, 1, 18, 32, 32, signed=False) for m in METHODS12}
    p_small, p_big = tmp_path / "small.png", tmp_path / "big.png"
    plots.saliency_grid(p_small, inputs, small, STAGES5, "absolute")
    plots.saliency_grid(p_big, inputs, big, STAGES18, "absolute", input_captions=["a long class name"])
    _check_png(p_small)
    _check_png(p_big)
    ws, hs = _size_inches(p_small)
    wb, hb = _size_inches(p_big)
    assert wb > 1.5 * ws and hb > 2 * hs, ((ws, hs), (wb, hb))
    with Image.open(p_big) as im:
        w_px, h_px = im.size
    # each of the 19 columns and 12 rows keeps enough pixels to be readable
    assert w_px / 19 >= 60 and h_px / 12 >= 60, (w_px, h_px)
    _no_temp_files(tmp_path, ["big.png", "small.png"])


def test_grid_noise_maps_stay_under_size_cap(tmp_path):
    rng = np.random.default_rng(3)
    inputs = rng.random((1, 128, 128, 3))
    maps = {m: rng.uniform(-1, 1, (1, 18, 128, 128)) for m in METHODS12}
    out = tmp_path / "noise.png"
    plots.saliency_grid(out, inputs, maps, STAGES18, "diverging")
    _check_png(out)  # asserts < 5 MB


def test_grid_nan_maps_and_grayscale_3d_inputs(tmp_path):
    rng = np.random.default_rng(4)
    inputs = rng.random((1, 16, 16))  # (N, H, W) is read as grayscale
    a = _blob_maps(rng, 1, 2, 16, 16, signed=False)
    a[0, 1] = np.nan
    out = tmp_path / "nan.png"
    plots.saliency_grid(out, inputs, {"m": a}, ["trained", "logits"], "absolute",
                        input_captions=["x"])
    _check_png(out)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(maps={"m": np.zeros((2, 4, 8, 8))}), r"maps\['m'\] has shape"),  # S mismatch
        (dict(maps={"m": np.zeros((3, 5, 8, 8))}), r"maps\['m'\] has shape"),  # N mismatch
        (dict(maps={"m": np.zeros((2, 5, 9, 8))}), r"maps\['m'\] has shape"),  # H mismatch
        (dict(maps={}), "maps is empty"),
        (dict(mode="signed"), "mode must be"),
        (dict(inputs=np.zeros((2, 8, 8, 2))), "inputs must have shape"),
        (dict(input_captions=["only one"]), "input_captions"),
        (dict(column_labels=[]), "column_labels"),
    ],
)
def test_grid_validation(tmp_path, kwargs, match):
    args = dict(inputs=np.zeros((2, 8, 8, 3)), maps={"m": np.zeros((2, 5, 8, 8))},
                column_labels=STAGES5, mode="absolute")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plots.saliency_grid(tmp_path / "bad.png", **args)
    assert not any(tmp_path.iterdir()), "nothing may be written on a validation error"


# ---- similarity_curves ---------------------------------------------------------------------------
def test_similarity_curves(tmp_path):
    rng = np.random.default_rng(5)
    metrics = ["spearman_abs", "spearman", "ssim", "hog"]
    df = _summary(rng, METHODS12[:8], metrics, STAGES18,
                  nan_cells={("hog", "gradient", 3), ("hog", "gradient", 4), ("ssim", "ig", None)})
    df = df.sample(frac=1.0, random_state=0)  # row order must not matter
    out = tmp_path / "curves.png"
    plots.similarity_curves(out, df, metrics, title="Cascading randomization")
    _check_png(out)
    _no_temp_files(tmp_path, ["curves.png"])


def test_similarity_curves_all_nan_and_missing_ci(tmp_path):
    rng = np.random.default_rng(6)
    df = _summary(rng, ["a", "b"], ["m1"], STAGES5, nan_cells={("m1", "a", None)})
    df = df.drop(columns=["ci_low", "ci_high"])
    out = tmp_path / "c.png"
    plots.similarity_curves(out, df, ["m1"])
    _check_png(out, min_std=0.02)


def test_similarity_curves_validation(tmp_path):
    rng = np.random.default_rng(7)
    df = _summary(rng, ["a"], ["m1"], STAGES5)
    with pytest.raises(ValueError, match="not in summary"):
        plots.similarity_curves(tmp_path / "x.png", df, ["nope"])
    with pytest.raises(ValueError, match="missing column"):
        plots.similarity_curves(tmp_path / "x.png", df.drop(columns=["block"]), ["m1"])
    with pytest.raises(ValueError, match="more than one row"):
        plots.similarity_curves(tmp_path / "x.png", pd.concat([df, df]), ["m1"])
    with pytest.raises(ValueError, match="metrics is empty"):
        plots.similarity_curves(tmp_path / "x.png", df, [])
    assert not any(tmp_path.iterdir())


# ---- data_test_bars ------------------------------------------------------------------------------
def test_data_test_bars(tmp_path):
    rng = np.random.default_rng(8)
    metrics = ["spearman_abs", "spearman", "ssim"]
    df = _summary(rng, METHODS12[:8], metrics, ["permuted"], nan_cells={("ssim", "ig", None)})
    out = tmp_path / "bars.png"
    plots.data_test_bars(out, df, metrics, title="Data randomization")
    img = _check_png(out)
    chroma = img.max(axis=2) - img.min(axis=2)
    assert (chroma > 0.3).sum() > 1000, "bars should be coloured"
    _no_temp_files(tmp_path, ["bars.png"])


def test_data_test_bars_all_nan_and_validation(tmp_path):
    rng = np.random.default_rng(9)
    df = _summary(rng, ["a", "b"], ["m1"], ["permuted"], nan_cells={("m1", "a", None), ("m1", "b", None)})
    out = tmp_path / "b.png"
    plots.data_test_bars(out, df, ["m1"])
    assert out.exists()
    two_stages = _summary(rng, ["a"], ["m1"], ["trained", "permuted"])
    with pytest.raises(ValueError, match="comparison stage only"):
        plots.data_test_bars(tmp_path / "y.png", two_stages, ["m1"])
    with pytest.raises(ValueError, match="DataFrame"):
        plots.data_test_bars(tmp_path / "y.png", {"mean": [1]}, ["m1"])
    _no_temp_files(tmp_path, ["b.png"])


# ---- readable at natural size (issue 15) ---------------------------------------------------------
DEFAULT_METHODS = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad_gradient",
                   "smoothgrad_integrated_gradients", "vargrad", "guided_backprop", "gradcam", "guided_gradcam",
                   "sobel", "random"]


def test_the_legend_lies_inside_the_figure_and_controls_are_grey_dashed():
    """The default run's 11 methods (the longest name 31 characters) on 4 panels: the legend's box is inside the
    figure (it used to run off the left edge), controls are dashed grey and labelled as such."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    summary = _summary(np.random.default_rng(1), DEFAULT_METHODS, ["spearman_abs", "spearman", "ssim", "hog"],
                       STAGES5)
    fig = plots.similarity_figure(summary, ["spearman_abs", "spearman", "ssim", "hog"], "title",
                                  controls={"sobel", "random"})
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    (legend,) = fig.legends
    box, page = legend.get_window_extent(canvas.get_renderer()), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, (box, page)
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[-2:] == ["sobel (control)", "random (control)"] and labels[0] == "gradient"  # controls last
    lines = {line.get_label(): line for line in legend.get_lines()}
    dashed = [handle.get_linestyle() for handle in legend.legend_handles]
    assert dashed[-2:] == ["--", "--"] and dashed[0] == "-" and lines is not None
    for axes in fig.axes:  # labels at least as large as the tick labels
        ticks = [t.get_fontsize() for t in axes.get_xticklabels()]
        assert axes.title.get_fontsize() >= max(ticks)


def test_one_grid_per_image_fits_a_screen_and_marks_constant_maps(tmp_path):
    """The default run's 11 methods x (input + 5 stages) for one image: each side within 2,600 px (the old
    three-image column was 848 x 4108 px with unreadable labels), and a constant map says so."""
    rng = np.random.default_rng(2)
    maps = {m: _blob_maps(rng, 1, 5, 28, 28, signed=False) for m in DEFAULT_METHODS}
    maps["gradcam"][0, 3] = 0.0  # constant: its correlation is undefined
    out = tmp_path / "grid_absolute_1.png"
    plots.saliency_grid(out, rng.uniform(size=(1, 28, 28, 1)), maps, STAGES5, "absolute",
                        input_captions=["#7 seven"], title="mnist_cnn on mnist: cascading randomization")
    with Image.open(out) as image:
        width, height = image.size
    assert 600 <= width <= 2600 and 600 <= height <= 2600, (width, height)

    from matplotlib.figure import Figure

    captured = []
    real_save = plots._save
    try:
        plots._save = lambda fig, path, dpi=None: captured.append(fig)
        plots.saliency_grid(out, rng.uniform(size=(1, 28, 28, 1)), maps, STAGES5, "absolute")
    finally:
        plots._save = real_save
    texts = [t.get_text() for t in captured[0].texts]
    assert texts.count("constant\nmap") == 1 and isinstance(captured[0], Figure)


def test_grid_cells_keep_the_images_aspect_ratio():
    """A cell shows its image at the image's own aspect ratio, centred in the square cell (as imshow in a square
    Axes did): a 20 x 40 input and its maps are drawn twice as wide as high, not stretched to a square."""
    from matplotlib.image import BboxImage

    rng = np.random.default_rng(5)
    fig = plots.saliency_grid_figure(rng.random((1, 20, 40, 1)), {"m": rng.random((1, 2, 20, 40))},
                                     ["trained", "logits"], "absolute")
    cells = [a for a in fig.artists if isinstance(a, BboxImage)]
    assert len(cells) == 3  # the input and two stages
    width, height = fig.get_size_inches()
    for cell in cells:
        box = cell.bbox._bbox  # figure fractions
        assert box.width * width == pytest.approx(2 * box.height * height, rel=1e-9)
    square = plots.saliency_grid_figure(rng.random((1, 8, 8, 1)), {"m": rng.random((1, 2, 8, 8))},
                                        ["trained", "logits"], "absolute")
    box = next(a for a in square.artists if isinstance(a, BboxImage)).bbox._bbox
    w, h = square.get_size_inches()
    assert box.width * w == pytest.approx(box.height * h, rel=1e-9)
