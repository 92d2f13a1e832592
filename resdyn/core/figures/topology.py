"""Figures of the topology pages (METHODS §7–8): pure builders, data in, ``go.Figure`` out.

The correlation matrix can be d = 4096 wide. Plotly 6+ has no ``heatmapgl`` and Streamlit refuses
messages over 200 MB, so above ``HEATMAP_MAX`` units the matrix is block-averaged to at most
``IMAGE_MAX_PX`` pixels, colour-mapped in numpy and sent as one PNG (``go.Image``), with a dummy
trace carrying the colour bar. Transparent grid markers make the panels box-selectable; the page
maps a box back to units with :func:`community_order` and shows that block at full resolution.
"""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go
from scipy import stats

# HEATMAP_MAX: up to this d a plain go.Heatmap with hover values; IMAGE_MAX_PX: above it, a PNG of at
# most this many pixels a side (about the panel's width on screen).
from resdyn.core.correlation import HEATMAP_MAX, IMAGE_MAX_PX, community_order  # noqa: F401  (re-exported)
from resdyn.core.figures.common import (PALETTE, empty_figure, highlight_band, highlight_layer,
                                        layer_axis_props, line_width, marker_size, style, subplots)
from resdyn.core.topology_coupling import (NULLS, OPERATORS, TAIL, participation_tails, with_bh_columns,
                                           with_null_columns)

CORR_SCALE = "RdBu_r"   # negative blue, positive red, 0 white
MAX_BOUNDARIES = 200    # community squares drawn on the sorted matrix
SELECT_GRID = 48        # transparent markers per side that make a panel box-selectable
METHOD_LABELS = {
    "cpm": "signed Leiden CPM γ=0.001",
    "infomap": "|corr| InfoMap",
    "modularity1": "signed Leiden modularity γ=1",
    "modularity2": "signed Leiden modularity γ=2",
}
METHOD_COLORS = {"cpm": PALETTE[3], "infomap": PALETTE[2], "modularity1": PALETTE[4], "modularity2": PALETTE[5]}
NULL_COLOR, NULL_BAND, OBS_COLOR = PALETTE[0], "rgba(0,114,178,0.2)", PALETTE[1]  # blue null, vermilion data
CORE_COLOR, BOUNDARY_COLOR, MIDDLE_COLOR = PALETTE[0], PALETTE[1], "rgba(127,127,127,0.35)"


def snapshot_label(s: int, n_layers: int) -> str:
    """``L3 attn`` (snapshot 2l, pre-attention), ``L3 mlp`` (2l+1, pre-MLP), ``final`` (2L)."""
    s = int(s)
    if s >= 2 * n_layers:
        return "final"
    return f"L{s // 2} {'attn' if s % 2 == 0 else 'mlp'}"


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


# -- correlation matrix -------------------------------------------------------------------------------
LEVELS = 255  # colour levels of the image panels: odd, so the midpoint of [vmin, vmax] has its own


@functools.lru_cache(maxsize=8)
def _palette(scale: str) -> np.ndarray:
    """(256, 3) uint8: ``LEVELS`` samples of a plotly colour scale, then light grey for NaN."""
    lut = np.array([pcolors.unlabel_rgb(c) for c in
                    pcolors.sample_colorscale(scale, np.linspace(0, 1, LEVELS))], dtype=np.float64)
    lut = np.clip(np.round(lut), 0, 255).astype(np.uint8)
    return np.vstack([lut, np.full((256 - LEVELS, 3), 220, np.uint8)])


