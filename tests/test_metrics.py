"""Tests for sanity_cli.metrics against scipy / scikit-image reference implementations."""

import numpy as np
import pytest
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from sanity_cli import metrics
from sanity_cli.errors import SanityError
from sanity_cli.metrics import (
    METRIC_NAMES,
    compare,
    normalize_absolute,
    normalize_diverging,
    rowwise_pearson,
)


SIMILARITIES = tuple(name for name in METRIC_NAMES if metrics.METRICS[name].higher_is_more_similar)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_metric_names():
    assert METRIC_NAMES == ("spearman_abs", "spearman", "ssim", "hog_pearson", "hog_spearman", "entropy_rise")
    assert SIMILARITIES == METRIC_NAMES[:-1]


@pytest.mark.parametrize("metric", METRIC_NAMES)
@pytest.mark.parametrize("shape", [(4, 28, 28), (3, 40, 40, 3)])
def test_identical_maps_give_one(rng, metric, shape):
    """A similarity of a map with itself is 1; its entropy rise is 0."""
    a = rng.normal(size=shape)
    values, undefined = compare(a, a.copy(), metric)
    assert values.shape == (shape[0],) and values.dtype == np.float64
    assert undefined.shape == (shape[0],) and undefined.dtype == np.bool_
    assert not undefined.any()
    np.testing.assert_allclose(values, 1.0 if metric in SIMILARITIES else 0.0, atol=1e-9)


def test_negation(rng):
    a = rng.normal(size=(5, 20, 20))
    s, u = compare(a, -a, "spearman")
    assert not u.any()
    np.testing.assert_allclose(s, -1.0, atol=1e-9)
    s_abs, u_abs = compare(a, -a, "spearman_abs")
    assert not u_abs.any()
    np.testing.assert_allclose(s_abs, 1.0, atol=1e-9)


@pytest.mark.parametrize("metric,norm", [("spearman_abs", normalize_absolute),
                                         ("spearman", normalize_diverging)])
def test_spearman_matches_scipy(rng, metric, norm):
    # heavy tails -> many pixels clipped at the 99th percentile -> ties
    a = rng.standard_t(df=1.5, size=(6, 16, 16, 3))
    b = a + rng.normal(scale=2.0, size=a.shape)
    b[0] = rng.normal(size=b[0].shape)  # one unrelated pair
    values, undefined = compare(a, b, metric)
    na, nb = norm(a), norm(b)
    # make sure ties actually occur
    assert all(len(np.unique(row)) < row.size for row in na.reshape(6, -1))
    expected = [stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(na, nb)]
    assert not undefined.any()
    np.testing.assert_allclose(values, expected, atol=1e-10)
    # the correlated pairs are actually correlated, the unrelated one is not
    assert np.all(values[1:] > 0.2)
    assert abs(values[0]) < 0.2


@pytest.mark.parametrize("shape", [(5, 28, 28), (3, 40, 40, 3)])
def test_ssim_matches_skimage(rng, shape):
    a = rng.normal(size=shape)
    b = 0.6 * a + rng.normal(size=shape)
    values, undefined = compare(a, b, "ssim")
    assert not undefined.any()
    na = normalize_absolute(a).astype(np.float64)
    nb = normalize_absolute(b).astype(np.float64)
    expected = [structural_similarity(x, y, data_range=1.0) for x, y in zip(na, nb)]
    np.testing.assert_allclose(values, expected, atol=1e-6, rtol=0)
    assert np.all(values < 0.99)


def test_ssim_small_images_use_smaller_window(rng):
    a = rng.normal(size=(2, 5, 6))
    b = rng.normal(size=(2, 5, 6))
    values, undefined = compare(a, b, "ssim")
    na = normalize_absolute(a).astype(np.float64)
    nb = normalize_absolute(b).astype(np.float64)
    expected = [structural_similarity(x, y, data_range=1.0, win_size=5) for x, y in zip(na, nb)]
    np.testing.assert_allclose(values, expected, atol=1e-6, rtol=0)
    assert not undefined.any()


