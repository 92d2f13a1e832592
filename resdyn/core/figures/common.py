"""Shared look of every figure: template, colour-blind-safe palette, presentation mode.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies);
densities use Viridis (perceptually uniform, readable in greyscale). ``presentation=True`` means
larger fonts and thicker lines for a projector.
"""

from __future__ import annotations

import re

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Okabe & Ito (2008), "Color Universal Design".
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
OPERATOR_COLORS = {"J": PALETTE[0], "R": PALETTE[1]}
OPERATOR_NAMES = {"J": "J̄ (block)", "R": "R = J̄ − I (residual branch)"}
BASELINE_COLOR = "#7F7F7F"
DENSITY_SCALE = "Viridis"
FONT_FAMILY = "Inter, Helvetica, Arial, sans-serif"


def font_size(presentation: bool = False) -> int:
    return 20 if presentation else 13


def line_width(presentation: bool = False) -> float:
    return 4.0 if presentation else 2.0


def marker_size(presentation: bool = False) -> float:
    return 9.0 if presentation else 5.0


# The parts of plotly's "plotly_white" look our 2-D figures use, written into each figure's own
# layout. A plotly template would be the idiomatic place, but assigning one costs 5–15 ms per
# figure (it is validated and deep-copied), most of a page's server time, and Streamlit's chart
# theme overrides template fonts in the browser anyway; explicit layout values it keeps.
_WHITE = {
    "paper_bgcolor": "white", "plot_bgcolor": "white", "hovermode": "closest", "autotypenumbers": "strict",
    "shapedefaults": {"line": {"color": "#2a3f5f"}},
    "annotationdefaults": {"arrowcolor": "#2a3f5f", "arrowhead": 0, "arrowwidth": 1},
}
_AXIS = {"gridcolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "automargin": True, "showline": True,
         "linecolor": "#444", "mirror": False, "ticks": "outside", "zeroline": False}
_AXIS_KEY = re.compile(r"^[xy]axis\d*$")


def _merged(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, nested dicts merged key by key (``over`` wins)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def style(fig: go.Figure, *, title: str, presentation: bool = False, height: int | None = None,
          legend: bool = True, **layout_over) -> go.Figure:
    """Apply the house layout to ``fig`` in place and return it.

    White background, Okabe–Ito colours, explicit font sizes (Streamlit's chart theme would
    otherwise keep its own small tick fonts) and outside ticks on every x and y axis present,
    subplots included; no plotly template ("none"). The layout is rebuilt once from the figure's
    own merged with these settings (~4 ms; ``update_layout`` plus ``update_xaxes`` cost ~30).
    ``layout_over`` (layout properties as nested dicts, e.g. ``xaxis={"range": [0, 1]}``) is merged
    last, so a builder sets its own axes in the same pass instead of a later ``update_layout``.
    """
    fs = font_size(presentation)
    fig.layout.template = "none"  # plotly's default template: serialising it would deep-copy it
    layout = fig.layout.to_plotly_json()
    layout.pop("template", None)
    axis = dict(_AXIS, tickfont={"size": fs}, title={"standoff": 15, "font": {"size": fs}})
    axes = {k for k in layout if _AXIS_KEY.match(k)} | {"xaxis", "yaxis"}
    layout = _merged(layout, dict(
        _WHITE, **{k: axis for k in axes},
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": round(fs * 1.3)}},
        font={"family": FONT_FAMILY, "size": fs, "color": "#2a3f5f"}, colorway=list(PALETTE),
        hoverlabel={"align": "left", "font": {"size": fs}},
        # Room at the bottom for the x-axis title and, under it, the legend.
        margin={"l": 60, "r": 20, "t": 50 if not presentation else 70,
                "b": (150 if presentation else 105) if legend else (70 if presentation else 50)},
        showlegend=legend,
        # Pinned to the bottom of the whole figure (container coordinates), so a legend that wraps
        # onto several lines never runs into the title or the axis labels.
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0,
                "xanchor": "left", "x": 0.0, "font": {"size": fs}},
        # Projector figures need a taller plot area: fonts and legend grow, the data must not shrink.
        height=height or (560 if presentation else 450),
    ))
    layout = _merged(layout, layout_over)
    layout["template"] = "none"
    fig.layout = layout
    return log_ticks(fig)


