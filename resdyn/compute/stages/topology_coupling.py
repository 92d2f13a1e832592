"""Stage "topology_coupling" (METHODS §8): does the Jacobian respect the communities?

Per layer and community method: the mesoscale test (variance of J̄_l captured by the community
blocks against its nulls), the boundary-node test (participation against column norms) and the
rate-level tests. Which partition pairs with which Jacobian is ``resdyn.core.communities``'s
module docstring; the statistics are ``resdyn.core.topology_coupling``. Writes ``mesoscale``,
``coupling`` and ``topology.*`` rows of ``summary.parquet``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from resdyn.compute.stages import stages_in
from resdyn.core.communities import METHODS, snapshot_sources, nmi, out_snapshot
from resdyn.core.topology_coupling import (NULLS, OPERATORS, bh_fdr, boundary_test, column_norms,
                                           mesoscale_rows, permutation_spearman)
from resdyn.errors import ResdynError


def _self_alignment(store, n_layers: int) -> np.ndarray:
    """(L,) self-alignment of J̄_l from layers.parquet, NaN where the spectra stage has not run."""
    out = np.full(n_layers, np.nan)
    if store.has_table("layers"):
        lay = store.read_table("layers", columns=["layer", "operator", "self_alignment"])
        lay = lay[lay["operator"] == "J"]
        idx = lay["layer"].to_numpy(int)
        keep = (idx >= 0) & (idx < n_layers)
        out[idx[keep]] = lay["self_alignment"].to_numpy(float)[keep]
    return out


def run(ctx) -> None:
    """Stage ``topology_coupling``: per layer and method, the mesoscale tests, the boundary-node
    test and the rate-level tests (METHODS §8).

    mesoscale.parquet, one row per (layer, method, null, operator) with null 'independent' | 'joint'
    and operator 'J' | 'R' (``resdyn.core.topology_coupling``): layer, method, null, operator,
    snapshot_in, snapshot_out, n_comm_in, n_comm_out, variance_captured, sigma_max_K, null_mean,
    null_std, null_q05, null_q95, z, p_z, p_empirical (over N_NULL_PARTITIONS = 1,000 relabellings
    within unit-norm strata), q_bh and bh_significant (Benjamini–Hochberg over the layers of one
    method × null × operator, α = 0.05: the test; z is for display), and for l < L−1 the rate-level inputs
    disruption = 1 − NMI(snapshot 2l, snapshot 2l+2), d_sigma_max = |σ_max(K_{l+1}) − σ_max(K_l)|,
    d_variance_captured = |vc_{l+1} − vc_l| (of that row's operator).
    coupling.parquet: layer, method, snapshot, cohens_d, p_perm, q_bh, fdr_significant, n_top,
    n_bottom, spearman_rho, spearman_p, self_alignment; the tails hold exactly ⌊0.1 d⌋ units, ties
    broken by the run's seed.
    summary.parquet gains topology.<method>.* rows (Spearman of self-alignment vs d, FDR counts,
    rate-level ρ and p on R, BH-significant layers of each mesoscale test).
    """
    store, cfg = ctx.store, ctx.cfg
    n_layers, n_snap, has_final = snapshot_sources(store)
    units = store.read_table("units", columns=["snapshot", "method", "unit", "community", "participation"])
    jacs = store.read_array("jacobians")
    sa = _self_alignment(store, n_layers)
    present = [m for m in METHODS if m in set(units["method"])]
    if not present:
        raise ResdynError(f"run {store.run_id} has no community partitions; run the communities stage first")

    meso_rows, coup_rows, summary = [], [], {}
    tasks = [(mi, m, layer) for mi, m in enumerate(present) for layer in range(n_layers)]
    by_key = {k: g.sort_values("unit") for k, g in units.groupby(["method", "snapshot"])}
    for mi, m, layer in ctx.progress(tasks, desc="coupling", total=len(tasks), unit="layer"):
        s_in, s_out = 2 * layer, out_snapshot(layer, n_layers, has_final)
        u_in, u_out = by_key[(m, s_in)], by_key[(m, s_out)]
        lab_in = u_in["community"].to_numpy(np.int64)
        lab_out = u_out["community"].to_numpy(np.int64)
        jac = np.asarray(jacs[layer], dtype=np.float64)
        head = {"layer": layer, "method": m}
        info = {"snapshot_in": s_in, "snapshot_out": s_out,
                "n_comm_in": int(lab_in.max()) + 1, "n_comm_out": int(lab_out.max()) + 1}
        for row in mesoscale_rows(jac, lab_out, lab_in, seed=[cfg.seed, mi, layer, 1]):
            meso_rows.append({**head, "null": row.pop("null"), "operator": row.pop("operator"), **info, **row,
                              "disruption": np.nan})
        bt = boundary_test(u_in["participation"].to_numpy(float), column_norms(jac),
                           rng=np.random.default_rng([cfg.seed, mi, layer]), seed=cfg.seed)
        coup_rows.append({"layer": layer, "method": m, "snapshot": s_in, **bt,
                          "self_alignment": sa[layer]})

    meso = pd.DataFrame(meso_rows)
    coup = pd.DataFrame(coup_rows)
    meso["d_sigma_max"] = np.nan
    meso["d_variance_captured"] = np.nan
    meso["q_bh"] = np.nan
    meso["bh_significant"] = False
    coup["q_bh"] = np.nan
    coup["fdr_significant"] = False
    for mi, m in enumerate(present):
        disr = np.full(n_layers, np.nan)
        for layer in range(n_layers - 1):
            disr[layer] = 1.0 - nmi(by_key[(m, 2 * layer)]["community"], by_key[(m, 2 * layer + 2)]["community"])
        pre = f"topology.{m}."
        rate = {}
        for null in NULLS:
            for op in OPERATORS:
                # rows were appended layer by layer, so this index is in layer order
                rows = meso.index[(meso["method"] == m) & (meso["null"] == null) & (meso["operator"] == op)]
                vc = meso.loc[rows, "variance_captured"].to_numpy()
                sig = meso.loc[rows, "sigma_max_K"].to_numpy()
                d_sig, d_vc = np.full(n_layers, np.nan), np.full(n_layers, np.nan)
                d_sig[:-1], d_vc[:-1] = np.abs(np.diff(sig)), np.abs(np.diff(vc))
                meso.loc[rows, "disruption"] = disr
                meso.loc[rows, "d_sigma_max"] = d_sig
                meso.loc[rows, "d_variance_captured"] = d_vc
                rate[op] = (d_sig, d_vc)
                z = meso.loc[rows, "z"].to_numpy(float)
                # One rule everywhere (METHODS §8): BH over this test's layers at α = 0.05 on the
                # empirical p; adjacent layers share a snapshot, so the count is not a sum of
                # independent trials, but BH's FDR holds under positive dependence.
                q, sig = bh_fdr(meso.loc[rows, "p_empirical"].to_numpy(float))
                meso.loc[rows, "q_bh"] = q
                meso.loc[rows, "bh_significant"] = sig
                summary[pre + f"mesoscale.{null}.{op}.bh_significant"] = int(sig.sum())
                summary[pre + f"mesoscale.{null}.{op}.median_z"] = (float(np.nanmedian(z)) if np.isfinite(z).any()
                                                                     else np.nan)
                if (null, op) == ("independent", "J"):
                    # The name older readers know, the paper's test: now its BH count too.
                    summary[pre + "mesoscale.above_null"] = int(sig.sum())

        cm = coup["method"] == m
        q, s = bh_fdr(coup.loc[cm, "p_perm"].to_numpy())  # FDR over the layers of this run
        coup.loc[cm, "q_bh"] = q
        coup.loc[cm, "fdr_significant"] = s
        dvals = coup.loc[cm, "cohens_d"].to_numpy(float)
        rho_sa, p_sa = np.nan, np.nan
        okk = np.isfinite(sa) & np.isfinite(dvals)
        if okk.sum() >= 3 and np.ptp(sa[okk]) > 0 and np.ptp(dvals[okk]) > 0:
            r = stats.spearmanr(sa[okk], dvals[okk])
            rho_sa, p_sa = float(r.statistic), float(r.pvalue)
        rng = np.random.default_rng([cfg.seed, mi, 10**6])
        # On R: on J̄ the identity inside K makes |Δσ_max| and |Δvc| track the partitions'
        # overlap, and the test rejected 27 % of structureless cases at α = 0.05 (METHODS §8).
        d_sig, d_vc = rate["R"]
        r1, p1 = permutation_spearman(disr[:-1], d_sig[:-1], rng=rng)
        r2, p2 = permutation_spearman(disr[:-1], d_vc[:-1], rng=rng)
        summary.update({
            pre + "selfalign_vs_d.rho": rho_sa, pre + "selfalign_vs_d.p": p_sa,
            pre + "fdr_sig_pos": int((s & (dvals > 0)).sum()), pre + "fdr_sig_neg": int((s & (dvals < 0)).sum()),
            pre + "n_layers": n_layers,
            pre + "median_d": float(np.nanmedian(dvals)) if np.isfinite(dvals).any() else np.nan,
            pre + "mean_d": float(np.nanmean(dvals)) if np.isfinite(dvals).any() else np.nan,
            pre + "rate.dsigma.rho": r1, pre + "rate.dsigma.p": p1,
            pre + "rate.dvar.rho": r2, pre + "rate.dvar.p": p2,
        })
    coup["fdr_significant"] = coup["fdr_significant"].astype(bool)
    meso["bh_significant"] = meso["bh_significant"].astype(bool)
    coup = coup[["layer", "method", "snapshot", "cohens_d", "p_perm", "q_bh", "fdr_significant", "n_top",
                 "n_bottom", "spearman_rho", "spearman_p", "self_alignment"]]
    store.write_table("mesoscale", meso)
    store.write_table("coupling", coup)
    store.update_summary(summary)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
