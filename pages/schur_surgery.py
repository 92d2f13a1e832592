"""Schur surgery: scale the non-normal part N of every J̄_l = Q(Λ + N)Q* by a dose c, and weigh the
skip connection by β (METHODS §6, §11)."""

import numpy as np
import streamlit as st

from resdyn import ui
from resdyn.core import dose, queries, surrogates
from resdyn.core.figures import surgery
from resdyn.core.figures.common import empty_figure
from resdyn.core.store import open_run
from resdyn.errors import ResdynError


@st.cache_data(max_entries=32, show_spinner=False)
def _trained_sigma(root: str, run_id: str, layer: int, stamp: int):
    """σ of J̄_l itself (c = 1, β = 1), the reference curve; one SVD, cached per run and layer."""
    return dose.layer_sigma(open_run(root, run_id), layer, 1.0)


SURROGATE_HELP = ("Which normal matrix replaces J̄_l at c = 0. descending / ascending: the Schur dose "
                  "Q(Λ + cN)Q* with the eigenvalues in descending |λ| (a right flag: q_1 is the dominant "
                  "right eigenvector) or ascending |λ| (a left flag); polar: J̄ = VΛV⁻¹, V = UH, dose "
                  "U H^c Λ H^−c U*, independent of any order or phase. A dose claim is a finding only "
                  "where the three agree.")


def nearest_stored(table, c: float, column: str = "c") -> tuple[np.ndarray, float]:
    """The values of ``column`` a table is stored at, and the one nearest to the slider's."""
    stored = np.unique(table[column].to_numpy(float))
    return stored, float(stored[np.argmin(np.abs(stored - c))])


def dose_from_link() -> float:
    """The dose c from ``?c=`` (default 1.0 = the trained model); bad values warn and fall back."""
    raw = st.query_params.get("c")
    if raw is None:
        return 1.0
    try:
        c = float(raw)
        if not dose.C_MIN <= c <= dose.C_MAX:
            raise ValueError
        return round(c, 2)
    except ValueError:
        st.sidebar.warning(f"Dose {raw!r} from the link is not in [0, 2]; showing c = 1.")
        return 1.0


store, m, layer = ui.run_page("Schur surgery: dose response of the non-normal part")
n_layers = int(m["n_layers"])
overlay = ui.select_runs("Overlay runs", key="overlay", default=[store.run_id])
c = st.sidebar.slider("Dose c", 0.0, 2.0, dose_from_link(), step=0.01, key="_sel_c",
                      help="0: every J̄_l made normal at its own spectrum; 1: the trained model; 2: doubled N.")
st.query_params["c"] = f"{c:.2f}"
beta = ui.select_number("Skip weight β", dose.B_MIN, dose.B_MAX, 1.0, key="beta",
                        help="Every layer becomes βI + R_l(c), R_l(c) = J_l(c) − I: 1 is the model, "
                             "0 keeps the residual branches alone.")
present = ui.sidebar_tail(store)

runs = [store] + [open_run(queries.runs_dir(), r) for r in overlay if r != store.run_id]
tables, readouts = {}, {}
for s in runs:
    df = ui.load_table(s, "schur_dose")
    if df is None or not dose.has_schur(s):
        st.warning(f"Run `{s.run_id}` lacks the **schur** stage, so it is not drawn. " + ui.compute_hint(s, "schur"))
        continue
    tables[s.run_id] = df
if store.run_id not in tables:
    st.stop()
table = tables[store.run_id]
# The polar surrogate is the default where the run stores it: it is the one normal surrogate that
# depends on no choice (eigenvalue order, eigenvector phases), so the first view is not an artefact.
offered = dose.stored_surrogates(table)
surrogate = ui.select_choice("Normal surrogate", offered, key="surrogate",
                             default="polar" if "polar" in offered else "descending",
                             format_func=lambda x: surrogates.SURROGATE_LABELS[x], help=SURROGATE_HELP)

st.caption(
    "Each mean Jacobian is replaced by J_l(c), a path from a normal matrix with J̄_l's spectrum (c = 0) "
    "to J̄_l itself (c = 1): the spectrum never changes. Schur surrogates write J̄_l = Q(Λ + N)Q* and scale "
    "the strictly upper-triangular part, J_l(c) = Q(Λ + cN)Q*; a Schur form exists for every order of the "
    "eigenvalues on T's diagonal and J_l(c) depends on it for c ≠ 1, so the page shows the descending-|λ| "
    "order (a right flag), the ascending one (a left flag) and the band of random orders. The polar "
    "surrogate needs no order: J̄_l = VΛV⁻¹ with unit eigenvectors, V = UH (polar), J_l(c) = U H^c Λ H^−c U*. "
    "The readouts are for the whole linearised stack P_{0:L−1}(c, β) = J_{L−1}(c, β)···J_0(c, β), with "
    "J_l(c, β) = βI + R_l(c) and R_l(c) = J_l(c) − I the residual branch (β = 1: the model's skip)."
)
order = dose.schur_order(store)
band = dose.band_at(table, c)
if band is None:
    st.caption(f"Run `{store.run_id}` was computed before the canonical eigenvalue order: its dose uses "
               "LAPACK's arbitrary order and it stores no ordering band, skip-dose grid or ascending and polar "
               f"surrogates; recompute it with `python -m resdyn.compute run --run-id {store.run_id} --redo schur` "
               "to add them.")
