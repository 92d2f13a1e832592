"""Eigenvalue figures of the mean Jacobians J̄_l and residual operators R_l (METHODS §3).

Input is the ``eigenvalues`` table: columns layer, operator ∈ {"J", "R"}, idx, re, im (one row
per eigenvalue). Pure functions: a DataFrame in, a ``go.Figure`` out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from resdyn.core.figures.common import (BASELINE_COLOR, DENSITY_SCALE, OPERATOR_NAMES, PALETTE,
                                        empty_figure, font_size, line_width, marker_size, style,
                                        subplots)

# quantity key -> (axis label, function of the complex eigenvalues)
QUANTITIES = {
    "re": ("Re λ", np.real),
    "im": ("Im λ", np.imag),
    "abs": ("|λ|", np.abs),
}


def unit_circle(n: int = 361, center: complex = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(n,) x and y of the circle |z − center| = 1, closed (first point repeated last)."""
    t = np.linspace(0.0, 2.0 * np.pi, n)
    return center.real + np.cos(t), center.imag + np.sin(t)


def _operator_rows(eig: pd.DataFrame, operator: str) -> pd.DataFrame:
    if "operator" in eig.columns:
        eig = eig[eig["operator"] == operator]
    return eig


def layer_colors(layers: Sequence[int], n_layers: int) -> dict[int, str]:
    """Palette colours for a few layers; colour by depth (Viridis) when there are many."""
    layers = list(layers)
    if len(layers) <= len(PALETTE):
        return {l: PALETTE[i] for i, l in enumerate(layers)}
    pos = [l / max(n_layers - 1, 1) for l in layers]
    return dict(zip(layers, sample_colorscale(DENSITY_SCALE, pos)))


