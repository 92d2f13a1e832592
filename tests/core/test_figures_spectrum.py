"""Eigenvalue figures (resdyn.core.figures.spectrum), checked through the figure dict (tests.figtools.plain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core.figures import spectrum
from resdyn.core.figures.common import font_size
from resdyn.core.store import RunStore
from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN
from tests.figtools import plain

L, D = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]


@pytest.fixture(scope="module")
def eig(synthetic_runs_dir) -> pd.DataFrame:
    return RunStore(synthetic_runs_dir / TRAINED_RUN).read_table("eigenvalues")


def _trace(fig: dict, name: str) -> dict:
    matches = [t for t in fig["data"] if t.get("name") == name]
    assert len(matches) == 1, [t.get("name") for t in fig["data"]]
    return matches[0]


def test_unit_circle_trace_has_modulus_one(eig):
    fig = plain(spectrum.eigenvalue_scatter(eig, [0], operator="J"))
    circle = _trace(fig, "|λ| = 1")
    x, y = np.asarray(circle["x"]), np.asarray(circle["y"])
    np.testing.assert_allclose(np.hypot(x, y), 1.0, atol=1e-12)
    assert x.min() == pytest.approx(-1) and x.max() == pytest.approx(1)  # the whole circle
    assert (x[0], y[0]) == pytest.approx((x[-1], y[-1]))  # closed
    assert not any("1 + λ" in (t.get("name") or "") for t in fig["data"])
    assert fig["layout"]["yaxis"]["scaleanchor"] == "x"  # circles look like circles


def test_scatter_plots_each_chosen_layer_exactly(eig):
    fig = plain(spectrum.eigenvalue_scatter(eig, [3, 1], operator="J"))
    names = [t["name"] for t in fig["data"] if t["type"] == "scattergl"]
    assert names == ["layer 3", "layer 1"]  # in the order asked, nothing else
    for l in (3, 1):
        t = _trace(fig, f"layer {l}")
        rows = eig[(eig.operator == "J") & (eig.layer == l)]
        np.testing.assert_array_equal(t["x"], rows["re"].to_numpy())
        np.testing.assert_array_equal(t["y"], rows["im"].to_numpy())
        np.testing.assert_allclose(t["customdata"], np.abs(rows["re"] + 1j * rows["im"]))
        assert len(t["x"]) == D
        assert "|λ|" in t["hovertemplate"]
    assert _trace(fig, "layer 3")["marker"]["color"] != _trace(fig, "layer 1")["marker"]["color"]


def test_scatter_of_R_uses_R_rows_and_shows_J_unit_circle(eig):
    fig = plain(spectrum.eigenvalue_scatter(eig, [2], operator="R"))
    rows = eig[(eig.operator == "R") & (eig.layer == 2)]
    np.testing.assert_array_equal(_trace(fig, "layer 2")["x"], rows["re"].to_numpy())
    shifted = _trace(fig, "|1 + λ| = 1 (J̄'s unit circle)")
    np.testing.assert_allclose(np.hypot(np.asarray(shifted["x"]) + 1, shifted["y"]), 1.0, atol=1e-12)
    assert "R" in fig["layout"]["title"]["text"]


def test_density_matrix_shape_and_counts(eig):
    counts, edges, layers = spectrum.density_matrix(eig, "re", operator="J", bins=25)
    assert counts.shape == (L, 25) and edges.shape == (26,)
    np.testing.assert_array_equal(layers, np.arange(L))
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(L, D))  # every eigenvalue counted once
    rows = eig[(eig.operator == "J") & (eig.layer == 1)]
    ref, _ = np.histogram(rows["re"], bins=edges)
    np.testing.assert_array_equal(counts[1], ref)


def test_density_matrix_on_known_values():
    eig = pd.DataFrame({"layer": [0, 0, 0, 2], "operator": "J", "idx": [0, 1, 2, 0],
                        "re": [0.0, 0.0, 3.0, 4.0], "im": [1.0, -1.0, 0.0, 0.0]})
    counts, edges, layers = spectrum.density_matrix(eig, "abs", bins=3)
    np.testing.assert_allclose(edges, [1.0, 2.0, 3.0, 4.0])  # |λ| = 1, 1, 3, 4: bins span the data
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 0, 0], [0, 0, 1]])  # empty layer 1 kept
    im_counts, im_edges, _ = spectrum.density_matrix(eig, "im", bins=2)
    np.testing.assert_array_equal(im_counts[0], [1, 2])
    with pytest.raises(ValueError):
        spectrum.density_matrix(eig, "phase")


def test_density_figure_has_three_log_heatmaps(eig):
    fig = plain(spectrum.eigenvalue_density(eig, operator="J", bins=30))
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heat] == ["Re λ", "Im λ", "|λ|"]
    for t, q in zip(heat, ("re", "im", "abs")):
        z = np.asarray(t["z"])
        assert z.shape == (L, 30)
        counts, edges, _ = spectrum.density_matrix(eig, q, bins=30)
        np.testing.assert_allclose(z, np.log10(1 + counts))
        np.testing.assert_allclose(t["x"], 0.5 * (edges[1:] + edges[:-1]))
        np.testing.assert_array_equal(t["customdata"], counts)
        assert t["coloraxis"] == "coloraxis"  # one shared colour scale
    assert "log10" in fig["layout"]["coloraxis"]["colorbar"]["title"]["text"]
    # Reference lines where the data reach them: Re λ = 1, Im λ = 0, |λ| = 1 for J.
    j = eig[eig.operator == "J"]
    expected = [0.0] + [1.0] * int(j["re"].min() <= 1 <= j["re"].max()) \
        + [1.0] * int(np.abs(j["re"] + 1j * j["im"]).min() <= 1)
    assert sorted(s["x0"] for s in fig["layout"]["shapes"]) == sorted(expected)
    assert len(expected) == 3  # the trained-like fixture straddles both


def test_presentation_mode_is_bigger(eig):
    small = plain(spectrum.eigenvalue_scatter(eig, [0]))
    big = plain(spectrum.eigenvalue_scatter(eig, [0], presentation=True))
    assert big["layout"]["font"]["size"] == font_size(True) > small["layout"]["font"]["size"]
    assert _trace(big, "layer 0")["marker"]["size"] > _trace(small, "layer 0")["marker"]["size"]
    assert _trace(big, "|λ| = 1")["line"]["width"] > _trace(small, "|λ| = 1")["line"]["width"]


def test_empty_inputs_do_not_raise(eig):
    none = eig.iloc[:0]
    fig = plain(spectrum.eigenvalue_scatter(none, [], operator="J"))
    assert any("no eigenvalues" in a["text"] for a in fig["layout"]["annotations"])
    fig = plain(spectrum.eigenvalue_density(none))
    assert not fig["data"] and fig["layout"]["annotations"]


def test_many_layers_are_coloured_by_depth(eig):
    colors = spectrum.layer_colors(list(range(12)), 12)
    assert len(set(colors.values())) == 12


@pytest.mark.parametrize("operator", ["J", "R"])
def test_duckdb_binning_equals_density_matrix(synthetic_runs_dir, eig, operator):
    """The Spectrum page bins in DuckDB (queries.eigenvalue_density); counts and edges equal the
    numpy histogram of density_matrix over the whole table, and the figure is the same."""
    from resdyn.core import queries

    got = queries.eigenvalue_density(TRAINED_RUN, operator, n_layers=SYNTHETIC_SIZES["n_layers"],
                                     root=synthetic_runs_dir)
    for q in spectrum.QUANTITIES:
        counts, edges, _ = spectrum.density_matrix(eig, q, operator=operator, n_layers=SYNTHETIC_SIZES["n_layers"])
        np.testing.assert_allclose(got[q][1], edges)
        np.testing.assert_array_equal(got[q][0], counts)
        assert got[q][0].sum() == (eig["operator"] == operator).sum()
    a = plain(spectrum.density_figure(got, operator=operator))
    b = plain(spectrum.eigenvalue_density(eig, operator=operator, n_layers=SYNTHETIC_SIZES["n_layers"]))
    for ta, tb in zip(a["data"], b["data"]):
        np.testing.assert_allclose(np.asarray(ta["z"], float), np.asarray(tb["z"], float))


def test_duckdb_binning_puts_values_on_edges_where_numpy_does(tmp_path):
    """Values exactly on bin edges (real eigenvalues at Im λ = 0 in a symmetric range, a grid of
    Re λ on the edges) land in numpy's bins, the maximum in the last one."""
    from resdyn.core import queries
    from resdyn.testing.synthetic import make_synthetic_run

    store = make_synthetic_run(tmp_path, "edges", n_layers=2, d=8, n_samples=4)
    re = np.array([0.0, 0.1, 0.2, 0.3, 0.7, 0.9, 1.0, 0.3, 0.6, 0.9, 0.45, 0.55])
    im = np.array([0.0, 0.3, -0.3, 0.0, 0.7, -0.7, 0.0, 1.0, -1.0, 0.0, 0.2, -0.2])
    rows = pd.DataFrame({"layer": np.repeat([0, 1], 6).astype(np.int32), "operator": "J",
                         "idx": np.tile(np.arange(6), 2).astype(np.int32), "re": re, "im": im})
    store.write_table("eigenvalues", rows)
    for bins in (4, 10, 80):
        got = queries.eigenvalue_density("edges", "J", bins=bins, n_layers=2, root=tmp_path)
        for q in spectrum.QUANTITIES:
            counts, edges, _ = spectrum.density_matrix(rows, q, bins=bins, n_layers=2)
            np.testing.assert_array_equal(got[q][0], counts, err_msg=f"{q}, {bins} bins")