elif offered == ["descending"]:
    st.caption(f"Run `{store.run_id}` was computed before the ascending and polar surrogates: only the "
               f"descending dose is stored; `python -m resdyn.compute run --run-id {store.run_id} --redo schur` "
               "adds them.")
# At a stored dose the readouts are the stored grid's exact values, so no render waits for the live
# factors, which are built in the background once the page is drawn (bottom of this file). Off the
# grid the readouts are live once those factors exist, and interpolated from the grid until then.
stored = dose.stored_at(table, c, beta, surrogate)
live_ok = dose.live_allowed(store)
building = False
try:
    if stored:
        res = dose.dose_response(store, c, layers=[layer], path="interpolated", beta=beta, surrogate=surrogate,
                                 table=table)
    elif (live_ok and dose.grid_answers(table, beta, surrogate)
          and dose.live_dose(store, surrogate, wait=False) is None):
        building = True
        res = dose.dose_response(store, c, layers=[layer], path="interpolated", beta=beta, surrogate=surrogate,
                                 table=table)
    else:
        with st.spinner(f"Building the {surrogate} surrogate's live factors (once per run) ..."):
            res = dose.dose_response(store, c, layers=[layer], beta=beta, surrogate=surrogate)
except ResdynError as exc:
    st.error(str(exc))
    st.stop()
readouts[store.run_id] = {"erank": res.erank, "log10_fro": res.log10_fro, "henrici": res.henrici,
                          "path": "live" if stored else res.path, "beta": beta}
missing = []
for s in runs[1:]:
    if s.run_id in tables:
        try:
            r = dose.dose_response(s, c, layers=[], path="interpolated", beta=beta, surrogate=surrogate,
                                   table=tables[s.run_id])
        except ResdynError:
            missing.append(s.run_id)
            continue
        readouts[s.run_id] = {"erank": r.erank, "log10_fro": r.log10_fro, "henrici": r.henrici,
                              "path": r.path, "beta": beta}

trained = table[(table["mode"] == "J") & (table["construction"] == "dose") & (table["c"] == 1.0)]
ref = trained.iloc[0] if len(trained) else None
at = f"c = {c:.2f}" + (f", β = {beta:.2f}" if beta != 1.0 else "")
cols = st.columns(3)
for col, key, label, fmt in ((cols[0], "erank", "erank(P_{0:L−1})", "{:.3g}"),
                             (cols[1], "log10_fro", "log10 ‖P_{0:L−1}‖_F", "{:.2f}"),
                             (cols[2], "henrici", "Henrici δ(P_{0:L−1})", "{:.3f}")):
    value = getattr(res, key)
    delta = None if ref is None or not np.isfinite(value) else f"{value - ref[key]:+.3g} vs trained"
    col.metric(f"{label} at {at}", fmt.format(value), delta=delta, delta_color="off")
source = "the stored Schur factors" if surrogate != "polar" else "the polar factors of J̄"
how = ("read from the stored dose grid (exact: this dose is stored)" if stored
       else f"recomputed live from {source}" if res.path == "live"
       else "interpolated from the stored dose grid while the live factors are computed (once per run; "
            "the next move is live)" if building
       else "interpolated from the stored dose grid (the run is too large to recompute live here)")
order_note = (f"eigenvalue order: {order}" if order else "eigenvalue order: LAPACK's")
st.caption(f"Run `{store.run_id}`, {surrogates.SURROGATE_LABELS[surrogate]} surrogate ({order_note}): {how} "
           f"in {res.seconds:.2f} s. Overlaid runs are interpolated."
           + (f" Runs without this surrogate or without a skip-dose grid at β ≠ 1 have no readout: "
              f"{', '.join(missing)}." if missing else ""))
