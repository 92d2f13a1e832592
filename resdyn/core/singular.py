"""Per-sample Jacobian statistics without an eigendecomposition (METHODS §2). numpy + scipy only.

For each d×d Jacobian J the sample_stats stage keeps σ_max, σ_min, κ = σ_max/σ_min, ‖J‖_F and the
participation ratio PR = (Σσ²)²/Σσ⁴. Two of the d singular values are needed, and the two sums
are norms: Σσ² = ‖J‖_F² and Σσ⁴ = ‖JᵀJ‖_F². So rather than eigenvalues of the whole Gram
matrix G = JᵀJ (a tridiagonal reduction, half of it memory-bound level-2 BLAS), one sample costs

- ‖J‖_F² as a float64 sum of squares and ‖G‖_F² from one product G = JᵀJ;
- σ_max² = λ_max(G) by block Krylov iteration on G with Rayleigh–Ritz (``top_eigenvalue``:
  about 7 products of G with a d×8 block on SmolLM2's Jacobians). For a float32 J the iteration
  runs on a float32 G and the value is then taken in float64 as λ_max((JY)ᵀ(JY)) over the
  orthonormalised top Ritz block Y, which leaves an error of about residual²/gap (≲1e-10
  relative);
- σ_min² = 1/λ_max((MᵀM)⁻¹) for M = Jᵀ (same singular values) by the same iteration, where
  (MᵀM)⁻¹X = M⁻¹(M⁻ᵀX) costs two LU solves with one float64 factorisation of M. This is accurate
  to about κε relative, like a float64 SVD; the smallest eigenvalue of G itself carries an error of
  ε·σ_max², i.e. κ²ε relative in σ_min (1e-6 at κ = 1e5).

Samples run one per thread with single-threaded BLAS (``batch_stats``): the work is independent
per sample, so two threads keep two cores busy without the barrier waits of a multi-threaded BLAS
call on small matrices, which cost the most when the cores are shared with other work.

A sample with a flat singular spectrum (PR > ``GRAM_FIRST_PR``·d) first tries the extreme
eigenvalues of the float64 Gram matrix (``gram_extremes``), kept when its κ is small enough for
them to be accurate (``GRAM_RTOL``). Matrices with d ≤ ``EXACT_MAX_D`` and samples whose iteration
has not converged within ``MAX_KRYLOV_DIM`` vectors get float64 singular values from an SVD.

Measured on SmolLM2-135M's float32 Jacobians (d = 576, κ up to 1.5e7) against a float64 SVD of
the same matrices: σ_max to 1e-11, σ_min and κ to 2e-10, ‖J‖_F to 1e-14, PR to 3e-8 (float32 G);
2.1–2.9× faster than the float64 Gram eigenvalues with an LU refinement of σ_min (README,
Benchmarks).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg import eigh, lapack
from threadpoolctl import ThreadpoolController

EXACT_MAX_D = 32
"""At or below this size the statistics come from a float64 SVD (cheaper than iterating)."""
BLOCK = {"top": 8, "inverse": 8}
"""Krylov block widths b: the top eigenvalue converges at a rate set by λ_{b+1}/λ_1, not λ_2/λ_1."""
MAX_KRYLOV_DIM = 192
"""Largest Krylov basis per sample before falling back to the SVD."""
GRAM_FIRST_PR = 0.55
"""Samples with PR > this·d (a flat singular spectrum, as in a randomly initialised model) try the
float64 Gram matrix's eigenvalues first (``gram_extremes``). Flat spectra usually come with a small
κ, where the σ_min iteration crawls through crowded bottom singular values (about 45 ms a sample
at d = 576 against 22 ms for the Gram eigenvalues) and the Gram route is exact enough. PR only
predicts: the Gram result is kept only when its own κ passes ``GRAM_RTOL``, else the iteration
runs as for any sample (the Gram time lost). On the demo's runs the rule picks 83 % of the random
twin's samples and 7 % of the trained model's, all with κ < 950; at 0.3 it also picked 12 % of the
trained samples with κ in the thousands, in vain. Measured single-threaded on the random twin's
layers 10 and 25: 25–26 ms a sample against 37–50 ms."""
GRAM_RTOL = 1e-10
"""The Gram route's σ_min carries a relative error of about κ²ε₆₄/2 (its smallest eigenvalue has
an absolute error of about ε·σ_max²): it is used when that is below this (κ up to about 950)."""
CHECKS = {"top": (4, 2), "inverse": (2, 1)}
"""(first, every): block steps before the first convergence check, then between checks. A check
costs an eigensolve of the projected matrix, so the slowly converging top of G is checked less
often than the inverse, whose top is well separated (σ_{n−8}/σ_n ≥ 2.4 on SmolLM2's Jacobians)."""
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-9}
"""Relative Ritz residual r = ‖Ay − θy‖/θ at which the top eigenvalue counts as converged, per
working precision. Some eigenvalue lies within r·θ of θ, and within (rθ)²/gap when the rest of
the spectrum is a gap away; the top Ritz value is a lower bound of λ_max. So in float64 the
relative error is at most 1e-9 and usually near 1e-16. In float32 (which only steers, see
``sigma_max_squared``) the residual cannot go much below √d·ε₃₂ ≈ 1e-6."""
CLUSTER = 1e-4
"""Float32 steering: when the top b Ritz values lie within this relative distance of each other,
the SVD decides instead (never on SmolLM2's Jacobians, where σ_9/σ_1 ≤ 0.8)."""
STAT_NAMES = ("sigma_max", "sigma_min", "kappa", "fro", "pr")


