"""Block coupling: do the blocks' Jacobians share singular vectors across depth and tokens, and how
regular are the token trajectories? (METHODS §9, the second paper)."""

import numpy as np
import pandas as pd
import streamlit as st

from resdyn import ui
from resdyn.core import queries
from resdyn.core.figures import coupling as fig
from resdyn.core.store import open_run

KIND_NAMES = {"self": "self (J_tt vs J_t′t′)", "fixed_input": "fixed input token (J_{t1 t2} vs J_{t1 t2′})",
              "fixed_output": "fixed output token (J_{t1 t2} vs J_{t1′ t2})"}
COUPLING, TRAJ = ("block_coupling",), ("trajectories", "trajectory_windows")  # what each query reads


def windows(store, metric: str, last_only: bool) -> pd.DataFrame:
    return ui.load_query(store, "trajectory_windows", metric, last_only, tables=TRAJ)


store, m, layer = ui.run_page("Block coupling and trajectory regularity")
n_layers = int(m["n_layers"])
present = ui.sidebar_tail(store)
has_coupling, has_traj = store.has_table("block_coupling"), store.has_table("trajectories")
if not (has_coupling or has_traj):
    ui.require(store, "block_coupling", "trajectories")  # says how they come
    st.stop()

summary = ui.load_query(store, "summary", tables=("summary",))

st.caption(
    "Each block's residual Jacobian J^l (its output at a token as a function of its input at a token, "
    "the rest of the prompt held fixed, the skip removed) is written in the top-K singular basis of "
    "another one: A = U_{l′}ᵀ J^l V_{l′}. If the two share singular vectors, A is diagonal and the "
    "miscoupling m̃ = ‖A − diag A‖_F / ‖A‖_F is 0; unrelated Jacobians give m̃ near 1."
)

# -- depth-wise ---------------------------------------------------------------------------------------
st.header("Across depth")
if not has_coupling:
    ui.require(store, "block_coupling")
else:
    ks = ui.load_query(store, "coupling_ks", tables=COUPLING)
    k = st.sidebar.selectbox("K (top singular vectors)", ks, index=min(1, len(ks) - 1), key="_sel_coupling_k")
    depth = ui.load_query(store, "depth_coupling", k, tables=COUPLING)
    c = st.columns(4)
    c[0].metric("coupling score 1 − m̃", f"{summary.get('block_coupling.coupling_score', np.nan):.3f}",
                help=f"1 − mean m̃ over layer pairs l ≠ l′ and prompts, K = "
                     f"{summary.get('block_coupling.score_K', np.nan):.0f}")
    c[1].metric(f"mean m̃, K = {k}", f"{summary.get(f'block_coupling.mean_miscoupling.K{k}', np.nan):.3f}")
    c[2].metric("prompts", f"{summary.get('block_coupling.n_samples', np.nan):.0f}",
                help=f"--coupling-samples {m.get('coupling_samples')}, --coupling-tokens {m.get('coupling_tokens')}")
    prof = fig.layer_coupling(depth, n_layers)
    c[3].metric(f"layer {layer} vs the rest", f"{prof['value'].iloc[layer]:.3f}")
    other = st.selectbox("Paired layer l′ (the grid spans l … l′)", list(range(n_layers)),
                         index=min(layer + 3, n_layers - 1), key="_sel_coupling_pair")
    cols = st.columns(1 if present else 2)
    with cols[0]:
        ui.plot(fig.depth_heatmap(depth, n_layers, k=k, pair=(layer, other), presentation=present),
                key="coupling-depth")
    with cols[-1]:
        if store.has_array("block_coupling_A"):
            a = store.read_array("block_coupling_A")
            layers = fig.grid_layers(layer, other)
            ui.plot(fig.coupling_grid(a, layers, k=min(k, a.shape[-1]), presentation=present,
                                      title=f"|A| of the first prompt, layers {layers[0]}–{layers[-1]}, top {k}"),
                    key="coupling-grid")

    # -- token-wise -----------------------------------------------------------------------------------
    st.header("Across tokens")
    samples = ui.load_query(store, "coupling_prompts", tables=COUPLING)
    if not samples:
        st.info(f"This run has depth-wise coupling only (--coupling-window {m.get('coupling_window', 0)}). "
                "Token-wise coupling needs `--coupling-window 2` or more (all t1 ≤ t2 among the last w tokens).")
    else:
        c = st.columns(3)
        sample = c[0].selectbox("Prompt", ["mean over prompts"] + samples, key="_sel_coupling_prompt")
        kind = c[1].radio("Comparison", list(KIND_NAMES), format_func=KIND_NAMES.get, key="_sel_coupling_kind")
        rows = ui.load_query(store, "token_coupling", kind, k, layer,
                             None if sample == "mean over prompts" else int(sample), tables=COUPLING)
        if kind == "self":
            sub, x_t, y_t = rows, "basis token t′ (J_t′t′)", "token t (J_tt)"
        else:
            fixed = sorted(rows["token_fixed"].dropna().astype(int).unique().tolist())
            what = "input token t1" if kind == "fixed_input" else "output token t2"
            tf = c[2].selectbox(f"Shared {what}", fixed, index=len(fixed) - 1 if fixed else 0,
                                key="_sel_coupling_fixed")
            sub = rows[rows["token_fixed"] == tf]
            x_t, y_t = (("basis output t2′", "output t2") if kind == "fixed_input"
                        else ("basis input t1′", "input t1"))
        ui.plot(fig.token_heatmap(sub, title=f"Token-wise coupling at layer {layer}, K = {k}", x_title=x_t,
                                  y_title=y_t, presentation=present), key="coupling-tokens")

