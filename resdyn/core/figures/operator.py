"""Operator-type profiles across depth (METHODS §3–4).

Input is the ``layers`` table as ``queries.layers`` returns it: one row per (layer, operator ∈
{"J", "R"}) with self_alignment, forward_alignment, henrici, frac_expanding, residual_norm_ratio,
..., and, once the sample_stats stage has run, the per-sample profiles kappa_median, kappa_q25,
kappa_q75 joined on layer (``resdyn.core.sample_stats.with_profiles``). Pure functions: a
DataFrame in, a ``go.Figure`` out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from resdyn.core.figures.common import (BASELINE_COLOR, OPERATOR_COLORS, OPERATOR_NAMES, empty_figure,
                                        highlight_layer, layer_axis, line_width, log_ticks, marker_size, style)

OPERATORS = ("J", "R")


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _rows(layers: pd.DataFrame, operator: str) -> pd.DataFrame:
    return layers[layers["operator"] == operator].sort_values("layer")


def _n_layers(layers: pd.DataFrame) -> int:
    return int(layers["layer"].max()) + 1 if len(layers) else 1


def _line(x, y, *, name: str, color: str, label: str, presentation: bool, dash: str = "solid",
          fmt: str = ".3f", **kwargs) -> go.Scatter:
    return go.Scatter(
        x=x, y=y, mode="lines+markers", name=name,
        line={"color": color, "width": line_width(presentation), "dash": dash},
        marker={"size": marker_size(presentation) + 1, "color": color},
        hovertemplate=f"layer %{{x}}<br>{label} = %{{y:{fmt}}}<extra>{name}</extra>", **kwargs,
    )


def _profile(layers: pd.DataFrame, column: str, *, title: str, y_title: str, label: str,
             operators=OPERATORS, highlight: int | None, presentation: bool, y_range=None,
             percent: bool = False) -> go.Figure:
    if layers.empty:
        return empty_figure("no per-layer table in this run", presentation)
    fig = go.Figure()
    for op in operators:
        rows = _rows(layers, op)
        if rows.empty:
            continue
        fig.add_trace(_line(rows["layer"], rows[column], name=OPERATOR_NAMES[op], color=OPERATOR_COLORS[op],
                            label=label, presentation=presentation, fmt=".1%" if percent else ".3f"))
    style(fig, title=title, presentation=presentation, legend=len(fig.data) > 1)
    layer_axis(fig, _n_layers(layers))
    fig.update_yaxes(title_text=y_title, range=y_range, tickformat=".0%" if percent else None)
    highlight_layer(fig, highlight, presentation)
    return fig


def self_alignment_profile(layers: pd.DataFrame, *, k: int, d: int, highlight: int | None = None,
                           presentation: bool = False, forward: bool = True) -> go.Figure:
    """Self-alignment ‖V_kᵀU_k‖_F²/k of J̄ and R per layer, with the rotator baseline k/d.

    1 means the operator reads and writes the same top-k directions (symmetric/normal); k/d is
    what unrelated random subspaces give. With ``forward``, the forward alignment l → l+1
    (dashed, hidden until clicked in the legend) is added.
    """
    if layers.empty:
        return empty_figure("no per-layer table in this run", presentation)
    fig = go.Figure()
    n = _n_layers(layers)
    base = k / d
    fig.add_trace(go.Scatter(
        x=[-0.5, n - 0.5], y=[base, base], mode="lines", name=f"baseline k/d = {k}/{d} = {base:.3g}",
        line={"color": BASELINE_COLOR, "dash": "dot", "width": line_width(presentation)},
        hovertemplate=f"unrelated subspaces: k/d = {base:.4f} (1 = symmetric)<extra></extra>",
    ))
    for op in OPERATORS:
        rows = _rows(layers, op)
        if rows.empty:
            continue
        fig.add_trace(_line(rows["layer"], rows["self_alignment"], name=f"self-alignment {op}",
                            color=OPERATOR_COLORS[op], label=f"self-alignment ({op})", presentation=presentation))
        if forward and "forward_alignment" in rows:
            fig.add_trace(_line(rows["layer"], rows["forward_alignment"], name=f"forward alignment {op} (l → l+1)",
                                color=OPERATOR_COLORS[op], label=f"forward alignment ({op}, l → l+1)",
                                presentation=presentation, dash="dash", visible="legendonly"))
    style(fig, title=f"Self-alignment of the top-{k} singular subspaces", presentation=presentation)
    layer_axis(fig, n)
    fig.update_yaxes(title_text="‖V<sub>k</sub><sup>T</sup>U<sub>k</sub>‖<sub>F</sub><sup>2</sup> / k", range=[0, 1.02])
    highlight_layer(fig, highlight, presentation)
    return fig


def henrici_profile(layers: pd.DataFrame, *, highlight: int | None = None, presentation: bool = False) -> go.Figure:
    """Henrici departure from normality sqrt(‖A‖_F² − Σ|λ|²)/‖A‖_F of J̄ and R (0 = normal)."""
    return _profile(layers, "henrici", title="Henrici departure from normality",
                    y_title="δ = √(‖A‖<sub>F</sub><sup>2</sup> − Σ|λ|<sup>2</sup>) / ‖A‖<sub>F</sub>", label="Henrici δ",
                    highlight=highlight, presentation=presentation, y_range=[0, 1.02])


def residual_norm_ratio_profile(layers: pd.DataFrame, *, highlight: int | None = None,
                                presentation: bool = False) -> go.Figure:
    """‖R_l‖_F / ‖J̄_l‖_F per layer: how much of the block's map is its own computation."""
    fig = _profile(layers, "residual_norm_ratio", title="Residual norm ratio ‖R‖<sub>F</sub> / ‖J̄‖<sub>F</sub>",
                   y_title="‖R<sub>l</sub>‖<sub>F</sub> / ‖J̄<sub>l</sub>‖<sub>F</sub>",
                   label="‖R‖<sub>F</sub> / ‖J̄‖<sub>F</sub>", operators=("J",),
                   highlight=highlight, presentation=presentation)
    if not layers.empty:
        top = float(np.nanmax(layers["residual_norm_ratio"].to_numpy(dtype=float), initial=0.0))
        fig.update_yaxes(range=[0, max(1.05, top * 1.05)])
    return fig


