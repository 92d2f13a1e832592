"""Pearson correlation of residual-stream units over samples, whole or in blocks (METHODS §7.1).

numpy only: the communities stage builds its graphs from ``correlation`` and the dashboard draws
the matrices from ``correlation_block`` and ``block_correlation`` without forming C where d is large.

Everything works on *unit-major* z-scores ``zu`` (d, N) float32 (``standardize``): row i is unit
i over the N samples, so picking units is a gather of contiguous rows (a column gather of the
(N, d) activations is ~10× slower at d = 4096) and C = zu zuᵀ / N.
"""

from __future__ import annotations

import numpy as np

from resdyn.errors import ResdynError

HEATMAP_MAX = 512   # up to this many units the dashboard draws C itself (a heatmap with hover values)
IMAGE_MAX_PX = 512  # above it, block means of C of at most this many pixels a side


def standardize(x: np.ndarray) -> np.ndarray:
    """Units z-scored over samples, unit-major: x (N, d), any float dtype -> (d, N) float32.

    Mean and standard deviation (ddof = 0) in float64; a constant unit gets z = 0. Pearson's
    correlation of units i and j is then zu_i · zu_j / N.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ResdynError(f"correlation needs (N ≥ 2, d) activations, got shape {x.shape}")
    xu = x.T.astype(np.float64, order="C")  # (d, N), unit-major copy
    if not np.isfinite(xu).all():
        raise ResdynError("activations contain NaN or inf; recompute the activations stage")
    scale = max(1.0, float(np.abs(xu).max()))
    xu -= xu.mean(axis=1, keepdims=True)
    sd = np.sqrt(np.einsum("ij,ij->i", xu, xu) / xu.shape[1])
    live = sd > 1e-12 * scale
    inv = np.zeros_like(sd)
    inv[live] = 1.0 / sd[live]
    xu *= inv[:, None]
    return xu.astype(np.float32)


def correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of the units over samples.

    x: (N, d) activations of one snapshot, any float dtype. Each unit is z-scored over the N
    samples (ddof = 0) in float64, then C = ZᵀZ / N in float32 (its precision is ample for
    ranking edges and drawing). A constant unit has z = 0, so its row and column are 0.
    Returns (d, d) float32 with 1 on the diagonal of non-constant units.
    """
    return correlation_block(standardize(x))


def correlation_block(zu: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """C[rows][:, cols] from unit-major z-scores zu (d, N) float32 (``standardize``), without the
    rest of C: (len(rows), len(cols)) float32, clipped to [−1, 1]. None means every unit."""
    a = zu if rows is None else zu[np.asarray(rows)]
    b = zu if cols is None else zu[np.asarray(cols)]
    c = a @ b.T
    c /= np.float32(zu.shape[1])
    np.clip(c, -1.0, 1.0, out=c)
    return c


def block_correlation(zu: np.ndarray, order: np.ndarray, max_px: int) -> tuple[np.ndarray, int]:
    """Means of C over f×f blocks of units taken in ``order``, f = ceil(d / max_px), computed
    exactly from block sums of z, Σ_{i∈I, j∈J} z_i·z_j / N = (Σ_I z_i)·(Σ_J z_j) / N, without
    forming the d×d matrix (at d = 4096, N = 1,000: a 512 × 1,000 × 512 product instead of 33 GFLOP).

    zu: (d, N) float32 from ``standardize``; order: (d,) a permutation of the units. Returns
    ((m, m) float32, f), m = ceil(d / f); edge blocks cut short average what they hold. Equal to
    block-averaging ``correlation`` reordered, up to float32 rounding (that clips entries at ±1).
    """
    d, n = zu.shape
    f = max(1, int(np.ceil(d / max_px)))
    g = zu[np.asarray(order)]
    full, m = d // f, -(-d // f)
    sums = np.empty((m, n))  # (m, N) float64 block sums; a reshape, not np.add.reduceat (10× slower)
    sums[:full] = g[: full * f].reshape(full, f, n).sum(axis=1, dtype=np.float64)
    if m > full:
        sums[full] = g[full * f:].sum(axis=0, dtype=np.float64)
    size = np.full(m, float(f))
    size[full:] = d - full * f
    out = (sums @ sums.T) / (n * np.outer(size, size))
    return out.astype(np.float32), f


def community_order(labels: np.ndarray) -> np.ndarray:
    """(d,) unit order grouping communities (label 0 first, i.e. largest first), units ascending inside."""
    labels = np.asarray(labels)
    return np.lexsort((np.arange(len(labels)), labels))


def overview_blocks(zu: np.ndarray, labelings: list[np.ndarray], max_px: int = IMAGE_MAX_PX,
                    ) -> tuple[np.ndarray, int]:
    """The Communities page's two overview panels for one snapshot, for several partitions:
    block means of C in unit order, then in ``community_order`` of each labeling.

    zu: (d, N) from ``standardize``; labelings: (d,) community labels per method. Returns
    ((1 + len(labelings), m, m) float16, f): float16 keeps 3 significant digits, plenty for a
    255-level colour map, at half the bytes.
    """
    d = zu.shape[0]
    orders = [np.arange(d)] + [community_order(lab) for lab in labelings]
    panels = [block_correlation(zu, o, max_px) for o in orders]
    return np.stack([p for p, _ in panels]).astype(np.float16), panels[0][1]


def standardize_units(x: np.ndarray, units: np.ndarray) -> np.ndarray:
    """``standardize`` of some units only: x (N, d) -> (len(units), N) float32, rows in ``units`` order
    (each unit is z-scored on its own, so this equals ``standardize(x)[units]``)."""
    units = np.asarray(units)
    uniq, inv = np.unique(units, return_inverse=True)
    return standardize(np.asarray(x[:, uniq]))[inv]