def batch_stats(jac: np.ndarray, workers: int = 1) -> np.ndarray:
    """Statistics of B Jacobians (B, d, d) float32 or float64 -> (B, 5) float64 in ``STAT_NAMES``
    order, computed on ``workers`` threads with single-threaded BLAS."""
    jac = np.asarray(jac)
    out = np.zeros((len(jac), len(STAT_NAMES)), dtype=np.float64)
    if len(jac) == 0:
        return out
    with _one_blas_thread():
        if workers <= 1 or len(jac) == 1:
            rows = [_stats(j) for j in jac]
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(jac))) as pool:
                rows = list(pool.map(_stats, jac))
    out[:] = rows
    return out


def jacobian_stats(j: np.ndarray) -> np.ndarray:
    """(5,) float64 σ_max, σ_min, κ, ‖J‖_F, PR of one Jacobian j (d, d), float32 or float64.

    A singular J gets σ_min = 0 and κ = inf. Deterministic: the start blocks are fixed.
    """
    return batch_stats(np.asarray(j)[None])[0]


def _stats(j: np.ndarray) -> np.ndarray:
    """``jacobian_stats`` without the BLAS thread limit (the caller holds it). Multi-threaded BLAS
    on these small products waits at barriers when the cores are shared: 2 s against 10 ms for
    one d = 128 sample, measured."""
    j = np.asarray(j)
    d = j.shape[0]
    j64 = np.array(j, dtype=np.float64, order="C")  # a copy: the LU below overwrites it
    flat = j64.ravel()
    fro2 = float(flat @ flat)
    if d <= EXACT_MAX_D:
        s = np.linalg.svd(j64, compute_uv=False)
        return _assemble(s[0] ** 2, s[-1] ** 2, fro2, float(np.sum(s**4)))
    work = np.dtype(np.float32) if j.dtype == np.float32 else np.dtype(np.float64)
    jw = j64 if work == np.float64 else np.ascontiguousarray(j, dtype=np.float32)
    g = jw.T @ jw  # (d, d) Gram matrix in the working precision
    g64 = g.astype(np.float64).ravel()
    g_fro2 = float(g64 @ g64)  # Σσ⁴ = ‖JᵀJ‖_F²
    if fro2**2 > GRAM_FIRST_PR * d * g_fro2:  # PR = (Σσ²)²/Σσ⁴: a flat spectrum, likely a small κ
        smax2, smin2, ok = gram_extremes(j64, g if work == np.float64 else None)
        if ok:
            return _assemble(smax2, smin2, fro2, g_fro2)
    smax2, ok_max = sigma_max_squared(g, j64)
    smin2, ok_min = sigma_min_squared(j64, smax2)  # overwrites j64
    if not (ok_max and ok_min):  # a cluster the iteration did not resolve: take the SVD
        s = np.linalg.svd(np.asarray(j, dtype=np.float64), compute_uv=False)
        smax2, smin2 = s[0] ** 2, s[-1] ** 2
    return _assemble(smax2, smin2, fro2, g_fro2)


def gram_extremes(j64: np.ndarray, g64: np.ndarray | None = None) -> tuple[float, float, bool]:
    """(σ_max², σ_min², accurate) from the eigenvalues of the float64 Gram matrix JᵀJ, j64 (d, d)
    float64 (not modified); ``g64``, when given, is that Gram matrix already formed (a float64
    run's), else it is formed here. Both eigenvalues carry an absolute error of about ε·σ_max²:
    σ_max² is good to about ε relative, σ_min to about κ²ε/2, accepted when that is below
    ``GRAM_RTOL``."""
    g = j64.T @ j64 if g64 is None else g64
    w = eigh(g, eigvals_only=True, driver="evr", check_finite=False)  # ascending
    if len(w) != len(j64) or not np.all(np.isfinite(w)):
        return 0.0, 0.0, False
    smax2, smin2 = float(w[-1]), float(w[0])
    if not (smin2 > 0 and smax2 > 0):
        return smax2, smin2, False
    return smax2, smin2, bool(0.5 * (smax2 / smin2) * np.finfo(np.float64).eps <= GRAM_RTOL)


