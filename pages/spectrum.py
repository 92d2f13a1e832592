"""Spectrum: eigenvalues of the mean Jacobians J̄_l (or R_l = J̄_l − I) across depth (METHODS §3)."""

import streamlit as st

from resdyn import ui
from resdyn.core import queries
from resdyn.core.figures import spectrum

store, m, layer = ui.run_page("Spectrum of the mean Jacobians")
n_layers = int(m["n_layers"])
op = ui.select_operator()
present = ui.sidebar_tail(store)
if not ui.require(store, "eigenvalues"):
    st.stop()

st.caption(
    "Every eigenvalue λ of the mean block Jacobian J̄_l (d of them per layer). Outside the unit "
    "circle a direction is amplified by the block, inside it is damped; off the real axis the block "
    "rotates. Switch to R = J̄ − I to see the residual branch alone."
)
if store.has_table("layers"):
    row = ui.load_layers(store, op)
    row = row[row["layer"] == layer]
    if len(row):
        r = row.iloc[0]
        c = st.columns(4)
        null = r.get("frac_complex_null")
        c[0].metric(f"complex pairs, layer {layer}", f"{r['frac_complex']:.1%}",
                    delta=None if null is None else f"{r['frac_complex'] - null:+.1%} vs a random matrix",
                    delta_color="off",
                    help=None if null is None else f"a random real matrix of this width (real Ginibre) has "
                                                   f"{null:.1%} complex eigenvalues (METHODS §3)")
        c[1].metric("expanding (|λ| > 1)", f"{r['frac_expanding']:.1%}")
        c[2].metric("spectral radius ρ", f"{r['spectral_radius']:.3f}")
        c[3].metric("mean |λ|", f"{r['mean_abs_eig']:.3f}")

default_others = [l for l in (0, n_layers - 1) if l != layer]
others = ui.select_layers(n_layers, default=default_others, label="Compare with layers")
shown = [layer] + [l for l in others if l != layer]
base = (str(store.path), ui.stamps(store, "eigenvalues"), op, present)  # the figures' cache key
ui.plot(ui.cached_figure("spectrum-scatter", base + (tuple(shown),), lambda: spectrum.eigenvalue_scatter(
    ui.load_eigenvalues(store, shown, op), shown, operator=op, n_layers=n_layers, presentation=present)),
    key="spectrum-scatter")
# Binned in DuckDB: the L·d eigenvalues never come to Python for this figure.
ui.plot(ui.cached_figure("spectrum-density", base, lambda: spectrum.density_figure(
    queries.eigenvalue_density(store.run_id, op, n_layers=n_layers, root=store.path.parent), operator=op,
    presentation=present)), key="spectrum-density")
