"""Topology ↔ dynamics: are community boundary units amplified by the Jacobian? (METHODS §8)."""

import numpy as np
import streamlit as st

from resdyn import ui
from resdyn.core import topology_coupling as tc
from resdyn.core.figures import topology as fig

store, m, layer = ui.run_page("Topology ↔ dynamics")
n_layers = int(m["n_layers"])
present = ui.sidebar_tail(store)
if not ui.require(store, "units", "communities", "coupling", "mesoscale"):  # says how they come
    st.stop()

coupling = ui.load_table(store, "coupling")
meso_all = ui.load_table(store, "mesoscale")
methods = [x for x in fig.METHOD_LABELS if x in set(coupling["method"])]
method = st.sidebar.selectbox("Community method", methods, format_func=fig.method_label, key="_sel_method")

st.caption(
    "A unit's participation coefficient says how evenly its graph edges spread over communities "
    "(0 = inside one, high = a boundary unit). Its amplification is the norm of its column of J̄_l, "
    "the response to a perturbation of that unit. Partitions of snapshot 2l (the block's input) "
    "pair with J̄_l; the output side of the mesoscale operator uses snapshot 2l+2."
)
row = coupling[(coupling["method"] == method) & (coupling["layer"] == layer)]
if len(row):
    r = row.iloc[0]
    c = st.columns(4)
    c[0].metric(f"Cohen's d, layer {layer}", f"{r['cohens_d']:+.3f}")
    c[1].metric("permutation p / BH q", f"{r['p_perm']:.3g} / {r['q_bh']:.3g}")
    c[2].metric("Spearman ρ (all units)", f"{r['spearman_rho']:+.3f}")
    sig = coupling[(coupling["method"] == method)]["fdr_significant"]
    c[3].metric("FDR-significant layers", f"{int(sig.sum())}/{len(sig)}")

units = ui.load_table(store, "units", "snapshot = ? AND method = ?", (2 * layer, method))
sub = coupling[coupling["method"] == method]
meso = tc.with_null_columns(meso_all[meso_all["method"] == method])
legacy = tc.is_legacy_mesoscale(meso)
claim = tc.claim_rows(meso)
# The rate-level inputs: on R (the stage's test now); a legacy table's summary p is of J̄'s rows.
rate_rows = tc.with_null_columns(meso)
rate_op = "J" if legacy or not (rate_rows["operator"] == "R").any() else "R"
paper = rate_rows[(rate_rows["null"] == "independent") & (rate_rows["operator"] == rate_op)]
has_joint = bool((meso["null"] == "joint").any())
pvals = {}
if store.has_table("summary"):
    summ = ui.load_table(store, "summary", "starts_with(name, ?)", (f"topology.{method}.rate.",))
    got = dict(zip(summ["name"], summ["value"]))
    pvals = {k: got.get(f"topology.{method}.rate.{k}.p", np.nan) for k in ("dsigma", "dvar")}

pairs = [
    (fig.participation_scatter(units, title=f"Layer {layer}", seed=int(m.get("seed", 0)), presentation=present),
     "topo-scatter"),
    (fig.cohens_d_figure(coupling, n_layers, highlight=layer, presentation=present), "topo-cohens-d"),
    (fig.selfalign_vs_d_figure(sub, n_layers, title="Operator type vs coupling.", presentation=present),
     "topo-selfalign"),
    (fig.mesoscale_figure(claim, n_layers, highlight=layer, presentation=present,
                          title="Mesoscale, R, joint null:" if has_joint else "Mesoscale, J̄, independent null:"),
     "topo-mesoscale"),
]
for i in range(0, len(pairs), 1 if present else 2):
    cols = st.columns(1 if present else 2)
    for col, (f, key) in zip(cols, pairs[i:i + len(cols)]):
        with col:
            ui.plot(f, key=key)
st.caption(
    "Mesoscale test: the variance of the operator captured by the community basis against 1,000 random "
    "relabellings of the units within ten strata of unit norm (row plus column norm of R, so that heavy units "
    "are exchanged only with each other); a layer counts when its empirical p passes Benjamini–Hochberg over "
    "the layers at α = 0.05 (z is shown for scale). Only the joint null on R supports a claim that the "
    "Jacobian couples communities: the independent null (the paper's) also rewards the identity "
    "inside J̄, which maps each community onto itself whenever adjacent snapshots share communities "
    "(in a planted test J = I plus a structureless R scored z ≈ 89 against it, |z| < 1 against the joint null)."
)
if legacy:
    st.caption(f"Note: {tc.LEGACY_MESOSCALE_NOTE}.")
if not has_joint:
    st.info(f"Run `{store.run_id}` has only the paper's mesoscale test (independent null on J̄), which the "
            f"skip connection inflates; `--redo topology_coupling` adds the joint null and R.")
ui.plot(fig.mesoscale_z_figure(meso, n_layers, highlight=layer, presentation=present), key="topo-mesoscale-z")
ui.plot(fig.rate_figure(paper, n_layers, pvalues=pvals, presentation=present), key="topo-rate")

st.subheader("Community methods compared (paper Table 1)")
comms = ui.load_table(store, "communities")
table = fig.method_table(coupling, comms)
# Three decimals through column_config (a pandas Styler would cost ~0.1 s to import and render).
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in table.columns if table[c].dtype.kind == "f"})
