"""Similarity metrics between saliency maps (Adebayo et al. 2018, Sec. 3 and Appendix).

The paper compares the saliency map of the original model with the map of a
randomized model (or a model trained on random labels) using:

* Spearman rank correlation of absolute-value maps (``spearman_abs``),
* Spearman rank correlation without absolute value (``spearman``),
* structural similarity index SSIM (``ssim``),
* Pearson correlation of histogram-of-gradients features (``hog_pearson``).

Maps are first normalised exactly as in the paper's visualisations
(``VisualizeImageGrayscale`` / ``VisualizeImageDiverging``). Everything here is
pure numpy / scipy / scikit-image and vectorised over the batch axis, except
HOG feature extraction, which scikit-image only offers per image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

from sanity_cli.errors import SanityError

METRIC_NAMES = ("spearman_abs", "spearman", "ssim", "hog_pearson")

_PERCENTILE = 99.0
_KNOWN_PARAMS = ("pixels_per_cell",)


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
    arr = _as_batch(maps)
    m = np.abs(arr).sum(axis=3) if arr.ndim == 4 else np.abs(arr)
    flat = m.reshape(m.shape[0], -1)
    vmax = np.percentile(flat, _PERCENTILE, axis=1)
    vmin = flat.min(axis=1)
    span = vmax - vmin
    ok = span > 0
    safe = np.where(ok, span, 1.0)
    out = np.clip((m - vmin[:, None, None]) / safe[:, None, None], 0.0, 1.0)
    out[~ok] = 0.0
    return out.astype(np.float32)


def normalize_diverging(maps: np.ndarray) -> np.ndarray:
    """Signed normalisation (paper's diverging visualisation).

    (N,H,W) or (N,H,W,C) -> (N,H,W) float32 in [-1,1]: m = sum_c map;
    span = 99th percentile of |m| (per image); out = clip(m / span, -1, 1).
    span == 0 -> all zeros.
    """
    arr = _as_batch(maps)
    m = arr.sum(axis=3) if arr.ndim == 4 else arr
    span = np.percentile(np.abs(m).reshape(m.shape[0], -1), _PERCENTILE, axis=1)
    ok = span > 0
    safe = np.where(ok, span, 1.0)
    out = np.clip(m / safe[:, None, None], -1.0, 1.0)
    out[~ok] = 0.0
    return out.astype(np.float32)


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
    """Average ranks of each flattened map (ties share their mean rank, as spearmanr)."""
    return stats.rankdata(x.reshape(x.shape[0], -1), method="average", axis=1)


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
    _, h, w = x.shape
    win = min(7, min(h, w))
    if win % 2 == 0:
        win -= 1
    size = (1, win, win)  # no filtering across the batch axis

    def filt(z):
        return ndimage.uniform_filter(z, size=size, mode="reflect")

    npix = win * win
    cov_norm = npix / (npix - 1) if npix > 1 else 1.0
    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
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
    pad = (win - 1) // 2
    s = s[:, pad:h - pad, pad:w - pad]
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


def _hog_features(maps: np.ndarray, pixels_per_cell) -> np.ndarray:
    """HOG descriptors (Dalal & Triggs 2005) of each (H,W) map -> (N, D) float64.

    orientations=9, L2-Hys block norm, cells_per_block=(2,2), or (1,1) when the
    image has fewer than 2 cells along an axis.
    """
    from skimage.feature import hog

    _, h, w = maps.shape
    ppc = _pixels_per_cell((h, w), pixels_per_cell)
    n_cells = (h // ppc[0], w // ppc[1])
    cpb = (2, 2) if min(n_cells) >= 2 else (1, 1)
    feats = [
        hog(m, orientations=9, pixels_per_cell=ppc, cells_per_block=cpb, feature_vector=True)
        for m in maps.astype(np.float64, copy=False)
    ]
    return np.stack(feats).astype(np.float64, copy=False)


# --------------------------------------------------------------------------- #
# public entry point
# --------------------------------------------------------------------------- #
def compare(reference: np.ndarray, other: np.ndarray, metric: str, **params) -> tuple[np.ndarray, np.ndarray]:
    """Similarity between two batches of RAW attribution maps of the same images.

    reference, other: (N,H,W[,C]); row i of each is the same image. Returns
    (values float64 (N,), undefined bool (N,)); values[i] is NaN exactly where
    undefined[i]. Metrics (paper Sec. 3 / Appendix):
      spearman_abs : Spearman rho of normalize_absolute maps;
      spearman     : Spearman rho of normalize_diverging maps;
      ssim         : mean SSIM of normalize_absolute maps, data_range=1 (always defined);
      hog_pearson  : Pearson r of HOG features of normalize_absolute maps
                     (param ``pixels_per_cell`` overrides the size-based default).
    A correlation is undefined when either input vector has zero variance.
    """
    if metric not in METRIC_NAMES:
        raise SanityError(f"unknown metric '{metric}'; choose from {', '.join(METRIC_NAMES)}")
    unknown = sorted(set(params) - set(_KNOWN_PARAMS))
    if unknown:
        raise SanityError(
            f"unknown metric parameter(s) {', '.join(unknown)}; supported: {', '.join(_KNOWN_PARAMS)}"
        )
    ref = np.asarray(reference)
    oth = np.asarray(other)
    if ref.shape != oth.shape:
        raise SanityError(
            f"attribution maps have different shapes: reference {ref.shape} vs other {oth.shape}; "
            "compare maps of the same images at the same resolution"
        )

    if metric == "spearman_abs":
        return _spearman(normalize_absolute(ref), normalize_absolute(oth))
    if metric == "spearman":
        return _spearman(normalize_diverging(ref), normalize_diverging(oth))
    if metric == "ssim":
        values = _ssim_batch(normalize_absolute(ref), normalize_absolute(oth), data_range=1.0)
        return values.astype(np.float64), np.zeros(values.shape[0], dtype=bool)
    # hog_pearson
    ppc = params.get("pixels_per_cell")
    fa = _hog_features(normalize_absolute(ref), ppc)
    fb = _hog_features(normalize_absolute(oth), ppc)
    return rowwise_pearson(fa, fb)
