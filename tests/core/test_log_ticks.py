"""Log axes are labelled at decades (and 2, 5 over short spans), never with plotly's minor digits."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from resdyn.core.figures import bottleneck
from resdyn.core.figures.common import _log_tickvals, style


@pytest.mark.parametrize("lo, hi, expected", [
    (1e-3, 1e4, [1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4]),   # ≥ 3 decades: decades only
    (1.5, 80, [2, 5, 10, 20, 50]),                            # under 3: 1, 2, 5 of each decade
    (3, 4.5, None),                                           # too short: plotly's own ticks
    (1e-12, 1e5, [1e-12, 1e-9, 1e-6, 1e-3, 1, 1e3]),          # 17 decades: every 3rd, ≤ 8 labels
])
def test_tick_values(lo, hi, expected):
    got = _log_tickvals(lo, hi)
    assert got == (None if expected is None else pytest.approx(expected))


def test_style_sets_ticks_on_log_axes_only():
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[0.01, 1.0, 500.0]))
    style(fig, title="t", yaxis={"type": "log"})
    assert list(fig.layout.yaxis.tickvals) == pytest.approx([0.01, 0.1, 1, 10, 100])
    assert fig.layout.xaxis.tickvals is None  # linear axis untouched


def test_builders_that_switch_to_log_after_style_get_decade_ticks():
    import pandas as pd

    # The bottleneck profile sets its log axis after style(): erank from 1 to 500, about 3 decades.
    cum = pd.DataFrame({"layer": np.arange(6, dtype=np.int32), "erank": [500.0, 120.0, 40.0, 9.0, 3.0, 1.0],
                        "log10_fro": np.zeros(6)})
    fig = bottleneck.erank_profile({"run": cum})
    ticks = [t for ax in (fig.layout.yaxis,) for t in (ax.tickvals or ())]
    assert ticks == pytest.approx([1, 10, 100])
