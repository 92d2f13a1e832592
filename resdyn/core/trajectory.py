"""Transformer block coupling and trajectory regularity (METHODS §9; Aubry et al., 2407.07810).

numpy only: the "block_coupling" and "trajectories" stages, the tests and the dashboard share
these functions.

Coupling. For Jacobians J_a = U_a S_a V_aᵀ (residual parts, no skip), the coupling matrix of J_a
in the singular basis of J_b is A = U_bᵀ J_a V_b restricted to the top-K singular vectors of J_b
(a K × K matrix); its normalised miscoupling m̃(A) = ‖A − diag A‖_F / ‖A‖_F is 0 when J_b's top
singular vectors also diagonalise J_a, and close to 1 when the two are unrelated. Because the top-K
restriction takes the leading K columns, A for a smaller K is the leading block of A for a larger
one: every K is read off one product.

Trajectories. A token's trajectory x⁰..x^L is its residual state entering each block plus the
state after the last block (L + 1 points). The line-shape score LSS = n / ‖x̃ⁿ − x̃⁰‖ over the n
unit-length steps is 1 exactly when the points are collinear (and move one way), larger otherwise;
expodistance ED = Var α / (mean α)² with α^l = ln(‖x^l‖ / ‖x^{l−1}‖) is 0 exactly when the norms
grow (or shrink) geometrically.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

KS = (10, 30, 50)
"""Ranks of the top-K restriction (the paper's); only K < d is used."""
WINDOW = 11
"""States per sliding window of the windowed LSS / ED (the paper's Pythia figures)."""


def valid_ks(d: int, ks: Sequence[int] = KS) -> list[int]:
    """The K in ``ks`` that are smaller than d (METHODS §9: K ∈ {10, 30, 50}, K < d)."""
    return [int(k) for k in ks if 0 < k < d]


# ------------------------------------------------------------------------------------------------
# Coupling
# ------------------------------------------------------------------------------------------------

def miscoupling(a: np.ndarray) -> np.ndarray:
    """Normalised miscoupling m̃(A) = ‖A − diag A‖_F / ‖A‖_F of square matrices a (..., K, K).

    Returns (...) float64; NaN where A = 0 (nothing to compare).
    """
    a = np.asarray(a, dtype=np.float64)
    total = np.einsum("...ij,...ij->...", a, a)
    # The off-diagonal sum directly, not total − Σ diag²: that difference cancels to ~1e-8 when A is
    # diagonal up to rounding.
    off_a = a * ~np.eye(a.shape[-1], dtype=bool)
    off = np.einsum("...ij,...ij->...", off_a, off_a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.sqrt(off / np.where(total > 0, total, 1.0)), np.nan)


def top_singular_vectors(jac: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k singular triplets of jac (..., d, d): u (..., d, k), s (..., k), v (..., d, k), so
    that jac ≈ u diag(s) vᵀ, columns in descending order of s (float64 SVD)."""
    u, s, vt = np.linalg.svd(np.asarray(jac, dtype=np.float64))
    return u[..., :k], s[..., :k], np.swapaxes(vt[..., :k, :], -1, -2)


def coupling_matrix(jac: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A = uᵀ jac v: jac (d, d) seen in another Jacobian's top singular basis u, v (d, K) -> (K, K)."""
    return u.T @ jac @ v


def coupling_matrices(jacs: np.ndarray, k: int, factors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A^{ab} = U_bᵀ J_a V_b (top-k of J_b) for every ordered pair of n Jacobians.

    Args:
        jacs: (n, d, d) Jacobians J_a.
        k: rank of the restriction, k < d.
        factors: optional (u, v), each (n, d, ≥ k): the top singular vectors of each J_b, columns in
            descending σ. Computed with a float64 SVD when omitted.

    Returns:
        (n, n, k, k) in the dtype of ``jacs`` (float64 when factors are computed): [a, b] = A^{ab}.
        A for a smaller K is the leading block of A for a larger one.
    """
    jacs = np.asarray(jacs)
    n, d = jacs.shape[0], jacs.shape[-1]
    if not 0 < k < d:
        raise ValueError(f"K = {k} must be between 1 and d − 1 = {d - 1}")
    if factors is None:
        u, _, v = top_singular_vectors(jacs, k)
    else:
        u, v = factors[0][..., :k], factors[1][..., :k]
    flat = jacs.reshape(n * d, d)
    out = np.empty((n, n, k, k), dtype=np.result_type(jacs, u))
    for b in range(n):
        # One GEMM (n·d, d)·(d, k) per basis, then n products (k, d)·(d, k).
        out[:, b] = np.matmul(u[b].T, (flat @ v[b]).reshape(n, d, k))
    return out


def pairwise_miscoupling(jacs: np.ndarray, ks: Sequence[int],
                         factors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """m̃ of A^{ab} = U_bᵀ J_a V_b for every ordered pair of n Jacobians and every K in ``ks``.

    Args: as ``coupling_matrices`` (``factors`` must hold at least max(ks) columns).

    Returns:
        (len(ks), n, n) float64; entry [i, a, b] = m̃ of J_a in the top-ks[i] basis of J_b. The
        diagonal a = b is 0 up to rounding (each Jacobian is diagonal in its own basis).
    """
    ks = [int(k) for k in ks]
    n = np.asarray(jacs).shape[0]
    if not ks:
        return np.zeros((0, n, n))
    a = coupling_matrices(jacs, max(ks), factors)
    return np.stack([miscoupling(a[..., :k, :k]) for k in ks])


def depth_coupling(jacs: np.ndarray, ks: Sequence[int], factors=None) -> np.ndarray:
    """Depth-wise coupling of one token (METHODS §9): jacs (L, d, d) = J^l_{tt} for l = 0..L−1.

    Returns (len(ks), L, L): entry [i, l, l'] = m̃(U_{l'}ᵀ J^l V_{l'}) at K = ks[i].
    """
    return pairwise_miscoupling(jacs, ks, factors)


def token_coupling(jacs: np.ndarray, ks: Sequence[int], factors=None) -> dict[str, np.ndarray]:
    """Token-wise coupling at one layer pair (METHODS §9) over a window of w tokens.

    Args:
        jacs: (w, w, d, d) with jacs[t1, t2] = J_{t1 t2} (input token t1, output token t2, window
            positions); only t1 ≤ t2 is read (causality makes the rest zero).
        ks: ranks K.
        factors: optional (u, v) each (w, w, d, K_max), as in ``pairwise_miscoupling``.

    Returns:
        ``self`` (nK, w, w): [t, t'] = m̃ of J_{tt} in the basis of J_{t't'};
        ``fixed_input`` (nK, w, w, w): [t1, t2, t2'] = m̃ of J_{t1 t2} in the basis of J_{t1 t2'};
        ``fixed_output`` (nK, w, w, w): [t2, t1, t1'] = m̃ of J_{t1 t2} in the basis of J_{t1' t2};
        NaN where a pair is not causal (t1 > t2).
    """
    jacs = np.asarray(jacs)
    w, d = jacs.shape[0], jacs.shape[-1]
    nk = len(ks)
    if factors is None:
        idx = np.triu_indices(w)
        u = np.zeros((w, w, d, max(ks)))
        v = np.zeros_like(u)
        u[idx], _, v[idx] = top_singular_vectors(jacs[idx], max(ks))
    else:
        u, v = factors

    def sub(pairs):
        t1, t2 = zip(*pairs)
        return pairwise_miscoupling(jacs[t1, t2], ks, (u[t1, t2], v[t1, t2]))

    diag = list(zip(range(w), range(w)))
    out = {"self": sub(diag),
           "fixed_input": np.full((nk, w, w, w), np.nan),
           "fixed_output": np.full((nk, w, w, w), np.nan)}
    for t in range(w):
        later = np.arange(t, w)  # outputs t2 ≥ t1 = t
        out["fixed_input"][:, t, t:, t:] = sub([(t, t2) for t2 in later])
        earlier = np.arange(0, t + 1)  # inputs t1 ≤ t2 = t
        out["fixed_output"][:, t, :t + 1, :t + 1] = sub([(t1, t) for t1 in earlier])
    return out


def mean_offdiagonal(m: np.ndarray) -> np.ndarray:
    """Mean over l ≠ l' of (..., L, L) matrices, NaN-aware; the diagonal is trivially 0 and left out."""
    m = np.asarray(m, dtype=np.float64)
    mask = ~np.eye(m.shape[-1], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as intended
        return np.nanmean(m[..., mask], axis=-1)


# ------------------------------------------------------------------------------------------------
# Trajectory regularity
# ------------------------------------------------------------------------------------------------

def _unit_steps(traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit steps (..., n, d) between consecutive states of traj (..., n + 1, d) and whether each
    step moves (..., n); a step of length zero has no direction and is returned as 0."""
    steps = np.diff(np.asarray(traj, dtype=np.float64), axis=-2)
    norms = np.linalg.norm(steps, axis=-1, keepdims=True)
    moving = norms > 0
    return np.where(moving, steps / np.where(moving, norms, 1.0), 0.0), moving[..., 0]


def _lss(unit_sum: np.ndarray, n: np.ndarray) -> np.ndarray:
    span = np.linalg.norm(unit_sum, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, n / span, np.nan)


def line_shape_score(traj: np.ndarray) -> np.ndarray:
    """LSS of trajectories traj (..., n + 1, d) -> (...) float64 (METHODS §9).

    x̃⁰ = x⁰, x̃^l = x̃^{l−1} + (x^l − x^{l−1}) / ‖x^l − x^{l−1}‖, so x̃ⁿ − x̃⁰ is the sum of the unit
    steps and LSS = n / ‖x̃ⁿ − x̃⁰‖. A step of length zero has no direction: it is skipped (and not
    counted in n).
    """
    unit, moving = _unit_steps(traj)
    return _lss(unit.sum(-2), moving.sum(-1))


def expodistance(norms: np.ndarray) -> np.ndarray:
    """ED of norm sequences norms (..., n + 1) -> (...) float64 (METHODS §9).

    α^l = ln(‖x^l‖ / ‖x^{l−1}‖) for l = 1..n; ED = Var_l α / (Mean_l α)² (population variance).
    """
    alpha = log_growth(norms)
    mean = alpha.mean(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return alpha.var(-1) / mean**2


def log_growth(norms: np.ndarray) -> np.ndarray:
    """α^l = ln(‖x^l‖ / ‖x^{l−1}‖): norms (..., n + 1) -> (..., n) float64."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.diff(np.log(np.asarray(norms, dtype=np.float64)), axis=-1)


def _windows(x: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Sliding windows of ``width`` consecutive entries along ``axis``, appended as the last axis."""
    return np.lib.stride_tricks.sliding_window_view(x, width, axis=axis)


def window_centres(n_points: int, width: int = WINDOW) -> np.ndarray:
    """Layer index at the centre of each sliding window over n_points states: (n_points − width + 1,)."""
    return np.arange(max(n_points - width + 1, 0)) + width // 2


def lss_windows(traj: np.ndarray, width: int = WINDOW) -> np.ndarray:
    """LSS over every window of ``width`` consecutive states: traj (..., n_points, d) ->
    (..., n_points − width + 1), window j covering states j..j + width − 1 (centre ``window_centres``)."""
    if width < 2:
        raise ValueError(f"a window needs at least 2 states, got width = {width}")
    unit, moving = _unit_steps(traj)
    # Window j sums steps j..j + width − 2: differences of one cumulative sum, not a copy per window.
    zero = np.zeros(unit.shape[:-2] + (1, unit.shape[-1]))
    csum = np.concatenate([zero, np.cumsum(unit, axis=-2)], axis=-2)
    cnt = np.concatenate([np.zeros(moving.shape[:-1] + (1,)), np.cumsum(moving, axis=-1)], axis=-1)
    steps = width - 1
    return _lss(csum[..., steps:, :] - csum[..., :-steps, :], cnt[..., steps:] - cnt[..., :-steps])


def ed_windows(norms: np.ndarray, width: int = WINDOW) -> np.ndarray:
    """ED over every window of ``width`` consecutive states: norms (..., n_points) -> (..., n_windows)."""
    return expodistance(_windows(np.asarray(norms, dtype=np.float64), width, axis=-1))


def trajectory_pca(traj: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of one prompt's token trajectories, fitted on the last layer (the paper's A.2.1).

    Args:
        traj: (T, n_points, d) trajectories of the T tokens of one prompt.

    Returns:
        proj (T, n_points, n_components): every state x_t^l projected on the principal axes of the
        last-layer states {x_t^L}, after subtracting their mean; ratio (n_components,): the share of
        the last layer's variance each axis explains. Axis signs are fixed so that the largest
        |loading| of each axis is positive (deterministic across runs).
    """
    traj = np.asarray(traj, dtype=np.float64)
    last = traj[:, -1]
    mean = last.mean(0)
    centred = last - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:n_components]
    sign = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    axes = axes * np.where(sign == 0, 1.0, sign)[:, None]
    var = s**2
    ratio = var[:n_components] / var.sum() if var.sum() > 0 else np.zeros(len(axes))
    proj = (traj - mean) @ axes.T
    if proj.shape[-1] < n_components:  # fewer tokens than components: pad with zeros
        pad = np.zeros(proj.shape[:-1] + (n_components - proj.shape[-1],))
        proj, ratio = np.concatenate([proj, pad], -1), np.concatenate([ratio, np.zeros(pad.shape[-1])])
    return proj, ratio


WINDOW_METRICS = ("lss_window", "ed_window", "norm")


def window_quantiles(table):
    """Per-layer quartiles of the windowed metrics of a ``trajectories`` table, for every token
    ("all") and for last tokens only ("last"): the Block-coupling page's profiles, small enough to
    read on every render (the table itself has a row per token and state, millions at N = 1,000).

    Returns a DataFrame (scope, metric, layer, q25, median, q75, n); quantiles interpolate linearly
    (DuckDB's quantile_cont), missing values are skipped.
    """
    import pandas as pd

    frames = []
    for scope, part in (("all", table), ("last", table[table["token"] == -1])):
        g = part.groupby("layer")
        for metric in WINDOW_METRICS:
            q = g[metric].quantile([0.25, 0.5, 0.75]).unstack()
            frames.append(pd.DataFrame({"scope": scope, "metric": metric, "layer": q.index.astype(np.int32),
                                        "q25": q[0.25].to_numpy(), "median": q[0.5].to_numpy(),
                                        "q75": q[0.75].to_numpy(), "n": g[metric].count().to_numpy()}))
    out = pd.concat(frames, ignore_index=True)
    return out[out["n"] > 0].reset_index(drop=True)


# -- tables of the "trajectories" stage ------------------------------------------------------------
def trajectory_rows(traj: np.ndarray, sample: int, width: int) -> pd.DataFrame:
    """Rows of one prompt's trajectories traj (T, L + 1, d): one per (token, layer)."""
    T, n_points, _ = traj.shape
    norms = np.linalg.norm(traj, axis=-1)
    alpha = np.concatenate([np.full((T, 1), np.nan), log_growth(norms)], axis=1)
    lss_w = np.full((T, n_points), np.nan)
    ed_w = np.full((T, n_points), np.nan)
    centres = window_centres(n_points, width)
    lss_w[:, centres] = lss_windows(traj, width)
    ed_w[:, centres] = ed_windows(norms, width)
    lss = line_shape_score(traj)
    ed = expodistance(norms)
    pos = np.repeat(np.arange(T, dtype=np.int32), n_points)
    return pd.DataFrame({
        "sample": np.int32(sample), "token": pos - np.int32(T), "position": pos,
        "layer": np.tile(np.arange(n_points, dtype=np.int32), T),
        "norm": norms.ravel().astype(np.float32), "alpha": alpha.ravel().astype(np.float32),
        "lss_window": lss_w.ravel().astype(np.float32), "ed_window": ed_w.ravel().astype(np.float32),
        "lss": np.repeat(lss, n_points).astype(np.float32), "ed": np.repeat(ed, n_points).astype(np.float32),
    })


PCA_FITS = ("all", "skip_first")
"""PCA over every token (the paper's), and without the first token, whose outsized norm (an
attention sink in many trained models) can take the whole first axis."""


def pca_rows(traj: np.ndarray, sample: int) -> pd.DataFrame:
    """Rows (sample, fit, token, position, layer, pc1, pc2, var1, var2) of one prompt's PCA
    projections, one per fit in ``PCA_FITS`` (``skip_first`` only when T ≥ 3)."""
    T, n_points, _ = traj.shape
    frames = []
    for fit, first in zip(PCA_FITS, (0, 1)):
        if first and T < 3:
            continue
        proj, ratio = trajectory_pca(traj[first:])
        pos = np.repeat(np.arange(first, T, dtype=np.int32), n_points)
        frames.append(pd.DataFrame({
            "sample": np.int32(sample), "fit": fit, "token": pos - np.int32(T), "position": pos,
            "layer": np.tile(np.arange(n_points, dtype=np.int32), T - first),
            "pc1": proj[..., 0].ravel(), "pc2": proj[..., 1].ravel(), "var1": ratio[0], "var2": ratio[1],
        }))
    return pd.concat(frames, ignore_index=True)


def trajectory_summary(table: pd.DataFrame, width: int) -> dict[str, float]:
    """Median whole-depth LSS and ED over every token of every sample, and over last tokens only."""
    per = table[table["layer"] == 0]  # one row per trajectory
    last = per[per["token"] == -1]
    return {
        "trajectories.window": float(width),
        "trajectories.lss_median": float(per["lss"].median()),
        "trajectories.lss_median_last": float(last["lss"].median()),
        "trajectories.ed_median": float(per["ed"].median()),
        "trajectories.ed_median_last": float(last["ed"].median()),
    }