def frac_expanding_profile(layers: pd.DataFrame, *, highlight: int | None = None,
                           presentation: bool = False) -> go.Figure:
    """Fraction of eigenvalues with |λ| > 1 per layer, for J̄ and R."""
    return _profile(layers, "frac_expanding", title="Expanding eigenvalues (|λ| > 1)",
                    y_title="#{|λ| > 1} / d", label="fraction expanding", highlight=highlight,
                    presentation=presentation, y_range=[0, 1.02], percent=True)


def kappa_profile(layers: pd.DataFrame, *, highlight: int | None = None, presentation: bool = False) -> go.Figure:
    """Median condition number κ = σ_max/σ_min of the per-sample Jacobians, with the IQR band (log y).

    κ is a per-sample statistic of J (METHODS §2), so the J rows are used. Infinite κ (a singular
    sample Jacobian) cannot sit on a log axis and is left out of the band.
    """
    rows = _rows(layers, "J") if not layers.empty else layers
    cols = ["kappa_median", "kappa_q25", "kappa_q75"]
    if rows.empty or not set(cols) <= set(rows.columns):
        return empty_figure("no κ statistics in this run", presentation)
    x = rows["layer"].to_numpy()
    med, q25, q75 = (rows[c].to_numpy(dtype=float) for c in cols)
    med, q25, q75 = (np.where(np.isfinite(v) & (v > 0), v, np.nan) for v in (med, q25, q75))
    color = OPERATOR_COLORS["J"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=q25, mode="lines", line={"width": 0, "color": color},
                             name="κ 25th percentile", showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=q75, mode="lines", line={"width": 0, "color": color}, fill="tonexty",
                             fillcolor=_rgba(color, 0.2), name="interquartile range (25–75 %)", hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=x, y=med, mode="lines+markers", name="median κ",
        line={"color": color, "width": line_width(presentation)},
        marker={"size": marker_size(presentation) + 1, "color": color},
        customdata=np.column_stack([q25, q75]),
        hovertemplate=("layer %{x}<br>median κ = %{y:.3g}<br>IQR [%{customdata[0]:.3g}, %{customdata[1]:.3g}]"
                       "<extra></extra>"),
    ))
    style(fig, title="Condition number κ of the per-sample Jacobians", presentation=presentation)
    layer_axis(fig, _n_layers(layers))
    fig.update_yaxes(title_text="κ = σ<sub>max</sub> / σ<sub>min</sub>  (log scale)", type="log", nticks=8)
    highlight_layer(fig, highlight, presentation)
    return log_ticks(fig)