@pytest.mark.parametrize("shape,ppc,cpb", [((4, 28, 28), (4, 4), (2, 2)),
                                          ((3, 40, 40, 3), (16, 16), (2, 2)),
                                          ((2, 24, 24), (16, 16), (1, 1))])
def test_hog_pearson_matches_corrcoef(rng, shape, ppc, cpb):
    a = rng.normal(size=shape)
    b = 0.5 * a + rng.normal(size=shape)
    kwargs = {} if shape[1] != 24 else {"pixels_per_cell": 16}
    values, undefined = compare(a, b, "hog_pearson", **kwargs)
    assert not undefined.any()
    na = normalize_absolute(a).astype(np.float64)
    nb = normalize_absolute(b).astype(np.float64)
    expected = []
    for x, y in zip(na, nb):
        fx = hog(x, orientations=9, pixels_per_cell=ppc, cells_per_block=cpb)
        fy = hog(y, orientations=9, pixels_per_cell=ppc, cells_per_block=cpb)
        expected.append(np.corrcoef(fx, fy)[0, 1])
    np.testing.assert_allclose(values, expected, atol=1e-10)


@pytest.mark.parametrize("shape,ppc,cpb", [((4, 28, 28), (4, 4), (2, 2)), ((2, 40, 40, 3), (16, 16), (2, 2))])
def test_hog_spearman_is_scipys_spearman_of_skimages_hog(rng, shape, ppc, cpb):
    """The released notebooks compare HOG features by Spearman rank correlation."""
    from scipy.stats import spearmanr

    a = rng.normal(size=shape)
    b = 0.5 * a + rng.normal(size=shape)
    values, undefined = compare(a, b, "hog_spearman")
    assert not undefined.any()
    expected = [spearmanr(hog(x, orientations=9, pixels_per_cell=ppc, cells_per_block=cpb),
                          hog(y, orientations=9, pixels_per_cell=ppc, cells_per_block=cpb)).statistic
                for x, y in zip(normalize_absolute(a).astype(np.float64), normalize_absolute(b).astype(np.float64))]
    np.testing.assert_allclose(values, expected, atol=1e-10)
    pearson, _ = compare(a, b, "hog_pearson")
    assert not np.allclose(values, pearson)  # a different statistic of the same features


def test_normalize_absolute_range_percentile_and_channels(rng):
    a = rng.uniform(0.5, 1.0, size=(2, 30, 30, 3)) * rng.choice([-1, 1], size=(2, 30, 30, 3))
    a[0, 3, 4, :] = 1e6  # single huge outlier
    out = normalize_absolute(a)
    assert out.shape == (2, 30, 30) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # outlier is clipped to 1 and does not squash the rest
    assert out[0, 3, 4] == 1.0
    rest = np.delete(out[0].ravel(), 3 * 30 + 4)
    assert rest.std() > 0.1
    # exact formula: sum of |.| over channels, vmin = min, vmax = 99th percentile
    m = np.abs(a).sum(axis=3)
    for i in range(2):
        vmin, vmax = m[i].min(), np.percentile(m[i], 99)
        np.testing.assert_allclose(out[i], np.clip((m[i] - vmin) / (vmax - vmin), 0, 1), atol=1e-6)
    # channel sum uses absolute values: flipping the sign of one channel changes nothing
    flipped = a.copy()
    flipped[..., 1] *= -1
    np.testing.assert_array_equal(normalize_absolute(flipped), out)
    # 3-D input is accepted as-is
    np.testing.assert_allclose(normalize_absolute(np.abs(a).sum(axis=3)), out, atol=1e-6)


def test_normalize_absolute_constant_is_zero():
    out = normalize_absolute(np.full((2, 8, 8), 3.0))
    assert out.shape == (2, 8, 8)
    assert np.all(out == 0.0)


