"""Compare: one per-layer profile of several runs on one axis (checkpoints, trained vs init)."""

import streamlit as st

from resdyn import ui
from resdyn.core import nulls, queries, regimes, sample_stats
from resdyn.core.figures import compare
from resdyn.core.store import open_run

st.title("Compare runs")
overview = queries.runs()
done = overview[overview["status"] == "complete"] if len(overview) else overview
complete = [r for r in done.get("run_id", []) if r not in queries.extra_seeds(done)]
# Default: the run chosen on the other pages, then other complete runs (four at most), each random-init
# ensemble by its lowest seed only (the twin the headline cards use).
default = list(dict.fromkeys([r for r in [ui.current_run()] if r in set(overview.get("run_id", []))] + complete))[:4]
chosen = ui.select_runs("Runs", key="runs", default=default)
present = ui.presentation_toggle()
ui.runs_dir_caption()
if overview.empty:
    st.stop()
if not chosen:
    st.info("Choose one or more runs in the sidebar.")
    st.stop()

root = queries.runs_dir()
stores = {r: open_run(root, r) for r in chosen}
for s in stores.values():  # a partial run shows what it has and names what is missing
    ui.partial_banner(s)
manifests = {r: s.manifest() for r, s in stores.items()}
n_layers = {r: int(m["n_layers"]) for r, m in manifests.items()}
layer_tables = {r: ui.load_layers(s) for r, s in stores.items() if s.has_table("layers")}
cum_tables = {r: ui.load_table(s, "cumulative") for r, s in stores.items() if s.has_table("cumulative")}

# Every profile some chosen run has, in the order of compare.PROFILES, then unknown numeric columns.
available = set()
for t in layer_tables.values():
    available |= {f"layers:{c}" for c in t.columns if c not in ("layer", "operator") and t[c].dtype.kind in "fi"}
for t in cum_tables.values():
    available |= {f"cumulative:{c}" for c in t.columns if c != "layer" and t[c].dtype.kind in "fi"}
options = [k for k in compare.PROFILES if k in available] + sorted(available - set(compare.PROFILES))
if not options:
    st.info("None of the chosen runs has a per-layer table yet (`layers.parquet` from the `spectra` stage, "
            "`cumulative.parquet` from the `cumulative` stage).")
    st.stop()

key = ui.select_choice("Profile", options, key="profile", default="layers:self_alignment",
                       format_func=compare.profile_label)
source, column = key.split(":", 1)
op = ui.select_operator() if source == "layers" else None
depth_mode = ui.select_choice("Depth axis", ["auto", "layer", "relative"], key="depth",
                              format_func={"auto": "auto (relative when L differs)", "layer": "layer index",
                                           "relative": "relative depth l / (L − 1)"}.get)
_, log_default, percent = compare.PROFILES.get(key, ("", False, False))
log_y = st.sidebar.toggle("Log y axis", value=log_default, key=f"_log_{key}")

tables = layer_tables if source == "layers" else cum_tables
profiles, lacking = {}, []
for r in chosen:
    t = tables.get(r)
    if t is None or column not in t:
        lacking.append(r)
        continue
    profiles[r] = compare.profile_frame(t, column, op)
if lacking:
    if column in sample_stats.PROFILE_COLUMNS:
        file, stage = f"{sample_stats.TABLE}.parquet", "sample_stats"
    else:
        file, stage = f"{source}.parquet", "spectra" if source == "layers" else "cumulative"
    st.warning(f"Not drawn, no `{file}` with this profile: {', '.join(f'`{r}`' for r in lacking)} "
               f"(computed by the `{stage}` stage).")

normalise = {"auto": None, "layer": False, "relative": True}[depth_mode]
baselines = None
if column in ("self_alignment", "forward_alignment"):
    baselines = {r: nulls.alignment_baseline(nulls.run_k(m), int(m["d_model"])) for r, m in manifests.items()}
elif column == "frac_complex":  # METHODS §3: the complex fraction of a random real matrix of width d
    baselines = {r: nulls.ginibre_complex_fraction(int(m["d_model"])) for r, m in manifests.items()}
label = compare.profile_label(key) + (f" of {'J̄' if op == 'J' else 'R = J̄ − I'}" if op else "")
st.caption(
    "Each line is one run. When the runs have different depths, the x axis becomes relative depth "
    "l / (L − 1), so the first and last blocks line up. Dotted lines: each run's baseline, k/d for "
    "the alignments and the real-Ginibre value at its width d for the complex-pair fraction. Pick "
    "the quantity in the sidebar; the link keeps the choice."
)
read = sample_stats.LAYER_TABLES if source == "layers" else (source,)
fig_key = (tuple((r, str(stores[r].path), ui.stamps(stores[r], *read)) for r in profiles), key, op, normalise,
           log_y, present)
ui.plot(ui.cached_figure("compare-overlay", fig_key, lambda: compare.profile_overlay(
    profiles, n_layers, label=label, normalise=normalise, log_y=log_y, baselines=baselines,
    percent=percent and not log_y, presentation=present)), key=f"compare-{column}")

if profiles:
    st.markdown("**Regime means** (the paper's split, scaled to each run's depth"
                + ("; geometric means" if log_y else "") + ")")
    st.dataframe(regimes.profile_regimes(profiles, n_layers, log=log_y), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%.4g")
                                for c in ("min", "max", *regimes.REGIMES)})
