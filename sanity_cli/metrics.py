"""Similarity metrics between saliency maps (Adebayo et al. 2018, Sec. 3 and Appendix).

The paper compares the saliency map of the original model with the map of a
randomized model (or a model trained on random labels) using:

* Spearman rank correlation of absolute-value maps (``spearman_abs``),
* Spearman rank correlation without absolute value (``spearman``),
* structural similarity index SSIM (``ssim``),
* Pearson correlation of histogram-of-gradients features (``hog_pearson``), as the paper's text says,
  and their Spearman rank correlation (``hog_spearman``), as the released notebooks compute it.

Maps are first normalised exactly as in the paper's visualisations
(``VisualizeImageGrayscale`` / ``VisualizeImageDiverging``). Everything here is
pure numpy and vectorised over the batch axis, including HOG feature extraction,
which reimplements ``skimage.feature.hog`` for a whole batch with the same
features (see ``_hog_batch``); ranks, percentiles and the channel sums give the
same bits as scipy / numpy, SSIM agrees with scikit-image to ~1e-16. ``compare``
works through the batch in chunks of map pairs that stay in the CPU cache.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import numpy as np

from sanity_cli import params as parameters
from sanity_cli.errors import SanityError


@dataclass(frozen=True)
class Metric:
    """One comparison of two maps of the same image: how each map is normalised (`absolute`: normalize_absolute,
    `diverging`: normalize_diverging), what is compared (`pixels`, HOG features `hog`, or the `histogram` of the
    values) and with which statistic (`spearman`, `pearson`, `ssim`, `entropy_rise`). The similarities lie in
    [-1, 1] (higher = more alike; correlations are undefined when a map is constant, SSIM never is).
    `entropy_rise` is Hedström et al.'s eMPRT score, not a similarity: higher = the second map is more complex.
    `params`: the parameters the metric accepts (metric.NAME.PARAM in the config), each with its rule and default."""

    name: str
    normalise: str
    features: str
    statistic: str
    value_range: tuple[float, float] = (-1.0, 1.0)
    higher_is_more_similar: bool = True
    params: typing.Mapping[str, parameters.Param] = dataclasses.field(
        default_factory=lambda: {"normalisation": _NORMALISE})

    @property
    def can_be_undefined(self) -> bool:
        return self.statistic != "ssim"

    @property
    def default_normalisation(self) -> str:
        return self.params["normalisation"].default


_PERCENTILE = 99.0
# paper: the metric's own (normalize_absolute, or normalize_diverging for `spearman`); signed: normalize_diverging;
# second_moment: a / sqrt(mean(a^2)) (Binder et al. 2023; Hedström et al. 2023; Quantus'
# normalise_by_average_second_moment_estimate), of |a| for the metrics on absolute maps; raw: the values as they
# are, every channel (only for the histogram metric, entropy_rise, where it is the default, as in Quantus' eMPRT);
# max: |a| / max |a| (a / max |a| for signed maps), no clipping: the released notebooks' abs_grayscale_norm and
# diverging_norm of a 2-D map.
NORMALISATIONS = ("paper", "signed", "second_moment", "max", "raw")
ENTROPY_BINS = 100  # Quantus' discrete_entropy default
_NORMALISE = parameters.Choice("paper", tuple(n for n in NORMALISATIONS if n != "raw"))


def _is_cells(value) -> bool:
    """pixels_per_cell: a positive integer, or a pair of them (height, width)."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    return len(pair) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                  for v in pair)


_PIXELS_PER_CELL = parameters.Param(None, _is_cells, "a positive int or a pair of positive ints", nullable=True)