def test_normalize_diverging_sign_and_range(rng):
    a = rng.normal(size=(3, 20, 20, 3))
    a[1, 0, 0, :] = -1e6
    out = normalize_diverging(a)
    assert out.shape == (3, 20, 20) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    m = a.sum(axis=3)
    np.testing.assert_array_equal(np.sign(out), np.sign(m))
    assert out[1, 0, 0] == -1.0
    span = np.percentile(np.abs(m[0]), 99)
    np.testing.assert_allclose(out[0], np.clip(m[0] / span, -1, 1), atol=1e-6)
    assert np.all(normalize_diverging(np.zeros((1, 5, 5))) == 0.0)


@pytest.mark.parametrize("const", [0.0, 2.5])
def test_constant_map_undefined(rng, const):
    a = rng.normal(size=(3, 28, 28))
    c = np.full_like(a, const)
    for metric in ("spearman_abs", "spearman", "hog_pearson"):
        for x, y in ((a, c), (c, a), (c, c)):
            values, undefined = compare(x, y, metric)
            assert undefined.all(), metric
            assert np.isnan(values).all(), metric
    values, undefined = compare(a, c, "ssim")
    assert not undefined.any()
    assert np.all(np.isfinite(values))


def test_mixed_batch_nan_exactly_where_undefined(rng):
    a = rng.normal(size=(4, 16, 16))
    b = rng.normal(size=(4, 16, 16))
    b[2] = 1.0
    for metric in METRIC_NAMES:
        values, undefined = compare(a, b, metric)
        np.testing.assert_array_equal(np.isnan(values), undefined)
        if metric == "entropy_rise":  # only a constant reference is undefined; a constant other map has H = 0
            assert not undefined.any() and values[2] == -1.0
        elif metric != "ssim":
            np.testing.assert_array_equal(undefined, [False, False, True, False])


def test_independent_noise_uncorrelated(rng):
    a = rng.normal(size=(4, 64, 64))
    b = rng.normal(size=(4, 64, 64))
    for metric in ("spearman", "spearman_abs"):
        values, undefined = compare(a, b, metric)
        assert not undefined.any()
        assert np.all(np.abs(values) < 0.1), (metric, values)


def test_rowwise_pearson(rng):
    a = rng.normal(size=(5, 50))
    b = rng.normal(size=(5, 50)) + a
    b[3] = 7.0
    a[4] = 1e6 + 1e-9 * rng.normal(size=50)  # numerically constant at its scale
    values, undefined = rowwise_pearson(a, b)
    np.testing.assert_array_equal(undefined, [False, False, False, True, True])
    assert np.isnan(values[3:]).all()
    for i in range(3):
        np.testing.assert_allclose(values[i], np.corrcoef(a[i], b[i])[0, 1], atol=1e-12)


def test_unknown_metric_raises(rng):
    a = rng.normal(size=(1, 8, 8))
    with pytest.raises(SanityError,
                       match="unknown metric 'x'; choose from spearman_abs, spearman, ssim, hog_pearson, hog_spearman"):
        compare(a, a, "x")


def test_shape_mismatch_raises(rng):
    with pytest.raises(SanityError, match=r"\(2, 8, 8\).*\(2, 8, 9\)"):
        compare(rng.normal(size=(2, 8, 8)), rng.normal(size=(2, 8, 9)), "ssim")


def test_bad_inputs_raise(rng):
    a = rng.normal(size=(1, 8, 8))
    with pytest.raises(SanityError):
        compare(a[0], a[0], "ssim")  # missing batch axis
    bad = a.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(SanityError, match="NaN"):
        compare(bad, a, "spearman")
    with pytest.raises(SanityError):
        compare(a, a, "hog_pearson", pixels_per_cell=32)
    with pytest.raises(SanityError):
        compare(a, a, "ssim", bogus=1)


