"""Spectral geometry of the mean Jacobians: bottleneck, Schur dose surgery, pseudospectra.

numpy/scipy only (no torch), so the compute stages, the dashboard's live dose slider and the
tests share one implementation. Sections of /work/shared/METHODS.md:

- §5 cumulative products P_l = J̄_{L−1} ··· J̄_l and their effective rank;
- §6 the complex Schur form J̄ = Q (Λ + N) Q* in a canonical eigenvalue order, the dose
  J(c) = Q (Λ + cN) Q*, controls A and B, random-order draws and the skip dose βI + R(c);
- §11 ε-pseudospectra, the numerical range and the transient-growth curve.

Shapes and dtypes are stated per function. Mean Jacobians come in as (L, d, d) float32 (the run
store's ``jacobians.npy``); all reductions are done in float64 / complex128 unless stated.

Every Schur-type construction is affine in c per layer, J_l(c) = A_l + c B_l, so it is held as a
``DoseFamily`` (A, B). For the dose itself A = QΛQ* and B = QNQ* = J̄ − A; the skip dose adds
(β − 1)I to every layer (``chain_product``'s ``shift``). The polar dose of
``resdyn.core.surrogates`` is not affine; it implements the same ``Family`` protocol.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sl
from scipy import stats
from scipy.linalg import blas, lapack
from scipy.sparse.linalg import svds
from threadpoolctl import threadpool_limits

from resdyn.errors import ResdynError

# METHODS §5: the paper's rank of the iterative truncated SVD of the cumulative products. resdyn's
# default is the exact product (rank d); runs computed before ``cumulative_rank`` was recorded in the
# manifest were truncated at min(K_CUM, d).
K_CUM = 512
# METHODS §6: the paper's dose grid and the number of random draws of each control.
DOSE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# Doses at which the per-layer pseudospectra, numerical ranges and singular values are stored
# (c = 0 is normal, so exact and nearly free); the Schur page shows the stored dose nearest its slider.
PSEUDO_DOSES = (0.0, 1.0, 2.0)
PSEUDO_GRID = 40  # pseudospectrum grid points per axis
PSEUDO_PAD = 0.08  # margin around the numerical range, as a fraction of its larger side
NR_ANGLES = 72  # boundary points of the numerical range
N_DRAWS = 4
# Rows of schur_dose.parquet: "dose" (canonical order), controls A and B, "order_draw" (the dose in
# N_DRAWS seeded random eigenvalue orders, c ≠ 1), "skip" (βI + R(c) at SKIP_BETAS), and the other
# normal surrogates' doses and Controls A (resdyn.core.surrogates: ascending order, polar).
CONSTRUCTIONS = ("dose", "control_a", "control_b", "order_draw", "skip", "dose_ascending", "dose_polar",
                 "control_a_ascending", "control_a_polar")
SKIP_BETAS = (0.0, 0.5, 1.0)
# METHODS §6: the documented order of the eigenvalues on T's diagonal (the manifest's schur_order).
SCHUR_ORDER = "descending |λ|, then ascending arg λ"
# Moduli closer than this (relative to the spectral radius) count as equal, so conjugate pairs,
# whose |λ| agree only to rounding, are ordered by arg λ.
ORDER_TIE_RTOL = 1e-9
# Relative reconstruction error allowed for a float64 Schur form (and for the complex64 copy on disk).
SCHUR_RTOL_64 = 1e-9
SCHUR_RTOL_32 = 2e-5
# A product's singular-value mass below this fraction is dropped before its eigenvalues are taken
# (see ``product_stats``): below the float32 rounding of the product itself.
CORE_MASS_TOL = 1e-12

Progress = Callable[..., Iterable]


def _no_progress(iterable=None, desc: str = "", total: int | None = None, unit: str = "it"):
    return iterable


def single_threaded_blas(fn):
    """Run ``fn`` with one BLAS thread.

    For loops of many small BLAS calls (vectorised substitutions, Lanczos, ARPACK matvecs) the
    thread hand-offs cost more than they save; on the shared 2-core machine, under load, one
    thread was measured 10–40× faster (e.g. 0.39 s against 9.4 s for one batched solve at d = 576).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


# ------------------------------------------------------------------------------------------------
# Effective rank and Henrici departure
# ------------------------------------------------------------------------------------------------

def erank(sigma: np.ndarray) -> float:
    """Effective rank exp(H(p)), p_i = σ_i² / Σσ_j², of singular values ``sigma`` (n,) (METHODS §5).

    Scale-invariant. NaN when every σ is 0 (the zero map has no direction to count).
    """
    s = np.abs(np.asarray(sigma, dtype=np.float64))
    top = s.max(initial=0.0)
    if not np.isfinite(top) or top == 0.0:
        return float("nan")
    # Normalise first so σ² neither overflows nor underflows; scipy.stats.entropy renormalises p.
    return float(np.exp(stats.entropy((s / top) ** 2)))


def henrici_schur(t: np.ndarray) -> float:
    """Henrici departure ‖N‖_F / ‖T‖_F from an upper-triangular Schur factor ``t`` (d, d).

    Equal to sqrt(‖A‖_F² − Σ|λ|²)/‖A‖_F for A = Q T Q* (METHODS §6), without the cancellation of
    that difference.
    """
    t = np.asarray(t)
    total = np.linalg.norm(t)
    if total == 0.0:
        return 0.0
    return float(np.linalg.norm(np.triu(t, 1)) / total)


# ------------------------------------------------------------------------------------------------
# §5 Cumulative products
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cumulative:
    """Cumulative products P_l = J̄_{L−1} ··· J̄_l, l = 0..L−1 (index = injection layer)."""

    erank: np.ndarray
    """(L,) float64 effective rank of P_l (of its rank-k truncation when k < d)."""
    log10_fro: np.ndarray
    """(L,) float64 log10 ‖P_l‖_F (of the truncation when k < d; accumulated, never formed unscaled)."""
    log10_sigma: dict[int, np.ndarray]
    """layer -> (k,) float64 log10 of P_l's top-k singular values, descending (layers in ``keep``)."""
    k: int
    """rank kept at every step: d for the exact product (the default), K_cum < d when truncated."""


