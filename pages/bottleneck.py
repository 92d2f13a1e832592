"""Bottleneck: effective rank of the cumulative Jacobians P_l = J̄_{L−1}···J̄_l (METHODS §5, §11)."""

import streamlit as st

from resdyn import ui
from resdyn.core import queries, spectral
from resdyn.core.figures import bottleneck
from resdyn.core.store import open_run


store, m, layer = ui.run_page("Bottleneck: cumulative Jacobians")
n_layers = int(m["n_layers"])
overlay = ui.select_runs("Overlay runs", key="overlay", default=[store.run_id])
present = ui.sidebar_tail(store)

runs = [store] + [open_run(queries.runs_dir(), r) for r in overlay if r != store.run_id]
cumulative, layers, spectra = {}, {}, {}
for s in runs:
    cum = ui.load_table(s, "cumulative")
    if cum is None:
        st.warning(f"Run `{s.run_id}` lacks the **cumulative** stage, so it is not drawn. "
                   + ui.compute_hint(s, "cumulative"))
        continue
    cumulative[s.run_id] = cum
    layers[s.run_id] = ui.load_table(s, "layers")
    spectra[s.run_id] = ui.load_table(s, "cumulative_spectra")
if store.run_id not in cumulative:
    st.stop()

st.caption(
    "P_l maps a perturbation injected at layer l to the final residual state. Its effective rank "
    "exp(H(σ²/Σσ²)) counts the directions that survive to the output: a fall with depth of "
    "composition is the low-rank funnel (METHODS §5)."
)
for s in runs:
    if s.run_id in cumulative:
        note = spectral.cumulative_rank_note(s.manifest())
        st.caption(note if len(cumulative) == 1 else f"`{s.run_id}`: {note}")
cum = cumulative[store.run_id].sort_values("layer")
cols = st.columns(4)
cols[0].metric("erank(P_0), full stack", f"{cum['erank'].iloc[0]:.3g}")
cols[1].metric(f"erank(P_{n_layers - 1}), one block", f"{cum['erank'].iloc[-1]:.3g}")
cols[2].metric(f"erank(P_{layer}), chosen layer", f"{cum.loc[cum['layer'] == layer, 'erank'].iloc[0]:.3g}")
cols[3].metric("log10 ‖P_0‖_F", f"{cum['log10_fro'].iloc[0]:.2f}")

ui.plot(bottleneck.erank_profile(cumulative, layers, layer=layer, presentation=present), key="bottleneck-profile")
left, right = st.columns(2)
with left:
    ui.plot(bottleneck.erank_vs_radius(cum, layers[store.run_id], run_id=store.run_id, presentation=present),
            key="bottleneck-radius")
with right:
    ui.plot(bottleneck.cumulative_spectra({r: df for r, df in spectra.items() if df is not None},
                                          presentation=present), key="bottleneck-spectra")

tg = ui.load_table(store, "transient_growth")
if tg is None:
    st.info(f"Run `{store.run_id}` lacks the **pseudospectra** stage, so there is no transient-growth curve. "
            + ui.compute_hint(store, "pseudospectra"))
else:
    st.caption("Transient growth (METHODS §11): the norm of J̄_{l+k−1}···J̄_l as blocks are composed. "
               "A curve with its maximum (★) before the end amplifies transiently, a non-normal effect "
               "that eigenvalues alone cannot show.")
    shown = sorted({0, layer, n_layers // 2, n_layers - 1})
    ui.plot(bottleneck.transient_growth(tg, shown, run_id=store.run_id, presentation=present),
            key="bottleneck-transient")
