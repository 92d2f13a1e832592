"""Topology figure builders, read through ``fig.to_dict()`` (no Streamlit)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from resdyn.core.figures import topology as F
from tests.figtools import plain


def _corr(d, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 5, d)
    x = rng.standard_normal((200, 5))[:, lab] + rng.standard_normal((200, d))
    return np.corrcoef(x.T).astype(np.float32), lab


def _squares(fig: dict) -> list[tuple[float, float, float, float]]:
    """(x0, x1, y0, y1) of the community squares outlined on the sorted panel (one polyline trace)."""
    (line,) = [t for t in fig["data"] if t.get("name") == "communities"]
    assert line["xaxis"] == "x2" and line["yaxis"] == "y2"
    xs, ys = np.asarray(line["x"], float).reshape(-1, 6), np.asarray(line["y"], float).reshape(-1, 6)
    assert np.isnan(xs[:, 5]).all() and np.isnan(ys[:, 5]).all()  # a gap after each square
    return sorted((x[:5].min(), x[:5].max(), y[:5].min(), y[:5].max()) for x, y in zip(xs, ys))


def test_snapshot_labels():
    assert [F.snapshot_label(s, 2) for s in range(5)] == ["L0 attn", "L0 mlp", "L1 attn", "L1 mlp", "final"]


def test_small_correlation_figure_sorts_by_community_and_outlines_communities():
    corr, lab = _corr(60)
    lab = np.array(lab)
    lab[0] = 5  # a singleton: not outlined
    fig = plain(F.correlation_figure(corr, lab))
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heat) == 2
    order = F.community_order(lab)
    np.testing.assert_allclose(np.asarray(heat[0]["z"]), corr)
    np.testing.assert_allclose(np.asarray(heat[1]["z"]), corr[np.ix_(order, order)])
    # sorted order groups labels, ascending units inside a community
    assert np.all(np.diff(lab[order]) >= 0)
    sizes = np.bincount(lab)
    rects = _squares(fig)
    assert len(rects) == int((sizes >= 2).sum())
    first = min(rects)  # community 0 starts at position 0
    assert first == (-0.5, sizes[0] - 0.5, -0.5, sizes[0] - 0.5)
    assert sorted(r[1] - r[0] for r in rects) == sorted(int(n) for n in sizes if n >= 2)
    assert fig["layout"]["dragmode"] == "select"


def test_large_correlation_figure_is_a_png_image_with_colour_bar():
    d = 600  # > HEATMAP_MAX
    corr = np.zeros((d, d), np.float32)
    corr[:300, :300] = 1.0   # red block top-left
    corr[300:, 300:] = -1.0  # blue block bottom-right
    fig = plain(F.correlation_figure(corr, np.repeat([0, 1], 300), max_px=200))
    imgs = [t for t in fig["data"] if t["type"] == "image"]
    assert len(imgs) == 2 and not any(t["type"] == "heatmap" for t in fig["data"])
    f = int(np.ceil(d / 200))
    assert imgs[0]["dx"] == f and imgs[0]["x0"] == (f - 1) / 2
    png = base64.b64decode(imgs[0]["source"].split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert rgb.shape == (200, 200, 3)
    red, blue = rgb[10, 10], rgb[-10, -10]
    assert red[0] > red[2] and blue[2] > blue[0]
    assert fig["layout"]["coloraxis"]["cmin"] == -1  # the colour bar of the dummy trace


def test_precomputed_blocks_draw_the_same_panels_without_the_matrix():
    """The page's path at large d: panels from block means (no d×d matrix) give the same images."""
    d = 600
    corr = np.zeros((d, d), np.float32)
    corr[:300, :300], corr[300:, 300:] = 1.0, -1.0
    labels = np.repeat([0, 1], 300)
    want = plain(F.correlation_figure(corr, labels, max_px=200))
    left, f = F.block_average(corr, 200)
    got = plain(F.correlation_figure(None, labels, blocks=(left, left, f)))
    sources = [[t["source"] for t in fig["data"] if t["type"] == "image"] for fig in (want, got)]
    assert len(sources[1]) == 2 and sources[0] == sources[1]
    assert _squares(got) == _squares(want) == [(-0.5, 299.5, -0.5, 299.5), (299.5, 599.5, 299.5, 599.5)]