METRICS = {metric.name: metric for metric in (
    Metric("spearman_abs", "absolute", "pixels", "spearman"),
    Metric("spearman", "diverging", "pixels", "spearman"),
    Metric("ssim", "absolute", "pixels", "ssim"),
    Metric("hog_pearson", "absolute", "hog", "pearson",  # the paper's text
           params={"normalisation": _NORMALISE, "pixels_per_cell": _PIXELS_PER_CELL}),
    Metric("hog_spearman", "absolute", "hog", "spearman",  # the notebooks
           params={"normalisation": _NORMALISE, "pixels_per_cell": _PIXELS_PER_CELL}),
    # Hedström et al. 2023, efficient MPRT: (H(other) - H(reference)) / H(reference), H the Shannon entropy (nats)
    # of a `n_bins` histogram of the map's values (Quantus' discrete_entropy); raw values by default, as Quantus.
    Metric("entropy_rise", "diverging", "histogram", "entropy_rise", value_range=(-1.0, np.inf),
           higher_is_more_similar=False,
           params={"normalisation": parameters.Choice("raw", NORMALISATIONS),
                   "n_bins": parameters.Int(ENTROPY_BINS, low=2)}),
)}
METRIC_NAMES = tuple(METRICS)
# values per map times map pairs per chunk in ``compare``: small enough to stay in the CPU cache
_CHUNK_ELEMENTS = 1 << 14  # 20 pairs of 28x28 maps; one pair of 299x299 maps


# --------------------------------------------------------------------------- #
# input handling
# --------------------------------------------------------------------------- #
def _as_batch(maps, name: str = "maps") -> np.ndarray:
    """Validate a (N,H,W) or (N,H,W,C) array and return it as float64."""
    arr = np.asarray(maps)
    if arr.ndim not in (3, 4):
        raise SanityError(
            f"{name} must have shape (N,H,W) or (N,H,W,C), got {arr.shape}; "
            "pass a batch of attribution maps"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_):
        raise SanityError(f"{name} must be numeric, got dtype {arr.dtype}")
    if 0 in arr.shape[:3]:
        raise SanityError(f"{name} is empty (shape {arr.shape}); need at least one 1x1 map")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.unique(np.nonzero(~np.isfinite(arr).reshape(arr.shape[0], -1))[0])
        raise SanityError(
            f"{name} contains NaN or inf values (images {bad[:10].tolist()}); "
            "check the attribution method for overflow"
        )
    return arr


# --------------------------------------------------------------------------- #
# normalisation (paper's visualisation functions)
# --------------------------------------------------------------------------- #
def normalize_absolute(maps: np.ndarray) -> np.ndarray:
    """Absolute-value normalisation (paper's ``VisualizeImageGrayscale``).

    (N,H,W) or (N,H,W,C) -> (N,H,W) float32 in [0,1]:
    m = sum_c |map|; vmax = 99th percentile of m (per image); vmin = min(m);
    out = clip((m - vmin) / (vmax - vmin), 0, 1). A constant map (vmax == vmin)
    becomes all zeros.
    """
    return _normalize_absolute(_as_batch(maps))


def normalize_diverging(maps: np.ndarray) -> np.ndarray:
    """Signed normalisation (paper's diverging visualisation).

    (N,H,W) or (N,H,W,C) -> (N,H,W) float32 in [-1,1]: m = sum_c map;
    span = 99th percentile of |m| (per image); out = clip(m / span, -1, 1).
    span == 0 -> all zeros.
    """
    return _normalize_diverging(_as_batch(maps))


def _channel_sum(arr: np.ndarray, absolute: bool) -> np.ndarray:
    """sum_c (|arr|) over the channel axis of a (N,H,W,C) array; (N,H,W) is returned as is.

    Same bits as ``arr.sum(axis=3)``: numpy adds a short (< 8) reduction axis in order,
    but strided by C, which is several times slower than these whole-plane adds.
    """
    f = np.abs if absolute else np.positive
    if arr.ndim == 3:
        return f(arr)
    c = arr.shape[3]
    if c >= 8:  # numpy switches to pairwise summation
        return f(arr).sum(axis=3)
    m = f(arr[..., 0])
    for k in range(1, c):
        m += f(arr[..., k])
    return m