def eigenvalue_scatter(eig: pd.DataFrame, layers: Sequence[int] | None = None, *, operator: str = "J",
                       n_layers: int | None = None, presentation: bool = False) -> go.Figure:
    """Complex-plane scatter of the eigenvalues of the chosen layers, with the unit circle.

    Args:
        eig: eigenvalue rows (layer, [operator], idx, re, im); other operators are ignored.
        layers: layers to draw, in legend order (default: every layer present).
        operator: "J" (mean Jacobian) or "R" (J̄ − I). For R the circle |1 + λ| = 1, where J's
            eigenvalues have modulus 1, is drawn too.
        n_layers: L, for colouring by depth (default: max layer + 1).
    """
    eig = _operator_rows(eig, operator)
    if layers is None:
        layers = sorted(eig["layer"].unique().tolist())
    layers = [int(l) for l in layers]
    n_layers = n_layers or (int(eig["layer"].max()) + 1 if len(eig) else 1)
    colors = layer_colors(layers, n_layers)
    fig = go.Figure()
    lw = line_width(presentation)
    cx, cy = unit_circle()
    fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", name="|λ| = 1",
                             line={"color": BASELINE_COLOR, "dash": "dash", "width": lw * 0.75},
                             hoverinfo="skip"))
    if operator == "R":
        sx, sy = unit_circle(center=-1.0)
        fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", name="|1 + λ| = 1 (J̄'s unit circle)",
                                 line={"color": BASELINE_COLOR, "dash": "dot", "width": lw * 0.75},
                                 hoverinfo="skip"))
    for l in layers:
        rows = eig[eig["layer"] == l]
        re, im = rows["re"].to_numpy(), rows["im"].to_numpy()
        fig.add_trace(go.Scattergl(
            x=re, y=im, mode="markers", name=f"layer {l}",
            marker={"size": marker_size(presentation), "color": colors[l], "opacity": 0.75,
                    "line": {"width": 0}},
            customdata=np.hypot(re, im),
            hovertemplate=(f"layer {l}<br>λ = %{{x:.4f}} %{{y:+.4f}}i<br>|λ| = %{{customdata:.4f}}"
                           "<extra></extra>"),
        ))
    style(fig, title=f"Eigenvalues of {OPERATOR_NAMES.get(operator, operator)} in the complex plane",
          presentation=presentation, height=620 if presentation else 540)
    # Equal scales, a circle must look like a circle; shrink the plot box rather than pad the range.
    fig.update_xaxes(title_text="Re λ", constrain="domain")
    fig.update_yaxes(title_text="Im λ", scaleanchor="x", scaleratio=1)
    if not layers or eig.empty:
        fig.add_annotation(text="no eigenvalues for this selection", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def density_matrix(eig: pd.DataFrame, quantity: str, *, operator: str = "J", bins: int = 80,
                   n_layers: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer histogram of one eigenvalue quantity on shared bins.

    Returns:
        counts: (L, bins) int64, eigenvalues of layer l in bin b.
        edges: (bins + 1,) float64 bin edges spanning the data (over all layers).
        layers: (L,) int64, 0..L−1 (layers without rows get an all-zero row).
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {sorted(QUANTITIES)}, got {quantity!r}")
    eig = _operator_rows(eig, operator)
    n_layers = n_layers or (int(eig["layer"].max()) + 1 if len(eig) else 1)
    values = QUANTITIES[quantity][1](eig["re"].to_numpy() + 1j * eig["im"].to_numpy())
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if hi - lo < 1e-9:  # a degenerate spectrum still gets a visible bin
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    layer_edges = np.arange(n_layers + 1) - 0.5
    counts, _, _ = np.histogram2d(eig["layer"].to_numpy(), values, bins=[layer_edges, edges])
    return counts.astype(np.int64), edges, np.arange(n_layers)


def eigenvalue_density(eig: pd.DataFrame, *, operator: str = "J", bins: int = 80,
                       n_layers: int | None = None, presentation: bool = False) -> go.Figure:
    """Log-density heat maps of Re λ, Im λ and |λ| over all layers (layers on y).

    Colour is log10(1 + count) so that thin tails stay visible next to dense clusters. Dashed
    reference lines where the data reach them: Im λ = 0, and for J Re λ = 1 and |λ| = 1 (for R:
    Re λ = 0).
    """
    eig = _operator_rows(eig, operator)
    if eig.empty:
        return empty_figure("no eigenvalues in this run", presentation)
    return density_figure({q: density_matrix(eig, q, operator=operator, bins=bins, n_layers=n_layers)[:2]
                           for q in QUANTITIES}, operator=operator, presentation=presentation)


def density_figure(densities: dict[str, tuple[np.ndarray, np.ndarray]], *, operator: str = "J",
                   presentation: bool = False) -> go.Figure:
    """``eigenvalue_density`` from histograms already made: quantity ("re", "im", "abs") ->
    (counts (L, bins), edges (bins + 1,)), as ``density_matrix`` or ``queries.eigenvalue_density``
    give them."""
    if not densities or not densities["re"][0].sum():
        return empty_figure("no eigenvalues in this run", presentation)
    keys = ("re", "im", "abs")
    refs = {"re": [1.0] if operator == "J" else [0.0], "im": [0.0], "abs": [1.0] if operator == "J" else []}
    fig = subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.04,
                   subplot_titles=[QUANTITIES[q][0] for q in keys])
    axes, lines = {}, []
    for col, q in enumerate(keys, start=1):
        counts, edges = densities[q]
        layers = np.arange(counts.shape[0])
        centers = 0.5 * (edges[:-1] + edges[1:])
        label = QUANTITIES[q][0]
        fig.add_trace(go.Heatmap(
            z=np.log10(1.0 + counts), x=centers, y=layers, customdata=counts, coloraxis="coloraxis",
            name=label,
            hovertemplate=(f"layer %{{y}}<br>{label} ≈ %{{x:.3f}}<br>%{{customdata}} eigenvalues"
                           "<extra></extra>"),
        ), row=1, col=col)
        sfx = "" if col == 1 else str(col)
        axes[f"xaxis{sfx}"] = {"title": {"text": label}}
        axes[f"yaxis{sfx}"] = {"autorange": True}
        for x in refs[q]:
            if edges[0] <= x <= edges[-1]:  # only where the data reach
                lines.append({"type": "line", "xref": f"x{sfx}", "yref": f"y{sfx} domain", "x0": x, "x1": x,
                              "y0": 0, "y1": 1, "opacity": 0.8,
                              "line": {"color": "white", "dash": "dash", "width": line_width(presentation) * 0.6}})
    axes["yaxis"]["title"] = {"text": "layer l"}
    n = len(layers)
    fs = font_size(presentation)
    titles = [dict(a.to_plotly_json(), font={"size": fs}) for a in fig.layout.annotations]
    return style(fig, title=f"Eigenvalue density of {OPERATOR_NAMES.get(operator, operator)} across layers",
                 presentation=presentation, legend=False,
                 height=int(np.clip(160 + 16 * n, 360, 900)) + (80 if presentation else 0),
                 coloraxis={"colorscale": DENSITY_SCALE,
                            "colorbar": {"title": {"text": "log10(1 + count)", "side": "right"},
                                         "tickfont": {"size": fs}}},
                 shapes=lines, annotations=titles, **axes)
