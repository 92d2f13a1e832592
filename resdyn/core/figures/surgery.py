"""Figures of the Schur dose surgery (METHODS §6) and of one layer's J_l(c) (METHODS §11).

Inputs: the ``schur_dose`` table (mode, construction ∈ {dose, dose_ascending, dose_polar,
control_a, control_a_ascending, control_a_polar, control_b, order_draw, skip}, draw, c, beta,
erank, log10_fro, henrici; older runs lack the surrogates, beta, order_draw and skip and carry
mode-R rows, which are not drawn), live readouts at the sliders' (c, β), per-layer singular values and
eigenvalues (arrays), and the ``pseudospectra`` (layer, c, x, y, log10_sigma_min) and
``numerical_range`` (layer, c, idx, x, y) rows of one layer. Pure functions, ``go.Figure`` out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from resdyn.core.figures.common import (BASELINE_COLOR, PALETTE, empty_figure, line_width, marker_size,
                                        style, subplots)

METRICS = {
    "erank": "erank(P_{0:L−1})",
    "log10_fro": "log10 ‖P_{0:L−1}‖_F",
    "henrici": "Henrici δ(P_{0:L−1})",
}
CONSTRUCTION_NAMES = {"dose": "dose Q(Λ+cN)Q*", "control_a": "control A (random M, ‖M‖ = c‖N‖)",
                      "control_b": "control B (Haar-random basis)",
                      "control_a_ascending": "control A, ascending surrogate",
                      "control_a_polar": "control A, polar surrogate (‖M‖ = c‖J̄ − UΛU*‖)"}
CONSTRUCTION_DASH = {"control_a": "dash", "control_b": "dot", "control_a_ascending": "dash", "control_a_polar": "dash"}
# The three normal surrogates' dose curves (resdyn.core.surrogates): line dash and marker per surrogate.
SURROGATE_CURVES = {
    "descending": ("dose", "dose, descending |λ| (right flag)", "solid", "circle"),
    "ascending": ("dose_ascending", "dose, ascending |λ| (left flag)", "dashdot", "triangle-up"),
    "polar": ("dose_polar", "dose, polar U H^c Λ H^−c U* (order-free)", "longdashdot", "square"),
}


CONTROL_OF = {"descending": "control_a", "ascending": "control_a_ascending", "polar": "control_a_polar"}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _band(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over draws per c (ddof = 1 when there are several draws)."""
    g = df.groupby("c")[metric]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0)}).reset_index()
    return out.sort_values("c")


def _beta(df: pd.DataFrame) -> np.ndarray:
    """The rows' skip weight β (1 for tables written before the skip dose)."""
    return df["beta"].to_numpy(np.float64) if "beta" in df else np.ones(len(df))


