"""Figures of the cumulative bottleneck (METHODS §5) and transient growth (METHODS §11).

Inputs are the run store's tables: ``cumulative`` (layer, erank, log10_fro), ``cumulative_spectra``
(layer, idx, sigma), ``layers`` (layer, operator, frac_expanding, spectral_radius, ...) and
``transient_growth`` (layer, k, log10_norm). Pure functions: DataFrames in, ``go.Figure`` out.
Several runs are passed as ``{run_id: DataFrame}`` and overlaid, one palette colour per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from resdyn.core import spectral
from resdyn.core.figures.common import (BASELINE_COLOR, DENSITY_SCALE, PALETTE, empty_figure, font_size,
                                        highlight_layer, layer_axis, line_width, log_ticks, marker_size, style,
                                        subplots)

DEPTH_DASH = {0: "solid", 1: "dash", 2: "dot"}


def run_colors(run_ids: Sequence[str]) -> dict[str, str]:
    """One palette colour per run, in the given order."""
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(run_ids)}


def _expanding(layers: pd.DataFrame | None) -> pd.DataFrame | None:
    if layers is None or layers.empty or "frac_expanding" not in layers:
        return None
    if "operator" in layers:
        layers = layers[layers["operator"] == "J"]
    return layers.sort_values("layer")


def erank_profile(cumulative: Mapping[str, pd.DataFrame], layers: Mapping[str, pd.DataFrame | None] | None = None,
                  *, layer: int | None = None, presentation: bool = False) -> go.Figure:
    """erank(P_l) against injection layer l (log y, left axis) with the fraction of expanding
    eigenvalues of J̄_l (dashed, right axis; dotted line at 50 %), one colour per run.

    Args:
        cumulative: run_id -> ``cumulative`` table.
        layers: run_id -> ``layers`` table (the J rows are used), or None to omit the overlay.
        layer: a layer to highlight (the sidebar's choice).
    """
    if not cumulative:
        return empty_figure("no run has the 'cumulative' stage", presentation)
    layers = layers or {}
    colors = run_colors(list(cumulative))
    lw, ms = line_width(presentation), marker_size(presentation)
    fig = subplots(specs=[[{"secondary_y": True}]])
    n_layers = 1
    for run_id, cum in cumulative.items():
        cum = cum.sort_values("layer")
        n_layers = max(n_layers, int(cum["layer"].max()) + 1)
        fig.add_trace(go.Scatter(
            x=cum["layer"], y=cum["erank"], mode="lines+markers", name=f"{run_id}: erank(P_l)",
            line={"color": colors[run_id], "width": lw}, marker={"size": ms},
            customdata=np.stack([cum["log10_fro"]], axis=1),
            hovertemplate=("l = %{x}<br>erank(P_l) = %{y:.3g}<br>log10 ‖P_l‖_F = %{customdata[0]:.2f}"
                           "<extra>" + run_id + "</extra>"),
        ), secondary_y=False)
        exp = _expanding(layers.get(run_id))
        if exp is not None:
            fig.add_trace(go.Scatter(
                x=exp["layer"], y=exp["frac_expanding"], mode="lines", name=f"{run_id}: fraction |λ| > 1",
                line={"color": colors[run_id], "width": lw * 0.75, "dash": "dash"},
                hovertemplate="l = %{x}<br>expanding = %{y:.1%}<extra>" + run_id + "</extra>",
            ), secondary_y=True)
    fig.add_hline(y=0.5, line={"color": BASELINE_COLOR, "dash": "dot", "width": 1}, secondary_y=True)
    style(fig, title="Cumulative bottleneck: erank of P_l = J̄_{L−1}···J̄_l", presentation=presentation)
    layer_axis(fig, n_layers)
    fig.update_xaxes(title_text="injection layer l")
    fig.update_yaxes(title_text="effective rank of P_l", type="log", secondary_y=False)
    fig.update_yaxes(title_text="fraction of expanding eigenvalues of J̄_l", range=[0, 1], tickformat=".0%",
                     tickmode="linear", tick0=0.0, dtick=0.25, secondary_y=True, showgrid=False)
    highlight_layer(fig, layer, presentation)
    return log_ticks(fig)


def erank_vs_radius(cumulative: pd.DataFrame, layers: pd.DataFrame, *, run_id: str = "",
                    presentation: bool = False) -> go.Figure:
    """erank(P_l) against the spectral radius ρ(J̄_l), coloured by layer, Spearman ρ_s and p annotated."""
    lay = _expanding(layers) if layers is not None else None
    if lay is None or "spectral_radius" not in lay:
        return empty_figure("needs the 'spectra' stage (layers.parquet)", presentation)
    df = cumulative.merge(lay[["layer", "spectral_radius"]], on="layer").sort_values("layer")
    r, p = spectral.spearman(df["erank"], df["spectral_radius"])
    n_layers = int(df["layer"].max()) + 1 if len(df) else 1
    fig = go.Figure(go.Scatter(
        x=df["spectral_radius"], y=df["erank"], mode="markers", name=run_id or "layers",
        marker={"size": marker_size(presentation) * 2, "color": df["layer"], "colorscale": DENSITY_SCALE,
                "cmin": 0, "cmax": max(n_layers - 1, 1), "line": {"width": 0.5, "color": "#333"},
                "colorbar": {"title": {"text": "layer l"}}},
        text=df["layer"], hovertemplate="l = %{text}<br>ρ(J̄_l) = %{x:.3f}<br>erank(P_l) = %{y:.3g}<extra></extra>",
    ))
    txt = "Spearman ρ_s = n/a" if not np.isfinite(r) else f"Spearman ρ_s = {r:+.2f}, p = {p:.2g} (n = {len(df)})"
    fig.add_annotation(text=txt, x=0.02, y=0.98, xref="paper", yref="paper", xanchor="left", yanchor="top",
                       showarrow=False, font={"size": font_size(presentation)}, bgcolor="rgba(255,255,255,0.8)")
    style(fig, title=f"erank(P_l) against spectral radius{' — ' + run_id if run_id else ''}",
          presentation=presentation, legend=False)
    fig.update_xaxes(title_text="spectral radius ρ(J̄_l)")
    fig.update_yaxes(title_text="effective rank of P_l", type="log")
    return log_ticks(fig)


def cumulative_spectra(spectra: Mapping[str, pd.DataFrame], *, presentation: bool = False) -> go.Figure:
    """Singular values of P_l at the stored depths (P_0, P_mid, P_{L−1}) on a log scale.

    Colour = run, dash = depth (solid P_0, dashed P_mid, dotted P_{L−1}).
    """
    if not spectra:
        return empty_figure("no run has the 'cumulative' stage", presentation)
    colors = run_colors(list(spectra))
    lw = line_width(presentation)
    fig = go.Figure()
    for run_id, df in spectra.items():
        for i, (l, rows) in enumerate(sorted(df.groupby("layer"), key=lambda kv: kv[0])):
            rows = rows.sort_values("idx")
            sig = rows["sigma"].to_numpy(float)
            ok = sig > 0  # a truncated spectrum has no zeros; exact zeros cannot go on a log axis
            fig.add_trace(go.Scatter(
                x=rows["idx"].to_numpy()[ok] + 1, y=sig[ok], mode="lines", name=f"{run_id}: P_{l}",
                line={"color": colors[run_id], "width": lw, "dash": DEPTH_DASH.get(i, "dashdot")},
                hovertemplate=f"P_{l}" + "<br>i = %{x}<br>σ_i = %{y:.3g}<extra>" + run_id + "</extra>",
            ))
    style(fig, title="Singular values of the cumulative products", presentation=presentation)
    fig.update_xaxes(title_text="index i (descending)", type="log")
    fig.update_yaxes(title_text="σ_i(P_l)", type="log", exponentformat="power")
    return log_ticks(fig)


def transient_growth(df: pd.DataFrame, layers: Sequence[int] | None = None, *, run_id: str = "",
                     presentation: bool = False) -> go.Figure:
    """log10 ‖P_{l:l+k}‖₂ against the number of blocks k, one curve per injection layer l.

    A curve that rises and falls (maximum inside) is transient amplification by non-normal layers.
    """
    if df is None or df.empty:
        return empty_figure("needs the 'pseudospectra' stage (transient_growth.parquet)", presentation)
    n_layers = int(df["layer"].max()) + 1
    if layers is None:
        step = max(1, n_layers // 8)
        layers = sorted(set(range(0, n_layers, step)) | {n_layers - 1})
    colors = sample_colorscale(DENSITY_SCALE, [l / max(n_layers - 1, 1) for l in layers])
    fig = go.Figure()
    for l, col in zip(layers, colors):
        rows = df[df["layer"] == l].sort_values("k")
        if rows.empty:
            continue
        peak = rows.loc[rows["log10_norm"].idxmax()]
        fig.add_trace(go.Scatter(
            x=rows["k"], y=rows["log10_norm"], mode="lines+markers", name=f"l = {l}",
            line={"color": col, "width": line_width(presentation)}, marker={"size": marker_size(presentation)},
            hovertemplate=f"l = {l}" + "<br>k = %{x}<br>log10 ‖P‖₂ = %{y:.2f}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(x=[peak["k"]], y=[peak["log10_norm"]], mode="markers", showlegend=False,
                                 marker={"color": col, "symbol": "star", "size": marker_size(presentation) * 2.4},
                                 hovertemplate=f"max over k for l = {l}: " + "%{y:.2f} at k = %{x}<extra></extra>"))
    fig.add_hline(y=0.0, line={"color": BASELINE_COLOR, "dash": "dot", "width": 1})
    style(fig, title=f"Transient growth: ‖J̄_{{l+k−1}}···J̄_l‖₂{' — ' + run_id if run_id else ''}",
          presentation=presentation)
    fig.update_xaxes(title_text="blocks composed k")
    fig.update_yaxes(title_text="log10 ‖P_{l:l+k}‖₂")
    return fig
