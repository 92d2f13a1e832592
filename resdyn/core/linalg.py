"""Operator-type measures of a layer's linear map (METHODS §2–4). numpy only.

Shapes: J is (d, d) or (L, d, d); spectra are complex128 (d,) per layer.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

# METHODS §3: an eigenvalue counts as complex when its imaginary part exceeds this.
COMPLEX_TOL = 1e-6


def top_singular_vectors(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Left and right top-k singular vectors of ``a`` (d, d): U_k (d, k), V_k (d, k), float64."""
    u, _, vt = np.linalg.svd(np.asarray(a, dtype=np.float64))
    return u[:, :k], vt[:k].T


def self_alignment(a: np.ndarray, k: int) -> float:
    """‖V_kᵀ U_k‖_F² / k: 1 for a symmetric operator, about k/d for a rotation (METHODS §4)."""
    u, v = top_singular_vectors(a, k)
    return float(np.sum((v.T @ u) ** 2) / k)


def forward_alignment(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """‖U_{a,k}ᵀ V_{b,k}‖_F² / k for layer a followed by layer b: does a write where b reads?"""
    ua, _ = top_singular_vectors(a, k)
    _, vb = top_singular_vectors(b, k)
    return float(np.sum((ua.T @ vb) ** 2) / k)


def henrici(a: np.ndarray, eigenvalues: np.ndarray | None = None) -> float:
    """Henrici departure from normality sqrt(‖A‖_F² − Σ|λ|²) / ‖A‖_F, in [0, 1] (METHODS §4)."""
    a = np.asarray(a)
    lam = np.linalg.eigvals(a) if eigenvalues is None else eigenvalues
    fro2 = float(np.sum(np.abs(a) ** 2))
    if fro2 == 0.0:
        return 0.0
    # Clip at 0: rounding can make the difference slightly negative for normal matrices.
    return float(np.sqrt(max(fro2 - float(np.sum(np.abs(lam) ** 2)), 0.0) / fro2))


def spectrum_stats(lam: np.ndarray) -> dict[str, float]:
    """Fractions and sizes of a spectrum λ (d,) complex (METHODS §3)."""
    mod = np.abs(lam)
    return {
        "frac_expanding": float(np.mean(mod > 1.0)),
        "frac_complex": float(np.mean(np.abs(lam.imag) > COMPLEX_TOL)),
        "mean_abs_eig": float(mod.mean()),
        "spectral_radius": float(mod.max()),
    }


def sample_stats_from_gram(gram: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample σ_max, σ_min, κ, ‖J‖_F and PR from Gram matrices G = JᵀJ (B, d, d), float64.

    σ² are the eigenvalues of G; PR = (Σσ²)² / Σσ⁴ = tr(G)² / ‖G‖_F² needs no eigensolve.
    Tiny negative eigenvalues from rounding are clipped to 0 (then σ_min = 0, κ = inf).
    """
    g = np.asarray(gram, dtype=np.float64)
    ev = np.clip(np.linalg.eigvalsh(g), 0.0, None)  # ascending
    smax = np.sqrt(ev[:, -1])
    smin = np.sqrt(ev[:, 0])
    tr = np.trace(g, axis1=1, axis2=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(smin > 0, smax / smin, np.inf)
        pr = tr**2 / np.sum(g * g, axis=(1, 2))
    return {"sigma_max": smax, "sigma_min": smin, "kappa": kappa, "fro": np.sqrt(tr), "pr": pr}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def operator_table(jacobians: np.ndarray, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-layer operator measures of J̄_l and R_l = J̄_l − I (METHODS §3–4).

    Args:
        jacobians: (L, d, d) mean Jacobians.
        k: rank of the truncated SVD for the alignments (< d).

    Returns:
        layers: one row per (layer, operator ∈ {"J", "R"}) with self_alignment, forward_alignment
            (layer l → l+1; NaN for the last layer), henrici, frac_expanding, frac_complex,
            mean_abs_eig, spectral_radius, residual_norm_ratio (‖R‖_F/‖J‖_F, same on both rows).
        eigenvalues: layer, operator, idx, re, im (d rows per layer and operator).
    """
    jac = np.asarray(jacobians, dtype=np.float64)
    n_layers, d, _ = jac.shape
    eye = np.eye(d)
    rows, eig_frames = [], []
    # R_l = J̄_l − I has the eigenvalues λ − 1 of J̄_l (same eigenvectors): one eigensolve per
    # layer serves both operators (a third of this function's time at d = 576).
    # The layers are independent LAPACK calls (which release the GIL): one Python thread per core,
    # each call on however many BLAS threads the caller allows (the demo: one), same results.
    with ThreadPoolExecutor(max_workers=min(2, _cores())) as pool:
        eig_j = list(pool.map(np.linalg.eigvals, jac))
        # One SVD per matrix serves both alignments (the forward one pairs layer l with l + 1).
        tops_by_op = {op: list(pool.map(lambda a: top_singular_vectors(a, k), jac if op == "J" else jac - eye))
                      for op in ("J", "R")}
    for op in ("J", "R"):
        mats = jac if op == "J" else jac - eye
        tops = tops_by_op[op]
        for l in range(n_layers):
            a = mats[l]
            u, v = tops[l]
            lam = eig_j[l] if op == "J" else eig_j[l] - 1.0
            order = np.lexsort((lam.imag, lam.real))
            lam = lam[order]
            eig_frames.append(pd.DataFrame({
                "layer": np.full(d, l, dtype=np.int32), "operator": op, "idx": np.arange(d, dtype=np.int32),
                "re": lam.real, "im": lam.imag,
            }))
            rows.append({
                "layer": l, "operator": op,
                "self_alignment": float(np.sum((v.T @ u) ** 2) / k),
                "forward_alignment": float(np.sum((u.T @ tops[l + 1][1]) ** 2) / k) if l + 1 < n_layers else np.nan,
                "henrici": henrici(a, lam),
                **spectrum_stats(lam),
                "residual_norm_ratio": float(np.linalg.norm(jac[l] - eye) / np.linalg.norm(jac[l])),
            })
    return pd.DataFrame(rows), pd.concat(eig_frames, ignore_index=True)