def dose_curves(tables: Mapping[str, pd.DataFrame], *, c: float | None = None,
                readouts: Mapping[str, Mapping[str, float]] | None = None, controls: bool = True,
                band: bool = True, skip_betas: Sequence[float] = (),
                metrics: Sequence[str] = ("erank", "log10_fro", "henrici"),
                surrogate: str = "descending", presentation: bool = False) -> go.Figure:
    """One panel per metric against the dose c: the dose under each stored normal surrogate
    (descending order: solid, circles; ascending order: dash-dot, triangles; polar: long dash-dot,
    squares; the selected ``surrogate`` drawn thicker), the ordering band (min–max over the
    random-order draws, around the descending dose), the selected surrogate's Control A and
    control B as mean ± std bands over their draws, and the skip dose βI + R(c) at the stored β in
    ``skip_betas``. The readout diamond sits on the selected surrogate's curve.

    Only mode J is drawn: mode R (older runs) is the same computation in another eigenvalue order.

    Args:
        tables: run_id -> ``schur_dose`` table; colour = run.
        c: the slider's dose (a vertical line).
        readouts: run_id -> {"erank": ..., "log10_fro": ..., "henrici": ..., "path": "live" |
            "interpolated", "beta": β} at ``c``, drawn as a diamond (live) or an open diamond
            (interpolated).
        controls: draw the control bands. band: draw the ordering band (where the table has it).
        surrogate: "descending", "ascending" or "polar": whose curve is emphasised and whose
            Control A is drawn (older tables hold the descending one only).
        skip_betas: β values (≠ 1) whose stored skip-dose curves are drawn (long dashes).
    """
    if not tables:
        return empty_figure("no run has the 'schur' stage", presentation)
    readouts = readouts or {}
    fig = subplots(rows=1, cols=len(metrics), subplot_titles=[METRICS[m] for m in metrics],
                   horizontal_spacing=0.08)
    lw, ms = line_width(presentation), marker_size(presentation)
    for ri, (run_id, df) in enumerate(tables.items()):
        color = PALETTE[ri % len(PALETTE)]
        df = df[df["mode"] == "J"]
        for mi, metric in enumerate(metrics, start=1):
            show = mi == 1
            if controls:
                for cons in (CONTROL_OF[surrogate], "control_b"):
                    rows = df[df["construction"] == cons]
                    if rows.empty:
                        continue
                    # numpy arrays: plotly 7 converts each pandas Series through narwhals (~0.6 ms each).
                    b = {k: v.to_numpy(np.float64) for k, v in _band(rows, metric).items()}
                    x = np.concatenate([b["c"], b["c"][::-1]])
                    y = np.concatenate([b["mean"] + b["std"], (b["mean"] - b["std"])[::-1]])
                    group = f"{run_id}-{cons}"
                    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", fill="toself", fillcolor=_rgba(color, 0.15),
                                             line={"width": 0}, hoverinfo="skip", showlegend=False,
                                             legendgroup=group), row=1, col=mi)
                    fig.add_trace(go.Scatter(
                        x=b["c"], y=b["mean"], mode="lines", name=f"{run_id}: {CONSTRUCTION_NAMES[cons]}",
                        line={"color": color, "width": lw * 0.75, "dash": CONSTRUCTION_DASH[cons]},
                        legendgroup=group, showlegend=show,
                        customdata=b["std"],
                        hovertemplate="c = %{x}<br>%{y:.3g} ± %{customdata:.2g} (std over draws)<extra>"
                                      + f"{run_id} {cons}</extra>",
                    ), row=1, col=mi)
            draws = df[df["construction"] == "order_draw"]
            if band and not draws.empty:
                g = draws.groupby("c")[metric]
                lo, hi = g.min(), g.max()
                one = df[(df["construction"] == "dose") & (df["c"] == 1.0)]
                if 1.0 not in lo.index and len(one):  # zero width at c = 1 by algebra: not stored
                    lo.loc[1.0] = hi.loc[1.0] = float(one[metric].iloc[0])
                lo, hi = lo.sort_index(), hi.sort_index()
                cs = lo.index.to_numpy(np.float64)
                fig.add_trace(go.Scatter(
                    x=np.concatenate([cs, cs[::-1]]), y=np.concatenate([hi.to_numpy(float), lo.to_numpy(float)[::-1]]),
                    mode="lines", fill="toself", fillcolor=_rgba(color, 0.35), line={"width": 0},
                    name=f"{run_id}: ordering band ({draws['draw'].nunique()} random eigenvalue orders, min–max)",
                    legendgroup=f"{run_id}-order", showlegend=show, hoverinfo="skip"), row=1, col=mi)
            for sur, (cons, label, dash, symbol) in SURROGATE_CURVES.items():
                rows = df[df["construction"] == cons].sort_values("c")
                if rows.empty:
                    continue
                chosen = sur == surrogate
                fig.add_trace(go.Scatter(
                    x=rows["c"].to_numpy(np.float64), y=rows[metric].to_numpy(np.float64), mode="lines+markers",
                    name=f"{run_id}: {label}", legendgroup=f"{run_id}-{cons}", showlegend=show,
                    line={"color": color, "width": lw if chosen else lw * 0.6, "dash": dash},
                    marker={"size": ms if chosen else ms * 0.7, "symbol": symbol},
                    hovertemplate="c = %{x}<br>%{y:.4g}<extra>" + f"{run_id} {cons}</extra>",
                ), row=1, col=mi)
            skip = df[df["construction"] == "skip"]
            for beta in skip_betas:
                rows = skip[np.isclose(_beta(skip), beta)].sort_values("c")
                if rows.empty or beta == 1.0:
                    continue
                fig.add_trace(go.Scatter(
                    x=rows["c"].to_numpy(np.float64), y=rows[metric].to_numpy(np.float64), mode="lines+markers",
                    name=f"{run_id}: skip dose βI + R(c), β = {beta:g}", legendgroup=f"{run_id}-skip-{beta:g}",
                    showlegend=show, line={"color": color, "width": lw * 0.75, "dash": "longdash"},
                    marker={"size": ms * 0.6, "symbol": "square"},
                    hovertemplate="c = %{x}<br>%{y:.4g}<extra>" + f"{run_id} β = {beta:g}</extra>",
                ), row=1, col=mi)
            ro = readouts.get(run_id)
            if ro is not None and c is not None and np.isfinite(ro.get(metric, np.nan)):
                live = ro.get("path", "live") == "live"
                fig.add_trace(go.Scatter(
                    x=[c], y=[ro[metric]], mode="markers", showlegend=False,
                    marker={"symbol": "diamond" if live else "diamond-open", "size": ms * 2.6, "color": color,
                            "line": {"width": 1.5, "color": "#000"}},
                    hovertemplate=(f"c = {c:.2f}, β = {ro.get('beta', 1.0):.2f}<br>" + "%{y:.4g}<extra>"
                                   + f"{run_id} ({ro.get('path', 'live')})</extra>"),
                ), row=1, col=mi)
    axes, lines = {}, []
    for mi, metric in enumerate(metrics, start=1):
        sfx = "" if mi == 1 else str(mi)
        axes[f"xaxis{sfx}"] = {"title": {"text": "dose c (0 = normal, 1 = trained)"}, "range": [-0.05, 2.05]}
        axes[f"yaxis{sfx}"] = ({"type": "log"} if metric == "erank" else
                               {"range": [0, 1.02]} if metric == "henrici" else {})
        if c is not None:  # the slider's dose, as plain shapes (add_vline costs ~8 ms a panel)
            lines.append({"type": "line", "xref": f"x{sfx}", "yref": f"y{sfx} domain", "x0": c, "x1": c,
                          "y0": 0, "y1": 1, "line": {"color": BASELINE_COLOR, "width": 1, "dash": "dot"}})
    # Room for the figure title above the panel titles (the legend stays where style() puts it).
    return style(fig, title="Schur dose surgery: J_l(c) = Q(Λ + cN)Q* (or U H^c Λ H^−c U*) at every layer",
                 presentation=presentation,
                 margin={"t": 110 if not presentation else 140}, shapes=lines, **axes)