def colormap_index(mat: np.ndarray, vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """(h, w) uint8 indices into ``_palette``: [vmin, vmax] onto 0 … LEVELS − 1, NaN onto LEVELS."""
    m = np.asarray(mat, dtype=np.float32)
    idx = np.clip(np.round((m - vmin) / (vmax - vmin) * (LEVELS - 1)), 0, LEVELS - 1)
    return np.where(np.isnan(m), LEVELS, idx).astype(np.uint8)


def colormap_rgb(mat: np.ndarray, vmin: float = -1.0, vmax: float = 1.0, scale: str = CORR_SCALE) -> np.ndarray:
    """Map a real (h, w) matrix to (h, w, 3) uint8 through a ``LEVELS``-entry plotly colour scale.
    NaN becomes light grey."""
    return _palette(scale)[colormap_index(mat, vmin, vmax)]


def block_average(mat: np.ndarray, max_px: int) -> tuple[np.ndarray, int]:
    """Average f×f blocks, f = ceil(d / max_px), so the result is at most max_px a side.
    Edge blocks that are cut short average what they hold. Returns ((h', w') float32, f)."""
    mat = np.asarray(mat, dtype=np.float32)
    f = max(1, int(np.ceil(max(mat.shape) / max_px)))
    if f == 1:
        return mat, 1
    h, w = (-(-mat.shape[0] // f)) * f, (-(-mat.shape[1] // f)) * f
    if (h, w) == mat.shape and not np.isnan(mat).any():  # the common case: a plain block mean
        out = mat.reshape(h // f, f, w // f, f).sum(axis=3, dtype=np.float64).sum(axis=1) / (f * f)
        return out.astype(np.float32), f
    pad = np.full((h, w), np.nan, np.float32)
    pad[: mat.shape[0], : mat.shape[1]] = mat
    # A NaN-aware mean as a sum over valid entries and their count: np.nanmean on a 4096² matrix
    # is several times slower.
    valid = ~np.isnan(pad)
    total = np.where(valid, pad, 0.0).reshape(h // f, f, w // f, f).sum(axis=(1, 3), dtype=np.float64)
    count = valid.reshape(h // f, f, w // f, f).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / count, np.nan)
    return out.astype(np.float32), f


def _png_source(mat: np.ndarray, vmin: float = -1.0, vmax: float = 1.0, scale: str = CORR_SCALE) -> str:
    """A real (h, w) matrix as a colour-mapped PNG data URI. An 8-bit palette image: a quarter of
    the encoding time of an RGB PNG (~5 ms at 512²) and under half its bytes."""
    from PIL import Image

    img = Image.fromarray(colormap_index(mat, vmin, vmax), mode="P")
    img.putpalette(_palette(scale).ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _matrix_trace(mat: np.ndarray, max_px: int):
    d = mat.shape[0]
    if d <= HEATMAP_MAX:
        return go.Heatmap(z=mat.astype(np.float32), coloraxis="coloraxis",
                          hovertemplate="row %{y}, col %{x}<br>r = %{z:.3f}<extra></extra>")
    return _image_trace(*block_average(mat, max_px))


def _image_trace(small: np.ndarray, f: int) -> go.Image:
    """A block-averaged matrix (m, m) whose pixel p covers units [p·f, (p+1)·f), as a PNG centred
    at p·f + (f−1)/2 in unit coordinates."""
    return go.Image(source=_png_source(small), x0=(f - 1) / 2, dx=f, y0=(f - 1) / 2, dy=f,
                    hoverinfo="skip")


def _select_grid(d: int, xref: int) -> go.Scatter:
    g = np.linspace(0, d - 1, min(SELECT_GRID, d))
    x, y = np.meshgrid(g, g)
    return go.Scatter(x=x.ravel(), y=y.ravel(), mode="markers", hoverinfo="skip", showlegend=False,
                      marker=dict(size=4, opacity=0), selected=dict(marker=dict(opacity=0)),
                      unselected=dict(marker=dict(opacity=0)), xaxis=f"x{xref}", yaxis=f"y{xref}")


def correlation_figure(corr: np.ndarray | None, labels: np.ndarray, title: str = "", min_size: int = 2,
                       max_px: int = IMAGE_MAX_PX, presentation: bool = False,
                       blocks: tuple[np.ndarray, np.ndarray, int] | None = None) -> go.Figure:
    """The correlation matrix in original unit order (left) and sorted by community (right).

    corr: (d, d) correlation of one snapshot; labels: (d,) community labels (0 = largest).
    Axes are positions 0..d−1 in each panel's order (left: unit index; right: position in
    :func:`community_order`). Communities of at least ``min_size`` units are outlined on the
    right (the ``MAX_BOUNDARIES`` largest). Above ``HEATMAP_MAX`` units each panel is a PNG image
    of at most ``max_px`` pixels a side. The figure opens in box-select mode.

    ``blocks`` = (left (m, m), right (m, m), f): the two panels already block-averaged
    (``resdyn.core.correlation.block_correlation``), so that ``corr`` (then None) is never formed.
    """
    labels = np.asarray(labels)
    d = len(labels)
    order = community_order(labels)
    fig = subplots(rows=1, cols=2, horizontal_spacing=0.08,
                   subplot_titles=("original order", "sorted by community"))
    if blocks is not None and d > HEATMAP_MAX:
        left, right, f = blocks
        fig.add_trace(_image_trace(left, f), row=1, col=1)
        fig.add_trace(_image_trace(right, f), row=1, col=2)
    else:
        corr = np.asarray(corr)
        fig.add_trace(_matrix_trace(corr, max_px), row=1, col=1)
        fig.add_trace(_matrix_trace(corr[np.ix_(order, order)], max_px), row=1, col=2)
    if d > HEATMAP_MAX:  # go.Image has no colour bar: a dummy marker carries it
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(color=[0.0], coloraxis="coloraxis")), row=1, col=1)
    fig.add_trace(_select_grid(d, 1))
    fig.add_trace(_select_grid(d, 2))
    sizes = np.bincount(labels)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    big = [c for c in np.argsort(-sizes, kind="stable")[:MAX_BOUNDARIES] if sizes[c] >= min_size]
    if big:  # one polyline trace (squares separated by gaps): 200 layout shapes cost ~0.1 s to build
        lo = starts[big] - 0.5
        hi = lo + sizes[big]
        nan = np.full(len(big), np.nan)
        xs = np.stack([lo, hi, hi, lo, lo, nan], axis=1).ravel()
        ys = np.stack([lo, lo, hi, hi, lo, nan], axis=1).ravel()
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(color="black", width=line_width(presentation) / 2),
                                 xaxis="x2", yaxis="y2", name="communities"))
    square = dict(range=[-0.5, d - 0.5], constrain="domain", showgrid=False, ticks="")
    style(fig, title=title, presentation=presentation, height=560, legend=False,
          xaxis=square, xaxis2=square,
          yaxis=dict(square, range=[d - 0.5, -0.5], scaleanchor="x"),
          yaxis2=dict(square, range=[d - 0.5, -0.5], scaleanchor="x2"),
          coloraxis=dict(colorscale=CORR_SCALE, cmin=-1, cmax=1, colorbar=dict(title="r")), dragmode="select")
    return fig


def selection_block(box: dict | None, order: np.ndarray, max_units: int = 512,
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Units (rows, cols) under a box selected on :func:`correlation_figure`, or None.

    box: one entry of Streamlit's ``selection["box"]`` (keys ``xref`` and ``x``/``y`` ranges, or
    ``x0``/``x1``/``y0``/``y1``). A box on the right panel (xref "x2") is in community order and
    mapped back through ``order``. Each side is capped at ``max_units`` (the box's first units).
    """
    if not box:
        return None
    try:
        xs = box["x"] if "x" in box else (box["x0"], box["x1"])
        ys = box["y"] if "y" in box else (box["y0"], box["y1"])
        x0, x1 = sorted(float(v) for v in xs)
        y0, y1 = sorted(float(v) for v in ys)
    except (KeyError, TypeError, ValueError):
        return None
    d = len(order)
    lo = lambda v: int(np.clip(np.ceil(v - 0.5), 0, d - 1))   # first position whose cell the box touches
    hi = lambda v: int(np.clip(np.floor(v + 0.5), 0, d - 1))
    cols = np.arange(lo(x0), hi(x1) + 1)[:max_units]
    rows = np.arange(lo(y0), hi(y1) + 1)[:max_units]
    if not len(rows) or not len(cols):
        return None
    if str(box.get("xref", "x")).startswith("x2"):
        rows, cols = np.asarray(order)[rows], np.asarray(order)[cols]
    return rows, cols


def block_figure(sub: np.ndarray, rows: np.ndarray, cols: np.ndarray, title: str = "",
                 presentation: bool = False) -> go.Figure:
    """Full-resolution heat map of sub = C[rows][:, cols] (len(rows), len(cols)); axes show the
    unit indices."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    sub = np.asarray(sub, dtype=np.float32)
    fig = go.Figure(go.Heatmap(z=sub, x=[str(c) for c in cols], y=[str(r) for r in rows],
                               zmin=-1, zmax=1, colorscale=CORR_SCALE, colorbar=dict(title="r"),
                               hovertemplate="unit %{y} × unit %{x}<br>r = %{z:.3f}<extra></extra>"))
    return style(fig, title=title, presentation=presentation, height=560, legend=False,
                 xaxis={"type": "category", "title": {"text": "unit"}},
                 yaxis={"autorange": "reversed", "type": "category", "title": {"text": "unit"}})


# -- communities across snapshots ---------------------------------------------------------------------
def nmi_figure(nmi: pd.DataFrame, n_layers: int, title: str = "NMI between snapshot partitions",
               presentation: bool = False) -> go.Figure:
    """(S × S) NMI between the partitions of every snapshot pair, for one method.
    nmi: snapshot_a, snapshot_b, nmi (both orders)."""
    if nmi.empty:
        return empty_figure("no NMI table for this method", presentation)
    mat = nmi.pivot(index="snapshot_a", columns="snapshot_b", values="nmi").sort_index().sort_index(axis=1)
    labels = [snapshot_label(s, n_layers) for s in mat.index]
    fig = go.Figure(go.Heatmap(z=mat.to_numpy(np.float32), x=labels, y=labels, zmin=0, zmax=1,
                               colorscale="Viridis", colorbar=dict(title="NMI"),
                               hovertemplate="%{y} vs %{x}<br>NMI = %{z:.3f}<extra></extra>"))
    return style(fig, title=title, presentation=presentation, height=560, legend=False,
                 xaxis={"constrain": "domain"}, yaxis={"autorange": "reversed", "scaleanchor": "x", "constrain": "domain"})


def community_sizes_figure(comms: pd.DataFrame, n_layers: int, snapshot: int | None = None,
                           min_size: int = 2, presentation: bool = False) -> go.Figure:
    """Left: communities of at least ``min_size`` units per snapshot, one line per method.
    Right: the community-size distribution at ``snapshot`` (all snapshots when None).
    comms: snapshot, method, community, size."""
    if comms.empty:
        return empty_figure("no communities table", presentation)
    where = snapshot_label(snapshot, n_layers) if snapshot is not None else "all snapshots"
    fig = subplots(rows=1, cols=2, horizontal_spacing=0.1,
                   subplot_titles=(f"communities of ≥ {min_size} units", f"community sizes, {where}"))
    for m, g in comms.groupby("method", sort=False):
        snaps = sorted(g["snapshot"].unique())
        counts = g[g["size"] >= min_size].groupby("snapshot").size().reindex(snaps, fill_value=0)
        color = METHOD_COLORS.get(m)
        fig.add_trace(go.Scatter(x=[snapshot_label(s, n_layers) for s in counts.index], y=counts.to_numpy(),
                                 mode="lines+markers", name=method_label(m), legendgroup=m,
                                 line=dict(color=color, width=line_width(presentation)),
                                 marker=dict(size=marker_size(presentation))), row=1, col=1)
        sizes = g["size"] if snapshot is None else g.loc[g["snapshot"] == snapshot, "size"]
        fig.add_trace(go.Histogram(x=sizes.to_numpy(), name=method_label(m), legendgroup=m, showlegend=False,
                                   opacity=0.6, marker=dict(color=color)), row=1, col=2)
    return style(fig, title="Community structure across snapshots", presentation=presentation, height=460,
                 barmode="overlay", xaxis={"title": {"text": "snapshot"}},
                 xaxis2={"title": {"text": "community size (units)"}}, yaxis={"title": {"text": "communities"}},
                 yaxis2={"title": {"text": "communities (log)"}, "type": "log"})


# -- topology ↔ dynamics ------------------------------------------------------------------------------
def spearman_text(x, y) -> tuple[float, float, str]:
    """(ρ, p, "Spearman ρ = …, p = …") over the finite pairs; NaN when fewer than 3 or a side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return np.nan, np.nan, "Spearman ρ undefined (fewer than 3 varying points)"
    r = stats.spearmanr(x[ok], y[ok])
    return float(r.statistic), float(r.pvalue), f"Spearman ρ = {r.statistic:+.3f}, p = {r.pvalue:.3g}"


def participation_scatter(units: pd.DataFrame, tail: float = TAIL, title: str = "", seed=0,
                          presentation: bool = False) -> go.Figure:
    """Participation coefficient against Jacobian column norm for the units of one layer.

    units: unit, participation, column_norm (snapshot 2l of one method, every unit). The top and
    bottom tails of the boundary-node test (exactly ⌊tail · n⌋ units each, ties broken by ``seed``,
    the run's seed: ``participation_tails``) are coloured; the title carries Spearman ρ over all units.
    """
    units = units.sort_values("unit")  # the tie-break order is indexed by unit
    p = units["participation"].to_numpy(float)
    c = units["column_norm"].to_numpy(float)
    ok = np.isfinite(p) & np.isfinite(c)
    if not ok.any():
        return empty_figure("no column norms for this snapshot (pre-MLP snapshots have none)", presentation)
    top, bottom = participation_tails(np.where(ok, p, np.nan), tail, seed=seed)
    groups = [("middle", ok & ~top & ~bottom, MIDDLE_COLOR),
              (f"bottom {tail:.0%} participation (core)", bottom, CORE_COLOR),
              (f"top {tail:.0%} participation (boundary)", top, BOUNDARY_COLOR)]
    fig = go.Figure()
    unit = units["unit"].to_numpy()
    for name, sel, color in groups:
        fig.add_trace(go.Scattergl(x=p[sel], y=c[sel], mode="markers", name=name, customdata=unit[sel],
                                   marker=dict(size=marker_size(presentation), color=color),
                                   hovertemplate="unit %{customdata}<br>p = %{x:.3f}<br>‖J[:,i]‖ = %{y:.3f}"
                                                 "<extra></extra>"))
    _, _, text = spearman_text(p, c)
    return style(fig, title=f"{title}  {text}".strip(), presentation=presentation, height=460,
                 xaxis={"title": {"text": "participation coefficient p_i"}},
                 yaxis={"title": {"text": "column norm ‖J̄[:, i]‖₂"}})


def cohens_d_figure(coupling: pd.DataFrame, n_layers: int, highlight: int | None = None,
                    title: str = "Boundary-node coupling: Cohen's d per layer",
                    presentation: bool = False) -> go.Figure:
    """Per-layer Cohen's d of the boundary-node test, one line per method; FDR-significant layers
    (BH q ≤ 0.05 within the run) are filled markers, the others open.
    coupling: layer, method, cohens_d, fdr_significant, q_bh."""
    if coupling.empty:
        return empty_figure("no coupling table", presentation)
    fig = go.Figure()
    for m, g in coupling.sort_values("layer").groupby("method", sort=False):
        sig = g["fdr_significant"].to_numpy(bool)
        color = METHOD_COLORS.get(m)
        fig.add_trace(go.Scatter(x=g["layer"], y=g["cohens_d"], mode="lines", name=method_label(m),
                                 legendgroup=m, line=dict(color=color, width=line_width(presentation) / 2)))
        for flag, symbol, what in ((True, "circle", "FDR-significant"), (False, "circle-open", "n.s.")):
            sel = sig == flag
            fig.add_trace(go.Scatter(
                x=g["layer"][sel], y=g["cohens_d"][sel], mode="markers", legendgroup=m,
                name=f"{method_label(m)}: {what}", showlegend=bool(sel.any()), customdata=g["q_bh"][sel],
                marker=dict(symbol=symbol, size=marker_size(presentation) + 4, color=color,
                            line=dict(width=1.5, color=color)),
                hovertemplate="layer %{x}<br>d = %{y:+.3f}<br>BH q = %{customdata:.3g}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"))
    style(fig, title=title, presentation=presentation, height=440, xaxis=layer_axis_props(n_layers),
          yaxis={"title": {"text": "Cohen's d (top vs bottom participation)"}})
    highlight_layer(fig, highlight, presentation)
    return fig


def selfalign_vs_d_figure(coupling: pd.DataFrame, n_layers: int, title: str = "",
                          presentation: bool = False) -> go.Figure:
    """Self-alignment of J̄_l against Cohen's d across layers (one method), coloured by depth,
    filled where FDR-significant, with Spearman ρ in the title.
    coupling: layer, self_alignment, cohens_d, fdr_significant."""
    g = coupling.sort_values("layer")
    if g.empty or not np.isfinite(g["self_alignment"].to_numpy(float)).any():
        return empty_figure("no self-alignment for this run (the spectra stage has not run)", presentation)
    _, _, text = spearman_text(g["self_alignment"], g["cohens_d"])
    sig = g["fdr_significant"].to_numpy(bool)
    fig = go.Figure(go.Scatter(
        x=g["self_alignment"], y=g["cohens_d"], mode="markers", showlegend=False, customdata=g["layer"],
        marker=dict(size=marker_size(presentation) + 6, color=g["layer"], colorscale="Turbo", cmin=0,
                    cmax=max(n_layers - 1, 1), colorbar=dict(title="layer"),
                    symbol=np.where(sig, "circle", "circle-open").tolist(), line=dict(width=2)),
        hovertemplate="layer %{customdata}<br>self-alignment %{x:.3f}<br>d = %{y:+.3f}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"))
    return style(fig, title=f"{title}  {text}".strip(), presentation=presentation, height=440, legend=False,
                 xaxis={"title": {"text": "self-alignment of J̄_l (operator type)"}},
                 yaxis={"title": {"text": "Cohen's d"}})


def mesoscale_figure(meso: pd.DataFrame, n_layers: int, highlight: int | None = None, title: str = "",
                     presentation: bool = False) -> go.Figure:
    """Variance captured by the community basis against the 5–95 % band and the mean of the
    size-matched relabellings, per layer, for the rows of one method, null and operator; the title
    counts the BH-significant layers (empirical p, α = 0.05 over the layers; older tables get BH
    on read, ``with_bh_columns``), which are drawn filled."""
    g = with_bh_columns(meso).sort_values("layer")
    if g.empty:
        return empty_figure("no mesoscale table", presentation)
    x = g["layer"].to_numpy()
    sig = g["bh_significant"].to_numpy(bool)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                             y=np.concatenate([g["null_q95"].to_numpy(), g["null_q05"].to_numpy()[::-1]]),
                             fill="toself", fillcolor=NULL_BAND, line=dict(width=0), hoverinfo="skip",
                             name="random relabellings, 5–95 %"))
    fig.add_trace(go.Scatter(x=x, y=g["null_mean"], mode="lines", name="random relabellings, mean",
                             line=dict(color=NULL_COLOR, dash="dot", width=line_width(presentation))))
    fig.add_trace(go.Scatter(x=x, y=g["variance_captured"], mode="lines+markers", name="communities",
                             line=dict(color=OBS_COLOR, width=line_width(presentation)),
                             marker=dict(size=marker_size(presentation) + 3,
                                         symbol=np.where(sig, "circle", "circle-open").tolist()),
                             customdata=np.c_[g["z"].to_numpy(float), g["p_empirical"].to_numpy(float)],
                             hovertemplate="layer %{x}<br>captured %{y:.4f}<br>z = %{customdata[0]:.1f}, "
                                           "p = %{customdata[1]:.3g}<extra></extra>"))
    style(fig, title=f"{title}  {int(sig.sum())}/{len(g)} layers above the null (BH, α = 0.05)".strip(),
          presentation=presentation, height=440, xaxis=layer_axis_props(n_layers),
          yaxis={"title": {"text": "variance captured ‖K‖²_F / ‖op‖²_F"}})
    highlight_layer(fig, highlight, presentation)
    return fig


NULL_LABELS = {"independent": "independent null", "joint": "joint null"}
OPERATOR_LABELS = {"J": "J̄_l", "R": "R_l = J̄_l − I"}


def mesoscale_z_figure(meso: pd.DataFrame, n_layers: int, highlight: int | None = None,
                       presentation: bool = False) -> go.Figure:
    """z of the mesoscale test per layer in four panels: rows operator J, R; columns null
    independent, joint (METHODS §8). z is for display: the test is BH on the empirical p over the
    layers (α = 0.05), and the BH-significant layers are drawn filled and counted in the panel
    titles. Rows of one method; a (null, operator) the table lacks (runs from before the joint
    null) is an empty panel that says so."""
    meso = with_bh_columns(meso)
    if meso.empty:
        return empty_figure("no mesoscale table", presentation)
    titles, panels = [], []
    for op in OPERATORS:
        for null in NULLS:
            g = meso[(meso["null"] == null) & (meso["operator"] == op)].sort_values("layer")
            name = f"{OPERATOR_LABELS[op]}, {NULL_LABELS[null]}"
            titles.append(f"{name}: {int(g['bh_significant'].sum())}/{len(g)} layers BH-significant" if len(g)
                          else f"{name}: not computed (--redo topology_coupling)")
            panels.append(g)
    fig = subplots(rows=2, cols=2, subplot_titles=titles, shared_xaxes=True, vertical_spacing=0.14,
                   horizontal_spacing=0.08)
    shapes = []
    for i, g in enumerate(panels):
        row, col = i // 2 + 1, i % 2 + 1
        ax = "" if i == 0 else str(i + 1)  # make_subplots numbers the axes row by row
        if len(g):
            sig = g["bh_significant"].to_numpy(bool)
            fig.add_trace(go.Scatter(x=g["layer"], y=g["z"], mode="lines+markers", showlegend=False,
                                     line=dict(color=OBS_COLOR, width=line_width(presentation)),
                                     marker=dict(size=marker_size(presentation) + 2,
                                                 symbol=np.where(sig, "circle", "circle-open").tolist()),
                                     customdata=g["p_empirical"].to_numpy(float),
                                     hovertemplate="layer %{x}<br>z = %{y:.1f}, p = %{customdata:.3g}<extra></extra>"),
                          row=row, col=col)
        # Plain shapes: add_hline / add_vrect resolve subplot references at ~5 ms each.
        shapes.append({"type": "line", "xref": f"x{ax} domain", "x0": 0, "x1": 1, "yref": f"y{ax}",
                       "y0": 0, "y1": 0, "line": {"color": NULL_COLOR, "dash": "dot"}})
        if highlight is not None:
            shapes.append({**highlight_band(highlight), "xref": f"x{ax}", "yref": f"y{ax} domain"})
    fig.layout.shapes = shapes
    style(fig, title="Mesoscale z against each null (filled: BH-significant, α = 0.05)", presentation=presentation,
          height=560, legend=False)
    fig.update_xaxes(range=[-0.5, n_layers - 0.5])
    fig.update_xaxes(title_text="layer l", row=2)
    fig.update_yaxes(title_text="z", col=1)
    return fig


def rate_figure(meso: pd.DataFrame, n_layers: int, pvalues: dict | None = None,
                presentation: bool = False) -> go.Figure:
    """Rate-level tests: topology disruption 1 − NMI(snapshot 2l, 2l+2) against |Δσ_max(K)| (left)
    and |Δ variance captured| (right), coloured by layer. ``pvalues`` may hold the stage's
    10,000-permutation p-values under "dsigma" and "dvar"."""
    g = meso.dropna(subset=["disruption"]).sort_values("layer")
    if g.empty:
        return empty_figure("rate-level tests need at least two layers", presentation)
    titles = []
    for col, key in (("d_sigma_max", "dsigma"), ("d_variance_captured", "dvar")):
        rho, _, text = spearman_text(g["disruption"], g[col])
        if pvalues and np.isfinite(pvalues.get(key, np.nan)) and np.isfinite(rho):
            text = f"ρ = {rho:+.3f}, permutation p = {pvalues[key]:.3g}"
        titles.append(text)
    fig = subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    for i, col in enumerate(("d_sigma_max", "d_variance_captured"), start=1):
        fig.add_trace(go.Scatter(x=g["disruption"], y=g[col], mode="markers", showlegend=False,
                                 customdata=g["layer"],
                                 marker=dict(size=marker_size(presentation) + 4, color=g["layer"],
                                             colorscale="Turbo", cmin=0, cmax=max(n_layers - 1, 1),
                                             showscale=i == 2, colorbar=dict(title="layer")),
                                 hovertemplate="layer %{customdata}<br>1 − NMI %{x:.3f}<br>%{y:.4g}"
                                               "<extra></extra>"),
                      row=1, col=i)
    style(fig, title="Rate-level coupling (adjacent layers)", presentation=presentation, height=420,
          legend=False)
    fig.update_xaxes(title_text="1 − NMI of adjacent partitions")
    fig.update_yaxes(title_text="|Δσ_max(K)|", row=1, col=1)
    fig.update_yaxes(title_text="|Δ variance captured|", row=1, col=2)
    return fig


def method_table(coupling: pd.DataFrame, comms: pd.DataFrame, min_size: int = 2) -> pd.DataFrame:
    """The method comparison of the paper's Table 1, for one run.

    One row per method: the fraction of layers with an FDR-significant positive (and negative)
    boundary effect, median and mean Cohen's d over layers, the median number of communities of
    at least ``min_size`` units per snapshot, and Spearman ρ(self-alignment, d) across layers.
    """
    rows = []
    for m in coupling["method"].unique():
        g = coupling[coupling["method"] == m]
        dv = g["cohens_d"].to_numpy(float)
        sig = g["fdr_significant"].to_numpy(bool)
        n = len(g)
        cm = comms[(comms["method"] == m) & (comms["size"] >= min_size)].groupby("snapshot").size()
        rho, _, _ = spearman_text(g["self_alignment"], g["cohens_d"])
        finite = np.isfinite(dv).any()
        rows.append({
            "method": method_label(m),
            "frac. FDR sig. (+)": float((sig & (dv > 0)).sum() / n),
            "frac. FDR sig. (−)": float((sig & (dv < 0)).sum() / n),
            "median Cohen's d": float(np.nanmedian(dv)) if finite else np.nan,
            "mean Cohen's d": float(np.nanmean(dv)) if finite else np.nan,
            "communities / snapshot (median)": float(cm.median()) if len(cm) else 0.0,
            "ρ(self-alignment, d)": rho,
        })
    return pd.DataFrame(rows)
