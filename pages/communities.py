"""Communities: activation-correlation matrices, signed Leiden partitions and their drift (METHODS §7)."""

import numpy as np
import pandas as pd
import streamlit as st

from resdyn import ui
from resdyn.core import samples
from resdyn.core import snapshot_correlation as snapcorr
from resdyn.core.store import RunStore
from resdyn.core.figures import topology as fig

store, m, _ = ui.run_page("Activation-graph communities", layer=False)
n_layers = int(m["n_layers"])
present = ui.sidebar_tail(store)
if not ui.require(store, "units", "communities", "nmi"):  # says how they come
    st.stop()

comms = ui.load_table(store, "communities")
methods = [x for x in fig.METHOD_LABELS if x in set(comms["method"])]
method = st.sidebar.selectbox("Community method", methods, format_func=fig.method_label, key="_sel_method")
snapshots = sorted(int(s) for s in comms["snapshot"].unique())
raw = st.query_params.get("snapshot")
start = int(raw) if raw is not None and raw.isdigit() and int(raw) in snapshots else snapshots[0]
snapshot = st.sidebar.select_slider("Snapshot", snapshots, value=start,
                                    format_func=lambda s: fig.snapshot_label(s, n_layers), key="_sel_snapshot")
st.query_params["snapshot"] = str(snapshot)

st.caption(
    "Each unit of the residual stream is a node; it keeps its 20 strongest correlations over the "
    "samples (positive and negative). Signed Leiden groups units that rise and fall together and "
    "separates anti-correlated ones. Snapshot 2l is the input of block l (pre-attention), 2l+1 its "
    "pre-MLP state, 'final' the state after the last block. Box-select a block of either matrix to "
    "see it unit by unit below."
)

units = ui.load_table(store, "units", "snapshot = ? AND method = ?", (snapshot, method))
units = units.sort_values("unit")
labels = units["community"].to_numpy()
sizes = np.bincount(labels)
n, d = int(m.get("n_samples") or 0), int(m["d_model"])
snaps, source = ui.load_snapshots(store)
srow = None if snaps is None else snaps[snaps["snapshot"] == snapshot]
c = st.columns(6)
c[0].metric("communities", f"{len(sizes)}")
c[1].metric("with ≥ 2 units", f"{int((sizes >= 2).sum())}")
c[2].metric("largest", f"{int(sizes.max())} units")
part = units["participation"].to_numpy(float)
c[3].metric("median participation", f"{np.median(part[np.isfinite(part)]):.3f}" if np.isfinite(part).any() else "–",
            help="– when no unit has an edge (e.g. every sample holds the same state)")
if srow is not None and len(srow):
    srow = srow.iloc[0]
    c[4].metric("sample rank", f"{int(srow['rank'])}",
                help=f"numerical rank of the centred N × d states: at most N − 1 = {n - 1} (d = {d}); the "
                     "correlation matrix has this rank too")
    c[5].metric("participation ratio", f"{float(srow['participation_ratio']):.2g}",
                help="(Σλ)²/Σλ² of the sample correlation matrix (z-scored states): how many equally strong "
                     "directions the states span" + (" (this run's table holds the covariance's: recompute the "
                     "activations stage)" if srow.get("pr_basis") == "covariance" else ""))
null = ui.load_table(store, "community_null", "snapshot = ? AND method = ?", (snapshot, method))
if null is not None and len(null):
    r = null.iloc[0]
    q = (f"; CPM quality {r['quality']:.3f} against {r['null_quality']:.3f}"
         if np.isfinite(r["quality"]) and np.isfinite(r["null_quality"]) else "")
    rotated = "null_kind" in null.columns
    what = ("the same z-scored sample rotated into random axes" if rotated else
            "a Gaussian null with the same covariance spectrum (an older run's null: it is not matched to "
            "a correlation graph; `--redo communities` replaces it)")
    pr = (f" Correlation participation ratio {r['participation_ratio']:.3g}, null {r['null_participation_ratio']:.3g}."
          if rotated and np.isfinite(r["null_participation_ratio"]) else "")
    st.markdown(f"This snapshot: **{int(r['n_communities'])}** communities ({int(r['n_multi'])} with ≥ 2 units); "
                f"{what}: **{int(r['null_n_communities'])}** ({int(r['null_n_multi'])} with ≥ 2 units){q}.{pr}",
                help="The sample's own cloud with its alignment to the units removed, put through the same graph, "
                     "method and seed: what communities a cloud of this shape gives without unit-level structure "
                     "(METHODS §7)")