def test_module_has_no_unexpected_public_names():
    import types

    public = {n for n in dir(metrics) if not n.startswith("_")
              and not isinstance(getattr(metrics, n), types.ModuleType) and n != "annotations"}
    assert public == {"METRIC_NAMES", "METRICS", "Metric", "NORMALISATIONS", "SanityError", "check_params", "dataclass",
                      "normalize_absolute", "ENTROPY_BINS", "discrete_entropy", "entropy_rise",
                      "normalize_diverging", "compare", "rowwise_pearson", "get", "check_shape"}


def test_metric_registry_declares_each_metrics_properties():
    assert list(metrics.METRICS) == list(metrics.METRIC_NAMES)
    similarities = [m for m in metrics.METRICS.values() if m.higher_is_more_similar]
    assert all(m.value_range == (-1.0, 1.0) for m in similarities)
    assert [m.name for m in similarities] == list(SIMILARITIES)
    rise = metrics.METRICS["entropy_rise"]
    assert (rise.value_range, rise.default_normalisation) == ((-1.0, np.inf), "raw")
    assert [n for n, m in metrics.METRICS.items() if not m.can_be_undefined] == ["ssim"]
    assert {n: (m.normalise, m.features, m.statistic) for n, m in metrics.METRICS.items()} == {
        "spearman_abs": ("absolute", "pixels", "spearman"), "spearman": ("diverging", "pixels", "spearman"),
        "ssim": ("absolute", "pixels", "ssim"), "hog_pearson": ("absolute", "hog", "pearson"),
        "hog_spearman": ("absolute", "hog", "spearman"),
        "entropy_rise": ("diverging", "histogram", "entropy_rise")}