def cumulative_products(jacobians: np.ndarray, k: int | None = None, keep: Sequence[int] = (),
                        progress: Progress = _no_progress, dtype=np.float64) -> Cumulative:
    """Effective rank and Frobenius norm of every P_l (METHODS §5): exact unless ``k`` < d.

    Exact (k = d, the default): from the top, P_{L−1} = J̄_{L−1} and P_l = P_{l+1} J̄_l as dense
    d×d products. After each step P is divided by its Frobenius norm and log10 of that norm is
    added to a running scale, so neither d = 4096 nor L = 32 can over- or underflow. erank needs
    only σ², the eigenvalues of the Gram matrix P Pᵀ (one symmetric rank-d update and a
    values-only ``eigvalsh``, about 3× cheaper than ``svdvals`` at d = 4096); their absolute error ε‖P‖²
    moves erank by about d·ε·log(1/ε) relative, nothing at 1e-9. The layers in ``keep`` get the
    singular values themselves (``svdvals``: small σ accurate to ε‖P‖, not √ε‖P‖, for the log plot).

    Truncated (k < d; the paper's replication option, K_cum = 512): P_{L−1} = J̄_{L−1} ≈ U S Vᵀ
    (rank k), then P_l = P_{l+1} J̄_l = U (S Vᵀ J̄_l) and only the k×d matrix W = S Vᵀ J̄_l is
    decomposed, W = U' S' V'ᵀ, so P_l ≈ (U U') S' V'ᵀ. Each step keeps the top k singular values
    only, which biases erank low unless it is ≪ k (measured at d = 1024: 417 instead of 670).

    Args:
        jacobians: (L, d, d) mean Jacobians (float32 memmap is fine; each layer is read once).
        k: rank kept at every step, 1 ≤ k ≤ d (default d: exact).
        keep: injection layers whose singular values are returned.
        progress: ``ctx.progress``-like wrapper of an iterable.
        dtype: working precision of the exact product: float64 (the stages' choice) or float32
            (a quarter of the time at d = 4096; ``benchmarks/cumulative.py`` measures the erank it loses).
    """
    n_layers, d, _ = jacobians.shape
    k = d if k is None else int(k)
    if not 1 <= k <= d:
        raise ResdynError(f"cumulative rank k = {k} must be in [1, d = {d}]")
    out = Cumulative(erank=np.full(n_layers, np.nan), log10_fro=np.full(n_layers, -np.inf), log10_sigma={}, k=k)
    keep = {int(l) for l in keep}
    top_down = progress(range(n_layers - 1, -1, -1), desc="cumulative products", total=n_layers, unit="layer")
    if k == d:
        _exact_cumulative(jacobians, top_down, keep, dtype, out)
    else:
        _truncated_cumulative(jacobians, top_down, keep, k, out)
    return out


def _layer(jacobians: np.ndarray, l: int, dtype) -> np.ndarray:
    j = np.asarray(jacobians[l], dtype=dtype)
    if not np.isfinite(j).all():
        raise ResdynError(f"mean Jacobian of layer {l} has non-finite entries; recompute the jacobians stage")
    return j


def _exact_cumulative(jacobians: np.ndarray, top_down: Iterable[int], keep: set[int], dtype,
                      out: Cumulative) -> None:
    """Fill ``out`` with the exact products, P rescaled to ‖P‖_F = 1 after every step."""
    p = None
    scale = 0.0  # log10 of the factor divided out of p so far
    for l in top_down:
        j = _layer(jacobians, l, dtype)
        p = j.copy() if p is None else p @ j
        fro = float(np.linalg.norm(p))
        if fro == 0.0:  # the product is the zero map from here down
            break
        p /= fro
        scale += np.log10(fro)
        out.log10_fro[l] = scale
        if l in keep:
            s = sl.svdvals(p, check_finite=False).astype(np.float64)
            out.erank[l] = erank(s)
            with np.errstate(divide="ignore"):
                out.log10_sigma[l] = scale + np.log10(s)
        else:
            # σ² = eig(P Pᵀ), values only; numpy forms p @ p.T as one symmetric rank-d update (syrk).
            lam = sl.eigvalsh(p @ p.T, check_finite=False, overwrite_a=True).astype(np.float64)
            out.erank[l] = erank(np.sqrt(np.clip(lam, 0.0, None)))


def _truncated_cumulative(jacobians: np.ndarray, top_down: Iterable[int], keep: set[int], k: int,
                          out: Cumulative) -> None:
    """Fill ``out`` by the rank-k iterative truncated SVD (the paper's method)."""
    scale = 0.0
    s = vt = None
    for l in top_down:
        j = _layer(jacobians, l, np.float64)
        w = j if s is None else (s[:, None] * vt) @ j  # (d, d) at the top, else (k, d)
        # U is never needed for σ: W's left factor only rotates the output side of P_l.
        s, vt = sl.svd(w, full_matrices=False, check_finite=False)[1:]
        s, vt = s[:k], vt[:k]
        top = s[0]
        if top == 0.0:  # the product is the zero map from here down
            break
        scale += np.log10(top)
        s = s / top
        out.erank[l] = erank(s)
        out.log10_fro[l] = scale + np.log10(np.linalg.norm(s))
        if l in keep:
            with np.errstate(divide="ignore"):
                out.log10_sigma[l] = scale + np.log10(s)


def cumulative_rank_note(manifest: dict) -> str:
    """One sentence (Markdown) saying how a run's cumulative products were computed (METHODS §5).

    ``manifest["cumulative_rank"]`` is d for the exact product and K < d for the truncated one;
    runs from before that key was recorded were truncated at min(K_CUM, d), which is exact when
    d ≤ K_CUM.
    """
    d = manifest.get("d_model")
    rank = manifest.get("cumulative_rank")
    if d is None:
        return "Rank of the cumulative products unknown (the manifest has no d_model)."
    d = int(d)
    if rank is None:
        k = min(K_CUM, d)
        if k == d:
            return (f"Exact products: computed before resdyn recorded `cumulative_rank`, with the old rank "
                    f"min({K_CUM}, d) = d = {d}, which keeps every direction.")
        return (f"**Truncated to rank K = {k}** (min({K_CUM}, d), the rank of runs computed before resdyn "
                f"recorded `cumulative_rank`): erank is biased low unless it is ≪ K. "
                f"`--redo cumulative` computes the exact product.")
    rank = int(rank)
    if rank >= d:
        return f"Exact products (rank d = {d} at every step, rescaled with the log-norm carried aside)."
    return (f"**Truncated to rank K = {rank}** (`--cumulative-rank {rank}`, the paper's method): erank is "
            f"biased low unless it is ≪ K.")


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman ρ and two-sided p over finite pairs (NaN when fewer than 3 or a constant input)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan")
    r = stats.spearmanr(x[ok], y[ok])
    return float(r.statistic), float(r.pvalue)


# ------------------------------------------------------------------------------------------------
# §6 Schur form and dose families
# ------------------------------------------------------------------------------------------------