def _log_tickvals(lo: float, hi: float) -> list[float] | None:
    """Tick values for a log axis over [lo, hi] (lo > 0): every decade when it spans three or
    more (every 2nd, 3rd, ... above eight), else 1, 2 and 5 of each decade; None (plotly's own
    ticks) below a 2-tick span."""
    import math

    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1,) if b - a >= 3 else (1, 2, 5)
    step = max(1, math.ceil((b - a) / 8))  # at most about 8 labels: every 2nd, 3rd, ... decade beyond
    vals = [m * 10.0**e for e in range(a, b + 1) if (e - a) % step == 0 for m in mults
            if lo * 0.999 <= m * 10.0**e <= hi * 1.001]
    return vals if len(vals) >= 2 else None


def log_ticks(fig: go.Figure) -> go.Figure:
    """Label the log axes of ``fig`` at decades (and 2, 5 where the axis spans under three): plotly's
    own log ticks print minor-tick digits ("4 3 2 10 9 8") that read as values. Axes that set their
    own ``tickvals`` or ``dtick`` are left alone. In place; returns ``fig``. Cheap when there is no
    log axis (one pass over the layout's axes)."""
    import numpy as np

    layout = fig.layout
    for key in [k for k in layout.to_plotly_json() if _AXIS_KEY.match(k)]:
        ax = layout[key]
        if ax.type != "log" or ax.tickvals is not None or ax.dtick is not None:
            continue
        ref = key[0] + key[5:]  # "yaxis2" -> "y2", the name traces use
        if ax.range is not None:
            lo, hi = (10.0**v for v in ax.range)
        else:
            vals = []
            for t in fig.data:
                if (getattr(t, key[0] + "axis", None) or key[0]) == ref and getattr(t, key[0], None) is not None:
                    try:
                        vals.append(np.asarray(getattr(t, key[0]), dtype=float).ravel())
                    except (TypeError, ValueError):  # categorical values: not a numeric axis
                        pass
            vals = np.concatenate(vals) if vals else np.zeros(0)
            vals = vals[np.isfinite(vals) & (vals > 0)]
            if not len(vals):
                continue
            lo, hi = float(vals.min()), float(vals.max())
        ticks = _log_tickvals(min(lo, hi), max(lo, hi))
        if ticks is not None:
            ax.update(tickvals=ticks, tickformat=None if ax.exponentformat == "power" else "~g")
    return fig


_GRIDS: dict[str, go.Figure] = {}
_GRIDS_MAX = 64


def subplots(**kwargs) -> go.Figure:
    """``plotly.subplots.make_subplots(**kwargs)`` from a cached prototype (~1.5 ms instead of 15–30).

    The grid for given arguments never changes, so it is built once and copied: a figure copy keeps
    the subplot grid (``add_trace(..., row=, col=)`` works). The prototype has no template; ``style``
    sets the house look.
    """
    key = repr(sorted(kwargs.items()))
    proto = _GRIDS.get(key)
    if proto is None:
        proto = make_subplots(**kwargs)
        proto.layout.template = "none"
        if len(_GRIDS) >= _GRIDS_MAX:  # titles can name layers: keep the most recent grids only
            _GRIDS.pop(next(iter(_GRIDS)), None)
        _GRIDS[key] = proto
    return go.Figure(proto)


def layer_axis_props(n_layers: int, title: str = "layer l (block index)") -> dict:
    """Integer layer ticks (block index l, 0 = first block), as x-axis properties for ``style``."""
    dtick = 1 if n_layers <= 16 else max(1, round(n_layers / 16))
    return {"title": {"text": title}, "tickmode": "linear", "tick0": 0, "dtick": dtick,
            "range": [-0.5, n_layers - 0.5]}


def layer_axis(fig: go.Figure, n_layers: int, **kwargs) -> None:
    """Integer layer ticks on the x axis (block index l, 0 = first block)."""
    props = layer_axis_props(n_layers)
    fig.update_xaxes(title_text=props.pop("title")["text"], **props, **kwargs)


def highlight_layer(fig: go.Figure, layer: int | None, presentation: bool = False) -> None:
    """A faint vertical band at the layer chosen in the sidebar."""
    if layer is None:
        return
    # Appended as a plain shape: add_vrect costs ~5 ms (it resolves subplot references).
    fig.layout.shapes = (*fig.layout.shapes, highlight_band(layer))


def highlight_band(layer: int) -> dict:
    """The faint band of ``highlight_layer`` as a layout shape (also added to cached figure specs)."""
    return {"type": "rect", "xref": "x", "yref": "y domain", "x0": layer - 0.5, "x1": layer + 0.5, "y0": 0, "y1": 1,
            "fillcolor": "#999999", "opacity": 0.15, "line": {"width": 0}, "layer": "below"}


def empty_figure(message: str, presentation: bool = False) -> go.Figure:
    """A blank figure that says why there is nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, title="", presentation=presentation, legend=False)
