"""Operator type: alignment, non-normality, residual share, conditioning and expansion per layer (METHODS §4)."""

import streamlit as st

from resdyn import ui
from resdyn.core import nulls, sample_stats, samples
from resdyn.core.figures import operator

store, m, layer = ui.run_page("Operator type across depth")
n_layers, d = int(m["n_layers"]), int(m["d_model"])
k = nulls.run_k(m)
present = ui.sidebar_tail(store)
if not ui.require(store, "layers"):
    st.stop()

st.caption(
    f"Is each block a symmetric stretch or a rotation-like, non-normal map? Self-alignment compares "
    f"the top-{k} input and output singular directions (1 = the same, k/d = {k}/{d} = {k / d:.3f} = "
    "unrelated); Henrici δ measures how far the operator is from normal (0 = normal). The shaded "
    "column is the layer chosen in the sidebar."
)
st.info(
    f"Self-alignment near k/d = {k / d:.3f} does not mean non-normal: a random orthogonal matrix is "
    "normal (Henrici δ = 0) yet its top singular subspaces are unrelated, so it sits at k/d too. "
    "Only Henrici δ measures non-normality (METHODS §4). Likewise the complex-pair fraction is read "
    "against the dotted real-Ginibre line: a random real matrix of this width already has "
    "that share of complex eigenvalues (METHODS §3).",
    icon=":material/info:",
)
snaps, _ = ui.load_snapshots(store)
n = int(m.get("n_samples") or 0)
bad = samples.degenerate_layers(snaps, n, n_layers)
if bad:
    rows = snaps.set_index("snapshot")
    shown = "; ".join(f"J̄_{l}: snapshot {2 * l}, {samples.describe_snapshot(rows.loc[2 * l], n, d)}"
                      for l in bad[:4]) + (f"; and {len(bad) - 4} more" if len(bad) > 4 else "")
    st.caption(f"⚠️ Layer(s) {', '.join(map(str, bad))} average their Jacobian over a degenerate sample "
               f"({samples.DEGENERATE_RULE}): {shown}. Their values describe a few tokens, not N samples "
               "(METHODS §1); `--position random` analyses a seeded token per passage instead of the last.")
lay = ui.load_layers(store)
sel = lay[lay["layer"] == layer].set_index("operator")
if {"J", "R"} <= set(sel.index):
    c = st.columns(5)
    c[0].metric(f"self-alignment J̄, layer {layer}", f"{sel.loc['J', 'self_alignment']:.3f}",
                delta=f"{sel.loc['J', 'self_alignment'] - k / d:+.3f} vs k/d", delta_color="off")
    c[1].metric("self-alignment R", f"{sel.loc['R', 'self_alignment']:.3f}")
    c[2].metric("Henrici δ of J̄", f"{sel.loc['J', 'henrici']:.3f}")
    c[3].metric("median κ", f"{sel.loc['J', 'kappa_median']:.3g}" if "kappa_median" in sel else "–",
                help="of the per-sample Jacobians (the sample_stats stage)")
    c[4].metric("expanding (|λ| > 1)", f"{sel.loc['J', 'frac_expanding']:.1%}")

# Figures are built once per run, table version and mode (server-wide cache); the sidebar's
# layer is a band added to a copy, so moving the slider rebuilds nothing.
base = (str(store.path), ui.stamps(store, *sample_stats.LAYER_TABLES), present)
spec = ui.cached_figure("operator-self-alignment", base + (k, d),
                        lambda: operator.self_alignment_profile(lay, k=k, d=d, presentation=present))
ui.plot(ui.with_highlight(spec, layer), key="operator-self-alignment")
profiles = operator.PROFILES
if not sample_stats.has_profiles(lay):  # the sample_stats stage comes after the spectra
    profiles = [(name, b) for name, b in profiles if name not in operator.SAMPLE_PROFILES]
    st.info("κ of the per-sample Jacobians is not in this run yet (`sample_profiles.parquet`, the "
            f"`sample_stats` stage). {ui.compute_hint(store, 'sample_stats')}", icon=":material/info:")
specs = [(name, ui.cached_figure(f"operator-{name}", base, lambda b=b: b(lay, presentation=present)))
         for name, b in profiles]
if present:  # one figure per row on a projector
    for name, spec in specs:
        ui.plot(ui.with_highlight(spec, layer), key=f"operator-{name}")
else:
    for i in range(0, len(specs), 2):
        cols = st.columns(2)
        for col, (name, spec) in zip(cols, specs[i:i + 2]):
            with col:
                ui.plot(ui.with_highlight(spec, layer), key=f"operator-{name}")