if band is not None:
    n_draws = table.loc[table["construction"] == "order_draw", "draw"].nunique()
    lo, hi = band["erank"]
    canon = dose.grid_values(store, c, table=table)[0]
    st.caption(
        f"Ordering band at c = {c:.2f} (min–max over {n_draws} random eigenvalue orders, interpolated from the "
        f"stored grid{', at β = 1' if beta != 1.0 else ''}): erank {lo:.3g}–{hi:.3g}, a width of "
        f"{100 * (hi - lo) / canon:.1f} % of the descending order's {canon:.3g}; log10 ‖P‖_F "
        f"{band['log10_fro'][0]:.2f}–{band['log10_fro'][1]:.2f}; Henrici {band['henrici'][0]:.3f}–"
        f"{band['henrici'][1]:.3f}. Differences smaller than this are the eigenvalue order, not the model.")

skip_betas = []
if beta != 1.0:
    betas = dose.stored_betas(table)
    skip_betas = [min(betas, key=lambda b: abs(b - beta))]
ui.plot(surgery.dose_curves(tables, c=c, readouts=readouts, skip_betas=skip_betas, surrogate=surrogate,
                            presentation=present), key="surgery-dose")

st.subheader(f"Layer {layer} at {at}")
if int(m["d_model"]) <= dose.SIGMA_MAX_D:  # one d×d SVD per move: live
    sigma, c_sigma = res.sigma.get(layer), c
    t_file = store.array_path("schur_T")
    # At c = β = 1 the layer is J̄_l itself under every surrogate: its σ is the reference, no second SVD.
    reference = (sigma if c == 1.0 and beta == 1.0 and sigma is not None
                 else _trained_sigma(str(store.path.parent), store.run_id, layer, t_file.stat().st_mtime_ns))
else:  # too wide for a live SVD: the singular values stored by the pseudospectra stage
    sigma = reference = c_sigma = None
    sv = ui.load_table(store, "layer_sigma", "layer = ?", (layer,))
    if sv is not None and len(sv):
        stored, c_sigma = nearest_stored(sv, c)
        sigma = sv.loc[sv["c"] == c_sigma].sort_values("i")["sigma"].to_numpy()
        ref = sv.loc[sv["c"] == 1.0].sort_values("i")["sigma"].to_numpy()
        reference = ref if len(ref) else None
        st.caption(f"d = {m['d_model']} is too wide for a live SVD per slider move: the singular values are "
                   f"those stored at c ∈ {{{', '.join(f'{x:g}' for x in stored)}}} and β = 1; showing "
                   f"c = {c_sigma:g}, the nearest to the slider.")
# The spectrum of J_l(c) is J̄_l's for every c: from the eigenvalues table (float64, a few kB) rather
# than the diagonal of the (L, d, d) Schur factor (4,096 scattered reads at d = 4096). β shifts it.
if store.has_table("eigenvalues"):
    ev = ui.load_eigenvalues(store, [layer], "J")
    eigs = ev["re"].to_numpy() + 1j * ev["im"].to_numpy()
else:
    eigs = dose.layer_eigenvalues(store, layer)
ps = ui.load_table(store, "pseudospectra", "layer = ?", (layer,))
nr = ui.load_table(store, "numerical_range", "layer = ?", (layer,))
c_shown = None
if ps is not None and len(ps):
    stored, c_shown = nearest_stored(ps, c)
    ps = ps[ps["c"] == c_shown]
    nr = nr[nr["c"] == c_shown] if nr is not None else None
    st.caption(f"Pseudospectra and numerical range are stored at c ∈ {{{', '.join(f'{x:g}' for x in stored)}}}; "
               f"showing c = {c_shown:g}, the nearest to the slider"
               + (f", translated by β − 1 = {beta - 1:+.2f} (exact: (β − 1)I only shifts them)" if beta != 1.0
                  else "") + ". Contours: log10 ε of the ε-pseudospectrum {z : σ_min(zI − J) < ε}.")
else:
    st.info(f"Run `{store.run_id}` lacks the **pseudospectra** stage. " + ui.compute_hint(store, "pseudospectra"))
left, right = st.columns(2)
with left:
    if sigma is None:
        ui.plot(empty_figure(f"Singular values of J_{layer}(c): d = {m['d_model']} is too wide for a "
                             "live SVD; compute the pseudospectra stage to store them", present),
                key="surgery-sigma")
    else:
        ui.plot(surgery.layer_singular_values(sigma, c=c_sigma, layer=layer, reference=reference,
                                              presentation=present), key="surgery-sigma")
with right:
    ui.plot(surgery.layer_complex_plane(eigs, layer=layer, pseudo=ps, numrange=nr, c_shown=c_shown,
                                        shift=beta - 1.0, presentation=present),
            key="surgery-plane")

if live_ok:  # prefetch after drawing, so the build does not compete with this render
    dose.live_dose(store, surrogate, wait=False)
