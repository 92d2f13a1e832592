"""Sampling noise of the claim statistics by split halves (METHODS §12). numpy/scipy only.

The claims read statistics of the mean Jacobians J̄_l = (1/N) Σ_i J_l^(i). A bootstrap over
passages would need every sample's Jacobian again for every resample (the ``jacobians`` stage
never forms them for Llama and Phi-3), so the noise of these statistics comes from one split
half: the ``jacobians`` stage also keeps J̄_l^A, the mean over a seeded random half A of the
passages (``split_half``), and the ``noise`` stage computes every statistic on J̄^A as the run's
own stages compute it on J̄. For a statistic θ that is smooth in J̄,

    θ_A − θ ≈ (θ_A − θ_B) / 2,

whose spread is the standard error of θ itself (each half carries twice the variance of the
whole), so ``|θ_A − θ|`` estimates the run's sampling noise from one draw. It is a crude
estimate (one degree of freedom), and for a statistic whose bias depends on N (an erank, a
median) it also carries the bias difference between N/2 and N: it errs on the large side, which
makes "holds" harder, never easier.

Statistics (``HALF_STATISTICS``), all of J̄^A (L, d, d):

- ``frac_complex`` (per layer): share of eigenvalues with |Im λ| > ``linalg.COMPLEX_TOL``;
- ``dist_one`` (per layer): median |λ − 1| over the layer's eigenvalues;
- ``self_alignment`` (per layer): ‖V_kᵀU_k‖_F²/k of J̄^A_l;
- ``erank_p0`` (whole stack): erank of the exact product P_0 = J̄_{L−1}···J̄_0;
- ``dose_erank`` (whole stack, per normal surrogate and c ∈ {0, 1}): erank(P_0(c)), where the
  layer operators at c = 0 are the normal surrogates of METHODS §6 (``surrogate_normal_parts``).

The three normal surrogates come here from one eigendecomposition J̄ = V Λ V⁻¹ per layer: for an
eigenvalue order, the QR factorisation of V with its columns in that order, V = Q R, gives a
Schur basis in that order (J̄ Q = Q (R Λ R⁻¹), upper triangular), hence the normal part Q Λ Q*;
the polar surrogate is the schur stage's own (``resdyn.core.surrogates.polar_layer``). For the
two orders the ``schur`` stage reaches the same matrices through a Schur decomposition and
reordering, which is better conditioned for nearly defective operators; for a noise estimate the
eigenvector route is several times cheaper and equal to rounding where V is well conditioned (a
test holds them together).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resdyn.core import spectral, surrogates
from resdyn.core.linalg import COMPLEX_TOL, top_singular_vectors

SPLIT_STREAM = 22
"""Stream of the seeded generator that draws the half: ``default_rng([seed, SPLIT_STREAM])``."""
METHOD = "split half"
"""How the noise of the Jacobian statistics is estimated (shown beside each claim)."""
SURROGATES = surrogates.SURROGATES
"""The normal surrogates of the dose (METHODS §6): the Schur normal part with eigenvalues in
descending |λ| (the ``schur`` stage's canonical order, a "right flag"), in ascending |λ| (a "left
flag"), and the order-free polar surrogate."""
SURROGATE_CONSTRUCTION = surrogates.DOSE_CONSTRUCTION
"""The schur_dose.parquet construction that holds each surrogate's dose curve."""
HALF_STATISTICS = ("frac_complex", "dist_one", "self_alignment", "erank_p0", "dose_erank")


def split_half(n: int, seed: int) -> np.ndarray:
    """(n,) bool: True for the passages of half A, ⌊n/2⌋ of them, drawn by a seeded permutation.

    Random rather than alternating: neighbouring passages often come from one article, and an
    alternating split would put near-copies in both halves and understate the noise."""
    rng = np.random.default_rng([int(seed), SPLIT_STREAM])
    mask = np.zeros(int(n), bool)
    mask[rng.permutation(int(n))[: int(n) // 2]] = True
    return mask


def _ordered_normal_part(v: np.ndarray, lam: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Q Λ Q* (d, d) complex128 with Q from the QR factorisation of V's columns in order ``perm``."""
    q, _ = np.linalg.qr(v[:, perm])
    return (q * lam[perm]) @ q.conj().T


def surrogate_normal_parts(jac: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None
                           ) -> dict[str, np.ndarray]:
    """The three normal surrogates of one operator J̄ (d, d): {surrogate: (d, d) complex128}.

    descending / ascending: Q Λ Q* for a Schur basis Q with the eigenvalues in
    ``spectral.canonical_order`` (descending |λ|, then ascending arg) or its exact reverse;
    polar: U Λ U* with V = U H the polar decomposition of the unit-norm eigenvector matrix.
    All three are normal with J̄'s eigenvalues. ``eig``: J̄'s (λ (d,), V (d, d)) when the caller
    has them already.
    """
    lam, v = np.linalg.eig(np.asarray(jac, np.float64)) if eig is None else eig
    v = v / np.linalg.norm(v, axis=0)
    desc = spectral.canonical_order(lam)
    out = {"descending": _ordered_normal_part(v, lam, desc),
           "ascending": _ordered_normal_part(v, lam, desc[::-1])}
    # The polar surrogate through the schur stage's own factors (one code path, one conditioning
    # rule): W K Wᴴ = U Λ U*; a layer the rule rejects gives NaN, as its stored polar rows do.
    p = surrogates.polar_layer(jac, (lam, v))
    w = p.w.astype(np.complex128)
    out["polar"] = (w @ p.k.astype(np.complex128)) @ w.conj().T if p.ok else np.full(v.shape, np.nan, complex)
    return out


def half_statistics(jac: np.ndarray, k: int, dose: bool = True) -> pd.DataFrame:
    """Every statistic of ``HALF_STATISTICS`` on the mean Jacobians ``jac`` (L, d, d).

    Returns rows (statistic, surrogate, c, layer, value): per-layer statistics have layer ≥ 0 and
    surrogate "", c NaN; whole-stack ones layer −1; ``dose_erank`` one row per surrogate and
    c ∈ {0, 1} (c = 1 is J̄'s own product, the same for every surrogate). ``dose=False`` leaves
    the dose rows out (the cheapest statistics only).
    """
    jac = np.asarray(jac, np.float64)
    n_layers, d, _ = jac.shape
    rows = []

    def add(stat, layer, value, surrogate="", c=np.nan):
        rows.append({"statistic": stat, "surrogate": surrogate, "c": float(c), "layer": int(layer),
                     "value": float(value)})

    # complex64, as the schur stage stores its factors: the chain products run in that precision.
    normals = {s: np.empty((n_layers, d, d), np.complex64) for s in SURROGATES} if dose else {}
    for l in range(n_layers):
        if dose:
            lam, v = np.linalg.eig(jac[l])
            for s, a in surrogate_normal_parts(jac[l], (lam, v)).items():
                normals[s][l] = a
        else:
            lam = np.linalg.eigvals(jac[l])
        add("frac_complex", l, np.mean(np.abs(lam.imag) > COMPLEX_TOL))
        add("dist_one", l, np.median(np.abs(lam - 1.0)))
        u, v = top_singular_vectors(jac[l], k)
        add("self_alignment", l, np.sum((v.T @ u) ** 2) / k)
    cum = spectral.cumulative_products(jac)
    add("erank_p0", -1, cum.erank[0])
    if dose:
        one = None
        for s in SURROGATES:
            a = normals.pop(s)
            fam = spectral.DoseFamily(a, (jac - a).astype(np.complex64))
            add("dose_erank", -1, spectral.family_stats(fam, 0.0).erank, s, 0.0)
            if one is None:  # A + 1·(J̄ − A) = J̄ whatever the surrogate
                one = spectral.family_stats(fam, 1.0).erank
            add("dose_erank", -1, one, s, 1.0)
    return pd.DataFrame(rows, columns=["statistic", "surrogate", "c", "layer", "value"])


def layer_values(table: pd.DataFrame | None, statistic: str) -> pd.Series | None:
    """The per-layer values of ``statistic`` in a ``noise`` table, indexed by layer (None: absent)."""
    if table is None:
        return None
    rows = table[(table["statistic"] == statistic) & (table["layer"] >= 0)]
    return rows.set_index("layer")["value"].sort_index() if len(rows) else None


def dose_values(table: pd.DataFrame | None, surrogate: str) -> tuple[float, float] | None:
    """(erank(P_0(0)), erank(P_0(1))) of ``surrogate`` on the half, or None."""
    if table is None:
        return None
    rows = table[(table["statistic"] == "dose_erank") & (table["surrogate"] == surrogate)]
    at = dict(zip(rows["c"].astype(float), rows["value"].astype(float)))
    return (at[0.0], at[1.0]) if 0.0 in at and 1.0 in at else None


def scalar(table: pd.DataFrame | None, statistic: str) -> float | None:
    """A whole-stack statistic (layer −1) of a ``noise`` table, or None."""
    if table is None:
        return None
    rows = table[(table["statistic"] == statistic) & (table["layer"] == -1)]
    return float(rows["value"].iloc[0]) if len(rows) else None


def bootstrap_sd(values: np.ndarray, groups: np.ndarray | None, stat, n_boot: int = 1000, seed: int = 0) -> float:
    """Standard deviation of ``stat`` over ``n_boot`` resamples of the groups (passages) with
    replacement; ``values`` (n,) grouped by ``groups`` (n,) (None: every value its own group).
    Seeded, so a table rebuilt from the same rows gives the same noise."""
    values = np.asarray(values, float)
    if groups is None:
        groups = np.arange(len(values))
    keys, inv = np.unique(np.asarray(groups), return_inverse=True)
    if len(keys) < 2:
        return float("nan")
    members = [values[inv == g] for g in range(len(keys))]
    rng = np.random.default_rng([int(seed), SPLIT_STREAM, 1])
    out = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(keys), len(keys))
        out[b] = stat(np.concatenate([members[i] for i in pick]))
    return float(np.std(out, ddof=1))
