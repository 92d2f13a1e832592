"""Shared look of every figure: template, colour-blind-safe palette, presentation mode.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies);
densities use Viridis (perceptually uniform, readable in greyscale). ``presentation=True`` means
larger fonts and thicker lines for a projector.
"""

from __future__ import annotations

import plotly.graph_objects as go

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


def style(fig: go.Figure, *, title: str, presentation: bool = False, height: int | None = None,
          legend: bool = True) -> go.Figure:
    """Apply the house layout to ``fig`` in place and return it."""
    fs = font_size(presentation)
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": round(fs * 1.3)}},
        font={"family": FONT_FAMILY, "size": fs},
        colorway=list(PALETTE),
        hoverlabel={"font": {"size": fs}},
        # Room at the bottom for the x-axis title and, under it, the legend.
        margin={"l": 60, "r": 20, "t": 50 if not presentation else 70,
                "b": (150 if presentation else 105) if legend else (70 if presentation else 50)},
        showlegend=legend,
        # Pinned to the bottom of the whole figure (container coordinates), so a legend that wraps
        # onto several lines never runs into the title or the axis labels.
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0,
                "xanchor": "left", "x": 0.0, "font": {"size": fs}},
    )
    # Projector figures need a taller plot area: fonts and legend grow, the data must not shrink.
    fig.update_layout(height=height or (560 if presentation else 450))
    # Explicit sizes: Streamlit's chart theme would otherwise keep its own small tick fonts.
    axis = {"showline": True, "linecolor": "#444", "mirror": False, "ticks": "outside", "zeroline": False,
            "tickfont": {"size": fs}, "title_font": {"size": fs}}
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)
    return fig


def layer_axis(fig: go.Figure, n_layers: int, **kwargs) -> None:
    """Integer layer ticks on the x axis (block index l, 0 = first block)."""
    dtick = 1 if n_layers <= 16 else max(1, round(n_layers / 16))
    fig.update_xaxes(title_text="layer l (block index)", tickmode="linear", tick0=0, dtick=dtick,
                     range=[-0.5, n_layers - 0.5], **kwargs)


def highlight_layer(fig: go.Figure, layer: int | None, presentation: bool = False) -> None:
    """A faint vertical band at the layer chosen in the sidebar."""
    if layer is None:
        return
    fig.add_vrect(x0=layer - 0.5, x1=layer + 0.5, fillcolor="#999999", opacity=0.15, line_width=0,
                  layer="below")


def empty_figure(message: str, presentation: bool = False) -> go.Figure:
    """A blank figure that says why there is nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, title="", presentation=presentation, legend=False)