def test_block_average_and_colormap():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    small, f = F.block_average(m, 2)
    assert f == 2
    np.testing.assert_allclose(small, [[2.5, 4.5], [10.5, 12.5]])
    small, f = F.block_average(np.ones((5, 5)), 2)  # ragged edge blocks average what they hold
    assert f == 3 and small.shape == (2, 2) and np.allclose(small, 1)
    rgb = F.colormap_rgb(np.array([[-1.0, 0.0, 1.0, np.nan]]))
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == (247, 247, 247)  # RdBu_r midpoint: white-ish
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[0, 2, 0] > rgb[0, 2, 2]
    assert tuple(rgb[0, 3]) == (220, 220, 220)
    # The image panels are palette PNGs: decoded, they are exactly colormap_rgb.
    m = np.random.default_rng(0).uniform(-1, 1, (9, 7)).astype(np.float32)
    m[2, 3] = np.nan
    png = base64.b64decode(F._png_source(m).split(",", 1)[1])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), F.colormap_rgb(m))


def test_selection_block_maps_sorted_panel_back_to_units():
    lab = np.array([1, 0, 1, 0, 2])
    order = F.community_order(lab)  # [1, 3, 0, 2, 4]
    rows, cols = F.selection_block({"xref": "x2", "yref": "y2", "x": [-0.3, 1.2], "y": [1.6, 3.4]}, order)
    assert cols.tolist() == [1, 3] and rows.tolist() == [0, 2]
    rows, cols = F.selection_block({"xref": "x", "x": [2.6, 4.4], "y": [0, 0]}, order)
    assert cols.tolist() == [3, 4] and rows.tolist() == [0]
    assert F.selection_block({}, order) is None


def test_nmi_figure_matrix_and_labels():
    nmi = pd.DataFrame({"snapshot_a": [0, 0, 1, 1], "snapshot_b": [0, 1, 0, 1], "nmi": [1.0, 0.4, 0.4, 1.0]})
    fig = plain(F.nmi_figure(nmi, n_layers=1))
    z = np.asarray(fig["data"][0]["z"])
    np.testing.assert_allclose(z, [[1, 0.4], [0.4, 1]])
    assert list(fig["data"][0]["x"]) == ["L0 attn", "L0 mlp"]


def _coupling():
    return pd.DataFrame({
        "layer": [0, 1, 2, 3] * 2, "method": ["cpm"] * 4 + ["infomap"] * 4,
        "cohens_d": [-0.4, 0.1, 0.3, 0.5, 0.0, 0.1, 0.2, -0.1],
        "p_perm": [0.001, 0.5, 0.01, 0.001, 0.9, 0.5, 0.2, 0.7],
        "q_bh": [0.002, 0.5, 0.013, 0.002, 0.9, 0.6, 0.4, 0.9],
        "fdr_significant": [True, False, True, True, False, False, False, False],
        "self_alignment": [0.05, 0.2, 0.6, 0.9] * 2,
    })


def test_cohens_d_figure_marks_significant_layers_filled():
    fig = plain(F.cohens_d_figure(_coupling(), n_layers=4))
    filled = [t for t in fig["data"] if t.get("marker", {}).get("symbol") == "circle"]
    open_ = [t for t in fig["data"] if t.get("marker", {}).get("symbol") == "circle-open"]
    cpm_filled = [t for t in filled if t["legendgroup"] == "cpm"][0]
    assert list(cpm_filled["x"]) == [0, 2, 3]
    assert list([t for t in open_ if t["legendgroup"] == "cpm"][0]["x"]) == [1]


def test_selfalign_figure_reports_spearman():
    c = _coupling()
    fig = plain(F.selfalign_vs_d_figure(c[c.method == "cpm"], n_layers=4))
    # ranks of self-alignment 1..4, of d 1..4 → ρ = +1
    assert "ρ = +1.000" in fig["layout"]["title"]["text"]


def test_method_table_fractions_and_medians():
    comms = pd.DataFrame({"snapshot": [0, 0, 0, 1, 1], "method": ["cpm"] * 5, "community": [0, 1, 2, 0, 1],
                          "size": [5, 3, 1, 6, 3]})
    tab = F.method_table(_coupling(), comms).set_index("method")
    row = tab.loc[F.method_label("cpm")]
    assert row["frac. FDR sig. (+)"] == pytest.approx(0.5)   # layers 2, 3
    assert row["frac. FDR sig. (−)"] == pytest.approx(0.25)  # layer 0
    assert row["median Cohen's d"] == pytest.approx(0.2)
    assert row["communities / snapshot (median)"] == pytest.approx(2.0)
    assert row["ρ(self-alignment, d)"] == pytest.approx(1.0)
    assert tab.loc[F.method_label("infomap"), "communities / snapshot (median)"] == 0