else:
    st.caption("No null community count for this run (it predates it): `--redo communities` adds "
               "`community_null.parquet`.")
if srow is not None and len(srow) and n:
    bad = bool(samples.is_degenerate(pd.DataFrame([srow]), n).iloc[0])
    if bad:
        st.warning(f"Degenerate sample at this snapshot: {samples.describe_snapshot(srow, n, d)} "
                   f"({samples.DEGENERATE_RULE}). Its communities partition the units of a cloud of a few "
                   "dimensions; compare them with the null above. `--position random` analyses a "
                   "seeded token per passage instead of the last.", icon="⚠️")
    elif n - 1 < d:
        st.caption(f"{samples.describe_snapshot(srow, n, d)}: N samples bound the correlation matrix's rank by "
                   f"N − 1 = {n - 1} < d = {d}." + (" (Computed from activations.npy: this run predates "
                                                    "snapshots.parquet.)" if source == "computed" else ""))


@st.cache_data(max_entries=8, show_spinner="Drawing the matrix…")
def _matrix_figure(path: str, snap: int, stamp: tuple, method: str, labels_key: bytes, title: str, present: bool):
    # Cached apart from the block view so a box selection (a rerun) does not re-encode the image.
    labels = np.frombuffer(labels_key, dtype=np.int64)
    corr, blocks = snapcorr.overview(RunStore(path), snap, n_layers, method, labels, fig.HEATMAP_MAX, fig.IMAGE_MAX_PX)
    return fig.correlation_figure(corr, labels, title=title, presentation=present, blocks=blocks)


@st.cache_data(max_entries=16, show_spinner=False)
def _block(path: str, snap: int, stamp: tuple, rows_key: bytes, cols_key: bytes) -> np.ndarray:
    rows, cols = np.frombuffer(rows_key, dtype=np.int64), np.frombuffer(cols_key, dtype=np.int64)
    return snapcorr.submatrix(RunStore(path), snap, n_layers, rows, cols)


src = snapcorr.source_path(store, snapshot, n_layers)
if not src.is_file():
    st.info(f"Run `{store.run_id}` has no `{src.name}`, so the correlation matrix cannot be drawn.")
else:
    stamp = (src.stat().st_mtime_ns, *ui.stamps(store, "corr_blocks"))
    title = f"{fig.snapshot_label(snapshot, n_layers)} · {fig.method_label(method)}"
    matrix = _matrix_figure(str(store.path), snapshot, stamp, method, labels.astype(np.int64).tobytes(), title,
                            present)
    event = st.plotly_chart(matrix, key="communities-corr", on_select="rerun", selection_mode=("box",),
                            width="stretch", config=ui.PLOTLY_CONFIG)
    order = fig.community_order(labels)
    boxes = (event.selection.get("box") if event and getattr(event, "selection", None) else None) or []
    block = fig.selection_block(boxes[-1], order) if boxes else None
    if block is None:  # no selection yet: the largest community's block, in community order
        block = (order[: min(sizes[0], 512)],) * 2
        st.caption("Showing the largest community; box-select a region above to zoom in.")
    sub = _block(str(store.path), snapshot, stamp, *(np.asarray(b, np.int64).tobytes() for b in block))
    ui.plot(fig.block_figure(sub, *block, title=f"{len(block[0])} × {len(block[1])} units at full resolution",
                             presentation=present), key="communities-block")

left, right = st.columns(2) if not present else (st.container(), st.container())
with left:
    nmi = ui.load_table(store, "nmi", "method = ?", (method,))
    ui.plot(fig.nmi_figure(nmi, n_layers, presentation=present), key="communities-nmi")
with right:
    ui.plot(fig.community_sizes_figure(comms, n_layers, snapshot=snapshot, presentation=present),
            key="communities-sizes")
