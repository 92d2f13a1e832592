"""Operator-type profiles (resdyn.core.figures.operator), checked through the figure dict (tests.figtools.plain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core import sample_stats
from resdyn.core.figures import operator
from resdyn.core.store import RunStore
from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN
from tests.figtools import plain

L, D = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]


@pytest.fixture(scope="module")
def layers(synthetic_runs_dir) -> pd.DataFrame:
    """layers.parquet with the per-sample profiles joined, as the pages read it."""
    store = RunStore(synthetic_runs_dir / TRAINED_RUN)
    return sample_stats.with_profiles(store, store.read_table("layers"))


def _by_name(fig: dict) -> dict[str, dict]:
    return {t["name"]: t for t in fig["data"]}


def _rows(layers, op):
    return layers[layers.operator == op].sort_values("layer")


def test_self_alignment_traces_and_k_over_d_baseline(layers):
    k = 8
    fig = plain(operator.self_alignment_profile(layers, k=k, d=D))
    t = _by_name(fig)
    base = t[f"baseline k/d = {k}/{D} = {k / D:.3g}"]
    np.testing.assert_allclose(base["y"], [k / D, k / D])
    assert base["x"] == pytest.approx([-0.5, L - 0.5])  # spans every layer
    for op in "JR":
        np.testing.assert_allclose(t[f"self-alignment {op}"]["y"], _rows(layers, op)["self_alignment"])
        np.testing.assert_array_equal(t[f"self-alignment {op}"]["x"], np.arange(L))
        fwd = t[f"forward alignment {op} (l → l+1)"]
        assert fwd["visible"] == "legendonly" and fwd["line"]["dash"] == "dash"
        np.testing.assert_allclose(fwd["y"], _rows(layers, op)["forward_alignment"])
    assert fig["layout"]["yaxis"]["range"] == [0, 1.02]
    assert t["self-alignment J"]["line"]["color"] != t["self-alignment R"]["line"]["color"]


def test_henrici_and_expanding_profiles_carry_the_columns(layers):
    fig = plain(operator.henrici_profile(layers))
    assert len(fig["data"]) == 2
    for trace, op in zip(fig["data"], "JR"):
        np.testing.assert_allclose(trace["y"], _rows(layers, op)["henrici"])
    assert "‖A‖" in fig["layout"]["yaxis"]["title"]["text"]
    fig = plain(operator.frac_expanding_profile(layers))
    np.testing.assert_allclose(fig["data"][0]["y"], _rows(layers, "J")["frac_expanding"])
    assert fig["layout"]["yaxis"]["tickformat"] == ".0%"


def test_residual_norm_ratio_is_one_line_of_J_rows(layers):
    fig = plain(operator.residual_norm_ratio_profile(layers))
    assert len(fig["data"]) == 1
    np.testing.assert_allclose(fig["data"][0]["y"], _rows(layers, "J")["residual_norm_ratio"])
    assert fig["layout"]["yaxis"]["range"][0] == 0


def test_kappa_iqr_band_brackets_the_median(layers):
    fig = plain(operator.kappa_profile(layers))
    lo, hi, med = fig["data"]
    j = _rows(layers, "J")
    np.testing.assert_allclose(lo["y"], j["kappa_q25"])
    np.testing.assert_allclose(hi["y"], j["kappa_q75"])
    np.testing.assert_allclose(med["y"], j["kappa_median"])
    assert (np.asarray(lo["y"]) <= np.asarray(med["y"])).all() and (np.asarray(med["y"]) <= np.asarray(hi["y"])).all()
    assert (np.asarray(hi["y"]) > np.asarray(lo["y"])).any()  # a real band, not a line
    assert hi["fill"] == "tonexty" and "fill" not in lo  # the band is the area between q25 and q75
    assert fig["layout"]["yaxis"]["type"] == "log"
    np.testing.assert_allclose(np.asarray(med["customdata"]), j[["kappa_q25", "kappa_q75"]].to_numpy())


def test_kappa_drops_infinite_values():
    df = pd.DataFrame({"layer": [0, 1], "operator": "J", "kappa_median": [10.0, np.inf],
                       "kappa_q25": [5.0, 7.0], "kappa_q75": [20.0, np.inf]})
    med = plain(operator.kappa_profile(df))["data"][2]
    assert med["y"][0] == 10.0 and np.isnan(med["y"][1])


def test_highlighted_layer_is_a_band_around_it(layers):
    fig = plain(operator.henrici_profile(layers, highlight=2))
    (band,) = fig["layout"]["shapes"]
    assert (band["x0"], band["x1"]) == (1.5, 2.5)
    assert "shapes" not in plain(operator.henrici_profile(layers))["layout"]


@pytest.mark.parametrize("name,builder", operator.PROFILES)
def test_every_profile_has_titles_labels_and_hover(layers, name, builder):
    fig = plain(builder(layers, presentation=True))
    assert fig["layout"]["title"]["text"]
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("layer")
    assert fig["layout"]["yaxis"]["title"]["text"]
    assert any("layer %{x}" in (t.get("hovertemplate") or "") for t in fig["data"])
    assert fig["layout"]["font"]["size"] == 20


def test_empty_table_gives_a_message_not_an_error(layers):
    for _, builder in operator.PROFILES:
        fig = plain(builder(layers.iloc[:0]))
        assert fig["layout"]["annotations"]
    fig = plain(operator.self_alignment_profile(layers.iloc[:0], k=8, d=32))
    assert fig["layout"]["annotations"]


def test_complex_fraction_profile_has_the_ginibre_line(layers):
    from resdyn.core import nulls

    fig = plain(operator.frac_complex_profile(layers, highlight=2))
    t = _by_name(fig)
    null = nulls.ginibre_complex_fraction(D)
    line = t[f"real Ginibre baseline {null:.1%}"]
    np.testing.assert_allclose(line["y"], [null, null])  # 0.845 at d = 32
    assert line["x"] == pytest.approx([-0.5, L - 0.5]) and line["line"]["dash"] == "dot"
    for op in "JR":
        np.testing.assert_allclose(t[operator.OPERATOR_NAMES[op]]["y"], _rows(layers, op)["frac_complex"])
    assert fig["layout"]["yaxis"]["range"][0] <= null and fig["layout"]["yaxis"]["tickformat"] == ".0%"
    assert len(fig["layout"]["shapes"]) == 1  # the highlighted layer
    # The matched elliptic null, per layer (the same on both operators' rows).
    ell = t["real elliptic null at the layer's τ of R"]
    np.testing.assert_allclose(ell["y"], _rows(layers, "J")["frac_complex_null_elliptic"])
    np.testing.assert_allclose(ell["y"], _rows(layers, "R")["frac_complex_null_elliptic"])
    # An older table without the columns: the profile alone, no line, no error.
    old = plain(operator.frac_complex_profile(layers.drop(columns=["frac_complex_null", *nulls.ELLIPTIC_COLUMNS])))
    assert not any("Ginibre" in tr["name"] or "elliptic" in tr["name"] for tr in old["data"])
