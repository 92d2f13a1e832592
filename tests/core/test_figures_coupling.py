"""Block-coupling figures (resdyn.core.figures.coupling), checked through the figure dict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core.figures import coupling as fig
from tests.figtools import plain


def _depth_rows(mat: np.ndarray) -> pd.DataFrame:
    n = len(mat)
    la, lb = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return pd.DataFrame({"layer_a": la.ravel(), "layer_b": lb.ravel(), "miscoupling": mat.ravel()})


def test_depth_matrix_and_layer_profile():
    mat = np.array([[0.0, 0.2, 0.4], [0.6, 0.0, 0.8], [0.1, 0.3, 0.0]])
    rows = _depth_rows(mat).iloc[1:]  # a missing pair becomes NaN
    got = fig.depth_matrix(rows, 3)
    assert np.isnan(got[0, 0]) and got[1, 2] == 0.8 and got[2, 0] == 0.1
    prof = fig.layer_coupling(_depth_rows(mat), 3)
    # Layer 0: its row (0.2, 0.4) and its column (0.6, 0.1).
    assert prof["value"].tolist() == pytest.approx([np.mean([0.2, 0.4, 0.6, 0.1]), np.mean([0.6, 0.8, 0.2, 0.3]),
                                                    np.mean([0.1, 0.3, 0.4, 0.8])])


def test_depth_heatmap_carries_the_matrix_and_marks_the_pair():
    mat = np.random.default_rng(0).uniform(size=(4, 4))
    f = plain(fig.depth_heatmap(_depth_rows(mat), 4, k=10, pair=(1, 3)))
    np.testing.assert_allclose(f["data"][0]["z"], mat)
    assert f["data"][0]["zmin"] == 0 and f["data"][0]["zmax"] == 1
    assert f["data"][1]["x"] == [3] and f["data"][1]["y"] == [1]  # column = basis layer l′
    assert f["layout"]["yaxis"]["autorange"] == "reversed"
    empty = plain(fig.depth_heatmap(_depth_rows(mat).iloc[:0], 4, k=10))
    assert "no depth-wise" in empty["layout"]["annotations"][0]["text"]


def test_grid_layers_and_coupling_grid_images():
    assert fig.grid_layers(5, 2) == [2, 3, 4, 5]
    wide = fig.grid_layers(0, 29)
    assert len(wide) == fig.GRID_MAX and wide[0] == 0 and wide[-1] == 29
    a = np.random.default_rng(1).normal(size=(4, 4, 6, 6))
    f = plain(fig.coupling_grid(a, [1, 3], k=4))
    (heat,) = f["data"]  # one heatmap, tiles of 4 with a blank line between them
    z = np.asarray(heat["z"], dtype=float)
    assert z.shape == (9, 9) and np.isnan(z[4]).all() and np.isnan(z[:, 4]).all()
    for i, la in enumerate((1, 3)):
        for j, lb in enumerate((1, 3)):
            block = np.abs(a[la, lb, :4, :4])
            np.testing.assert_allclose(z[5 * i:5 * i + 4, 5 * j:5 * j + 4], block / block.max(), rtol=1e-6)
    assert heat["y"][5] == "J^3 [0]" and heat["x"][2] == "basis 1 [2]"  # row J^3, column basis 1
    assert f["layout"]["xaxis"]["ticktext"] == ["basis 1", "basis 3"]
    assert f["layout"]["yaxis"]["ticktext"] == ["J^1", "J^3"]


def test_token_heatmap_places_tokens():
    rows = pd.DataFrame({"token_a": [-2, -2, -1, -1], "token_b": [-2, -1, -2, -1], "miscoupling": [0.0, 0.5, 0.7, 0.0]})
    f = plain(fig.token_heatmap(rows, title="t", x_title="x", y_title="y"))
    assert list(f["data"][0]["x"]) == ["-2", "-1"] and list(f["data"][0]["y"]) == ["-2", "-1"]
    np.testing.assert_allclose(f["data"][0]["z"], [[0.0, 0.5], [0.7, 0.0]])
    assert "--coupling-window" in plain(fig.token_heatmap(rows.iloc[:0], title="t", x_title="x", y_title="y")
                                        )["layout"]["annotations"][0]["text"]


def test_window_profile_median_and_band_per_run():
    stats = {r: pd.DataFrame({"layer": [5, 6], "q25": [1.0 + i, 1.5], "median": [2.0 + i, 2.5], "q75": [3.0, 3.5]})
             for i, r in enumerate(("trained", "random"))}
    f = plain(fig.window_profile(stats, "lss_window"))
    medians = [t for t in f["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in medians] == ["trained", "random"]
    assert list(medians[1]["y"]) == [3.0, 2.5]
    assert medians[0]["line"]["color"] != medians[1]["line"]["color"]
    bands = [t for t in f["data"] if t.get("fill") == "tonexty"]
    assert len(bands) == 2 and list(bands[0]["y"]) == [1.0, 1.5]
    assert plain(fig.window_profile(stats, "ed_window"))["layout"]["yaxis"]["type"] == "log"


def test_pca_figure_highlights_the_last_token():
    rows = []
    for token in (-2, -1):
        for layer in range(3):
            rows.append({"token": token, "layer": layer, "pc1": layer * 1.0, "pc2": token * 1.0,
                         "var1": 0.7, "var2": 0.2})
    f = plain(fig.pca_figure(pd.DataFrame(rows)))
    paths, states, last = f["data"]
    x = np.asarray(paths["x"], float)
    assert len(x) == 7 and np.isnan(x[3]) and np.isnan(x).sum() == 1  # a gap between the two tokens' paths
    assert list(last["y"]) == [-1.0, -1.0, -1.0]
    assert "70%" in f["layout"]["xaxis"]["title"]["text"]


def test_lss_distribution_one_box_per_run():
    f = plain(fig.lss_distribution({"a": np.array([1.0, 2.0, np.nan]), "b": np.array([3.0])}))
    assert [t["type"] for t in f["data"]] == ["box", "box"] and list(f["data"][0]["y"]) == [1.0, 2.0]
