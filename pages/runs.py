"""Runs: the runs being computed now, every run's settings, status and timings, a headline card per
run, and the depth regimes."""

import streamlit as st

from resdyn import ui
from resdyn.core import headlines, nulls, queries, regimes
from resdyn.core.figures import compare
from resdyn.core.store import open_run

# Which stage computes which headline, for the "—" of a run that lacks it.
NO_VALUE = "—"
CARD_TABLES = ("layers", "cumulative", "coupling", "summary", "snapshots", "passages")


@st.cache_data(max_entries=256, show_spinner=False)
def _headline(root: str, run_id: str, twin_id: str | None, stamps: tuple) -> list[headlines.Headline]:
    run = headlines.RunTables.from_store(open_run(root, run_id))
    twin = headlines.RunTables.from_store(open_run(root, twin_id)) if twin_id else None
    return headlines.headlines(run, twin)


def headline_card(store) -> None:
    """A bordered card with the run's headline numbers ("—" and the stage when missing), each
    with the random-init twin's value and the null baseline underneath; or one line saying what is
    damaged and how to repair it."""
    found = ui.problems(store)
    if found:
        with st.container(border=True, key=f"card-{store.run_id}"):
            st.markdown(f"**{store.run_id}** :red-badge[damaged]")
            st.error(ui.damaged_message(store, found), icon=":material/build:")
        return
    m = store.manifest()
    root = store.path.parent
    twin_id = headlines.find_twin(store.run_id, root)
    stamps = ui.stamps(store, *CARD_TABLES) + (m.get("status"),)
    if twin_id:
        stamps += ui.stamps(open_run(root, twin_id), *CARD_TABLES)
    with st.container(border=True, key=f"card-{store.run_id}"):
        status = m.get("status") or "?"
        badge = ":green-badge[complete]" if status == "complete" else f":orange-badge[{status}]"
        st.markdown(f"**{store.run_id}** {badge}  \n{m.get('model')} · {m.get('init')} · "
                    f"L = {m.get('n_layers')}, d = {m.get('d_model')}, N = {m.get('n_samples')}")
        cols = st.columns(2)
        missing = []
        for i, h in enumerate(_headline(str(root), store.run_id, twin_id, stamps)):
            help_text = h.help or f"computed by the `{h.stage}` stage"
            with cols[i % 2]:
                st.metric(h.label, h.value if h.value is not None else NO_VALUE, help=help_text)
                bits = []
                if twin_id:
                    bits.append(f"init twin {h.twin if h.twin is not None else NO_VALUE}")
                if h.null is not None:
                    bits.append(f"null {h.null}")
                if bits:
                    st.caption(" · ".join(bits), help=h.null_help or None)
            if h.value is None and h.stage not in (m.get("stages_done") or ()):
                missing.append(f"{h.label} ← `{h.stage}`")  # (done by an older resdyn: its help says so)
        if twin_id:
            st.caption(f"Init twin: `{twin_id}` (same model and shape, random weights).")
        elif m.get("init") != "random":
            st.caption("No random-init twin of this model in the runs directory "
                       "(`--init random` computes one).")
        if missing:
            st.caption(f"{NO_VALUE} not computed yet: " + "; ".join(missing) + ".")


st.title("Runs")
store = ui.select_run()
present = ui.presentation_toggle()
ui.runs_dir_caption()
if store is None:
    st.stop()

overview = queries.run_overview()
root = queries.runs_dir()
stores = [open_run(root, r) for r in overview["run_id"]]
computing = ui.live_panel(stores, label_runs=True)  # refreshes itself while any run is being computed
damaged = ui.damaged_ids(overview["run_id"].tolist())
overview.loc[overview["run_id"].isin([s.run_id for s in computing]), "status"] = "computing"
overview.loc[overview["run_id"].isin(damaged), "status"] = "damaged"
stage_cols = [c for c in overview.columns if c.startswith("seconds_")]
st.dataframe(
    overview, hide_index=True,
    column_order=["run_id", "status", "model", "init", "seed", "architecture", "mode", "d_model", "n_layers",
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

st.subheader("Headlines")
# Four numbers side by side in a third of the page: smaller metric values than Streamlit's default.
st.html("<style>[class*='st-key-card-'] [data-testid='stMetricValue'] {font-size: 1.7rem;}</style>")
per_row = 2 if present else 3
for i in range(0, len(stores), per_row):
    for col, s in zip(st.columns(per_row), stores[i:i + per_row]):
        with col:
            headline_card(s)

if ui.problems(store):
    st.stop()  # its card above already says what is damaged and how to repair it
m = store.manifest()
st.subheader(f"Run `{store.run_id}`")
ui.partial_banner(store, panel=False)  # its live progress, if any, is at the top
c = st.columns(5)
c[0].metric("model", str(m.get("model")), help=f"revision {m.get('revision')}, init {m.get('init')}")
c[1].metric("blocks L", m.get("n_layers"))
c[2].metric("width d", m.get("d_model"))
c[3].metric("samples N", m.get("n_samples"))
c[4].metric("k", m.get("k"), help="rank of the truncated SVD used for the alignments (baseline k/d)")

st.subheader("Depth regimes")
n_layers, d = int(m["n_layers"]), int(m["d_model"])
if n_layers < 3:
    st.info(f"Run `{store.run_id}` has {n_layers} layer(s); three regimes need at least 3.")
elif ui.require(store, "layers"):
    lay = ui.load_layers(store)
    reg = regimes.regime_summary(lay, n_layers, ui.load_table(store, "cumulative"))
    st.caption(
        "Regime means as in the paper's Table 2 and Figures 2–3. Left: the paper's fixed split "
        "(layers 5 and 20 of 32, scaled to this depth). Right: the split the data suggest, the two "
        "change points of the best least-squares step fit to this run's self-alignment profile "
        f"(each regime ≥ {regimes.default_min_size(n_layers)} layer(s))."
    )
    for col, split, table in zip(st.columns(2), reg.splits, reg.tables):
        with col:
            title = "Paper's split" if split.method == "paper" else "Change-point split"
            st.markdown(f"**{title}** — breaks at layers {split.breaks[0]} and {split.breaks[1]}")
            st.dataframe(table, hide_index=True, width="stretch",
                         column_config={v: st.column_config.NumberColumn(v, format="%.3g")
                                        for v in split.labels().values()})
    k = nulls.run_k(m)
    ui.plot(ui.cached_figure("runs-regimes", (str(store.path), ui.stamps(store, "layers"), present),
                             lambda: compare.regime_profile(reg.profile, list(reg.splits), label="self-alignment of J̄",
                                                            baseline=k / d, presentation=present)),
            key="runs-regimes")

    tables = {s.run_id: ui.load_layers(s) for s in stores if s.run_id not in damaged and s.has_table("layers")}
    if tables:
        st.markdown("**Self-alignment of J̄ by regime, every run** (the paper's Table 2)")
        cols = st.columns(2)
        for col, method, title in ((cols[0], "paper", "paper's split"), (cols[1], "changepoint", "change points")):
            t2 = regimes.self_alignment_table(tables, method)
            col.caption(title)
            col.dataframe(t2, hide_index=True, width="stretch", column_config={
                "n_layers": st.column_config.NumberColumn("L"),
                "split": st.column_config.TextColumn("breaks"),
                **{r: st.column_config.NumberColumn(r, format="%.3f") for r in regimes.REGIMES},
                "min_layer": st.column_config.NumberColumn("min at layer"),
                "min_value": st.column_config.NumberColumn("min", format="%.3g"),
            })

with st.expander("manifest.json"):
    st.json(m)