# -- trajectories -------------------------------------------------------------------------------------
st.header("Trajectory regularity")
if not has_traj:
    ui.require(store, "trajectories")
else:
    last_only = st.toggle("Last token only", value=False, key="_sel_traj_last",
                          help="Off: every token of every passage. On: the last token (the one the Jacobians use).")
    sfx = "_last" if last_only else ""
    c = st.columns(3)
    c[0].metric("median LSS, whole depth", f"{summary.get('trajectories.lss_median' + sfx, np.nan):.2f}",
                help="Line-shape score: 1 for a straight trajectory. Paper: about 4.25 trained, 6.54 at init.")
    c[1].metric("median expodistance", f"{summary.get('trajectories.ed_median' + sfx, np.nan):.3g}",
                help="Var α / (mean α)², α = log growth of ‖x^l‖ per layer; 0 for exactly exponential norms.")
    c[2].metric("window", f"{summary.get('trajectories.window', np.nan):.0f} layers")
    traj_key = (str(store.path), ui.stamps(store, "trajectories"), last_only, present)
    cols = st.columns(1 if present else 3)
    for i, metric in enumerate(("lss_window", "ed_window", "norm")):
        with cols[i % len(cols)]:
            # Built once per run and view for the whole server; the layer band is added to a copy.
            spec = ui.cached_figure(f"traj-{metric}", traj_key, lambda m=metric: fig.window_profile(
                {store.run_id: windows(store, m, last_only)}, m, presentation=present))
            ui.plot(ui.with_highlight(spec, layer), key=f"traj-{metric}")

    st.subheader("Trajectory PCA")
    pca_samples = ui.load_query(store, "trajectory_pca_prompts", tables=("trajectory_pca",))
    if pca_samples:
        c = st.columns(2)
        p = c[0].selectbox("Prompt", pca_samples, key="_sel_pca_prompt")
        skip = c[1].toggle("Without the first token", value=True, key="_sel_pca_skip",
                           help="The first token's state often has an outsized norm (an attention sink) and "
                                "takes the whole first axis; off = the paper's fit over every token.")
        fit = "skip_first" if skip else "all"
        ui.plot(ui.cached_figure("traj-pca", (str(store.path), ui.stamps(store, "trajectory_pca"), int(p), fit, present),
                                 lambda: fig.pca_figure(ui.load_query(store, "trajectory_pca", int(p), fit,
                                                                      tables=("trajectory_pca",)),
                                                        presentation=present)), key="traj-pca")
        text = ui.load_query(store, "passage_text", int(p), tables=("passages",))
        if text:
            st.caption("Passage: " + text[:400])

# -- compare runs -------------------------------------------------------------------------------------
st.header("Compare runs")
st.caption("Trained against random init (or checkpoints): the paper finds trained models more coupled "
           "(lower m̃) and their trajectories straighter (lower LSS).")
chosen = ui.select_runs("Runs to compare", key="runs")
if chosen:
    root = queries.runs_dir()
    opened = [open_run(root, r) for r in chosen]
    k_cmp = k if has_coupling else 30
    profiles, stats, lss = {}, {}, {}
    for st_run in opened:
        if st_run.has_table("block_coupling"):
            rows = ui.load_query(st_run, "depth_coupling", k_cmp, tables=COUPLING)
            if len(rows):
                profiles[st_run.run_id] = fig.layer_coupling(rows, int(st_run.manifest()["n_layers"]))
        if st_run.has_table("trajectories"):
            stats[st_run.run_id] = windows(st_run, "lss_window", False)
            lss[st_run.run_id] = ui.load_query(st_run, "trajectory_lss", tables=TRAJ)
    table = queries.coupling_table({s.run_id: ui.load_query(s, "summary", tables=("summary",)) for s in opened},
                                   {s.run_id: s.manifest().get("init") for s in opened}, k_cmp)
    st.dataframe(table, hide_index=True, width="stretch")
    cmp_key = (tuple((str(s.path), ui.stamps(s, "block_coupling", "trajectories")) for s in opened), k_cmp, present)
    cols = st.columns(1 if present else 2)
    with cols[0]:
        spec = ui.cached_figure("compare-coupling", cmp_key, lambda: fig.layer_coupling_overlay(
            profiles, k=k_cmp, presentation=present))
        ui.plot(ui.with_highlight(spec, layer), key="compare-coupling")
    with cols[-1]:
        ui.plot(ui.cached_figure("compare-lss", cmp_key, lambda: fig.lss_distribution(lss, presentation=present)),
                key="compare-lss")
    spec = ui.cached_figure("compare-lss-window", cmp_key, lambda: fig.window_profile(
        stats, "lss_window", presentation=present, title="Windowed LSS, median and IQR per run"))
    ui.plot(ui.with_highlight(spec, layer), key="compare-lss-window")