def _assemble(smax2: float, smin2: float, fro2: float, sum_s4: float) -> np.ndarray:
    smax, smin = np.sqrt(max(smax2, 0.0)), np.sqrt(max(smin2, 0.0))
    kappa = smax / smin if smin > 0 else np.inf
    pr = fro2**2 / sum_s4 if sum_s4 > 0 else np.nan  # (Σσ²)² / Σσ⁴, METHODS §2
    return np.array([smax, smin, kappa, np.sqrt(fro2), pr], dtype=np.float64)


@functools.lru_cache(maxsize=16)
def start_block(d: int, b: int, dtype) -> np.ndarray:
    """A fixed orthonormal (d, b) start block (seeded Gaussian, read-only): reproducible results,
    and with probability one not orthogonal to the wanted eigenvector."""
    q = np.asfortranarray(np.linalg.qr(np.random.default_rng(0).standard_normal((d, b)))[0], dtype=dtype)
    q.flags.writeable = False
    return q


def sigma_max_squared(g: np.ndarray, j64: np.ndarray) -> tuple[float, bool]:
    """λ_max(G) of G = JᵀJ (d, d) float32 or float64, and whether the iteration converged.

    A float32 G only steers the iteration: the value is the largest Rayleigh–Ritz value of the
    float64 G over the top b Ritz vectors, λ_max((JY)ᵀ(JY)) with Y orthonormalised in float64.
    Its error is about (float32 residual)²/gap to the (b+1)-th eigenvalue; a top cluster of more
    than b values within ``CLUSTER`` is reported as not converged.
    """
    q0 = start_block(len(g), BLOCK["top"], np.dtype(g.dtype))
    tol = TOL[g.dtype]
    theta, ritz, ok = top_eigenvalue(lambda v: g @ v, q0, lambda t: tol, CHECKS["top"],
                                     ritz=g.dtype != np.float64)
    if g.dtype == np.float64:
        return theta, ok
    y = np.linalg.qr(ritz.astype(np.float64))[0]
    z = j64 @ y
    ev = np.linalg.eigvalsh(z.T @ z)
    # A top cluster wider than the block but narrower than float32 can resolve (all b values within
    # CLUSTER of the top) could hide a larger value outside the block: let the caller use the SVD.
    return float(ev[-1]), ok and bool(ev[0] < (1.0 - CLUSTER) * ev[-1])


def sigma_min_squared(j64: np.ndarray, smax2: float) -> tuple[float, bool]:
    """σ_min² of float64 J (d, d) C-ordered, as 1/λ_max((MᵀM)⁻¹) with M = Jᵀ, and whether the
    iteration converged. Overwrites j64 with the LU factors of M (J's memory read in Fortran order).

    An exactly singular M (a zero pivot) or a non-finite result gives σ_min = 0. The LU solves are
    backward stable, so the operator actually applied differs from (MᵀM)⁻¹ by about κε relative;
    the convergence test accepts residuals down to that floor, with κ² = σ_max²·λ_max((MᵀM)⁻¹).
    """
    lu, piv, info = lapack.dgetrf(j64.T, overwrite_a=1)
    if info != 0 or not np.all(np.isfinite(lu)):  # info > 0: U has an exact zero pivot
        return 0.0, True

    def apply(v):
        w, _ = lapack.dgetrs(lu, piv, v, trans=1)  # M⁻ᵀ v
        x, _ = lapack.dgetrs(lu, piv, w, trans=0)  # M⁻¹ M⁻ᵀ v = (MᵀM)⁻¹ v
        return x

    eps = np.finfo(np.float64).eps

    def tol(theta):
        return max(TOL[np.dtype(np.float64)], 64 * eps * np.sqrt(abs(smax2 * theta)))

    q0 = start_block(len(lu), BLOCK["inverse"], np.dtype(np.float64))
    theta, _, ok = top_eigenvalue(apply, q0, tol, CHECKS["inverse"])
    if not np.isfinite(theta) or theta <= 0:
        return 0.0, True
    return 1.0 / theta, ok


