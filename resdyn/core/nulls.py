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
"""

from __future__ import annotations

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
