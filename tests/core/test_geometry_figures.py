"""Figure builders of the Bottleneck and Schur-surgery pages, tested through ``fig.to_dict()``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from resdyn.core.figures import bottleneck, surgery
from tests.figtools import plain

L = 6


def _cum(scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"layer": np.arange(L), "erank": scale * np.array([3.0, 5, 9, 20, 41, 90]),
                         "log10_fro": np.linspace(4, 0.5, L)})


def _layers() -> pd.DataFrame:
    rows = []
    for op in ("J", "R"):
        for l in range(L):
            rows.append({"layer": l, "operator": op, "frac_expanding": 0.1 * l if op == "J" else 0.9,
                         "spectral_radius": [1.9, 1.3, 1.5, 1.1, 1.05, 1.0][l] if op == "J" else 5.0})
    return pd.DataFrame(rows)


def _traces(fig):
    return plain(fig)["data"]


def test_erank_profile_puts_erank_left_log_and_expanding_fraction_right():
    fig = bottleneck.erank_profile({"a": _cum(), "b": _cum(2)}, {"a": _layers(), "b": None}, layer=2)
    d = plain(fig)
    er = [t for t in d["data"] if "erank" in t["name"]]
    assert [t["name"] for t in er] == ["a: erank(P_l)", "b: erank(P_l)"]
    np.testing.assert_allclose(er[1]["y"], 2 * _cum()["erank"])
    exp = [t for t in d["data"] if "|λ| > 1" in t["name"]]
    assert len(exp) == 1 and exp[0]["yaxis"] == "y2"
    np.testing.assert_allclose(exp[0]["y"], 0.1 * np.arange(L))  # operator J rows only
    assert d["layout"]["yaxis"]["type"] == "log"
    assert er[0]["line"]["color"] != er[1]["line"]["color"]


def test_erank_vs_radius_annotates_scipy_spearman():
    fig = bottleneck.erank_vs_radius(_cum(), _layers(), run_id="a")
    d = plain(fig)
    ref = stats.spearmanr(_cum()["erank"], [1.9, 1.3, 1.5, 1.1, 1.05, 1.0])
    assert f"ρ_s = {ref.statistic:+.2f}" in d["layout"]["annotations"][0]["text"]
    assert f"p = {ref.pvalue:.2g}" in d["layout"]["annotations"][0]["text"]
    np.testing.assert_allclose(d["data"][0]["x"], [1.9, 1.3, 1.5, 1.1, 1.05, 1.0])
    np.testing.assert_allclose(d["data"][0]["marker"]["color"], np.arange(L))


def test_cumulative_spectra_draws_each_depth_on_log_axes():
    spec = pd.concat([pd.DataFrame({"layer": l, "idx": np.arange(5), "sigma": 10.0 ** -np.arange(5) * (l + 1)})
                      for l in (0, 3, 5)])
    fig = bottleneck.cumulative_spectra({"a": spec})
    d = plain(fig)
    assert [t["name"] for t in d["data"]] == ["a: P_0", "a: P_3", "a: P_5"]
    np.testing.assert_allclose(d["data"][1]["y"], 4 * 10.0 ** -np.arange(5))
    np.testing.assert_allclose(d["data"][1]["x"], np.arange(1, 6))
    assert d["layout"]["yaxis"]["type"] == "log" and d["layout"]["xaxis"]["type"] == "log"
    assert {t["line"]["dash"] for t in d["data"]} == {"solid", "dash", "dot"}


def test_transient_growth_marks_the_maximum_over_k():
    df = pd.DataFrame({"layer": [0, 0, 0, 1, 1, 2], "k": [1, 2, 3, 1, 2, 1],
                       "log10_norm": [0.5, 1.4, 0.2, 0.1, 0.3, 0.0]})
    d = plain(bottleneck.transient_growth(df, [0, 1]))
    stars = [t for t in d["data"] if t.get("marker", {}).get("symbol") == "star"]
    assert [(s["x"][0], s["y"][0]) for s in stars] == [(2, 1.4), (2, 0.3)]


def _dose_table(old: bool = False, surrogates: bool = False) -> pd.DataFrame:
    """A schur_dose table; ``old``: the schema before the canonical order (mode-R rows, no beta,
    no order draws or skip rows); ``surrogates``: with the ascending and polar doses, the polar
    Control A at c = 0, 1, and no order draws at c = 1 (as the stage writes since the surrogates)."""
    rows = []
    for mode in (("J", "R") if old else ("J",)):
        for cons, draws in (("dose", 1), ("control_a", 4), ("control_b", 4)) + (() if old else (("order_draw", 4),)):
            for draw in range(draws):
                for c in (0.0, 1.0, 2.0):
                    base = {"dose": 10 - 3 * c, "control_a": 50 + 5 * c, "control_b": 20.0,
                            "order_draw": 10 - 3 * c + (draw - 1.5) * (1 - c) ** 2}[cons]
                    rows.append({"mode": mode, "construction": cons, "draw": draw, "c": c, "beta": 1.0,
                                 "erank": base + (draw if cons.startswith("control") else 0)
                                 + (0.5 if mode == "R" else 0),
                                 "log10_fro": c, "henrici": 0.1 * c})
    if surrogates:
        for cons, base in (("dose_ascending", 12.0), ("dose_polar", 14.0)):
            for c in (0.0, 1.0, 2.0):
                rows.append({"mode": "J", "construction": cons, "draw": 0, "c": c, "beta": 1.0,
                             "erank": 7.0 if c == 1.0 else base - 3 * c, "log10_fro": c, "henrici": 0.1 * c})
        for draw in range(4):
            for c in (0.0, 1.0):
                rows.append({"mode": "J", "construction": "control_a_polar", "draw": draw, "c": c, "beta": 1.0,
                             "erank": (14.0 if c == 0 else 30.0 + draw), "log10_fro": c, "henrici": 0.1})
        rows = [r for r in rows if not (r["construction"] == "order_draw" and r["c"] == 1.0)]
    if not old:
        for beta in (0.0, 0.5, 1.0):
            for c in (0.0, 1.0, 2.0):
                rows.append({"mode": "J", "construction": "skip", "draw": 0, "c": c, "beta": beta,
                             "erank": 30 - 10 * beta + c, "log10_fro": -1 + beta, "henrici": 0.2})
    df = pd.DataFrame(rows)
    return df.drop(columns="beta") if old else df


def test_dose_curves_show_dose_ordering_band_and_control_bands():
    df = _dose_table()
    fig = surgery.dose_curves({"run": df}, c=0.5, readouts={"run": {"erank": 8.5, "log10_fro": 0.5,
                                                                      "henrici": 0.05, "path": "live"}})
    d = plain(fig)
    dose = next(t for t in d["data"] if t.get("name", "").startswith("run: dose, descending"))
    np.testing.assert_allclose(dose["y"], [10, 7, 4])
    assert not any("mode R" in t.get("name", "") for t in d["data"])
    band = next(t for t in d["data"] if t.get("name", "").startswith("run: ordering band"))
    assert "4 random eigenvalue orders" in band["name"] and band["fill"] == "toself"
    # Upper edge then lower edge reversed: max and min over the four draws at c = 0, 1, 2.
    np.testing.assert_allclose(band["y"], [11.5, 7, 5.5, 2.5, 7, 8.5])
    np.testing.assert_allclose(band["x"], [0, 1, 2, 2, 1, 0])
    mean_a = next(t for t in d["data"] if t.get("name", "").startswith("run: control A"))
    np.testing.assert_allclose(mean_a["y"], [51.5, 56.5, 61.5])  # mean over draws 0..3
    ctrl = next(t for t in d["data"] if t.get("fill") == "toself" and t.get("legendgroup") == "run-control_a")
    sd = np.std([0, 1, 2, 3], ddof=1)
    np.testing.assert_allclose(ctrl["y"][:3], np.array([51.5, 56.5, 61.5]) + sd)
    live = [t for t in d["data"] if t.get("marker", {}).get("symbol") == "diamond"]
    assert len(live) == 3 and live[0]["x"][0] == 0.5 and live[0]["y"][0] == 8.5
    assert not any("skip" in t.get("name", "") for t in d["data"])  # only when asked for
    assert d["layout"]["yaxis"]["type"] == "log"  # erank panel
    assert d["layout"]["yaxis3"]["range"] == [0, 1.02]  # Henrici panel


def test_dose_curves_draw_the_three_surrogates_and_the_band_through_one():
    df = _dose_table(surrogates=True)
    d = plain(surgery.dose_curves({"run": df}, c=0.5, surrogate="polar",
                                  readouts={"run": {"erank": 12.5, "log10_fro": 0.5, "henrici": 0.05}}))
    by_name = {t.get("name", ""): t for t in d["data"] if t["xaxis"] == "x"}
    curves = {n: t for n, t in by_name.items() if n.startswith("run: dose")}
    assert sorted(curves) == ["run: dose, ascending |λ| (left flag)", "run: dose, descending |λ| (right flag)",
                              "run: dose, polar U H^c Λ H^−c U* (order-free)"]
    polar = curves["run: dose, polar U H^c Λ H^−c U* (order-free)"]
    np.testing.assert_allclose(polar["y"], [14, 7, 8])
    assert polar["line"]["width"] > curves["run: dose, descending |λ| (right flag)"]["line"]["width"]  # selected
    assert {t["line"]["dash"] for t in curves.values()} == {"solid", "dashdot", "longdashdot"}
    # The band has no stored c = 1: it passes through the dose's own value there (zero width).
    band = next(t for n, t in by_name.items() if n.startswith("run: ordering band"))
    np.testing.assert_allclose(band["x"], [0, 1, 2, 2, 1, 0])
    np.testing.assert_allclose(band["y"], [11.5, 7, 5.5, 2.5, 7, 8.5])
    # The selected surrogate's Control A (c = 0 and 1), not the descending one.
    assert any(n.startswith("run: control A, polar") for n in by_name)
    assert not any(n.startswith("run: control A (random M") for n in by_name)
    mean_a = next(t for n, t in by_name.items() if n.startswith("run: control A, polar"))
    np.testing.assert_allclose(mean_a["y"], [14, 31.5])


def test_dose_curves_draw_the_skip_dose_at_the_asked_beta():
    d = plain(surgery.dose_curves({"run": _dose_table()}, c=1.0, skip_betas=[0.5], controls=False))
    (skip,) = [t for t in d["data"] if "skip" in t.get("name", "") and t["xaxis"] == "x"]
    assert "β = 0.5" in skip["name"]
    np.testing.assert_allclose(skip["y"], [25, 26, 27])
    d = plain(surgery.dose_curves({"run": _dose_table()}, skip_betas=[1.0]))  # β = 1 is the dose itself
    assert not any("skip" in t.get("name", "") for t in d["data"])


def test_dose_curves_of_an_old_run_draw_mode_j_only_and_no_band():
    d = plain(surgery.dose_curves({"run": _dose_table(old=True)}, c=1.0, skip_betas=[0.5]))
    names = [t.get("name", "") for t in d["data"]]
    dose = next(t for t in d["data"] if t.get("name", "").startswith("run: dose, descending"))
    np.testing.assert_allclose(dose["y"], [10, 7, 4])  # mode J's rows, not R's (+0.5)
    assert not any("ordering band" in n or "skip" in n or "mode R" in n for n in names)


def test_dose_curves_mark_interpolated_readouts_open_and_handle_no_runs():
    d = plain(surgery.dose_curves({"run": _dose_table()}, c=1.0, controls=False, band=False,
                                  readouts={"run": {"erank": 7.0, "log10_fro": 1.0, "henrici": 0.1,
                                                    "path": "interpolated", "beta": 0.4}}))
    assert not any(t.get("fill") for t in d["data"])
    marks = [t for t in d["data"] if "diamond" in str(t.get("marker", {}).get("symbol"))]
    assert {t["marker"]["symbol"] for t in marks} == {"diamond-open"}
    assert "β = 0.40" in marks[0]["hovertemplate"]
    empty = plain(surgery.dose_curves({}))
    assert "no run" in empty["layout"]["annotations"][0]["text"]


def test_layer_panels_carry_the_data():
    sigma = np.array([3.0, 2.0, 0.5])
    d = plain(surgery.layer_singular_values(sigma, c=0.4, layer=2, reference=np.array([2.5, 2.0, 1.0])))
    np.testing.assert_allclose(d["data"][-1]["y"], sigma)
    assert d["layout"]["yaxis"]["type"] == "log"
    x, y = np.linspace(-1, 1, 4), np.linspace(-2, 2, 3)
    xx, yy = np.meshgrid(x, y)
    ps = pd.DataFrame({"x": xx.ravel(), "y": yy.ravel(), "log10_sigma_min": (xx + 10 * yy).ravel()})
    nr = pd.DataFrame({"idx": [0, 1, 2], "x": [1.0, 0.0, -1.0], "y": [0.0, 1.0, 0.0]})
    lam = np.array([0.5 + 0.1j, -0.2])
    d = plain(surgery.layer_complex_plane(lam, layer=2, pseudo=ps, numrange=nr, c_shown=1.0))
    contour = next(t for t in d["data"] if t["type"] == "contour")
    np.testing.assert_allclose(np.asarray(contour["z"]), xx + 10 * yy)
    poly = next(t for t in d["data"] if "numerical range" in t.get("name", ""))
    np.testing.assert_allclose(poly["x"], [1.0, 0.0, -1.0, 1.0])  # closed
    eig = next(t for t in d["data"] if "eigenvalues" in t.get("name", ""))
    np.testing.assert_allclose(eig["x"], lam.real)
    np.testing.assert_allclose(eig["y"], lam.imag)
    assert d["layout"]["yaxis"]["scaleanchor"] == "x"
    # β = 0.25: J(c, β) = J(c) − 0.75 I translates every piece by −0.75 along the real axis.
    d = plain(surgery.layer_complex_plane(lam, layer=2, pseudo=ps, numrange=nr, c_shown=1.0, shift=-0.75))
    contour = next(t for t in d["data"] if t["type"] == "contour")
    np.testing.assert_allclose(contour["x"], x - 0.75)
    np.testing.assert_allclose(next(t for t in d["data"] if "numerical range" in t.get("name", ""))["x"],
                               [0.25, -0.75, -1.75, 0.25])
    eig = next(t for t in d["data"] if "eigenvalues" in t.get("name", ""))
    np.testing.assert_allclose(eig["x"], lam.real - 0.75)
    np.testing.assert_allclose(eig["y"], lam.imag)
    assert "β = 0.25" in d["layout"]["title"]["text"]