def _percentile_rows(flat: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(flat, q, axis=1)`` (method "linear"), same bits, ~2x faster.

    numpy partitions a transposed copy at four indices; here each contiguous row is
    partitioned at the two neighbours of the virtual index (n - 1) * q / 100 and
    interpolated with numpy's own ``_lerp`` formula.
    """
    n = flat.shape[1]
    virtual = (n - 1) * np.true_divide(q, 100)
    if virtual >= n - 1:
        prev = nxt = n - 1
    else:
        prev = int(np.floor(virtual))
        nxt = prev + 1
    gamma = np.float64(virtual - prev)
    part = np.partition(flat, (prev, nxt) if nxt != prev else prev, axis=1)
    a, b = part[:, prev], part[:, nxt]
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def _normalize_absolute(arr: np.ndarray) -> np.ndarray:
    """``normalize_absolute`` of an already validated float64 batch."""
    m = _channel_sum(arr, absolute=True)
    flat = m.reshape(m.shape[0], -1)
    vmax = _percentile_rows(flat, _PERCENTILE)
    vmin = flat.min(axis=1)
    span = vmax - vmin
    ok = span > 0
    safe = np.where(ok, span, 1.0)
    m -= vmin[:, None, None]
    m /= safe[:, None, None]
    np.clip(m, 0.0, 1.0, out=m)
    m[~ok] = 0.0
    return m.astype(np.float32)


def _normalize_diverging(arr: np.ndarray) -> np.ndarray:
    """``normalize_diverging`` of an already validated float64 batch."""
    m = _channel_sum(arr, absolute=False)
    span = _percentile_rows(np.abs(m).reshape(m.shape[0], -1), _PERCENTILE)
    ok = span > 0
    safe = np.where(ok, span, 1.0)
    m /= safe[:, None, None]
    np.clip(m, -1.0, 1.0, out=m)
    m[~ok] = 0.0
    return m.astype(np.float32)


# --------------------------------------------------------------------------- #
# correlations
# --------------------------------------------------------------------------- #
def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of each row pair, r_i = cov(a_i, b_i) / (std(a_i) std(b_i)).

    (N,D),(N,D) -> (values float64 (N,), undefined bool (N,)). A row is
    undefined (value NaN) when either side has (numerically) zero variance:
    std <= 1e-12 * (1 + max|x|).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise SanityError(
            f"rowwise_pearson needs two (N,D) arrays of the same shape, got {a.shape} and {b.shape}"
        )
    if a.shape[1] == 0:
        n = a.shape[0]
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    sa = np.sqrt((ac * ac).mean(axis=1))
    sb = np.sqrt((bc * bc).mean(axis=1))
    tol_a = 1e-12 * (1.0 + np.abs(a).max(axis=1))
    tol_b = 1e-12 * (1.0 + np.abs(b).max(axis=1))
    undefined = (sa <= tol_a) | (sb <= tol_b)
    denom = np.where(undefined, 1.0, sa * sb)
    values = np.clip((ac * bc).mean(axis=1) / denom, -1.0, 1.0)
    values[undefined] = np.nan
    return values, undefined


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks of each flattened map (ties share their mean rank, as spearmanr).

    (N, ...) -> (N, D) float64, the same numbers as
    ``scipy.stats.rankdata(x.reshape(N, -1), method="average", axis=1)``. For
    float32 maps (what the normalisations return) each value and its position
    are packed into one int64 key (order-preserving bit pattern << 32 | index)
    and sorted with numpy's SIMD sort, which is faster than an argsort; other
    dtypes use a stable argsort. Runs of equal values get their mean rank.
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    if flat.dtype == np.float32 and d < 2 ** 31:
        # +0.0 turns -0.0 into 0.0 so that equal values have equal bit patterns; flipping
        # the magnitude bits of negative floats makes the int32 order the float order
        bits = (flat + np.float32(0.0)).view(np.int32)
        mono = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
        keys = mono.astype(np.int64)
        keys <<= 32
        keys |= np.arange(d, dtype=np.int64)  # value in the high half, position in the low
        keys.sort(axis=1)
        order = keys & 0xFFFFFFFF
        svals = keys >> 32
    else:
        order = np.argsort(flat, axis=1, kind="stable")
        svals = np.take_along_axis(flat, order, axis=1)
    # runs of equal values (every row starts a new run); positions are global
    # (row * d + column), so a run's mean 1-based rank within its row is
    # start + (length - 1) / 2 + 1 - row * d (exact: integers and halves)
    new = np.empty((n, d), dtype=bool)
    new[:, 0] = True
    np.not_equal(svals[:, 1:], svals[:, :-1], out=new[:, 1:])
    starts = np.flatnonzero(new)
    lengths = np.diff(starts, append=n * d)
    sorted_ranks = np.repeat(starts + (lengths - 1) * 0.5 + 1.0, lengths).reshape(n, d)
    sorted_ranks -= (np.arange(n) * d)[:, None]
    ranks = np.empty(n * d, dtype=np.float64)
    order += (np.arange(n) * d)[:, None]
    ranks[order.ravel()] = sorted_ranks.ravel()
    return ranks.reshape(n, d)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho = Pearson correlation of average ranks (Sec. 3, rank correlation)."""
    return rowwise_pearson(_rank_rows(x), _rank_rows(y))


# --------------------------------------------------------------------------- #
# SSIM
# --------------------------------------------------------------------------- #
def _ssim_batch(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM per image (Wang et al. 2004), same numbers as skimage defaults.

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (0.01 R)^2, C2 = (0.03 R)^2, local statistics over a uniform 7x7 window
    (reflect padding, sample covariance), averaged after cropping (win-1)/2
    pixels at the border. Images smaller than 7 px use the largest odd window
    <= min(H, W).
    """
    x = x.astype(np.float64, copy=False)
    y = y.astype(np.float64, copy=False)
    n, h, w = x.shape
    win = min(7, min(h, w))
    if win % 2 == 0:
        win -= 1
    # Only the window means of windows lying inside the image survive the final crop,
    # so the padding never matters: compute those "valid" means directly, for the five
    # statistics at once, as separable sliding sums (equal to scipy's uniform_filter
    # up to rounding, ~1e-16).
    ho, wo = h - win + 1, w - win + 1
    stats5 = np.empty((5, n, h, w), dtype=np.float64)
    stats5[0], stats5[1] = x, y
    np.multiply(x, x, out=stats5[2])
    np.multiply(y, y, out=stats5[3])
    np.multiply(x, y, out=stats5[4])
    rows = stats5[:, :, 0:ho, :].copy()
    for k in range(1, win):
        rows += stats5[:, :, k:k + ho, :]
    means = rows[:, :, :, 0:wo].copy()
    for k in range(1, win):
        means += rows[:, :, :, k:k + wo]
    npix = win * win
    means *= 1.0 / npix
    ux, uy, uxx, uyy, uxy = means

    cov_norm = npix / (npix - 1) if npix > 1 else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux ** 2 + uy ** 2 + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    return s.mean(axis=(1, 2), dtype=np.float64)


# --------------------------------------------------------------------------- #
# HOG
# --------------------------------------------------------------------------- #
def _pixels_per_cell(shape_hw: tuple[int, int], override) -> tuple[int, int]:
    """Default (4,4) for images <= 32 px on their longer side, (16,16) otherwise."""
    h, w = shape_hw
    if override is None:
        c = 4 if max(h, w) <= 32 else 16
        # never larger than the image: at least one cell per axis
        return (min(c, h), min(c, w))
    if np.isscalar(override):
        ppc = (override, override)
    else:
        ppc = tuple(override)
    try:
        if len(ppc) != 2 or any(int(v) != v or int(v) < 1 for v in ppc):
            raise ValueError
        ppc = (int(ppc[0]), int(ppc[1]))
    except (TypeError, ValueError):
        raise SanityError(
            f"pixels_per_cell must be a positive int or a pair of positive ints, got {override!r}"
        ) from None
    if ppc[0] > h or ppc[1] > w:
        raise SanityError(
            f"pixels_per_cell {ppc} is larger than the {h}x{w} maps; choose at most ({h}, {w})"
        )
    return ppc


def _hog_params(shape_hw: tuple[int, int], pixels_per_cell) -> tuple[tuple[int, int], tuple[int, int]]:
    """(pixels_per_cell, cells_per_block) for (H, W) maps: cells_per_block is (2,2), or (1,1)
    when the image has fewer than 2 cells along an axis."""
    ppc = _pixels_per_cell(shape_hw, pixels_per_cell)
    n_cells = (shape_hw[0] // ppc[0], shape_hw[1] // ppc[1])
    cpb = (2, 2) if min(n_cells) >= 2 else (1, 1)
    return ppc, cpb


def _hog_batch(images: np.ndarray, ppc: tuple[int, int], cpb: tuple[int, int],
               orientations: int = 9, eps: float = 1e-5) -> np.ndarray:
    """``skimage.feature.hog(image, orientations, ppc, cpb, block_norm="L2-Hys")`` of each (H,W) image.

    (N,H,W) -> (N, D) float64, bit-identical to scikit-image (checked in the tests), step by step:

    1. gradients: [-1, 0, 1] central differences along rows and columns, zero in
       the first and last row (column) (skimage's ``_hog_channel_gradient``);
    2. magnitude ``np.hypot(g_col, g_row)``, unsigned orientation
       ``rad2deg(arctan2(g_row, g_col)) % 180`` (skimage's ``hog_histograms``);
    3. cell histograms: cell (i, j) covers rows [i*c_row, (i+1)*c_row) and columns
       [j*c_col, (j+1)*c_col) (pixels beyond the last whole cell are ignored); a pixel
       votes its magnitude, with no interpolation, into bin k when
       k*180/orientations <= orientation < (k+1)*180/orientations (an orientation that
       rounds to 180.0 votes nowhere); skimage's Cython ``cell_hog`` sums the votes of
       each bin in a C ``float`` (float32) accumulator in row-major pixel order and
       divides by the cell area in float32. That exact rounding is reproduced here by
       visiting the c_row*c_col pixel positions of the cells in the same order, each
       visit vectorised over all cells of all images;
    4. blocks of cpb cells (stride one cell), each normalised L2-Hys:
       v / sqrt(|v|^2 + eps^2), clipped at 0.2, renormalised the same way;
    5. feature order (block_row, block_col, cell_row, cell_col, orientation).
    """
    images = np.ascontiguousarray(images, dtype=np.float64)
    n, h, w = images.shape
    c_row, c_col = ppc
    b_row, b_col = cpb
    ncr, ncc = h // c_row, w // c_col
    nbr, nbc = ncr - b_row + 1, ncc - b_col + 1
    if nbr < 1 or nbc < 1:
        raise SanityError(f"{h}x{w} maps are too small for HOG with {ppc} pixels per cell and {cpb} cells per block")
    magnitude, k = _hog_gradients(images, orientations)
    hist = _hog_cells(magnitude, k, ppc, orientations)
    return _hog_blocks(hist, cpb, eps)


def _hog_gradients(images: np.ndarray, orientations: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2 of _hog_batch and the bin index of each pixel: (magnitude, k), k == orientations for no bin."""
    g_row = np.zeros_like(images)
    np.subtract(images[:, 2:, :], images[:, :-2, :], out=g_row[:, 1:-1, :])
    g_col = np.zeros_like(images)
    np.subtract(images[:, :, 2:], images[:, :, :-2], out=g_col[:, :, 1:-1])
    # the same ufunc calls on contiguous arrays as skimage: same numbers to the last bit
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col))  # in [-180, 180]
    del g_row, g_col
    # ``% 180`` without numpy's slow float remainder, same bits: fmod is exact and
    # remainder adds 180 to a negative fmod (a tiny negative angle becomes 180.0)
    np.subtract(orientation, 180.0, out=orientation, where=orientation >= 180.0)
    np.add(orientation, 180.0, out=orientation, where=orientation < 0.0)

    # bin index k with edge[k] <= orientation < edge[k+1], edge[k] = (180/orientations)*k
    # exactly as skimage's double comparisons; k == orientations: no bin (orientation 180.0)
    step = 180.0 / orientations
    if step == int(step):
        # integral step (orientations=9: 20 degrees): the correctly rounded quotient never
        # crosses an integer that the exact one does not, so truncation is the exact floor
        k = (orientation / step).astype(np.int8 if orientations < 127 else np.intp)
    else:
        k = np.floor(orientation / step)
        k -= orientation < k * step
        k += orientation >= (k + 1) * step
        np.clip(k, 0, orientations, out=k)
        k = k.astype(np.intp)
    return magnitude, k


def _hog_cells(magnitude: np.ndarray, k: np.ndarray, ppc: tuple[int, int], orientations: int) -> np.ndarray:
    """Step 3 of _hog_batch: (N, cell rows, cell cols, orientations) histograms, skimage's float32 rounding."""
    n, h, w = magnitude.shape
    c_row, c_col = ppc
    ncr, ncc = h // c_row, w // c_col
    n_slots = orientations + 1

    # (c_row, c_col, N, ncr, ncc): one contiguous slab per pixel position within a cell
    def by_position(a):
        a = a[:, :ncr * c_row, :ncc * c_col].reshape(n, ncr, c_row, ncc, c_col)
        return np.ascontiguousarray(a.transpose(2, 4, 0, 1, 3))

    magnitude = by_position(magnitude)
    slot = by_position(k).astype(np.intp)  # index into acc: cell * n_slots + bin
    slot += (np.arange(n * ncr * ncc, dtype=np.intp) * n_slots).reshape(n, ncr, ncc)
    acc = np.zeros(n * ncr * ncc * n_slots, dtype=np.float64)  # holds float32 values
    for dr in range(c_row):
        for dc in range(c_col):
            idx = slot[dr, dc]
            # C: float total; total += (double) magnitude  ->  round(total + m) to float32
            total = acc[idx]
            total += magnitude[dr, dc]
            acc[idx] = total.astype(np.float32).astype(np.float64)
    hist = acc.reshape(n, ncr, ncc, n_slots)[..., :orientations].astype(np.float32)
    return (hist / np.float32(c_row * c_col)).astype(np.float64)


def _hog_blocks(hist: np.ndarray, cpb: tuple[int, int], eps: float) -> np.ndarray:
    """Steps 4-5 of _hog_batch: L2-Hys normalised blocks, (N, D)."""
    n, ncr, ncc, orientations = hist.shape
    b_row, b_col = cpb
    nbr, nbc = ncr - b_row + 1, ncc - b_col + 1
    blocks = np.empty((n, nbr, nbc, b_row, b_col, orientations), dtype=np.float64)
    for i in range(b_row):
        for j in range(b_col):
            blocks[:, :, :, i, j, :] = hist[:, i:i + nbr, j:j + nbc, :]
    blocks = blocks.reshape(n, nbr, nbc, b_row * b_col * orientations)
    out = blocks / np.sqrt(np.sum(blocks ** 2, axis=-1, keepdims=True) + eps ** 2)
    np.minimum(out, 0.2, out=out)
    out /= np.sqrt(np.sum(out ** 2, axis=-1, keepdims=True) + eps ** 2)
    return out.reshape(n, -1)


def _hog_features(maps: np.ndarray, pixels_per_cell) -> np.ndarray:
    """HOG descriptors (Dalal & Triggs 2005) of each (H,W) map -> (N, D) float64.

    orientations=9, L2-Hys block norm, cells_per_block=(2,2), or (1,1) when the
    image has fewer than 2 cells along an axis; the same features as
    ``skimage.feature.hog`` with those parameters, computed for the whole batch.
    """
    _, h, w = maps.shape
    ppc, cpb = _hog_params((h, w), pixels_per_cell)
    return _hog_batch(maps, ppc, cpb)


# --------------------------------------------------------------------------- #
# public entry point
# --------------------------------------------------------------------------- #
def get(metric: str) -> Metric:
    if metric not in METRIC_NAMES:
        raise SanityError(f"unknown metric '{metric}'; choose from {', '.join(METRIC_NAMES)}")
    return METRICS[metric]


def check_params(metric: str, params: typing.Mapping | None) -> dict:
    """A known metric's parameters, checked against its declaration, defaults filled in."""
    unknown = sorted(set(params or {}) - set(get(metric).params))
    if unknown:
        raise SanityError(f"unknown parameter(s) {', '.join(unknown)} of metric {metric}; supported: "
                          f"{', '.join(get(metric).params)}")
    return parameters.check(f"metric.{metric}", get(metric).params, params, owner=f"metric {metric}")


def check_shape(metric: str, params: typing.Mapping, shape_hw: tuple[int, int]) -> None:
    """What needs the maps' size (pixels_per_cell no larger than the maps), checked before any work."""
    if get(metric).features == "hog":
        _hog_params(tuple(shape_hw), params.get("pixels_per_cell"))


def compare(reference: np.ndarray, other: np.ndarray, metric: str, **params) -> tuple[np.ndarray, np.ndarray]:
    """Similarity between two batches of RAW attribution maps of the same images.

    reference, other: (N,H,W[,C]); row i of each is the same image. Returns
    (values float64 (N,), undefined bool (N,)); values[i] is NaN exactly where
    undefined[i]. Metrics (paper Sec. 3 / Appendix):
      spearman_abs : Spearman rho of normalize_absolute maps;
      spearman     : Spearman rho of normalize_diverging maps;
      ssim         : mean SSIM of normalize_absolute maps, data_range=1 (always defined);
      hog_pearson  : Pearson r of HOG features of normalize_absolute maps
                     (param ``pixels_per_cell`` overrides the size-based default);
      hog_spearman : Spearman rho of the same HOG features (the released notebooks' comparison);
      entropy_rise : (H(other) - H(reference)) / H(reference), Hedström et al. 2023's eMPRT score
                     (``discrete_entropy``; param ``n_bins``, default 100).
    A correlation is undefined when either input vector has zero variance; the entropy rise when the
    reference map's entropy is 0 (a constant map).
    """
    params = check_params(metric, params)
    ref = np.asarray(reference)
    oth = np.asarray(other)
    if ref.shape != oth.shape:
        raise SanityError(
            f"attribution maps have different shapes: reference {ref.shape} vs other {oth.shape}; "
            "compare maps of the same images at the same resolution"
        )
    # validate once for the whole batch (error messages name whole-batch image indices)
    ref = _as_batch(ref)
    oth = _as_batch(oth)
    ppc, normalisation = params.get("pixels_per_cell"), params["normalisation"]
    if METRICS[metric].statistic == "entropy_rise":
        return entropy_rise(ref, oth, normalisation, params["n_bins"])
    if METRICS[metric].features == "hog":
        _hog_params(ref.shape[1:3], ppc)  # raises on a bad pixels_per_cell before any work

    # Every metric is computed map by map, so the batch is processed in chunks whose
    # intermediates stay in the CPU cache (several times faster than whole-batch arrays);
    # the reference and the other maps of a chunk are stacked and go through each step
    # together.
    n = ref.shape[0]
    step = max(1, _CHUNK_ELEMENTS // int(np.prod(ref.shape[1:])))
    values = np.empty(n, dtype=np.float64)
    undefined = np.empty(n, dtype=bool)
    for i in range(0, n, step):
        j = min(n, i + step)
        values[i:j], undefined[i:j] = _compare_chunk(np.concatenate((ref[i:j], oth[i:j])), metric, ppc,
                                                     normalisation)
    return values, undefined


def discrete_entropy(values: np.ndarray, n_bins: int = ENTROPY_BINS) -> float:
    """Shannon entropy (nats) of a histogram of the values in `n_bins` equal bins between their min and max:
    H = -sum_k p_k ln p_k, p_k = count_k / n (np.histogram + scipy.stats.entropy, as Quantus' discrete_entropy).
    A constant map falls in one bin: H = 0."""
    counts, _ = np.histogram(np.ravel(values), bins=n_bins)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def entropy_rise(reference: np.ndarray, other: np.ndarray, normalisation: str = "raw",
                 n_bins: int = ENTROPY_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Hedström et al. 2023's efficient MPRT score per image: (H(other) - H(reference)) / H(reference), the
    relative rise in explanation complexity from the trained (reference) to the randomized model's map; higher
    = the randomized model's map is more complex. Undefined (NaN) when H(reference) = 0. `raw` uses the values
    as they are (every channel); the other normalisations work on the channel-summed maps as for every metric."""
    if normalisation != "raw":
        both = _normalise(np.concatenate((reference, other)), METRICS["entropy_rise"], normalisation)
        reference, other = both[:len(reference)], both[len(reference):]
    before = np.array([discrete_entropy(m, n_bins) for m in reference])
    after = np.array([discrete_entropy(m, n_bins) for m in other])
    undefined = before == 0.0
    return np.where(undefined, np.nan, (after - before) / np.where(undefined, 1.0, before)), undefined


def _normalise(both: np.ndarray, spec: Metric, normalisation: str) -> np.ndarray:
    """The maps as the metric compares them (see NORMALISATIONS)."""
    if normalisation == "paper":
        return (_normalize_absolute if spec.normalise == "absolute" else _normalize_diverging)(both)
    if normalisation == "signed":
        return _normalize_diverging(both)
    m = _channel_sum(both, absolute=spec.normalise == "absolute")
    if normalisation == "max":
        peak = np.abs(m.reshape(m.shape[0], -1)).max(axis=1)
        return (m / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)
    rms = np.sqrt((m.reshape(m.shape[0], -1) ** 2).mean(axis=1))
    return (m / np.where(rms > 0, rms, 1.0)[:, None, None]).astype(np.float32)


def _compare_chunk(both: np.ndarray, metric: str, ppc, normalisation: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """``compare`` on one chunk: ``both`` = validated float64 reference maps, then the other maps."""
    spec, k = METRICS[metric], both.shape[0] // 2
    norm = _normalise(both, spec, normalisation)
    if spec.statistic == "ssim":
        if normalisation in ("paper", "max"):  # maps in [0, 1]
            return _ssim_batch(norm[:k], norm[k:], data_range=1.0).astype(np.float64), np.zeros(k, dtype=bool)
        if normalisation == "signed":  # maps in [-1, 1]: SSIM with a data range of 2
            shifted, scale = (norm + 1.0) / 2.0, np.ones((k, 1, 1))
        else:  # second moment: each pair scaled jointly by its largest value, SSIM with that data range
            shifted = norm
            peak = np.abs(norm.reshape(2, k, -1)).max(axis=(0, 2))
            scale = np.where(peak > 0, peak, 1.0)[:, None, None]
        return (_ssim_batch(shifted[:k] / scale, shifted[k:] / scale, data_range=1.0).astype(np.float64),
                np.zeros(k, dtype=bool))
    compared = _hog_features(norm, ppc) if spec.features == "hog" else norm
    if spec.statistic == "spearman":
        compared = _rank_rows(compared)
    return rowwise_pearson(compared[:k], compared[k:])