# --------------------------------------------------------------------------- #
# vectorised HOG / ranks / percentiles against the per-map library functions
# --------------------------------------------------------------------------- #
def _structured_maps(h, w, rng):
    """Random and structured (H, W) maps in [0, 1]: noise, constants, edges, stripes, spots."""
    yy, xx = np.mgrid[:h, :w]
    maps = [
        rng.random((h, w)).astype(np.float32).astype(np.float64),  # what compare feeds to HOG
        rng.random((h, w)) ** 3,                                    # full float64 mantissas
        np.zeros((h, w)),
        np.full((h, w), 0.7),
        (xx >= w // 2) * 1.0,                                       # vertical edge
        (yy >= h // 3) * 0.5,                                       # horizontal edge
        ((xx + yy) % 7 == 0) * 1.0 + ((xx - 2 * yy) % 5 == 0) * 0.3,  # diagonal lines
        ((xx // 3 + yy // 3) % 2) * 1.0,                            # checkerboard
        xx / max(w - 1, 1) * 0.25 + yy / max(h - 1, 1) * 0.75,      # ramp
        np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2, 1.0, 0.0),  # disc
    ]
    spot = np.zeros((h, w))
    spot[h // 2, w // 2] = 1.0
    maps.append(spot)
    return np.stack(maps)


@pytest.mark.parametrize("hw,ppc,cpb", [
    ((28, 28), (4, 4), (2, 2)),      # MNIST default
    ((299, 299), (16, 16), (2, 2)),  # Inception default: 299 = 18 * 16 + 11, partial cells ignored
    ((30, 27), (4, 4), (2, 2)),      # neither side divisible by the cell size
    ((31, 33), (5, 3), (2, 2)),      # odd, non-square cells
    ((24, 24), (16, 16), (1, 1)),    # a single cell
    ((7, 5), (7, 5), (1, 1)),
    ((3, 3), (1, 1), (2, 2)),
])
def test_hog_batch_equals_skimage_hog(rng, hw, ppc, cpb):
    maps = _structured_maps(*hw, rng)
    got = metrics._hog_batch(maps, ppc, cpb)
    expected = np.stack([hog(m, orientations=9, pixels_per_cell=ppc, cells_per_block=cpb,
                             block_norm="L2-Hys", feature_vector=True) for m in maps])
    assert got.shape == expected.shape and got.dtype == np.float64
    # the float32 cell accumulation of skimage is reproduced exactly; in practice the
    # features are bit-identical, the tolerance only allows for platform libm differences
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("orientations", [6, 7, 12])
def test_hog_batch_other_orientation_counts(rng, orientations):
    # 180/7 is not an integer: exercises the exact floor-with-correction binning
    maps = _structured_maps(20, 22, rng)
    got = metrics._hog_batch(maps, (4, 4), (2, 2), orientations=orientations)
    expected = np.stack([hog(m, orientations=orientations, pixels_per_cell=(4, 4), cells_per_block=(2, 2))
                         for m in maps])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_hog_features_default_params_match_skimage(rng):
    for shape, ppc, cpb in (((5, 28, 28), (4, 4), (2, 2)), ((2, 299, 299), (16, 16), (2, 2)),
                            ((3, 40, 20), (16, 16), (1, 1))):  # 2x1 cells -> 1x1 blocks
        maps = normalize_absolute(rng.standard_t(df=2, size=shape))
        got = metrics._hog_features(maps, None)
        expected = np.stack([hog(m.astype(np.float64), orientations=9, pixels_per_cell=ppc,
                                 cells_per_block=cpb) for m in maps])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape,ppc", [((40, 28, 28, 1), (4, 4)), ((3, 299, 299, 3), (16, 16)),
                                       ((6, 30, 27), (4, 4))])
def test_hog_pearson_equals_per_pair_skimage_loop(rng, shape, ppc):
    a = rng.standard_t(df=2, size=shape)
    b = 0.5 * a + rng.normal(size=shape)
    b[1] = 3.0  # constant map -> undefined
    a[2, ..., :] = 0.0
    a[2, 5:, 7:] = 1.0  # an edge
    values, undefined = compare(a, b, "hog_pearson")
    for i in range(shape[0]):
        x, y = normalize_absolute(a[i:i + 1])[0], normalize_absolute(b[i:i + 1])[0]
        fx, fy = (hog(z.astype(np.float64), orientations=9, pixels_per_cell=ppc, cells_per_block=(2, 2))
                  for z in (x, y))
        if fx.std() == 0 or fy.std() == 0:
            assert undefined[i] and np.isnan(values[i])
        else:
            assert not undefined[i]
            np.testing.assert_allclose(values[i], stats.pearsonr(fx, fy)[0], rtol=0, atol=1e-10)
    assert undefined[1] and undefined.sum() == 1


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_compare_does_not_depend_on_chunking(rng, metric, monkeypatch):
    a = rng.standard_t(df=2, size=(37, 28, 28, 1))
    b = a + rng.normal(size=a.shape)
    b[5] = 0.0
    whole_v, whole_u = compare(a, b, metric)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 3 * 28 * 28)  # 3 pairs per chunk, ragged tail
    v, u = compare(a, b, metric)
    np.testing.assert_array_equal(u, whole_u)
    np.testing.assert_array_equal(v, whole_v)


def test_percentile_rows_equals_numpy(rng):
    for d in list(range(1, 130)) + [784, 1001, 89401]:
        x = rng.standard_t(df=1.5, size=(3, d))
        x[1] = np.round(x[1])  # ties
        x[2, : d // 2] = 0.0
        for q in (99.0, 50.0, 0.0, 100.0, 37.5):
            np.testing.assert_array_equal(metrics._percentile_rows(x, q), np.percentile(x, q, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_rank_rows_equals_rankdata(rng, dtype):
    cases = [rng.standard_t(df=1.5, size=(20, 9, 7)), np.round(rng.normal(size=(10, 50)), 1),
             np.zeros((2, 6)), rng.normal(size=(3, 1)), np.array([[0.0, -0.0, 1, -1, 3e38, -3e38, 0.0, 1]])]
    for x in cases:
        x = np.round(np.clip(x, -1e6, 1e6) * 3).astype(dtype) if dtype == np.int64 else x.astype(dtype)
        expected = stats.rankdata(x.reshape(len(x), -1), method="average", axis=1)
        np.testing.assert_array_equal(metrics._rank_rows(x), expected)


def test_normalisations_match_reference_formulas_multichannel(rng):
    a = rng.standard_t(df=2, size=(4, 9, 11, 3))
    m_abs = np.abs(a).sum(axis=3)
    m_div = a.sum(axis=3)
    for i in range(4):
        vmax, vmin = np.percentile(m_abs[i], 99), m_abs[i].min()
        exp = np.clip((m_abs[i] - vmin) / (vmax - vmin), 0, 1).astype(np.float32)
        np.testing.assert_array_equal(normalize_absolute(a)[i], exp)
        exp = np.clip(m_div[i] / np.percentile(np.abs(m_div[i]), 99), -1, 1).astype(np.float32)
        np.testing.assert_array_equal(normalize_diverging(a)[i], exp)


def test_normalisations_by_hand():
    """second_moment divides by sqrt(mean a^2): a map and 3x it become identical (SSIM 1), and the normalised map
    has mean square 1; signed compares signed maps; an unknown name is one clear error."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 12, 12, 1))
    for metric in ("spearman_abs", "spearman", "ssim", "hog_pearson"):
        values, undefined = compare(a, 3.0 * a, metric, normalisation="second_moment")
        np.testing.assert_allclose(values, 1.0, atol=1e-6)
        assert not undefined.any()
    from sanity_cli.metrics import METRICS, _normalise

    normed = _normalise(a, METRICS["spearman"], "second_moment")
    np.testing.assert_allclose((normed.reshape(4, -1).astype(np.float64) ** 2).mean(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(_normalise(a, METRICS["spearman_abs"], "signed"),
                                  normalize_diverging(a))
    flipped, _ = compare(a, -a, "ssim", normalisation="signed")      # signed maps see the sign flip
    same, _ = compare(a, -a, "ssim")                                 # the paper's absolute maps do not
    assert (flipped < 0.5).all() and np.allclose(same, 1.0)
    with pytest.raises(SanityError, match="normalisation must be one of paper, signed, second_moment"):
        compare(a, a, "ssim", normalisation="zscore")


def test_max_normalisation_is_the_notebooks_abs_grayscale_norm():
    """normalisation=max: |m| / max |m| (m / max |m| signed), unclipped, as the released notebooks' abs_grayscale_norm
    and diverging_norm of a 2-D map. Spearman of it is scipy's Spearman of the raw |maps| (no ties from clipping,
    unlike the paper's 99th-percentile scaling); SSIM is skimage's on |m| / max |m| with data range 1."""
    from sanity_cli.metrics import METRICS, _normalise

    rng = np.random.default_rng(3)
    a, b = rng.standard_t(df=2, size=(2, 5, 28, 28))
    normed = _normalise(a, METRICS["spearman_abs"], "max")
    np.testing.assert_allclose(normed, (np.abs(a) / np.abs(a).reshape(5, -1).max(axis=1)[:, None, None]),
                               rtol=1e-6)
    signed = _normalise(a, METRICS["spearman"], "max")
    np.testing.assert_allclose(signed, a / np.abs(a).reshape(5, -1).max(axis=1)[:, None, None], rtol=1e-6)
    values, _ = compare(a, b, "spearman_abs", normalisation="max")
    expected = [stats.spearmanr(np.abs(x).ravel(), np.abs(y).ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(values, expected, atol=1e-12)
    clipped, _ = compare(a, b, "spearman_abs")  # the paper's scaling ties the top 1% of pixels: other ranks
    assert np.abs(clipped - values).max() > 1e-4
    values, _ = compare(a, b, "spearman", normalisation="max")
    np.testing.assert_allclose(values, [stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b)], atol=1e-12)
    values, _ = compare(a, b, "ssim", normalisation="max")
    scale = lambda m: (np.abs(m) / np.abs(m).max()).astype(np.float32)  # noqa: E731
    np.testing.assert_allclose(values, [structural_similarity(scale(x), scale(y), data_range=1.0)
                                        for x, y in zip(a, b)], atol=1e-6)