def test_mesoscale_figure_counts_bh_significant_layers():
    meso = pd.DataFrame({"layer": [0, 1, 2], "variance_captured": [0.3, 0.1, 0.4], "null_mean": [0.1] * 3,
                         "null_q05": [0.08] * 3, "null_q95": [0.12] * 3, "z": [10.0, 0.5, 12.0],
                         "p_empirical": [0.001, 0.5, 0.02], "bh_significant": [True, False, False]})
    fig = plain(F.mesoscale_figure(meso, n_layers=3))
    assert "1/3 layers above the null (BH, α = 0.05)" in fig["layout"]["title"]["text"]  # z = 12 alone is not enough
    band = fig["data"][0]
    assert list(band["y"]) == [0.12, 0.12, 0.12, 0.08, 0.08, 0.08]
    assert fig["data"][2]["marker"]["symbol"] == ["circle", "circle-open", "circle-open"]
    # A table from before the column: BH on its p on read (0.001·3 and 0.02·3/2 ≤ 0.05; 0.5 is not).
    old = plain(F.mesoscale_figure(meso.drop(columns="bh_significant"), n_layers=3))
    assert "2/3 layers above the null" in old["layout"]["title"]["text"]


def _meso_rows(p_by_panel: dict, n_layers: int = 3) -> pd.DataFrame:
    rows = []
    for (null, op), ps in p_by_panel.items():
        for layer, p in zip(range(n_layers), ps):
            rows.append({"layer": layer, "null": null, "operator": op, "z": float(-np.log10(p)),
                         "p_empirical": p, "variance_captured": 0.2,
                         "null_mean": 0.1, "null_q05": 0.08, "null_q95": 0.12})
    return pd.DataFrame(rows)


def test_mesoscale_z_figure_has_four_panels_that_count_bh_significant_layers():
    meso = _meso_rows({("independent", "J"): [0.001, 0.001, 0.001], ("independent", "R"): [0.001, 0.3, 0.6],
                       ("joint", "J"): [0.5, 0.9, 0.2], ("joint", "R"): [0.01, 0.4, 0.02]})
    fig = plain(F.mesoscale_z_figure(meso, n_layers=3, highlight=1))
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles[0].endswith("independent null: 3/3 layers BH-significant") and titles[0].startswith("J̄_l")
    assert titles[1].endswith("joint null: 0/3 layers BH-significant")
    assert titles[2].startswith("R_l") and titles[2].endswith("independent null: 1/3 layers BH-significant")
    assert titles[3].endswith("joint null: 2/3 layers BH-significant")
    assert [list(t["customdata"]) for t in fig["data"]] == [[0.001] * 3, [0.5, 0.9, 0.2], [0.001, 0.3, 0.6],
                                                             [0.01, 0.4, 0.02]]
    assert fig["data"][3]["marker"]["symbol"] == ["circle", "circle-open", "circle"]
    lines = [s for s in fig["layout"]["shapes"] if s["type"] == "line"]
    assert len(lines) == 4 and all(s["y0"] == s["y1"] == 0 for s in lines)
    assert sorted(s["yref"] for s in lines) == ["y", "y2", "y3", "y4"]


def test_mesoscale_z_figure_on_a_table_from_before_the_joint_null():
    old = _meso_rows({("independent", "J"): [0.01, 0.01, 0.01]}).drop(columns=["null", "operator"])
    fig = plain(F.mesoscale_z_figure(old, n_layers=3))
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles[0].endswith("3/3 layers BH-significant")
    assert sum("not computed (--redo topology_coupling)" in t for t in titles) == 3
    assert len(fig["data"]) == 1


def test_participation_scatter_colours_the_tails():
    units = pd.DataFrame({"unit": np.arange(20), "participation": np.arange(20) / 19,
                          "column_norm": np.arange(1.0, 21.0)})
    fig = plain(F.participation_scatter(units))
    by_name = {t["name"]: t for t in fig["data"]}
    top = [v for k, v in by_name.items() if k.startswith("top")][0]
    bottom = [v for k, v in by_name.items() if k.startswith("bottom")][0]
    assert sorted(top["customdata"]) == [18, 19] and sorted(bottom["customdata"]) == [0, 1]
    assert "ρ = +1.000" in fig["layout"]["title"]["text"]


def test_participation_scatter_colours_the_tests_seeded_tails_under_ties():
    from resdyn.core.topology_coupling import participation_tails

    rng = np.random.default_rng(0)
    units = pd.DataFrame({"unit": np.arange(50), "participation": np.round(rng.uniform(size=50), 1),
                          "column_norm": rng.uniform(1, 2, 50)}).sample(frac=1, random_state=1)  # any row order
    fig = plain(F.participation_scatter(units, seed=7))
    by_name = {t["name"][:3]: t for t in fig["data"]}
    top, bottom = participation_tails(units.sort_values("unit")["participation"].to_numpy(), seed=7)
    assert sorted(by_name["top"]["customdata"]) == np.flatnonzero(top).tolist() and top.sum() == 5
    assert sorted(by_name["bot"]["customdata"]) == np.flatnonzero(bottom).tolist() and bottom.sum() == 5