def top_eigenvalue(apply, q0: np.ndarray, tol, checks: tuple[int, int] = (4, 2),
                   ritz: bool = False, max_dim: int = MAX_KRYLOV_DIM) -> tuple[float, np.ndarray | None, bool]:
    """Largest eigenvalue of a symmetric positive semi-definite operator by block Krylov
    iteration with full reorthogonalisation and Rayleigh–Ritz (the block Lanczos space, kept
    orthonormal explicitly).

    Args:
        apply: (d, b) -> (d, b) in q0's dtype: the operator applied to a block.
        q0: (d, b) orthonormal start block (its dtype is the working precision).
        tol: θ -> relative residual tolerance.
        checks: (first, every): convergence is tested after ``first`` block steps, then every
            ``every`` steps, and when the basis is full.
        ritz: also return the top b Ritz vectors (d, b) in q0's dtype (else None).
        max_dim: largest basis (columns) before giving up (not converged).

    Returns θ (float64), the Ritz vectors, and whether ‖Ay − θy‖ ≤ tol(θ)·θ for the top Ritz
    pair (y, θ) (True also when θ is not finite).
    """
    d, b = q0.shape
    m_max = min(d, max_dim)
    first, every = checks
    Q = np.zeros((d, m_max), dtype=q0.dtype, order="F")  # columns [:m] stay contiguous for BLAS
    AQ = np.zeros_like(Q)
    H = np.zeros((m_max, m_max), dtype=np.float64)  # QᵀAQ, grown block by block
    Q[:, :b] = q0
    AQ[:, :b] = apply(q0)
    H[:b, :b] = _sym(q0.T @ AQ[:, :b])
    m, steps = b, 1
    while True:
        last = m + b > m_max
        if last or (steps >= first and (steps - first) % every == 0):
            t1, y = _top_pairs(H[:m, :m], 1)
            t1, y = float(t1[-1]), y[:, -1].astype(q0.dtype)
            res = float(np.linalg.norm(AQ[:, :m] @ y - t1 * (Q[:, :m] @ y)))
            ok = not np.isfinite(t1) or res <= tol(t1) * abs(t1)
            if ok or last:
                if not ritz:
                    return t1, None, ok
                return t1, Q[:, :m] @ _top_pairs(H[:m, :m], b)[1].astype(q0.dtype), ok
        Qm = Q[:, :m]
        w = AQ[:, m - b:m] - Qm @ H[:m, m - b:m].astype(q0.dtype)  # the next block of the Krylov space
        w -= Qm @ (Qm.T @ w)  # a second Gram–Schmidt pass against the basis
        v, diag = _orthonormal(w)
        if diag < 1e-3 * np.linalg.norm(AQ[:, m - b:m], axis=0).max():
            # Near breakdown (an almost invariant subspace): v came from rounding noise, so
            # orthogonalise it once more, or the Rayleigh–Ritz values would be wrong.
            v, _ = _orthonormal(v - Qm @ (Qm.T @ v))
        av = apply(v)
        Q[:, m:m + b] = v
        AQ[:, m:m + b] = av
        cols = (Q[:, :m + b].T @ av).astype(np.float64)  # (m + b, b)
        H[:m, m:m + b] = cols[:m]
        H[m:m + b, :m] = cols[:m].T
        H[m:m + b, m:m + b] = _sym(cols[m:])
        m, steps = m + b, steps + 1


def _top_pairs(h: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (k,) ascending and their vectors (m, k) of symmetric h (m, m).
    LAPACK's dsyevr with an index range is about twice as fast as the whole eigh here, but it has
    returned no eigenvalue for a matrix within rounding of the identity: then the whole eigh."""
    m = len(h)
    w, v = eigh(h, subset_by_index=[m - k, m - 1], driver="evr", check_finite=False)
    if len(w) != k:
        w, v = np.linalg.eigh(h)
        w, v = w[m - k:], v[:, m - k:]
    return w, v


def _orthonormal(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Householder QR of w (d, b): the orthonormal factor (d, b) Fortran-ordered, and min |R_ii|."""
    geqrf, orgqr = (lapack.sgeqrf, lapack.sorgqr) if w.dtype == np.float32 else (lapack.dgeqrf, lapack.dorgqr)
    qr, tau, _, _ = geqrf(w)
    diag = float(np.abs(np.diagonal(qr)).min())
    q, _, _ = orgqr(qr, tau)
    return q, diag


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


_LOCK = threading.Lock()
_CONTROLLER = None


def _one_blas_thread():
    """Context: BLAS/LAPACK (numpy's and scipy's OpenBLAS) on one thread, restored afterwards.
    The controller, which finds the libraries, is made once (``threadpool_limits`` would search
    for them on every call, about 2 ms)."""
    global _CONTROLLER
    with _LOCK:
        if _CONTROLLER is None:
            _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")