def layer_singular_values(sigma: np.ndarray, *, c: float, layer: int, reference: np.ndarray | None = None,
                          presentation: bool = False) -> go.Figure:
    """Singular values of J_l(c) (descending, log y), against those of the trained J̄_l (c = 1)."""
    fig = go.Figure()
    lw = line_width(presentation)
    if reference is not None:
        fig.add_trace(go.Scatter(x=np.arange(1, len(reference) + 1), y=reference, mode="lines",
                                 name="trained J̄_l (c = 1)",
                                 line={"color": BASELINE_COLOR, "width": lw * 0.75, "dash": "dot"}))
    fig.add_trace(go.Scatter(x=np.arange(1, len(sigma) + 1), y=sigma, mode="lines", name=f"J_l(c = {c:.2f})",
                             line={"color": PALETTE[1], "width": lw},
                             hovertemplate="i = %{x}<br>σ_i = %{y:.4g}<extra></extra>"))
    return style(fig, title=f"Singular values of J_{layer}(c)", presentation=presentation,
                 xaxis={"title": {"text": "index i (descending)"}},
                 yaxis={"title": {"text": "σ_i"}, "type": "log", "exponentformat": "power"})


def layer_complex_plane(eigenvalues: np.ndarray, *, layer: int, pseudo: pd.DataFrame | None = None,
                        numrange: pd.DataFrame | None = None, c_shown: float | None = None,
                        levels: tuple[float, float, float] = (-3.0, -0.5, 0.5), shift: float = 0.0,
                        presentation: bool = False) -> go.Figure:
    """Eigenvalues of J_l(c) (fixed by construction), ε-pseudospectrum boundaries and the
    numerical range of J_l(c) at the stored dose ``c_shown``.

    ``shift`` = β − 1 moves everything to J_l(c, β) = (β − 1)I + J_l(c): eigenvalues, pseudospectra
    and the numerical range of A + sI are those of A translated by s, exactly.

    Args:
        eigenvalues: (d,) complex.
        pseudo: rows (x, y, log10_sigma_min) of one layer and dose (a regular grid).
        numrange: rows (idx, x, y) of one layer and dose: the boundary of W(J_l(c)).
        levels: (start, end, step) of the contour levels in log10 ε.
    """
    lam = np.asarray(eigenvalues) + shift
    lw, ms = line_width(presentation), marker_size(presentation)
    fig = go.Figure()
    parts = ([f"c = {c_shown:g}"] if c_shown is not None else []) + ([f"β = {1.0 + shift:.2f}"] if shift else [])
    cs = f" ({', '.join(parts)})" if parts else ""
    if pseudo is not None and not pseudo.empty:
        grid = pseudo.pivot_table(index="y", columns="x", values="log10_sigma_min")
        start, end, step = levels
        fig.add_trace(go.Contour(
            x=grid.columns.to_numpy(float) + shift, y=grid.index.to_numpy(float), z=grid.to_numpy(float),
            contours={"start": start, "end": end, "size": step, "coloring": "lines", "showlabels": True,
                      "labelfont": {"size": 10}},
            colorscale="Viridis", line={"width": lw * 0.6}, name=f"ε-pseudospectra{cs}",
            colorbar={"title": {"text": "log10 ε"}}, showscale=True,
            hovertemplate="z = %{x:.3f} %{y:+.3f}i<br>log10 σ_min(zI − J) = %{z:.2f}<extra></extra>",
        ))
    if numrange is not None and not numrange.empty:
        nr = numrange.sort_values("idx")
        x = np.append(nr["x"].to_numpy(float), nr["x"].iloc[0]) + shift
        y = np.append(nr["y"].to_numpy(float), nr["y"].iloc[0])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"numerical range W{cs}",
                                 line={"color": PALETTE[1], "width": lw}, hoverinfo="skip"))
    t = np.linspace(0, 2 * np.pi, 241)
    fig.add_trace(go.Scatter(x=np.cos(t), y=np.sin(t), mode="lines", name="|z| = 1",
                             line={"color": BASELINE_COLOR, "dash": "dash", "width": lw * 0.5}, hoverinfo="skip"))
    fig.add_trace(go.Scattergl(x=lam.real, y=lam.imag, mode="markers", name="eigenvalues (any c)",
                               marker={"color": PALETTE[0], "size": ms},
                               hovertemplate="λ = %{x:.4f} %{y:+.4f}i<extra></extra>"))
    return style(fig, title=f"Layer {layer}: spectrum, pseudospectra and numerical range{cs}",
                 presentation=presentation, xaxis={"title": {"text": "Re z"}},
                 yaxis={"title": {"text": "Im z"}, "scaleanchor": "x", "scaleratio": 1})
