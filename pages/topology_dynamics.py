"""Topology ↔ dynamics: are community boundary units amplified by the Jacobian? (METHODS §8)."""

import numpy as np
import streamlit as st

from resdyn import ui
from resdyn.core.figures import topology as fig

store, m, layer = ui.run_page("Topology ↔ dynamics")
n_layers = int(m["n_layers"])
present = ui.sidebar_tail(store)
if not ui.require(store, "units", "communities", "coupling", "mesoscale"):
    st.caption(f"Compute them with `python -m resdyn.compute run --run-id {store.run_id} "
               f"--runs-dir {store.path.parent} --stages communities,topology_coupling`.")
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
meso = meso_all[meso_all["method"] == method]
pvals = {}
if store.has_table("summary"):
    summ = ui.load_table(store, "summary", "starts_with(name, ?)", (f"topology.{method}.rate.",))
    got = dict(zip(summ["name"], summ["value"]))
    pvals = {k: got.get(f"topology.{method}.rate.{k}.p", np.nan) for k in ("dsigma", "dvar")}

pairs = [
    (fig.participation_scatter(units, title=f"Layer {layer}", presentation=present), "topo-scatter"),
    (fig.cohens_d_figure(coupling, n_layers, highlight=layer, presentation=present), "topo-cohens-d"),
    (fig.selfalign_vs_d_figure(sub, n_layers, title="Operator type vs coupling.", presentation=present),
     "topo-selfalign"),
    (fig.mesoscale_figure(meso, n_layers, highlight=layer, title="Mesoscale:", presentation=present),
     "topo-mesoscale"),
]
for i in range(0, len(pairs), 1 if present else 2):
    cols = st.columns(1 if present else 2)
    for col, (f, key) in zip(cols, pairs[i:i + len(cols)]):
        with col:
            ui.plot(f, key=key)
ui.plot(fig.rate_figure(meso, n_layers, pvalues=pvals, presentation=present), key="topo-rate")

st.subheader("Community methods compared (paper Table 1)")
comms = ui.load_table(store, "communities")
table = fig.method_table(coupling, comms)
# Three decimals through column_config (a pandas Styler would cost ~0.1 s to import and render).
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in table.columns if table[c].dtype.kind == "f"})
