"""Stage "cumulative" (METHODS §5): effective rank and norm of the cumulative products
P_l = J̄_{L−1} ⋯ J̄_l of the mean Jacobians.

Reads ``jacobians.npy`` (L, d, d) float32 and ``layers.parquet`` (for ρ(J̄_l)); writes
``cumulative.parquet`` (layer, erank, log10_fro), ``cumulative_spectra.parquet`` (layer, idx,
sigma, log10_sigma) for l = 0, L//2, L−1, summary rows ``cumulative.*`` (Spearman of erank(P_l)
against ρ(J̄_l)) and the manifest's ``cumulative_rank``. The math is ``resdyn.core.spectral``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resdyn.compute.stages import mean_jacobians, stages_in
from resdyn.config import resolve_cumulative_rank
from resdyn.core import spectral


def spectra_layers(n_layers: int) -> list[int]:
    """Injection layers whose cumulative singular values are kept: 0, L//2 and L−1."""
    return sorted({0, n_layers // 2, n_layers - 1})


def run(ctx) -> None:
    """The exact products by default; ``--cumulative-rank K`` < d keeps the paper's rank-K truncation.

    The rank is the flag's, else the run's recorded ``cumulative_rank`` (a ``--redo`` keeps the
    run's setting), else d; it is written to the manifest as ``cumulative_rank`` (d when exact).
    Runs from before that key were truncated at min(512, d).
    """
    store = ctx.store
    jac = mean_jacobians(store)
    n_layers, d = jac.shape[0], jac.shape[1]
    keep = spectra_layers(n_layers)
    rank = ctx.cfg.cumulative_rank
    if rank is None:
        rank = store.manifest().get("cumulative_rank")
    rank = resolve_cumulative_rank(None if rank is None else int(rank), d)
    cum = spectral.cumulative_products(jac, k=rank, keep=keep, progress=ctx.progress)
    layers = np.arange(n_layers, dtype=np.int32)
    store.write_table("cumulative", pd.DataFrame({"layer": layers, "erank": cum.erank, "log10_fro": cum.log10_fro}))
    frames = []
    for l in keep:
        ls = cum.log10_sigma.get(l)
        if ls is None:  # the product became the zero map above this layer
            continue
        frames.append(pd.DataFrame({"layer": np.int32(l), "idx": np.arange(len(ls), dtype=np.int32),
                                    "sigma": 10.0**ls, "log10_sigma": ls}))
    store.write_table("cumulative_spectra", pd.concat(frames, ignore_index=True))
    # METHODS §5: Spearman(erank(P_l), ρ(J̄_l)) across layers (the paper: ρ_s = −0.33 on Llama).
    rho = np.full(n_layers, np.nan)
    if store.has_table("layers"):
        lay = store.read_table("layers", columns=["layer", "operator", "spectral_radius"])
        lay = lay[lay["operator"] == "J"]
        rho[lay["layer"].to_numpy(int)] = lay["spectral_radius"].to_numpy(float)
    r, p = spectral.spearman(cum.erank, rho)
    store.update_summary({
        "cumulative.k": cum.k,
        "cumulative.erank_P0": cum.erank[0],
        "cumulative.erank_Pmid": cum.erank[n_layers // 2],
        "cumulative.erank_Plast": cum.erank[-1],
        "cumulative.log10_fro_P0": cum.log10_fro[0],
        "cumulative.spearman_erank_radius.rho": r,
        "cumulative.spearman_erank_radius.p": p,
    })
    store.update_manifest(cumulative_rank=int(cum.k))


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