def schur_complex(a: np.ndarray, rtol: float = SCHUR_RTOL_64, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Complex Schur form A = Q T Q*: Q (d, d) unitary, T (d, d) upper triangular, complex128.

    A real ``a`` goes through the real Schur form and ``scipy.linalg.rsf2csf`` (the same complex
    Schur form LAPACK's zgees would give up to eigenvalue order, and 5–10× faster at d = 576,
    measured); conjugate pairs are then adjacent on T's diagonal. The order of the eigenvalues on
    the diagonal is LAPACK's, which is arbitrary, and the normal part QΛQ* of a non-normal matrix
    depends on that order: ``schur_canonical`` puts them in the documented order.

    Raises ResdynError when ‖Q T Q* − A‖_F > rtol ‖A‖_F (reconstruction check of METHODS §6);
    ``check=False`` leaves that to the caller (``schur_canonical`` checks its reordered factors).
    """
    a = np.asarray(a)
    if not np.isfinite(a).all():
        raise ResdynError("matrix has non-finite entries; cannot take its Schur form")
    if np.iscomplexobj(a):
        t, q = sl.schur(a.astype(np.complex128), output="complex")
    else:
        t, z = sl.schur(a.astype(np.float64), output="real")
        t, q = sl.rsf2csf(t, z)
    t = np.triu(t)
    if check:
        err = schur_error(q, t, a)
        if not err <= rtol:
            raise ResdynError(f"Schur reconstruction error {err:.2e} exceeds {rtol:.0e}; the matrix may be corrupt")
    return q, t


def schur_error(q: np.ndarray, t: np.ndarray, a: np.ndarray, shift: float = 0.0) -> float:
    """Relative error ‖shift·I + Q T Q* − A‖_F / ‖A‖_F, computed in complex128."""
    q = np.asarray(q, np.complex128)
    rec = (q @ np.asarray(t, np.complex128)) @ q.conj().T
    if shift:
        rec[np.diag_indices_from(rec)] += shift
    a = np.asarray(a, np.complex128)
    return float(np.linalg.norm(rec - a) / max(np.linalg.norm(a), np.finfo(float).tiny))


def canonical_order(lam: np.ndarray, rtol: float = ORDER_TIE_RTOL) -> np.ndarray:
    """The permutation p (d,) int64 such that ``lam[p]`` is in ``SCHUR_ORDER`` (METHODS §6).

    Descending |λ|; moduli within rtol·max|λ| of their neighbour in that order form one tie group
    (so a conjugate pair, whose moduli agree only to rounding, is a tie), ordered by ascending
    arg λ ∈ (−π, π] (a negative real λ has arg π, whatever the sign of its zero imaginary part).
    Ties left after that (repeated eigenvalues) keep their input order.
    """
    lam = np.asarray(lam, np.complex128)
    mod = np.abs(lam)
    arg = np.angle(lam)
    arg = np.where(arg <= -np.pi, np.pi, arg)
    by_mod = np.argsort(-mod, kind="stable")
    tol = rtol * max(float(mod.max(initial=0.0)), np.finfo(float).tiny)
    group = np.concatenate([[0], np.cumsum(np.abs(np.diff(mod[by_mod])) > tol)])
    return by_mod[np.lexsort((arg[by_mod], group))]


def reorder_schur(q: np.ndarray, t: np.ndarray, perm: np.ndarray, fast: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A Schur form of the same matrix with T's diagonal permuted: new diag(T)[k] = diag(t)[perm[k]].

    Args:
        q: (d, d) unitary, t: (d, d) upper triangular, with Q T Q* = A (any dtype; computed in
            complex128, inputs untouched).
        perm: (d,) a permutation of 0..d−1.

        fast: allow the eigenvector route (below) when it is the cheaper one.

    Returns Q', T' (d, d) complex128 with Q' T' Q'* = A to rounding and diag(T') exactly
    diag(t)[perm]. By default through LAPACK ztrexc's unitary Givens swaps of adjacent diagonal
    entries (one per inversion of ``perm``, ≤ d²/2, each O(d) flops). With ``fast``, an order with
    more than about d²/10 inversions goes through the QR factorisation of the permuted
    eigenvector matrix instead (``_reorder_by_eigenvectors``, used when its result checks out to
    ``REORDER_RTOL``): measured at d = 576 on one core, loaded machine, 0.15 CPU-seconds for a
    random order against ztrexc's 0.37–0.44.

    The two routes give the same Schur vectors up to unit phases, Q'D and D*T'D with D diagonal
    unitary. Whatever uses Q' and T' together (QΛQ*, Q(Λ + cN)Q*, hence every dose) does not see
    D, but T's off-diagonal entries do, and control B puts N = triu(T) itself in a random basis:
    so the stored canonical factors keep ztrexc's phases (``fast`` off), and only the random-order
    draws, which use nothing but their normal part, take the fast route.
    """
    perm = np.asarray(perm, np.int64)
    d = len(perm)
    if sorted(perm.tolist()) != list(range(d)) or np.shape(t) != (d, d):
        raise ResdynError(f"reorder_schur needs a permutation of 0..{d - 1} matching T's size")
    # ztrexc costs O(d) per inversion of perm, the eigenvector route O(d³) whatever the order:
    # measured break-even near d²/10 inversions (a random order has d²/4; LAPACK's order is often
    # close to the canonical one).
    inversions = int(np.count_nonzero(np.triu(perm[:, None] > perm[None, :], 1)))
    routed = _reorder_by_eigenvectors(np.asarray(t, np.complex128), perm) if fast and inversions > d * d / 10 else None
    if routed is not None:
        w, t_new = routed
        return np.asarray(q, np.complex128) @ w, t_new
    return _reorder_by_swaps(q, t, perm)


# Largest ‖strict lower part‖ + ‖diagonal error‖ of W*TW, relative to ‖T‖_F, for which the
# eigenvector route of ``reorder_schur`` is accepted (measured: ~2e-15 on SmolLM2's layers at d = 576).
REORDER_RTOL = 1e-12


def _triangular_eigenvectors(t: np.ndarray, block: int = 64) -> np.ndarray:
    """Right eigenvectors X (d, d) complex128 of an upper-triangular ``t`` (d, d): T X = X diag(T).

    Column k has X[k, k] = 1 and zeros below; above, back-substitution
    X[i, k] = −(Σ_{m>i} T[i, m] X[m, k]) / (T[i, i] − T[k, k]), one row for every column at
    once (the off-diagonal blocks as one BLAS-3 product, as in ``_solve_shifted_upper``). A
    denominator below ε·max|λ| is raised to that size (LAPACK ztrevc's rule), so repeated
    eigenvalues give nearly parallel columns rather than a division by zero; the caller checks
    the result. Columns are scaled to unit norm.
    """
    d = t.shape[0]
    lam = np.diag(t).copy()
    floor = np.finfo(np.float64).eps * max(float(np.abs(lam).max(initial=0.0)), np.finfo(np.float64).tiny)
    x = np.zeros((d, d), np.complex128)
    cols = np.arange(d)
    for e in range(d, 0, -block):
        s = max(0, e - block)
        r = -(t[s:e, e:] @ x[e:]) if e < d else np.zeros((e - s, d), np.complex128)
        for i in range(e - 1, s - 1, -1):
            v = r[i - s]
            if i + 1 < e:
                v = v - t[i, i + 1:e] @ x[i + 1:e]
            den = t[i, i] - lam
            den = np.where(np.abs(den) < floor, floor, den)
            row = v / den
            row[cols <= i] = 0.0
            row[i] = 1.0
            x[i] = row
    return x / np.linalg.norm(x, axis=0)


def _reorder_by_eigenvectors(t: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, T') with T' = W* T W upper triangular and diag(T') = diag(T)[perm], or None.

    The first k columns of a Schur basis span the invariant subspace of the first k eigenvalues
    on the diagonal, so for a diagonalisable T the Schur basis in any order is the QR
    factorisation of the eigenvector matrix with its columns in that order: X[:, perm] = W R.
    That is one back-substitution and one Householder QR (BLAS-3), about 3× faster at d = 576
    than ztrexc's ~d²/4 Givens swaps of a random order. Its accuracy degrades with the
    eigenvector condition number, so the result is used only when W*TW is upper triangular with
    the permuted diagonal to ``REORDER_RTOL`` (measured cond(X) ≈ 1e3–6e3 on SmolLM2's layers,
    where it agrees with ztrexc's normal part QΛQ* to 1e-14); otherwise (repeated or clustered
    eigenvalues) None, and ``reorder_schur`` swaps.
    """
    lam = np.diag(t)[perm]
    with np.errstate(all="ignore"):
        x = _triangular_eigenvectors(t)[:, perm]
        if not np.isfinite(x).all():
            return None
        w = np.linalg.qr(x)[0]
        tw = w.conj().T @ (t @ w)
    err = np.linalg.norm(np.tril(tw, -1)) + np.linalg.norm(np.diag(tw) - lam)
    if not err <= REORDER_RTOL * np.linalg.norm(t):
        return None
    tw = np.triu(tw)
    tw[np.diag_indices_from(tw)] = lam  # the exact eigenvalues, as ztrexc keeps them
    return w, tw


def _reorder_by_swaps(q: np.ndarray, t: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``reorder_schur`` by LAPACK ztrexc: adjacent Givens swaps, exact for any T (slower)."""
    d = len(perm)
    t = np.array(t, np.complex128, order="F")  # copies: ztrexc overwrites in place
    q = np.array(q, np.complex128, order="F")
    at = list(range(d))  # at[k] = original index of the eigenvalue now at position k
    for k, want in enumerate(perm.tolist()):
        p = at.index(want, k)
        if p == k:
            continue
        # Move the eigenvalue at p up to k (1-based for LAPACK); those in between shift down.
        t, q, info = lapack.ztrexc(t, q, p + 1, k + 1, overwrite_a=1, overwrite_q=1)
        if info != 0:
            raise ResdynError(f"LAPACK ztrexc failed to reorder the Schur form (info = {info})")
        at.insert(k, at.pop(p))
    return q, np.triu(t)


def schur_canonical(a: np.ndarray, rtol: float = SCHUR_RTOL_64) -> tuple[np.ndarray, np.ndarray]:
    """Complex Schur form A = Q T Q* with T's diagonal in ``SCHUR_ORDER`` (METHODS §6), complex128.

    ``schur_complex`` (LAPACK's order) followed by ``reorder_schur``. Raises ResdynError when the
    reordered factors reproduce A only beyond ``rtol`` (relative Frobenius error).
    """
    q, t = schur_complex(a, rtol, check=False)  # checked once, after the reorder
    q, t = reorder_schur(q, t, canonical_order(np.diag(t)))
    err = schur_error(q, t, a)
    if not err <= rtol:
        raise ResdynError(f"reordered Schur reconstruction error {err:.2e} exceeds {rtol:.0e}")
    return q, t


def random_order_layer(q: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A Schur form of Q T Q* with its eigenvalues in a uniformly random order (``rng.permutation``):
    (Q', T') (d, d) complex128, by ``reorder_schur``'s fast route (Schur vectors up to phases, which
    no dose sees). The ordering band of METHODS §6 is the dose in a few such orders."""
    return reorder_schur(q, t, rng.permutation(np.shape(t)[0]), fast=True)


def normal_part(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Q Λ Q* (d, d), Λ = diag(T): the normal matrix with the same spectrum and Schur basis."""
    return (q * np.diag(t)) @ q.conj().T


def dosed_schur_factor(t: np.ndarray, c: float, shift: float = 0.0) -> np.ndarray:
    """shift·I + Λ + cN (d, d), same dtype as ``t``: J(c) written in its Schur basis.

    J(c) = Q (this) Q* has the same singular values, spectrum, numerical range and
    pseudospectra as this upper-triangular matrix (all unitarily invariant).
    """
    t = np.asarray(t)
    tc = np.triu(t, 1) * t.dtype.type(c)
    tc[np.diag_indices_from(tc)] = np.diag(t) + t.dtype.type(shift)
    return tc


def dose_matrix(q: np.ndarray, t: np.ndarray, c: float, shift: float = 0.0) -> np.ndarray:
    """J(c) = shift·I + Q (Λ + cN) Q* (d, d) complex, N = strictly upper part of T (METHODS §6)."""
    return (q @ dosed_schur_factor(t, c, shift)) @ np.asarray(q).conj().T


def haar_unitary(d: int, rng: np.random.Generator) -> np.ndarray:
    """(d, d) complex128 Haar-random unitary (``scipy.stats.unitary_group``)."""
    return stats.unitary_group.rvs(d, random_state=rng)


class Family(Protocol):
    """Per-layer operators J_l(c) of one dose construction, for ``chain_product``.

    ``DoseFamily`` (affine in c) has its own fast chain; a family that is not affine (the polar
    dose, ``resdyn.core.surrogates.PolarFamily``) may provide ``segment(c, start, stop, shift)``
    with ``_segment_product``'s contract, else its layers are multiplied one by one.
    """

    @property
    def n_layers(self) -> int: ...

    def layer(self, l: int, c: float) -> np.ndarray:
        """J_l(c) (d, d)."""


@dataclass(frozen=True)
class DoseFamily:
    """Per-layer affine operators J_l(c) = A_l + c·B_l of one dose construction."""

    a: np.ndarray
    """(L, d, d) complex64 (float32 for a real construction), J_l(0)."""
    b: np.ndarray
    """(L, d, d) same dtype, dJ_l/dc."""

    @property
    def n_layers(self) -> int:
        return self.a.shape[0]

    def layer(self, l: int, c: float) -> np.ndarray:
        """J_l(c) (d, d), the family's dtype."""
        return self.a[l] + self.a.dtype.type(c) * self.b[l]


def family_from_layers(layers: Iterable[tuple[np.ndarray, np.ndarray]], n_layers: int, d: int) -> DoseFamily:
    """Stack per-layer (A_l, B_l) pairs, each (d, d), into a complex64 ``DoseFamily``."""
    a = np.empty((n_layers, d, d), np.complex64)
    b = np.empty((n_layers, d, d), np.complex64)
    for l, (al, bl) in enumerate(layers):
        a[l], b[l] = al, bl
    return DoseFamily(a, b)


def dose_layer(q: np.ndarray, t: np.ndarray, j: np.ndarray, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of the dose for one layer: A = shift·I + QΛQ*, B = J̄ − A = QNQ* (to rounding).

    ``j`` is the layer's mean Jacobian (d, d); shift = 1 when (q, t) are Schur factors of
    R = J̄ − I (mode R of METHODS §6, kept for the test that it equals the dose of J̄ in the same
    eigenvalue order). B is taken as J̄ − A so that c = 1 reproduces J̄ to the rounding of J̄ itself.
    """
    a = normal_part(np.asarray(q, np.complex128), np.asarray(t, np.complex128))
    if shift:
        a[np.diag_indices_from(a)] += shift
    return a, np.asarray(j, np.complex128) - a


def control_a_layer(q: np.ndarray, t: np.ndarray, rng: np.random.Generator, shift: float = 0.0,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Control A (METHODS §6): A = shift·I + QΛQ*, B = M with ‖M‖_F = ‖N‖_F, so ‖cB‖_F = c‖N‖_F.

    M is a real i.i.d. standard Gaussian matrix rescaled (the paper: "drawn i.i.d. Gaussian").
    """
    a, _ = dose_layer(q, t, np.zeros(np.shape(t)), shift)
    g = rng.standard_normal(np.shape(t))
    return a, g * (np.linalg.norm(np.triu(t, 1)) / np.linalg.norm(g))


def control_b_layer(q: np.ndarray, t: np.ndarray, rng: np.random.Generator, shift: float = 0.0,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Control B (METHODS §6): the trained Λ and N in a Haar-random basis U: A = shift·I + UΛU*, B = UNU*."""
    u = haar_unitary(np.shape(t)[0], rng)
    a, _ = dose_layer(u, t, np.zeros(np.shape(t)), shift)
    return a, (u @ np.triu(np.asarray(t, np.complex128), 1)) @ u.conj().T


# ------------------------------------------------------------------------------------------------
# Products of a dose family and their statistics
# ------------------------------------------------------------------------------------------------

def normalised_product(p: np.ndarray, steps: Iterable[Callable[[np.ndarray], np.ndarray]],
                       ) -> tuple[np.ndarray, float]:
    """Apply each ``step(p) -> M p`` to ``p`` in turn, dividing the product by max|p| after every
    step so it neither over- nor underflows. Returns (P̂, log10 scale) with P = 10**scale · P̂; stops
    early (the scale so far) when the product becomes zero or non-finite. The one loop of every
    family's segment (affine, generic, polar: ``surrogates.PolarFamily.segment``)."""
    scale = 0.0
    for step in steps:
        p = step(p)
        top = float(np.abs(p).max())
        if top == 0.0 or not np.isfinite(top):
            return p, scale
        scale += np.log10(top)
        p /= top
    return p, scale


def _add_shift(m: np.ndarray, shift) -> np.ndarray:
    """``m`` + shift·I in place (nothing for shift 0); returns ``m``."""
    if shift:
        m.flat[:: m.shape[0] + 1] += shift
    return m


def _segment_product(family: Family, c: float, start: int, stop: int, shift: float = 0.0,
                     ) -> tuple[np.ndarray, float]:
    """(J_{stop−1}(c) + shift·I) ··· (J_start(c) + shift·I) as (P̂ in the family's dtype, log10
    scale), max-normalised per step."""
    if not isinstance(family, DoseFamily):
        if hasattr(family, "segment"):
            return family.segment(c, start, stop, shift)
        return _generic_segment(family, c, start, stop, shift)
    dt = family.a.dtype.type
    cc, sh = dt(c), dt(shift)
    p = _add_shift(family.a[start] + cc * family.b[start], sh)
    buf = np.empty_like(p)  # each layer's A + cB is formed in place, one buffer for the segment

    def step(l):
        def apply(p):
            np.multiply(family.b[l], cc, out=buf)
            np.add(buf, family.a[l], out=buf)
            return _add_shift(buf, sh) @ p
        return apply

    return normalised_product(p, (step(l) for l in range(start + 1, stop)))


def _generic_segment(family: Family, c: float, start: int, stop: int, shift: float = 0.0,
                     ) -> tuple[np.ndarray, float]:
    """``_segment_product`` for any family, through its ``layer(l, c)``."""
    p = _add_shift(np.array(family.layer(start, c)), shift)
    steps = ((lambda p, l=l: _add_shift(np.array(family.layer(l, c)), shift) @ p) for l in range(start + 1, stop))
    return normalised_product(p, steps)


def chain_product(family: Family, c: float, workers: int = 2, shift: float = 0.0) -> tuple[np.ndarray, float]:
    """P(c) = (J_{L−1}(c) + shift·I) ··· (J_0(c) + shift·I), dense, with per-step max-normalisation.

    ``shift`` = β − 1 gives the skip dose J_l(c, β) = βI + R_l(c) = (β − 1)I + J_l(c) (METHODS §6:
    R_l(c) = Q(Λ − I + cN)Q* shares J_l(c)'s Schur vectors), so β = 1 is the dose itself and
    β = 0 the residual branches alone.

    Returns (P̂ (d, d) in the family's dtype, complex64 or float32, log10 scale) with P(c) = 10**scale · P̂. Cost: L−1 complex64
    d×d products (20 ms each at d = 576 on one core). The chain is cut into ``workers``
    contiguous segments multiplied in parallel Python threads (numpy releases the GIL), each
    with single-threaded BLAS where the caller capped it: on the 2-core machine this uses both
    cores without OpenBLAS's own threading, which was measured to collapse under load. The cut
    is fixed by (L, workers), so results are reproducible to the bit.
    """
    n = family.n_layers
    workers = max(1, min(int(workers), n // 4))  # short chains are not worth a thread
    if workers == 1:
        return _segment_product(family, c, 0, n, shift)
    cuts = np.linspace(0, n, workers + 1).round().astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda ab: _segment_product(family, c, *ab, shift), zip(cuts[:-1], cuts[1:])))
    p, scale = parts[0]
    for q, s in parts[1:]:
        p = q @ p
        top = float(np.abs(p).max())
        if top == 0.0 or not np.isfinite(top):
            break
        p /= top
        scale += s + np.log10(top)
    return p, scale


@dataclass(frozen=True)
class ProductStats:
    erank: float
    log10_fro: float
    henrici: float
    rank_used: int
    """size of the core whose eigenvalues gave Henrici (d when the full matrix was used)."""


def product_stats(p: np.ndarray, log10_scale: float = 0.0, mass_tol: float = CORE_MASS_TOL) -> ProductStats:
    """erank, log10‖P‖_F and Henrici δ(P) of P = 10**log10_scale · p, p (d, d) (METHODS §5–6).

    Henrici needs Σ|λ_i(P)|² (eigenvalues of a product are not products of eigenvalues). From the
    SVD P = U S V*, the eigenvalues of P_r = U_r S_r V_r* are those of the r×r core S_r V_r* U_r
    plus zeros, where r keeps all but ``mass_tol`` of Σσ². Dropping that tail is a perturbation
    of P no larger than the float32 rounding of the product, so it costs no accuracy, and trained
    products (erank ~ 10) need an r ≪ d eigensolve. When r > 0.7 d the full eigvals is cheaper.
    """
    p = np.asarray(p)
    if not np.iscomplexobj(p) and p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)  # a real product stays real: its SVD is 4× cheaper than a complex one
    top = float(np.abs(p).max(initial=0.0))
    if top == 0.0 or not np.isfinite(top):
        return ProductStats(float("nan"), float("-inf") if top == 0.0 else float("nan"), float("nan"), 0)
    p = p / p.real.dtype.type(top)
    scale = log10_scale + np.log10(top)
    d = p.shape[0]
    # The SVD runs in p's precision (complex64 from chain_product: 3× faster than complex128 at
    # d = 576, and the product itself carries float32 rounding); sums are taken in float64.
    u, s, vh = sl.svd(p, check_finite=False)
    s = s.astype(np.float64)
    mass = s**2
    fro2 = mass.sum()
    tail = np.cumsum(mass[::-1])[::-1]  # tail[i] = Σ_{j≥i} σ_j²
    r = max(int(np.searchsorted(-tail, -mass_tol * fro2)), 1)  # first i with tail[i] ≤ tol·fro2
    if r > 0.7 * d:
        lam = sl.eigvals(p, check_finite=False)
        r = d
    else:
        core = (s[:r, None] * vh[:r].astype(np.complex128)) @ u[:, :r].astype(np.complex128)
        lam = sl.eigvals(core, check_finite=False)
    hen = float(np.sqrt(max(fro2 - float(np.sum(np.abs(lam.astype(np.complex128)) ** 2)), 0.0) / fro2))
    return ProductStats(erank=erank(s), log10_fro=float(scale + 0.5 * np.log10(fro2)), henrici=hen, rank_used=r)


def family_stats(family: Family, c: float, beta: float = 1.0) -> ProductStats:
    """``product_stats`` of the full product P_{0:L−1}(c, β) of ``family``, each layer βI + R_l(c)."""
    return product_stats(*chain_product(family, c, shift=float(beta) - 1.0))


# ------------------------------------------------------------------------------------------------
# §11 Pseudospectra, numerical range, transient growth
# ------------------------------------------------------------------------------------------------

def _solve_shifted_upper(t: np.ndarray, z: np.ndarray, rhs: np.ndarray, block: int = 64) -> np.ndarray:
    """Solve (T − z_j I) x_j = b_j for every shift at once: T (d, d) upper triangular, z (n,), rhs (d, n).

    Blocked back-substitution: the off-diagonal blocks are one BLAS-3 product for all shifts, the
    diagonal blocks a row recursion vectorised over shifts (~100× faster than one LAPACK trtrs
    per shift at d = 576, 1,600 shifts, measured).
    """
    d = t.shape[0]
    x = np.empty_like(rhs)
    diag = np.diag(t)
    for e in range(d, 0, -block):
        s = max(0, e - block)
        r = rhs[s:e].copy()
        if e < d:
            r -= t[s:e, e:] @ x[e:]
        for i in range(e - 1, s - 1, -1):
            v = r[i - s]
            if i + 1 < e:
                v = v - t[i, i + 1:e] @ x[i + 1:e]
            x[i] = v / (diag[i] - z)
    return x


def _solve_shifted_lower(lo: np.ndarray, z: np.ndarray, rhs: np.ndarray, block: int = 64) -> np.ndarray:
    """Forward-substitution twin of ``_solve_shifted_upper`` for lower-triangular ``lo``."""
    d = lo.shape[0]
    x = np.empty_like(rhs)
    diag = np.diag(lo)
    for s in range(0, d, block):
        e = min(d, s + block)
        r = rhs[s:e].copy()
        if s > 0:
            r -= lo[s:e, :s] @ x[:s]
        for i in range(s, e):
            v = r[i - s]
            if i > s:
                v = v - lo[i, s:i] @ x[s:i]
            x[i] = v / (diag[i] - z)
    return x


@single_threaded_blas
def sigma_min_grid(t: np.ndarray, z: np.ndarray, max_iter: int = 25, rtol: float = 1e-2,
                   seed: int = 0) -> np.ndarray:
    """σ_min(zI − T) for every z (n,) complex, T (d, d) upper triangular (a Schur factor).

    σ_min(zI − T) = σ_min(zI − A) for A = QTQ*, so the ε-pseudospectrum {z : σ_min < ε} of A
    comes from T alone (METHODS §11). A diagonal T is normal: σ_min = min_i |z − λ_i| exactly.
    Otherwise: Lanczos on (T − z)^{-*}(T − z)^{-1}, whose largest eigenvalue is 1/σ_min², for all
    shifts at once (EigTool's inverse-Lanczos idea, vectorised over the grid), in complex64,
    stopped when every shift's Ritz value moved less than ``rtol``. Lanczos from below means the
    estimate of σ_min is an upper bound that tightens with each step.

    Returns (n,) float64.
    """
    t = np.asarray(t)
    z = np.asarray(z, np.complex128).ravel()
    lam = np.diag(t).astype(np.complex128)
    if not np.any(np.triu(t, 1)):
        return np.abs(z[:, None] - lam[None, :]).min(axis=1)
    d, n = t.shape[0], z.size
    t32 = np.ascontiguousarray(t, np.complex64)
    th32 = np.ascontiguousarray(t32.conj().T)
    # Keep exact hits of an eigenvalue finite: the answer there is ~0 anyway.
    tiny = np.float32(1e-6) * max(float(np.abs(lam).max()), 1.0)
    zz = z.astype(np.complex64)
    hit = np.abs(lam[None, :] - z[:, None]).min(axis=1) < tiny
    zz[hit] += tiny
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((d, n)) + 1j * rng.standard_normal((d, n))).astype(np.complex64)
    v /= np.linalg.norm(v, axis=0)
    v_prev = np.zeros_like(v)
    beta = np.zeros(n, np.float32)
    alphas = np.zeros((n, max_iter))
    betas = np.zeros((n, max_iter))
    ritz_old = np.zeros(n)
    result = np.zeros(n)
    active = np.arange(n)  # shifts still iterating; converged ones are frozen and dropped
    for it in range(max_iter):
        za = zz[active]
        w = _solve_shifted_lower(th32, za.conj(), _solve_shifted_upper(t32, za, v))
        w -= beta * v_prev
        alpha = np.real(np.einsum("ij,ij->j", v.conj(), w))
        w -= alpha * v
        beta = np.linalg.norm(w, axis=0).astype(np.float32)
        alphas[active, it] = alpha
        betas[active, it] = beta
        m = it + 1
        tri = np.zeros((active.size, m, m))
        idx = np.arange(m)
        tri[:, idx, idx] = alphas[active, :m]
        tri[:, idx[1:], idx[:-1]] = betas[active, :m - 1]
        tri[:, idx[:-1], idx[1:]] = betas[active, :m - 1]
        ritz = np.linalg.eigvalsh(tri)[:, -1]
        done = (np.abs(ritz - ritz_old[active]) <= rtol * np.abs(ritz)) & (it > 0)
        done |= beta <= 1e-6 * np.abs(ritz)  # Krylov space exhausted: the Ritz value is exact
        ritz_old[active] = ritz
        if it + 1 == max_iter or m == d:
            result[active] = ritz
            break
        result[active[done]] = ritz[done]
        keep = ~done
        if not keep.any():
            break
        active = active[keep]
        v, w, beta = v[:, keep], w[:, keep], beta[keep]
        v_prev, v = v, w / beta
    return 1.0 / np.sqrt(np.maximum(result, np.finfo(float).tiny))


def pseudospectrum_grid(t: np.ndarray, n: int = 40, pad: float = 0.25, around: np.ndarray | None = None,
                        **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 σ_min(zI − T) on an n×n grid (METHODS §11).

    The box is the bounding box of ``around`` (complex points; default the spectrum diag(T))
    widened by ``pad`` × its larger side (at least 0.05·max(1, ρ)). With ``around`` = the
    numerical range W, every ε-pseudospectrum with ε below the margin lies inside the box,
    because σ_ε ⊂ W + ε-disc.

    Returns x (n,), y (n,) float64 and log10_sigma_min (n, n) float64 indexed [iy, ix].
    """
    x, y = pseudospectrum_box(np.diag(t), around, n, pad)
    z = (x[None, :] + 1j * y[:, None]).ravel()
    smin = sigma_min_grid(t, z, **kwargs)
    with np.errstate(divide="ignore"):
        return x, y, np.log10(smin).reshape(n, n)


def pseudospectrum_box(lam: np.ndarray, around: np.ndarray | None = None, n: int = 40,
                       pad: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """The grid axes x (n,), y (n,) of ``pseudospectrum_grid`` for spectrum ``lam`` (complex)."""
    lam = np.asarray(lam)
    pts = lam if around is None else np.concatenate([lam, np.asarray(around)])
    lo_x, hi_x, lo_y, hi_y = pts.real.min(), pts.real.max(), pts.imag.min(), pts.imag.max()
    margin = max(pad * max(hi_x - lo_x, hi_y - lo_y), 0.05 * max(1.0, float(np.abs(lam).max())))
    return np.linspace(lo_x - margin, hi_x + margin, n), np.linspace(lo_y - margin, hi_y + margin, n)


@single_threaded_blas
def numerical_range(a: np.ndarray, n_angles: int = 72, method: str = "auto", steps: int = 40,
                    seed: int = 0) -> np.ndarray:
    """Boundary points of the numerical range W(A) = {x*Ax : ‖x‖ = 1}, A (d, d) (Johnson 1978).

    For each angle θ the top eigenvector v of the Hermitian part H_θ = (e^{iθ}A + e^{−iθ}A*)/2
    gives the boundary point v*Av where the supporting line {Re(e^{iθ}z) = λ_max(H_θ)} touches
    W(A). W is unitarily invariant, so a Schur factor T gives the same set as A = QTQ*.

    Methods: a diagonal (normal) A is exact and cheap: the point is the eigenvalue maximising
    Re(e^{iθ}λ), so W is the convex hull of the spectrum. "dense": ``eigh`` per angle (exact,
    O(d³) per angle). "lanczos": ``steps`` Lanczos steps with full reorthogonalisation for all
    angles at once (two BLAS-3 products per step); the Ritz vector v gives a point v*Av that is
    always inside W, at most (λ_max − Ritz value) from the supporting line. "auto": dense for
    d ≤ 64, else Lanczos.

    Returns (n_angles,) complex128, in angle order (a closed polygon once the first point is repeated).
    """
    a = np.asarray(a, np.complex128)
    d = a.shape[0]
    theta = np.linspace(0.0, 2.0 * np.pi, n_angles, endpoint=False)
    rot = np.exp(1j * theta)
    off = a.copy()
    off[np.diag_indices_from(off)] = 0.0
    if not np.any(off):
        lam = np.diag(a)
        return lam[np.argmax((rot[:, None] * lam[None, :]).real, axis=1)]
    if method == "auto":
        method = "dense" if d <= 64 else "lanczos"
    if method == "dense":
        ah = a.conj().T
        vs = np.stack([sl.eigh(0.5 * (r * a + np.conj(r) * ah), subset_by_index=[d - 1, d - 1],
                               check_finite=False)[1][:, 0] for r in rot], axis=1)
    elif method == "lanczos":
        vs = _top_hermitian_part_vectors(a, rot, min(steps, d), seed)
    else:
        raise ValueError(f"unknown method {method!r}")
    return np.einsum("dm,dm->m", vs.conj(), a @ vs) / np.einsum("dm,dm->m", vs.conj(), vs)


def _top_hermitian_part_vectors(a: np.ndarray, rot: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """(d, m) Ritz vectors of the top eigenvalue of H_θ = (rA + r̄A*)/2 for each r in ``rot`` (m,).

    The basis is kept angle-major, (m, steps, d), so the full reorthogonalisation is one batched
    matrix-vector product per angle against a contiguous block, without conjugating the basis:
    B*w = conj(B conj(w)). (Held in step-major order with ``einsum``, the reorthogonalisation
    and the conjugated copies took two thirds of the function's time at d = 576.)

    An upper-triangular A (a Schur factor, as the pseudospectra stage passes) is applied with
    triangular products (BLAS ztrmm): half the flops of a dense product, the same complex128
    arithmetic (1.4 against 2.2 ms per product at d = 576 and 72 angles, one core, measured).
    """
    d, m = a.shape[0], rot.size
    if not np.any(np.tril(a, -1)):
        apply_both = _triangular_pair(a)
    else:
        ah = a.conj().T

        def apply_both(v):
            return a @ v, ah @ v
    rng = np.random.default_rng(seed)

    def project_out(basis: np.ndarray, v: np.ndarray) -> np.ndarray:
        """v (d, m) minus its component in span(basis[k]) for each angle k; basis (m, j, d)."""
        if not basis.shape[1]:
            return v
        h = np.matmul(basis, v.T.conj()[:, :, None]).conj()  # (m, j, 1): B_k* v_k
        return v - np.matmul(h.transpose(0, 2, 1), basis)[:, 0, :].T

    def fresh(basis: np.ndarray) -> np.ndarray:
        v = rng.standard_normal((d, m)) + 1j * rng.standard_normal((d, m))
        v = project_out(basis, v)
        return v / np.linalg.norm(v, axis=0)

    basis = np.empty((m, steps, d), np.complex128)
    alphas = np.zeros((m, steps))
    betas = np.zeros((m, steps))
    v = fresh(basis[:, :0])
    n = steps
    for j in range(steps):
        basis[:, j] = v.T
        av, ahv = apply_both(v)
        w = 0.5 * (av * rot + ahv * rot.conj())
        alphas[:, j] = np.real(np.einsum("dm,dm->m", v.conj(), w))
        if j + 1 == steps:
            break
        # Full reorthogonalisation, twice ("twice is enough"); the basis is small (steps ≤ 40).
        for _ in range(2):
            w = project_out(basis[:, :j + 1], w)
        beta = np.linalg.norm(w, axis=0)
        # An exhausted Krylov space restarts from a fresh orthogonal vector with zero coupling,
        # which keeps every Ritz value inside the true spectrum.
        dead = beta <= 1e-12 * np.maximum(np.abs(alphas[:, j]), 1.0)
        if dead.all() and j + 1 >= d:
            n = j + 1
            break
        v = w / np.where(dead, 1.0, beta)
        if dead.any():
            v[:, dead] = fresh(basis[:, :j + 1])[:, dead]
            beta = np.where(dead, 0.0, beta)
        betas[:, j] = beta
    tri = np.zeros((m, n, n))
    idx = np.arange(n)
    tri[:, idx, idx] = alphas[:, :n]
    tri[:, idx[1:], idx[:-1]] = betas[:, :n - 1]
    tri[:, idx[:-1], idx[1:]] = betas[:, :n - 1]
    y = np.linalg.eigh(tri)[1][:, :, -1]  # (m, n) top eigenvector of each tridiagonal
    return np.matmul(y[:, None, :], basis[:, :n])[:, 0, :].T


def _triangular_pair(a: np.ndarray):
    """For upper-triangular a (d, d) complex128: v (d, m) -> (a v, a* v) by two ztrmm calls."""
    af = np.asfortranarray(a, np.complex128)

    def apply_both(v):
        vf = np.asfortranarray(v, np.complex128)
        return (blas.ztrmm(1.0, af, vf, side=0, lower=0),
                blas.ztrmm(1.0, af, vf, side=0, lower=0, trans_a=2))
    return apply_both


def _top_singular(g: np.ndarray) -> float:
    """‖G‖₂: dense for d ≤ 64, else ARPACK Lanczos (``svds``, k = 1), 10–20 ms at d = 576.

    Power iteration was measured 5–10× slower here: adjacent products have σ₁ ≈ σ₂.
    """
    if min(g.shape) <= 64:
        return float(np.linalg.norm(g.astype(np.float64), 2))
    return float(svds(g, k=1, tol=1e-6, return_singular_vectors=False)[0])


@single_threaded_blas
def transient_growth(jacobians: np.ndarray, progress: Progress = _no_progress) -> np.ndarray:
    """log10 ‖P_{l:l+k}‖₂ with P_{l:l+k} = J̄_{l+k−1} ··· J̄_l, for every l and k = 1..L−l (METHODS §11).

    The curve over k for a fixed injection layer l shows transient amplification: its maximum
    over k can exceed both ends when the layers are non-normal. Products are max-normalised per
    step with the log10 scale kept aside. Cost: L(L−1)/2 d×d products.

    Args:
        jacobians: (L, d, d) mean Jacobians.

    Returns:
        (L, L) float64, entry [l, k−1]; NaN where l + k > L.
    """
    n_layers = jacobians.shape[0]
    out = np.full((n_layers, n_layers), np.nan)
    # float32 products (normalised, so no range issue) halve the cost of the L²/2 matmuls.
    jac = [np.asarray(jacobians[l], np.float32) for l in range(n_layers)]
    for l in progress(range(n_layers), desc="transient growth", total=n_layers, unit="layer"):
        g = jac[l].copy()
        scale = 0.0
        for k in range(1, n_layers - l + 1):
            if k > 1:
                g = jac[l + k - 1] @ g
            top = float(np.abs(g).max())
            if top == 0.0 or not np.isfinite(top):
                out[l, k - 1:n_layers - l] = -np.inf if top == 0.0 else np.nan
                break
            scale += np.log10(top)
            g /= top
            out[l, k - 1] = scale + np.log10(_top_singular(g))
    return out
