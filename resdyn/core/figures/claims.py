"""The claims table as a picture: each claim's run value beside its random-init ensemble and null.

One row per claim with a number, each on its own x scale: the ensemble's 95 % prediction
interval (the band the run must leave to "hold", METHODS §12), the ensemble mean, the null, and
the run's value with its sampling noise (± 1.96 σ). Pure function of the table that
``resdyn.core.claims.evaluate`` returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resdyn.core import claims
from resdyn.core.claims import prediction_half_width
from resdyn.core.figures.common import BASELINE_COLOR, PALETTE, marker_size, style

VERDICT_COLORS = {claims.HOLDS: PALETTE[2], claims.FAILS: PALETTE[1], claims.AT_INIT: PALETTE[4],
                  claims.BELOW: PALETTE[3], claims.NULL: BASELINE_COLOR, claims.SURROGATE: PALETTE[5],
                  claims.DEGENERATE: PALETTE[7]}


def _interval(mean: float, sd: float, n: int) -> tuple[float, float] | None:
    if n < 2 or not (np.isfinite(mean) and np.isfinite(sd)):
        return None
    half = prediction_half_width(sd, n)
    return mean - half, mean + half


def claims_figure(table: pd.DataFrame, presentation: bool = False) -> go.Figure:
    """Rows of ``table`` (``claims.COLUMNS``) that carry a number, one strip each: band = the
    ensemble's 95 % prediction interval, grey diamond = its mean, dashed line = the null, dot with
    bar = the run ± 1.96 σ, coloured by verdict."""
    rows = table.reset_index(drop=True)
    rows = rows[np.isfinite(rows["value"].astype(float))]
    n = max(len(rows), 1)
    titles = [f"{i + 1}. {r.claim} — {r.verdict}" for i, r in zip(rows.index, rows.itertuples())]
    fig = make_subplots(rows=n, cols=1, subplot_titles=titles or [""], vertical_spacing=min(0.5 / n, 0.08))
    ms = marker_size(presentation) * 2
    for k, (_, r) in enumerate(rows.iterrows(), start=1):
        band = _interval(float(r["twin_mean"]), float(r["twin_sd"]), int(r["twin_n"]))
        if band is not None:
            fig.add_trace(go.Scatter(x=[band[0], band[1]], y=[0, 0], mode="lines", line={"width": 14,
                                     "color": "rgba(127,127,127,0.3)"}, name="ensemble 95 % interval",
                                     legendgroup="band", showlegend=k == 1,
                                     hovertemplate="ensemble 95 %% interval %{x:.4g}<extra></extra>"), row=k, col=1)
            fig.add_trace(go.Scatter(x=[r["twin_mean"]], y=[0], mode="markers",
                                     marker={"symbol": "diamond", "size": ms, "color": BASELINE_COLOR},
                                     name="ensemble mean", legendgroup="mean", showlegend=k == 1,
                                     hovertemplate=f"ensemble mean %{{x:.4g}} (n = {int(r['twin_n'])})<extra></extra>"),
                          row=k, col=1)
        if np.isfinite(float(r["null_value"])):
            fig.add_trace(go.Scatter(x=[r["null_value"]] * 2, y=[-0.6, 0.6], mode="lines",
                                     line={"dash": "dash", "color": "#444"}, name="null", legendgroup="null",
                                     showlegend=k == 1, hovertemplate=f"null: {r['null']}<extra></extra>"),
                          row=k, col=1)
        noise = float(r["noise"])
        err = {"type": "data", "array": [1.96 * noise], "visible": True} if np.isfinite(noise) else None
        fig.add_trace(go.Scatter(x=[r["value"]], y=[0], mode="markers", error_x=err,
                                 marker={"size": ms * 1.1, "color": VERDICT_COLORS.get(r["verdict"], PALETTE[0])},
                                 name="this run ± 1.96 σ", legendgroup="run", showlegend=k == 1,
                                 hovertemplate=f"this run: {r['run']}<br>{r['verdict']}<extra></extra>"),
                      row=k, col=1)
        fig.update_yaxes(visible=False, range=[-1, 1], row=k, col=1)
    fig.update_annotations(font_size=12 if not presentation else 18, x=0, xanchor="left")
    return style(fig, title="Each claim: this run against its random-init ensemble and the null",
                 presentation=presentation, height=140 + (95 if not presentation else 130) * n)
