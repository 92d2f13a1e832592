"""Figures of the Block coupling page (METHODS §9): pure builders, tables in, ``go.Figure`` out.

Inputs are slices of ``block_coupling.parquet`` (kind, K, layer_a, layer_b, token_a, token_b,
token_fixed, sample, aggregate, n, miscoupling), the coupling matrices of
``block_coupling_A.npy`` (L, L, K, K), ``trajectories.parquet`` and ``trajectory_pca.parquet``.
The small reshaping helpers (``depth_matrix``, ``layer_coupling``, ``grid_layers``) live here too,
so pages stay thin and the tests can check the numbers a figure shows. ``window_profile`` takes
per-layer quantiles (layer, q25, median, q75), which the page gets from DuckDB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from resdyn.core.figures.common import (DENSITY_SCALE, PALETTE, empty_figure, highlight_layer, layer_axis,
                                        layer_axis_props, line_width, marker_size, style)

MISCOUPLING = "normalised miscoupling m̃ = ‖A − diag A‖_F / ‖A‖_F"
GRID_MAX = 8  # layers per side of the |A| grid
TOKEN_LABEL = "token (from the end, −1 = last)"
METRICS = {
    "lss_window": ("line-shape score (11-layer window)", False),
    "ed_window": ("expodistance (11-layer window)", True),
    "norm": ("‖x^l‖ (hidden-state norm)", True),
}


def run_colors(run_ids: Sequence[str]) -> dict[str, str]:
    """One Okabe–Ito colour per run, in the given order."""
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(run_ids)}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# -- data shaping -----------------------------------------------------------------------------------
def depth_matrix(rows: pd.DataFrame, n_layers: int) -> np.ndarray:
    """(L, L) m̃ from depth-wise rows of one K (and one sample or the aggregate): [l, l'] = m̃ of
    J^l in the basis of J^{l'}; NaN where a pair is missing."""
    mat = np.full((n_layers, n_layers), np.nan)
    mat[rows["layer_a"].to_numpy(int), rows["layer_b"].to_numpy(int)] = rows["miscoupling"].to_numpy(float)
    return mat


def layer_coupling(rows: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """(layer, value): mean m̃ of J^l against every other layer's basis, both directions (l ≠ l');
    how coupled each layer is with the rest of the depth (the paper's Fig. 15)."""
    mat = depth_matrix(rows, n_layers)
    np.fill_diagonal(mat, np.nan)
    both = np.concatenate([mat, mat.T], axis=1)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(both).sum(1)
        value = np.where(counts > 0, np.nansum(both, 1) / np.maximum(counts, 1), np.nan)
    return pd.DataFrame({"layer": np.arange(n_layers), "value": value})


def grid_layers(a: int, b: int, max_layers: int = GRID_MAX) -> list[int]:
    """Layers from min(a, b) to max(a, b), evenly thinned to at most ``max_layers`` (ends kept)."""
    lo, hi = sorted((int(a), int(b)))
    if hi - lo + 1 <= max_layers:
        return list(range(lo, hi + 1))
    return sorted({int(round(x)) for x in np.linspace(lo, hi, max_layers)})


# -- depth-wise coupling ----------------------------------------------------------------------------
def depth_heatmap(rows: pd.DataFrame, n_layers: int, *, k: int, title: str = "", pair: tuple[int, int] | None = None,
                  presentation: bool = False) -> go.Figure:
    """Heat map of the L × L depth-wise m̃ (rows: the Jacobian J^l, columns: the basis of J^{l'})."""
    if rows.empty:
        return empty_figure("no depth-wise coupling rows for this K", presentation)
    mat = depth_matrix(rows, n_layers)
    idx = np.arange(n_layers)
    fig = go.Figure(go.Heatmap(
        z=mat, x=idx, y=idx, zmin=0, zmax=1, colorscale=DENSITY_SCALE, reversescale=True,
        colorbar={"title": {"text": "m̃"}},
        hovertemplate="J^%{y} in the top-" + str(k) + " basis of J^%{x}<br>m̃ = %{z:.3f}<extra></extra>"))
    if pair is not None:
        fig.add_trace(go.Scatter(x=[pair[1]], y=[pair[0]], mode="markers", name="chosen pair", showlegend=False,
                                 marker={"symbol": "square-open", "size": marker_size(presentation) * 3,
                                         "color": PALETTE[1], "line": {"width": line_width(presentation)}},
                                 hoverinfo="skip"))
    return style(fig, title=title or f"Depth-wise coupling, K = {k} (0 = coupled)", presentation=presentation,
                 legend=False, xaxis={"title": {"text": "basis layer l′ (U_{l′}, V_{l′})"}, "constrain": "domain",
                                      "range": [-0.5, n_layers - 0.5]},
                 yaxis={"title": {"text": "Jacobian layer l (J^l)"}, "autorange": "reversed", "scaleanchor": "x"})


def coupling_grid(a: np.ndarray, layers: Sequence[int], *, k: int | None = None, title: str = "",
                  presentation: bool = False) -> go.Figure:
    """Grid of |A^{l l'}| images (the paper's Fig. 3): row l = the Jacobian J^l, column l' = the
    basis of J^{l'}; a strong diagonal in an image means the two are coupled.

    One heatmap holds the whole grid: tile (l, l') at rows/columns ``i·(k+1) … i·(k+1)+k−1`` (each
    tile scaled to its own max), a blank line between tiles. An n×n grid of subplots would cost
    ~1 s to build at n = 8 (64 axes), against ~10 ms for this.

    Args:
        a: (L, L, K_max, K_max) coupling matrices, [l, l'] = U_{l'}ᵀ J^l V_{l'}.
        layers: the layers on each side (at most ``GRID_MAX``).
        k: leading block shown (default K_max).
    """
    layers = [int(l) for l in layers][:GRID_MAX]
    if not layers:
        return empty_figure("no layers chosen", presentation)
    k = int(k or a.shape[-1])
    n, step = len(layers), k + 1
    block = np.abs(np.asarray(a[np.ix_(layers, layers)], dtype=np.float64)[..., :k, :k])
    top = block.max(axis=(2, 3), keepdims=True)
    block = np.divide(block, top, out=np.zeros_like(block), where=top > 0)
    z = np.full((n * step - 1, n * step - 1), np.nan, np.float32)
    for i in range(n):
        for j in range(n):
            z[i * step:i * step + k, j * step:j * step + k] = block[i, j]
    # Category labels (unique per row/column) give the hover its tile and index; gaps get blanks.
    xs = [f"basis {l} [{c}]" if c < k else " " * (j + 1) for j, l in enumerate(layers) for c in range(step)][:-1]
    ys = [f"J^{l} [{c}]" if c < k else "\u2009" * (i + 1) for i, l in enumerate(layers) for c in range(step)][:-1]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, zmin=0, zmax=1, colorscale="Greys", showscale=False,
                               hoverongaps=False, xgap=0, ygap=0,
                               hovertemplate="%{y} in the %{x}<br>|A| / max = %{z:.3f}<extra></extra>"))
    side = 110 * n + 120 if not presentation else 150 * n + 150
    centre = k // 2
    axis = dict(type="category", ticks="", showline=False, showgrid=False, tickmode="array")
    return style(fig, title=title or f"|A^{{l l′}}| = |U_{{l′}}ᵀ J^l V_{{l′}}|, top {k} (each image to its max)",
                 presentation=presentation, legend=False, height=side,
                 xaxis=dict(axis, side="top", tickvals=[xs[j * step + centre] for j in range(n)],
                            ticktext=[f"basis {l}" for l in layers]),
                 yaxis=dict(axis, autorange="reversed", tickvals=[ys[i * step + centre] for i in range(n)],
                            ticktext=[f"J^{l}" for l in layers], scaleanchor="x", constrain="domain"))


def layer_coupling_overlay(profiles: Mapping[str, pd.DataFrame], *, k: int, highlight: int | None = None,
                           title: str = "", presentation: bool = False) -> go.Figure:
    """Per-layer mean m̃ (``layer_coupling``) of several runs on one axis: trained vs random init."""
    profiles = {r: p for r, p in profiles.items() if p is not None and not p.empty}
    if not profiles:
        return empty_figure("no run has depth-wise coupling", presentation)
    colors = run_colors(list(profiles))
    fig = go.Figure()
    n_layers = 1
    for run, p in profiles.items():
        n_layers = max(n_layers, int(p["layer"].max()) + 1)
        fig.add_trace(go.Scatter(
            x=p["layer"].to_numpy(), y=p["value"].to_numpy(), mode="lines+markers", name=run,
            line={"color": colors[run], "width": line_width(presentation)},
            marker={"size": marker_size(presentation) + 1, "color": colors[run]},
            hovertemplate="layer %{x}<br>mean m̃ = %{y:.3f}<extra>" + run + "</extra>"))
    style(fig, title=title or f"Coupling of each layer with the rest, K = {k} (lower = more coupled)",
          presentation=presentation, legend=True)
    layer_axis(fig, n_layers)
    fig.update_yaxes(title_text="mean m̃ over l′ ≠ l", range=[0, 1.02])
    highlight_layer(fig, highlight, presentation)
    return fig


# -- token-wise coupling ----------------------------------------------------------------------------
def token_heatmap(rows: pd.DataFrame, *, title: str, x_title: str, y_title: str,
                  presentation: bool = False) -> go.Figure:
    """Heat map of m̃ over token pairs (token_a rows: the measured Jacobian, token_b columns: the basis)."""
    if rows.empty:
        return empty_figure("no token-wise rows: compute with --coupling-window 2 or more", presentation)
    ta = np.sort(rows["token_a"].unique())
    tb = np.sort(rows["token_b"].unique())
    mat = np.full((len(ta), len(tb)), np.nan)
    mat[np.searchsorted(ta, rows["token_a"]), np.searchsorted(tb, rows["token_b"])] = rows["miscoupling"]
    fig = go.Figure(go.Heatmap(
        z=mat, x=[str(t) for t in tb], y=[str(t) for t in ta], zmin=0, zmax=1, colorscale=DENSITY_SCALE,
        reversescale=True, colorbar={"title": {"text": "m̃"}},
        hovertemplate=y_title + " %{y}<br>" + x_title + " %{x}<br>m̃ = %{z:.3f}<extra></extra>"))
    style(fig, title=title, presentation=presentation, legend=False)
    fig.update_xaxes(title_text=x_title, type="category")
    fig.update_yaxes(title_text=y_title, type="category", autorange="reversed")
    return fig


# -- trajectory regularity --------------------------------------------------------------------------
def window_profile(stats: Mapping[str, pd.DataFrame], metric: str, *, highlight: int | None = None,
                   title: str = "", presentation: bool = False) -> go.Figure:
    """Median and interquartile band of a per-layer trajectory metric (layer, q25, median, q75) for
    one or several runs. ``metric``: a key of ``METRICS`` (windowed LSS / ED centred at ``layer``,
    or the norm of x^l)."""
    label, log = METRICS.get(metric, (metric, False))
    stats = {r: s for r, s in stats.items() if s is not None and not s.empty}
    if not stats:
        return empty_figure(f"no {label} values (too few layers for an 11-layer window?)", presentation)
    colors = run_colors(list(stats))
    fig = go.Figure()
    n_layers = 1
    for run, s in stats.items():
        # numpy columns: plotly 7 converts each pandas Series through narwhals (~0.5 ms apiece).
        s = {k: v.to_numpy() for k, v in s.sort_values("layer")[["layer", "q25", "median", "q75"]].items()}
        n_layers = max(n_layers, int(s["layer"].max()) + 1)
        c = colors[run]
        fig.add_trace(go.Scatter(x=s["layer"], y=s["q75"], mode="lines", line={"width": 0}, showlegend=False,
                                 hoverinfo="skip", legendgroup=run))
        fig.add_trace(go.Scatter(x=s["layer"], y=s["q25"], mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor=_rgba(c, 0.2), name=f"{run} IQR", showlegend=False, hoverinfo="skip",
                                 legendgroup=run))
        fig.add_trace(go.Scatter(
            x=s["layer"], y=s["median"], mode="lines+markers", name=run, legendgroup=run,
            line={"color": c, "width": line_width(presentation)},
            marker={"size": marker_size(presentation), "color": c},
            customdata=np.stack([s["q25"], s["q75"]], axis=1),
            hovertemplate="layer %{x}<br>median %{y:.4g}<br>IQR %{customdata[0]:.4g} – %{customdata[1]:.4g}"
                          "<extra>" + run + "</extra>"))
    style(fig, title=title or label, presentation=presentation, legend=len(stats) > 1,
          xaxis=layer_axis_props(n_layers, "layer l (window centre; state x^l)"),
          yaxis={"title": {"text": label}, "type": "log" if log else "linear"})
    highlight_layer(fig, highlight, presentation)
    return fig


def lss_distribution(values: Mapping[str, np.ndarray], *, title: str = "", presentation: bool = False) -> go.Figure:
    """Box plots of whole-depth LSS per run (the paper's Fig. 5: median and IQR over prompts)."""
    values = {r: np.asarray(v, dtype=float) for r, v in values.items() if v is not None and len(v)}
    if not values:
        return empty_figure("no trajectories in these runs", presentation)
    colors = run_colors(list(values))
    fig = go.Figure()
    for run, v in values.items():
        v = v[np.isfinite(v)]
        fig.add_trace(go.Box(y=v, name=run, marker_color=colors[run], boxpoints=False,
                             line={"width": line_width(presentation) / 2}))
    return style(fig, title=title or "Line-shape score over the whole depth (1 = straight line)",
                 presentation=presentation, legend=False, yaxis={"title": {"text": "LSS"}, "type": "log"})


def pca_figure(pca: pd.DataFrame, *, title: str = "", presentation: bool = False) -> go.Figure:
    """Token trajectories of one prompt in the 2-D PCA plane of its last-layer states (the paper's
    A.2.1): a grey path per token, markers coloured by layer, the last token's path highlighted."""
    if pca.empty:
        return empty_figure("no PCA projection for this prompt", presentation)
    pca = pca.sort_values(["token", "layer"])
    # One polyline, a gap (NaN) between tokens; numpy arrays, which plotly takes without a
    # per-element check (a list with None costs ~0.1 s at 3,000 points).
    gaps = np.flatnonzero(np.diff(pca["token"].to_numpy())) + 1
    xs = np.insert(pca["pc1"].to_numpy(np.float64), gaps, np.nan)
    ys = np.insert(pca["pc2"].to_numpy(np.float64), gaps, np.nan)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="token trajectories", hoverinfo="skip",
                             line={"color": "rgba(127,127,127,0.45)", "width": line_width(presentation) / 2}))
    fig.add_trace(go.Scatter(
        x=pca["pc1"].to_numpy(), y=pca["pc2"].to_numpy(), mode="markers", name="states x_t^l",
        marker={"size": marker_size(presentation), "color": pca["layer"].to_numpy(), "colorscale": DENSITY_SCALE,
                "colorbar": {"title": {"text": "layer"}}, "showscale": True},
        customdata=np.stack([pca["token"], pca["layer"]], axis=1),
        hovertemplate="token %{customdata[0]}, layer %{customdata[1]}<br>(%{x:.3g}, %{y:.3g})<extra></extra>"))
    last = pca[pca["token"] == pca["token"].max()]
    fig.add_trace(go.Scatter(x=last["pc1"].to_numpy(), y=last["pc2"].to_numpy(), mode="lines+markers",
                             name="last token",
                             line={"color": PALETTE[1], "width": line_width(presentation)},
                             marker={"size": marker_size(presentation), "color": PALETTE[1]}, hoverinfo="skip"))
    v1, v2 = float(pca["var1"].iloc[0]), float(pca["var2"].iloc[0])
    return style(fig, title=title or "Token trajectories, PCA fitted on the last layer", presentation=presentation,
                 xaxis={"title": {"text": f"PC1 ({v1:.0%} of last-layer variance)"}},
                 yaxis={"title": {"text": f"PC2 ({v2:.0%})"}, "scaleanchor": "x"})
