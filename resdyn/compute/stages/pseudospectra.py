"""Stage "pseudospectra" (METHODS §11): ε-pseudospectra, numerical ranges, singular values at
the stored doses, and transient growth.

Reads ``schur_T.npy`` (L, d, d) complex64 and ``jacobians.npy``; writes ``pseudospectra.parquet``
(layer, c, x, y, log10_sigma_min) on a grid per layer and dose, ``numerical_range.parquet``
(layer, c, idx, x, y), ``layer_sigma.parquet`` (layer, c, i, sigma: the singular values of
J_l(c)), ``transient_growth.parquet`` (layer, k, log10_norm) and summary rows ``transient.*``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg as sl
from threadpoolctl import threadpool_limits

from resdyn.compute.stages import mean_jacobians, stages_in
from resdyn.core import spectral
# The stored doses and grid sizes (shared with the synthetic writer).
from resdyn.core.spectral import NR_ANGLES, PSEUDO_DOSES, PSEUDO_GRID, PSEUDO_PAD


def run(ctx) -> None:
    # One BLAS thread, as in the schur stage: the per-layer SVDs here are too small to gain from
    # OpenBLAS's threads, which under load spin instead (measured on the shared 2-core machine at
    # load average 8: svdvals at d = 576 took 7.2 CPU-seconds with two threads, 0.06 with one,
    # and the whole stage on the demo's trained run 812 CPU-seconds instead of 86).
    with threadpool_limits(limits=1, user_api="blas"):
        _compute(ctx)


def _compute(ctx) -> None:
    store = ctx.store
    t_all = store.read_array("schur_T")
    n_layers = t_all.shape[0]
    ps, nr, sv = [], [], []
    for l in ctx.progress(range(n_layers), desc="pseudospectra", total=n_layers, unit="layer"):
        t = np.asarray(t_all[l])
        for c in PSEUDO_DOSES:
            tc = spectral.dosed_schur_factor(t, c)
            # σ(J_l(c)) = σ(Λ + cN): what the Schur page draws for runs too wide to run an SVD live.
            sigma = sl.svdvals(tc, check_finite=False).astype(np.float64)
            sv.append(pd.DataFrame({"layer": np.int32(l), "c": float(c),
                                    "i": np.arange(1, len(sigma) + 1, dtype=np.int32), "sigma": sigma}))
            w = spectral.numerical_range(tc, n_angles=NR_ANGLES)
            nr.append(pd.DataFrame({"layer": np.int32(l), "c": float(c), "idx": np.arange(len(w), dtype=np.int32),
                                    "x": w.real, "y": w.imag}))
            # The grid spans W(J_l(c)) plus a margin: every drawn ε-contour closes inside it.
            x, y, g = spectral.pseudospectrum_grid(tc, n=PSEUDO_GRID, pad=PSEUDO_PAD, around=w)
            xx, yy = np.meshgrid(x, y)
            ps.append(pd.DataFrame({"layer": np.int32(l), "c": float(c), "x": xx.ravel(), "y": yy.ravel(),
                                    "log10_sigma_min": g.ravel()}))
    store.write_table("pseudospectra", pd.concat(ps, ignore_index=True))
    store.write_table("numerical_range", pd.concat(nr, ignore_index=True))
    store.write_table("layer_sigma", pd.concat(sv, ignore_index=True))
    tg = spectral.transient_growth(mean_jacobians(store), progress=ctx.progress)
    li, ki = np.nonzero(~np.isnan(tg))
    store.write_table("transient_growth", pd.DataFrame({
        "layer": li.astype(np.int32), "k": (ki + 1).astype(np.int32), "log10_norm": tg[li, ki]}))
    # Transient amplification of the whole stack: peak over k of ‖P_{0:k}‖₂ against its end value.
    store.update_summary({
        "transient.log10_peak_P0": float(np.nanmax(tg[0])),
        "transient.peak_k_P0": float(np.nanargmax(tg[0]) + 1),
        "transient.log10_end_P0": float(tg[0, n_layers - 1]),
    })


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