def frac_complex_profile(layers: pd.DataFrame, *, highlight: int | None = None,
                         presentation: bool = False) -> go.Figure:
    """Complex-pair fraction #{|Im λ| > 1e-6}/d of J̄ and R per layer, with the real-Ginibre line.

    The dotted line is ``frac_complex_null`` (METHODS §3): what a random real d×d matrix gives
    (0.966 at d = 576). A profile at or under it is no evidence of learned rotation. Tables
    without the column (older runs read outside ``queries.layers``) get no line. Where the table
    has ``frac_complex_null_elliptic`` (METHODS §12: the real elliptic law at each layer's τ of R,
    the matched reference), a dashed per-layer line shows it too.
    """
    fig = _profile(layers, "frac_complex", title="Complex-pair eigenvalues",
                   y_title="#{|Im λ| > 10<sup>−6</sup>} / d", label="complex-pair fraction", highlight=None,
                   presentation=presentation, percent=True)
    if layers.empty or "frac_complex_null" not in layers:
        highlight_layer(fig, highlight, presentation)
        return fig
    null = float(layers["frac_complex_null"].iloc[0])
    n = _n_layers(layers)
    fig.add_trace(go.Scatter(
        x=[-0.5, n - 0.5], y=[null, null], mode="lines", name=f"real Ginibre baseline {null:.1%}",
        line={"color": BASELINE_COLOR, "dash": "dot", "width": line_width(presentation)},
        hovertemplate=f"a random real matrix of this width: {null:.2%} complex<extra></extra>",
    ))
    vals = layers["frac_complex"].to_numpy(dtype=float)
    if "frac_complex_null_elliptic" in layers and np.isfinite(layers["frac_complex_null_elliptic"]).any():
        ell = layers[layers["operator"] == layers["operator"].iloc[0]].sort_values("layer")
        fig.add_trace(go.Scatter(
            x=ell["layer"], y=ell["frac_complex_null_elliptic"], mode="lines",
            name="real elliptic null at the layer's τ of R",
            line={"color": BASELINE_COLOR, "dash": "dash", "width": line_width(presentation)},
            customdata=ell["tau"] if "tau" in ell else None,
            hovertemplate="layer %{x}: τ = %{customdata:.3f}, null %{y:.2%} complex<extra></extra>",
        ))
        vals = np.append(vals, ell["frac_complex_null_elliptic"].to_numpy(dtype=float))
    lo = float(np.nanmin(np.append(vals, null)))
    fig.update_yaxes(range=[max(0.0, lo - 0.05), 1.005])
    fig.update_layout(showlegend=True)
    highlight_layer(fig, highlight, presentation)
    return fig


# Every operator-type figure, in page order: (key, builder). Builders take layers + keyword args.
# SAMPLE_PROFILES: those drawn from the per-sample profiles (the sample_stats stage), not the spectra.
SAMPLE_PROFILES = ("kappa",)
PROFILES = (
    ("henrici", henrici_profile),
    ("residual_norm_ratio", residual_norm_ratio_profile),
    ("kappa", kappa_profile),
    ("frac_expanding", frac_expanding_profile),
    ("frac_complex", frac_complex_profile),
)
