"""Runs: every run in the runs directory, its settings, status and timings."""

import streamlit as st

from resdyn import ui
from resdyn.core import queries

st.title("Runs")
store = ui.select_run()
present = ui.presentation_toggle()
ui.runs_dir_caption()
if store is None:
    st.stop()

overview = queries.run_overview()
stage_cols = [c for c in overview.columns if c.startswith("seconds_")]
st.dataframe(
    overview, hide_index=True,
    column_order=["run_id", "status", "model", "init", "architecture", "mode", "d_model", "n_layers",
                  "n_samples", "k", "seconds", *stage_cols],
    column_config={
        "run_id": st.column_config.TextColumn("run"),
        "d_model": st.column_config.NumberColumn("d", help="residual width"),
        "n_layers": st.column_config.NumberColumn("L", help="blocks"),
        "n_samples": st.column_config.NumberColumn("N", help="text samples"),
        "k": st.column_config.NumberColumn("k", help="rank of the truncated SVD for alignment"),
        "seconds": st.column_config.NumberColumn("total s", format="%.1f", help="compute time of all stages"),
        **{c: st.column_config.NumberColumn(f"{c.removeprefix('seconds_')} s", format="%.1f",
                                            help=f"seconds spent in stage {c.removeprefix('seconds_')}")
           for c in stage_cols},
    },
)

m = store.manifest()
st.subheader(f"Run `{store.run_id}`")
ui.partial_banner(store)
c = st.columns(5)
c[0].metric("model", str(m.get("model")), help=f"revision {m.get('revision')}, init {m.get('init')}")
c[1].metric("blocks L", m.get("n_layers"))
c[2].metric("width d", m.get("d_model"))
c[3].metric("samples N", m.get("n_samples"))
c[4].metric("k", m.get("k"), help="rank of the truncated SVD used for the alignments (baseline k/d)")
if store.has_table("layers"):
    lay = ui.load_layers(store, "J")
    h = st.columns(4)
    h[0].metric("complex pairs (mean over layers)", f"{lay['frac_complex'].mean():.1%}",
                help="share of eigenvalues of J̄_l with |Im λ| > 1e-6, averaged over layers")
    h[1].metric("self-alignment of J̄ (range)",
                f"{lay['self_alignment'].min():.2f} – {lay['self_alignment'].max():.2f}",
                help=f"baseline k/d = {m.get('k', 0) / max(m.get('d_model', 1), 1):.3f}")
    h[2].metric("Henrici δ of J̄ (median)", f"{lay['henrici'].median():.2f}", help="0 = normal operator")
    h[3].metric("largest spectral radius", f"{lay['spectral_radius'].max():.2f}",
                help=f"at layer {int(lay.loc[lay['spectral_radius'].idxmax(), 'layer'])}")
with st.expander("manifest.json"):
    st.json(m)
