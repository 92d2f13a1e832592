"""Null baselines: what a headline number would be with no learned structure at all.

numpy/scipy only. Each function gives the value a quantity takes on a structureless reference,
so that a page or the Claims table can put a run's number beside it (METHODS §3, §4, §8):

- ``ginibre_expected_real`` / ``ginibre_complex_fraction``: a real d×d matrix with i.i.d. Gaussian
  entries (real Ginibre) has E[#real eigenvalues] ≈ √(2d/π) + 1/2, so almost all of its
  eigenvalues come in complex pairs. A high complex-pair fraction of J̄_l is therefore the default
  for any generic real matrix, not a sign of learned rotation.
- ``alignment_baseline``: self-alignment (and forward alignment) of unrelated top-k subspaces, k/d;
  ``run_k`` the k a run's alignments used (its manifest's, or the default for runs without one).
- ``bh_null_discoveries``: how many layers the Benjamini–Hochberg procedure calls significant, on
  average, when no layer has an effect.
- ``with_frac_complex_null``: adds the Ginibre column to a ``layers`` table that lacks it (runs
  computed before the spectra stage wrote it).
- ``complex_fraction_null`` / ``elliptic_real_fraction``: the complex-pair fraction of a real
  elliptic matrix matched to a layer's τ = ⟨R, Rᵀ⟩/‖R‖_F² (METHODS §12): Ginibre is the τ = 0 case
  only, and a matrix with a large symmetric part has many more real eigenvalues (n = 200: 20.1 at
  τ = 0.5 against 11.9 at τ = 0). A seeded Monte Carlo table (``resdyn.core.elliptic_table``)
  covers τ near 1; ``with_elliptic_null`` adds the columns (τ on read for older runs).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import comb, gammaln, hyp2f1

from resdyn.config import resolve_k

# METHODS §8: the boundary-node test's false-discovery level.
FDR_ALPHA = 0.05


def ginibre_expected_real(d) -> np.ndarray | float:
    """Expected number of real eigenvalues of a d×d real Ginibre matrix (exact, any d ≥ 1).

    Edelman, Kostlan & Shub (1994): E[#real] = 1/2 + √2 · ₂F₁(1, −1/2; d; 1/2) · Γ(d + 1/2) / (Γ(d) √π).
    The Gamma ratio is taken as exp(lnΓ(d + 1/2) − lnΓ(d)) so it neither overflows nor loses
    digits for large d (Γ(d) alone overflows float64 above d ≈ 171); measured to agree with the
    asymptotic √(2d/π) + 1/2 to within 0.3/√d up to d = 16384.

    Args:
        d: matrix size(s), int or array of ints ≥ 1.
    Returns:
        float64 (same shape as ``d``): expected count of real eigenvalues.
    """
    n = np.asarray(d, dtype=np.float64)
    if np.any(n < 1) or np.any(n != np.floor(n)):
        raise ValueError(f"matrix size must be a positive integer, got {d!r}")
    out = 0.5 + np.sqrt(2.0) * hyp2f1(1.0, -0.5, n, 0.5) * np.exp(gammaln(n + 0.5) - gammaln(n)) / np.sqrt(np.pi)
    return float(out) if np.ndim(out) == 0 else out


def ginibre_complex_fraction(d) -> np.ndarray | float:
    """Expected complex-pair fraction 1 − E[#real]/d of a d×d real Ginibre matrix (METHODS §3).

    0.966 at d = 576, 0.975 at d = 1024, 0.987 at d = 4096 (float64, same shape as ``d``).
    """
    out = 1.0 - np.asarray(ginibre_expected_real(d)) / np.asarray(d, dtype=np.float64)
    return float(out) if np.ndim(out) == 0 else out


def ginibre_complex_fraction_sd(d) -> np.ndarray | float:
    """Standard deviation of the complex-pair fraction of one d×d real Ginibre matrix.

    Forrester & Nagao (2007): Var(#real) → (2 − √2) E[#real] as d grows; measured against 2,000
    seeded matrices at d = 50 (sd 1.90 vs 1.89 predicted) and 400 at d = 200 (2.63 vs 2.62).
    Returns sd(#real)/d, float64: 0.0059 at d = 576.
    """
    n = np.asarray(d, dtype=np.float64)
    out = np.sqrt((2.0 - np.sqrt(2.0)) * np.asarray(ginibre_expected_real(d))) / n
    return float(out) if np.ndim(out) == 0 else out


def lss_random_walk(n_steps: int) -> float:
    """Line-shape score of a walk of ``n_steps`` independent random directions in high dimension.

    Unit steps in random directions of R^d (d ≫ n) are nearly orthogonal, so ‖Σ u_l‖ ≈ √n and
    LSS = n / ‖Σ u_l‖ ≈ √n (METHODS §9): 5.5 for 30 blocks. A straight line scores 1.
    """
    return float(np.sqrt(n_steps))


def with_frac_complex_null(layers: pd.DataFrame, d: int) -> pd.DataFrame:
    """``layers`` with a ``frac_complex_null`` column (float64): the Ginibre value at width ``d``.

    A table that has the column already is returned as it is; otherwise a copy gets it on every
    row (both operators: J̄ and R = J̄ − I are both real d×d matrices).
    """
    if "frac_complex_null" in layers.columns:
        return layers
    out = layers.copy()
    out["frac_complex_null"] = np.float64(ginibre_complex_fraction(int(d)))
    return out


ELLIPTIC_COLUMNS = ("tau", "frac_complex_null_elliptic", "frac_complex_null_elliptic_sd")
# Computing τ on read reads the whole jacobians.npy: allowed up to this many entries (L·d²;
# the demo's 30 × 576² is 1e7, about 40 MB and 0.1 s).
TAU_ON_READ_MAX = 1.5e8


def elliptic_columns(layers: pd.DataFrame, taus: np.ndarray, d: int) -> pd.DataFrame:
    """``layers`` (a copy) with ``ELLIPTIC_COLUMNS``: τ of R_l (taus (L,), indexed by layer) and
    the matched elliptic null's complex-pair fraction and its one-matrix sd
    (``complex_fraction_null``), the same on both operators' rows (R = J̄ − I carries the layer's
    balance of symmetric and antisymmetric parts; J̄'s own τ is dominated by the identity)."""
    taus = np.asarray(taus, dtype=np.float64)
    mean, sd = complex_fraction_null(taus, d)
    idx = layers["layer"].to_numpy(int)
    ok = (idx >= 0) & (idx < len(taus))
    out = layers.copy()
    for col, values in zip(ELLIPTIC_COLUMNS, (taus, mean, sd)):
        out[col] = np.where(ok, values[np.clip(idx, 0, max(len(taus) - 1, 0))] if len(taus) else np.nan, np.nan)
    return out


def with_elliptic_null(layers: pd.DataFrame, d: int, jacobians: np.ndarray | None = None) -> pd.DataFrame:
    """``layers`` with ``ELLIPTIC_COLUMNS``: as they are when the table has them (the spectra stage
    writes them now); for an older table computed from ``jacobians`` (L, d, d) (memory-mapped is
    fine) when given and L·d² ≤ TAU_ON_READ_MAX; else the columns are NaN (not computed)."""
    if all(c in layers.columns for c in ELLIPTIC_COLUMNS):
        return layers
    if jacobians is not None and np.prod(np.shape(jacobians), dtype=float) <= TAU_ON_READ_MAX:
        return elliptic_columns(layers, residual_taus(jacobians), int(d))
    return layers.assign(**{c: np.nan for c in ELLIPTIC_COLUMNS})


def alignment_baseline(k: int, d: int) -> float:
    """k/d: the expected ‖V_kᵀU_k‖_F²/k of two independent random k-dimensional subspaces of R^d.

    METHODS §4 caveat: a normal matrix can sit here too (a random orthogonal matrix has
    self-alignment ≈ k/d and Henrici 0), so self-alignment ≈ k/d does not say "non-normal".
    """
    return float(k) / float(d)


def run_k(manifest: dict) -> int:
    """The rank k of a run's self/forward alignments (METHODS §4): the manifest's ``k``, or for a run
    whose manifest predates the key the default ``resolve_k(None, d)`` it was computed with."""
    return int(manifest.get("k") or resolve_k(None, int(manifest.get("d_model") or 0)))


def bh_null_distribution(n_tests: int, alpha: float = FDR_ALPHA) -> np.ndarray:
    """(n_tests + 1,) float64 P(R = r), r = 0..n, of the number R of BH rejections when every
    null hypothesis is true and the p-values are independent uniforms.

    Finner & Roters (2002): P(R = r) = C(n, r) (rα/n)^r (1 − α) (1 − rα/n)^(n − r − 1); in particular
    P(R ≥ 1) = α (BH controls the family-wise error under the complete null).
    """
    n = int(n_tests)
    if n < 1:
        raise ValueError("need at least one test")
    r = np.arange(n + 1, dtype=np.float64)
    q = r * alpha / n
    with np.errstate(divide="ignore", invalid="ignore"):
        p = comb(n, r) * np.where(r > 0, q**r, 1.0) * (1.0 - alpha) * (1.0 - q) ** (n - r - 1)
    return p


def bh_null_discoveries(n_tests: int, alpha: float = FDR_ALPHA) -> float:
    """Expected number of BH-significant tests among ``n_tests`` when none has an effect.

    At α = 0.05: 0.054 at n = 4, 0.055 at n = 30 — far below the α·n = 1.5 that uncorrected
    tests at level α would give at n = 30.
    """
    p = bh_null_distribution(n_tests, alpha)
    return float(np.sum(np.arange(len(p)) * p))


# -- the complex fraction under the real elliptic law (METHODS §12) ----------------------------------
# Ginibre's count is exact only for i.i.d. entries; a matrix with a large symmetric part has more
# real eigenvalues. The real elliptic ensemble with the layer's balance τ = ⟨A, Aᵀ⟩/‖A‖_F² of its
# symmetric and antisymmetric parts is the matched reference.
ELLIPTIC_REF_N = 128
"""Size of the Monte Carlo table ``resdyn.core.elliptic_table`` (other widths are mapped to it)."""
ELLIPTIC_SEED = 0x656C6C  # 'ell'


def elliptic_parameter(tau, n: int):
    """The generator's correlation t with E⟨X, Xᵀ⟩ / E‖X‖_F² = τ for ``elliptic_matrix`` (n × n).

    With off-diagonal pairs of covariance t and unit variances and diagonal variance 1 + t, the
    ratio of expectations is (n(1 + t) + n(n − 1)t) / (n(1 + t) + n(n − 1)) = (1 + nt)/(n + t), so
    t = (nτ − 1)/(n − τ): t = τ up to O(1/n), and ±1 map to ±1.
    """
    tau = np.clip(np.asarray(tau, dtype=np.float64), -1.0, 1.0)
    return (n * tau - 1.0) / (n - tau)


def elliptic_matrix(n: int, tau: float, rng: np.random.Generator) -> np.ndarray:
    """One (n, n) float64 real elliptic matrix X = √((1+t)/2)·S + √((1−t)/2)·A, t = ``elliptic_parameter``.

    S = (G + Gᵀ)/√2 (symmetric: off-diagonal variance 1, diagonal 2) and A = (H − Hᵀ)/√2
    (antisymmetric, off-diagonal variance 1), G, H i.i.d. standard normal: X_ij has variance 1 and
    corr(X_ij, X_ji) = t. τ = 0 is real Ginibre, τ = 1 the GOE.
    """
    t = float(elliptic_parameter(tau, n))
    g, h = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    return np.sqrt((1 + t) / 2) * (g + g.T) / np.sqrt(2) + np.sqrt((1 - t) / 2) * (h - h.T) / np.sqrt(2)


def real_eigenvalue_count(a: np.ndarray) -> int:
    """Eigenvalues of a real (n, n) matrix with |Im λ| ≤ 1e-6 · max|λ| (LAPACK returns exact zeros
    for the real ones, so the tolerance only guards against rounding)."""
    lam = np.linalg.eigvals(a)
    return int((np.abs(lam.imag) <= 1e-6 * max(np.abs(lam).max(), 1e-300)).sum())


def elliptic_real_mc(n: int, tau: float, n_mat: int, seed=ELLIPTIC_SEED) -> tuple[float, float]:
    """(mean, sd with ddof = 1) of the number of real eigenvalues over ``n_mat`` seeded (n, n)
    elliptic matrices at τ (``elliptic_matrix``; generator ``default_rng([seed, n, round(τ·1e6)])``)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng([int(seed), int(n), int(round(float(tau) * 1e6)) % 2**32])
    with threadpool_limits(limits=1, user_api="blas"):  # small eigensolves: threads only contend (10x)
        c = np.array([real_eigenvalue_count(elliptic_matrix(n, tau, rng)) for _ in range(n_mat)], dtype=np.float64)
    return float(c.mean()), float(c.std(ddof=1)) if n_mat > 1 else np.nan


def _x_of(n, tau):
    """x = n(1 − τ)/(1 + τ): the variable in which E[#real]/n is (nearly) one function for every n.

    The strong-non-Hermiticity law E[#real] ≈ ½ + √(2n/π · (1+τ)/(1−τ)) (Forrester & Nagao 2008)
    is (E − ½)/n = √(2/(π x)); for τ → 1 at fixed n(1−τ) the count is a function of n(1−τ) alone
    (weak non-Hermiticity), which x matches up to the factor 1 + τ ≈ 2 there.
    """
    tau = np.asarray(tau, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return n * (1.0 - tau) / (1.0 + tau)


@functools.lru_cache(maxsize=1)
def _elliptic_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log x (K,), (E[#real] − ½)/n (K,), Var[#real]/E[#real] (K,)) at n = ELLIPTIC_REF_N, from the
    stored Monte Carlo table (``python -m resdyn.core.nulls --elliptic-table`` regenerates it)."""
    from resdyn.core import elliptic_table as tab

    rows = np.asarray(tab.ROWS, dtype=np.float64)  # tau, mean, sd
    x = _x_of(tab.N, rows[:, 0])
    order = np.argsort(x)
    mean, sd = rows[order, 1], rows[order, 2]
    return np.log(x[order]), (mean - 0.5) / tab.N, sd**2 / mean


def elliptic_real_fraction(taus, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected fraction of real eigenvalues of a d × d real elliptic matrix at each τ, and the sd
    of that fraction for ONE matrix: ((K,), (K,)) float64 for taus (K,).

    With x = d(1 − τ)/(1 + τ) (``_x_of``): for x ≤ 10 (τ near 1, where the count leaves the
    √-law) the stored seeded Monte Carlo table at n = ELLIPTIC_REF_N (``_elliptic_table``) mapped to
    width d by (E_d − ½)/d = (E_ref − ½)/n_ref at equal x, interpolated linearly in log x; for
    x ≥ 40 the strong-non-Hermiticity law anchored on Ginibre's exact count, E_d = ½ + (E_Gin(d) − ½)
    · √((1+τ)/(1−τ)) (its MC-noise-free limit); a blend linear in log x between. The sd uses the
    table's Var/E at that x (Var ∝ E, as for Ginibre's (2 − √2)).
    Widths below the table's are simulated directly (cached). τ = 1 gives 1 (symmetric: all real).
    Checked against direct simulation in tests/core/test_nulls.py (n = 200: 20.1 real eigenvalues
    at τ = 0.5, 11.9 at τ = 0, METHODS §12).
    """
    taus = np.clip(np.asarray(taus, dtype=np.float64).ravel(), -1.0, 1.0)
    d = int(d)
    if d < 1:
        raise ValueError(f"matrix size must be a positive integer, got {d!r}")
    if d < ELLIPTIC_REF_N:
        res = np.array([_small_mc(d, round(float(t), 3)) if np.isfinite(t) else (np.nan, np.nan)
                        for t in taus]).reshape(-1, 2)
        return res[:, 0] / d, res[:, 1] / d
    lx, f_ref, var_ratio = _elliptic_table()
    x = _x_of(d, taus)
    with np.errstate(divide="ignore"):
        lxq = np.log(x)
        # Strong non-Hermiticity (large x): Ginibre's exact count stretched by √((1+τ)/(1−τ)),
        # exact at τ = 0 and within 1 % of direct simulation for x ≥ 20 (n = 200: τ = 0.5, 0.8).
        strong = (ginibre_expected_real(d) - 0.5) * np.sqrt((1.0 + taus) / np.where(taus < 1, 1.0 - taus, 1.0)) / d
    table = np.interp(lxq, lx, f_ref)
    # Weight of the table: 1 below x = 10, 0 above x = 40, linear in log x between.
    w = np.clip((np.log(40.0) - lxq) / np.log(4.0), 0.0, 1.0)
    f = w * table + (1.0 - w) * np.where(np.isfinite(strong), strong, 0.0)
    mean = np.minimum(f * d + 0.5, d)
    mean[taus >= 1.0] = d
    var = np.interp(lxq, lx, var_ratio) * mean
    var[taus >= 1.0] = 0.0
    return mean / d, np.sqrt(var) / d


@functools.lru_cache(maxsize=4096)
def _small_mc(d: int, tau: float) -> tuple[float, float]:
    # Below the table's width the matrices are cheap: simulate at d itself (τ rounded to 1e-3 so
    # that the cache is hit across layers and calls).
    return elliptic_real_mc(d, tau, n_mat=200)


def complex_fraction_null(taus: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The complex-pair fraction of a d × d real elliptic matrix matched to each layer's τ (METHODS §12).

    taus: (L,) τ = ⟨R, Rᵀ⟩/‖R‖_F² of each layer's R = J̄ − I (``operator_tau``). Returns
    (per-layer means (L,), per-layer sd of the fraction for one matrix (L,)), float64. The mean
    over layers of a run is to be compared with the mean of these means; its spread is NOT the
    one-matrix sd (the layers are L separate matrices: sd/√L if independent).
    """
    f_real, sd = elliptic_real_fraction(taus, d)
    return 1.0 - f_real, sd


def complex_fraction_test(frac_complex: np.ndarray, taus: np.ndarray, d: int) -> dict:
    """Is a run's mean complex-pair fraction over layers below its matched elliptic null?

    frac_complex, taus: (L,) per-layer complex-pair fraction and τ of R. The null mean is the mean
    of the per-layer null means (``complex_fraction_null``); treating the layers as independent
    matrices, the sd of the null's layer mean is √(Σ sd_l²)/L (not one matrix's sd). One-sided
    normal p for "below": Φ((observed − null)/se). Layers with a NaN are left out.
    Returns observed, null, se, z, p_below (floats; NaN when no layer is usable).
    """
    from scipy.stats import norm

    f = np.asarray(frac_complex, dtype=np.float64)
    t = np.asarray(taus, dtype=np.float64)
    ok = np.isfinite(f) & np.isfinite(t)
    if not ok.any():
        return {"observed": np.nan, "null": np.nan, "se": np.nan, "z": np.nan, "p_below": np.nan}
    mean, sd = complex_fraction_null(t[ok], d)
    obs, mu = float(f[ok].mean()), float(mean.mean())
    se = float(np.sqrt((sd**2).sum()) / ok.sum())
    z = (obs - mu) / se if se > 0 else np.nan
    return {"observed": obs, "null": mu, "se": se, "z": z, "p_below": float(norm.cdf(z)) if np.isfinite(z) else np.nan}


def operator_tau(a: np.ndarray) -> np.ndarray:
    """τ = ⟨A, Aᵀ⟩ / ‖A‖_F² (in [−1, 1]: 1 symmetric, −1 antisymmetric, ≈ 0 for i.i.d. entries) of
    one (d, d) matrix or each of a stack (L, d, d); float64 (), or (L,). NaN for a zero matrix."""
    a = np.asarray(a, dtype=np.float64)
    num = np.einsum("...ij,...ji->...", a, a)
    den = np.einsum("...ij,...ij->...", a, a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def residual_taus(jacobians: np.ndarray) -> np.ndarray:
    """τ of R_l = J̄_l − I for jacobians (L, d, d): (L,) float64, one layer at a time (no (L, d, d)
    float64 copy)."""
    out = np.empty(len(jacobians))
    for l in range(len(jacobians)):
        r = np.asarray(jacobians[l], dtype=np.float64) - np.eye(jacobians.shape[1])
        out[l] = operator_tau(r)
    return out


def _write_elliptic_table(path, n: int = ELLIPTIC_REF_N, n_mat: int = 200, n_grid: int = 36) -> None:
    """Regenerate ``resdyn/core/elliptic_table.py``: E and sd of #real at n over a grid of τ whose
    x = n(1 − τ)/(1 + τ) is log-spaced from 0.02 to n · 60 (τ from ≈ 1 down to ≈ −0.97)."""
    x = np.geomspace(0.02, n * 60.0, n_grid)
    taus = (n - x) / (n + x)
    lines = ['"""Seeded Monte Carlo of the real elliptic ensemble (generated by',
             '``python -m resdyn.core.nulls --elliptic-table``; read by ``resdyn.core.nulls``).',
             '',
             f'Rows (tau, mean, sd) of the number of real eigenvalues of {n_mat} seeded {n} x {n} matrices',
             'each (``nulls.elliptic_real_mc``)."""', '', f'N = {n}', f'N_MAT = {n_mat}', 'ROWS = [']
    for t in taus:
        m, s = elliptic_real_mc(n, float(t), n_mat)
        lines.append(f"    ({float(t)!r}, {m!r}, {s!r}),")
    lines.append("]")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--elliptic-table"]:
        _write_elliptic_table(Path(__file__).with_name("elliptic_table.py"))
