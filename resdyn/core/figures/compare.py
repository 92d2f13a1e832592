"""Per-layer profiles of several runs on one axis, and a profile with its depth regimes.

``profile_overlay`` draws any per-layer quantity (a column of ``layers.parquet``, or the
effective rank of P_l from ``cumulative.parquet``) for several runs — checkpoints of one model,
trained against random init — with depth normalised to [0, 1] when the runs' L differ.
``regime_profile`` draws one profile with the paper's fixed regime split and the data-driven
change-point split (``resdyn.core.regimes``) and the regime means of each.
Pure functions: tables in, ``go.Figure`` out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from resdyn.core.figures.common import (BASELINE_COLOR, PALETTE, empty_figure, layer_axis, layer_axis_props,
                                        line_width, log_ticks, marker_size, style)
from resdyn.core.regimes import Split, regime_means

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

# Per-layer profiles a run can have: "layers:<column of layers.parquet>" (per operator) or
# "cumulative:<column of cumulative.parquet>". Label, log axis by default, percent format.
PROFILES = {
    "layers:self_alignment": ("self-alignment", False, False),
    "layers:forward_alignment": ("forward alignment l → l+1", False, False),
    "layers:henrici": ("Henrici δ", False, False),
    "layers:residual_norm_ratio": ("residual norm ratio ‖R‖_F / ‖J̄‖_F", False, False),
    "layers:frac_complex": ("complex-pair fraction", False, True),
    "layers:frac_expanding": ("fraction expanding |λ| > 1", False, True),
    "layers:mean_abs_eig": ("mean |λ|", False, False),
    "layers:spectral_radius": ("spectral radius ρ", False, False),
    "layers:kappa_median": ("κ = σ_max/σ_min, median over samples", True, False),
    "layers:kappa_q25": ("κ, lower quartile", True, False),
    "layers:kappa_q75": ("κ, upper quartile", True, False),
    "layers:fro_median": ("‖J‖_F, median over samples", False, False),
    "layers:pr_median": ("participation ratio, median over samples", False, False),
    "cumulative:erank": ("effective rank of P_l = J̄_{L−1}···J̄_l", True, False),
    "cumulative:log10_fro": ("log10 ‖P_l‖_F", False, False),
}


def profile_label(key: str) -> str:
    """Readable name of a profile key; unknown columns keep their name."""
    return PROFILES.get(key, (key.split(":", 1)[-1].replace("_", " "), False, False))[0]


def profile_frame(table: pd.DataFrame, column: str, operator: str | None = None) -> pd.DataFrame:
    """(layer, value) rows of one column of a per-layer table, one operator when the table has several."""
    rows = table
    if operator is not None and "operator" in table:
        rows = table[table["operator"] == operator]
    out = pd.DataFrame({"layer": rows["layer"].to_numpy(int), "value": rows[column].to_numpy(np.float64)})
    return out.sort_values("layer", ignore_index=True)


def run_styles(run_ids: Sequence[str]) -> dict[str, dict]:
    """Colour (Okabe–Ito, in order) and dash of each run; dashes change after the palette wraps."""
    n = len(PALETTE)
    return {r: {"color": PALETTE[i % n], "dash": DASHES[(i // n) % len(DASHES)]} for i, r in enumerate(run_ids)}


def depth(layers: np.ndarray, n_layers: int, normalise: bool) -> np.ndarray:
    """x coordinate of each layer: the block index, or l / (L − 1) ∈ [0, 1] when ``normalise``."""
    layers = np.asarray(layers, dtype=np.float64)
    if not normalise:
        return layers
    return layers / (n_layers - 1) if n_layers > 1 else np.zeros_like(layers)


def profile_overlay(profiles: Mapping[str, pd.DataFrame], n_layers: Mapping[str, int], *, label: str,
                    normalise: bool | None = None, log_y: bool = False,
                    baselines: Mapping[str, float] | None = None, percent: bool = False,
                    presentation: bool = False) -> go.Figure:
    """One line per run of a per-layer profile.

    ``profiles``: run id -> DataFrame with columns layer (int) and value (float); runs in the
    legend in this order. ``n_layers``: run id -> L. ``normalise``: depth l / (L − 1) on the x
    axis; None chooses it when the runs' L differ. ``baselines``: run id -> a horizontal
    reference drawn dotted in the run's colour (e.g. k/d for self-alignment).
    """
    runs = [r for r, df in profiles.items() if df is not None and len(df)]
    if not runs:
        return empty_figure("none of the chosen runs has this profile", presentation)
    depths = {int(n_layers[r]) for r in runs}
    if normalise is None:
        normalise = len(depths) > 1
    styles = run_styles(list(profiles))
    fig = go.Figure()
    fmt = ".1%" if percent else ".4g"
    for r in runs:
        df = profiles[r].sort_values("layer")
        n = int(n_layers[r])
        x = depth(df["layer"].to_numpy(), n, normalise)
        st = styles[r]
        fig.add_trace(go.Scatter(
            x=x, y=df["value"].to_numpy(np.float64), mode="lines+markers", name=f"{r} (L = {n})",
            line={"color": st["color"], "width": line_width(presentation), "dash": st["dash"]},
            marker={"size": marker_size(presentation), "color": st["color"]},
            customdata=df["layer"].to_numpy(),
            hovertemplate=f"{r}<br>layer %{{customdata}}<br>{label} = %{{y:{fmt}}}<extra></extra>",
        ))
    xr = [-0.02, 1.02] if normalise else [-0.5, max(depths) - 0.5]
    for r, b in (baselines or {}).items():
        if r in runs and b is not None and np.isfinite(b):
            fig.add_trace(go.Scatter(
                x=xr, y=[b, b], mode="lines", name=f"{r}: baseline {b:.3g}", showlegend=False,
                line={"color": styles[r]["color"], "dash": "dot", "width": max(1.0, line_width(presentation) / 2)},
                hovertemplate=f"{r} baseline {b:.4g}<extra></extra>",
            ))
    title = f"{label} across depth" + (" (depth normalised: l / (L − 1))" if normalise else "")
    style(fig, title=title, presentation=presentation, legend=True)
    if normalise:
        fig.update_xaxes(title_text="relative depth l / (L − 1)", range=xr, tickformat=".1f")
    else:
        layer_axis(fig, max(depths))
    fig.update_yaxes(title_text=label, type="log" if log_y else "linear",
                     tickformat=".0%" if percent and not log_y else None)
    return log_ticks(fig)


def regime_profile(values: np.ndarray, splits: Sequence[Split], *, label: str, log: bool = False,
                   baseline: float | None = None, presentation: bool = False) -> go.Figure:
    """A per-layer profile (L,) with each split's regime means drawn as steps, and its breaks.

    ``splits``: e.g. (paper split, change-point split); the first is drawn solid, the next dashed.
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if not np.isfinite(v).any():
        return empty_figure("no values to split into regimes", presentation)
    fig = go.Figure()
    x = np.arange(n)
    fig.add_trace(go.Scatter(
        x=x, y=v, mode="lines+markers", name=label, line={"color": PALETTE[7], "width": line_width(presentation)},
        marker={"size": marker_size(presentation) + 1, "color": PALETTE[7]},
        hovertemplate=f"layer %{{x}}<br>{label} = %{{y:.4g}}<extra></extra>",
    ))
    names = {"paper": "paper's fixed split", "changepoint": "change points (least squares)"}
    breaks = []  # vertical lines at the breaks, as plain shapes (add_vline costs ~8 ms each)
    for i, split in enumerate(splits):
        color = PALETTE[i % len(PALETTE)]
        means = regime_means(v, split, log=log)
        xs, ys = [], []
        for regime, r in split.ranges().items():
            xs += [r.start - 0.5, r.stop - 0.5, None]
            ys += [means[regime], means[regime], None]
        b1, b2 = split.breaks
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", name=f"{names.get(split.method, split.method)}: breaks {b1}, {b2}",
            line={"color": color, "width": line_width(presentation) * 1.5, "dash": "solid" if i == 0 else "dash"},
            hovertemplate="regime mean %{y:.4g}<extra></extra>", connectgaps=False,
        ))
        breaks += [{"type": "line", "xref": "x", "yref": "y domain", "x0": b - 0.5, "x1": b - 0.5, "y0": 0, "y1": 1,
                    "line": {"color": color, "dash": "solid" if i == 0 else "dash", "width": 1.5}}
                   for b in split.breaks]
    if baseline is not None:
        fig.add_trace(go.Scatter(
            x=[-0.5, n - 0.5], y=[baseline, baseline], mode="lines", name=f"baseline {baseline:.3g}",
            line={"color": BASELINE_COLOR, "dash": "dot", "width": line_width(presentation)},
            hoverinfo="skip",
        ))
    return style(fig, title=f"{label}: depth regimes", presentation=presentation, legend=True, shapes=breaks,
                 xaxis=layer_axis_props(n), yaxis={"title": {"text": label}, "type": "log" if log else "linear"})
