"""The Bottleneck and Schur-surgery pages under AppTest, against synthetic runs with the geometry stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from resdyn.compute.stages import stages_named
from resdyn.compute.context import RunContext
from resdyn.config import RunConfig
from resdyn.core import dose
from resdyn.core.store import RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.app.apptools import charts, open_page
from tests.conftest import RANDOM_RUN, TRAINED_RUN
from tests.legacy import write_old_table

BARE_RUN = "bare"  # a complete foundation run without the geometry stages


@pytest.fixture(scope="module")
def geometry_runs(synthetic_runs_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("geometry-pages") / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    for run_id in (TRAINED_RUN, RANDOM_RUN):
        store = RunStore(root / run_id)
        ctx = RunContext(RunConfig(runs_dir=root, run_id=run_id), store, quiet=True)
        for stage in stages_named("cumulative", "schur", "pseudospectra"):
            stage.fn(ctx)
    make_synthetic_run(root, BARE_RUN, n_layers=3, d=16, n_samples=8)
    return root


@pytest.fixture
def env(geometry_runs, monkeypatch) -> Path:
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(geometry_runs))
    return geometry_runs


_app, _charts = open_page, charts


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def _grid(root: Path, run_id: str, construction: str = "dose_polar"):
    """The stored dose curve of a run, by c: the polar surrogate's (the page's default) unless asked."""
    df = RunStore(root / run_id).read_table("schur_dose")
    return df[(df["mode"] == "J") & (df["construction"] == construction)].set_index("c")


# -- Bottleneck -----------------------------------------------------------------------------------

def test_bottleneck_page_shows_the_cumulative_tables(env):
    at = _app("pages/bottleneck.py", run=TRAINED_RUN)
    _ok(at)
    cum = RunStore(env / TRAINED_RUN).read_table("cumulative")
    assert _metric(at, "erank(P_0)") == f"{cum['erank'].iloc[0]:.3g}"
    charts = _charts(at)
    assert len(charts) == 4  # profile, erank vs ρ, spectra, transient growth
    profile = charts[0]["data"][0]
    np.testing.assert_allclose(profile["y"], cum["erank"])
    assert not at.warning


def _captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def test_bottleneck_says_whether_the_products_are_exact_or_truncated(env):
    at = _app("pages/bottleneck.py", run=TRAINED_RUN)
    assert "Exact products (rank d = 32" in _captions(at)
    for run_id, rank, expected in (("trunc8", 8, "Truncated to rank K = 8"),
                                   ("predates", None, "computed before resdyn recorded `cumulative_rank`")):
        if not (env / run_id).exists():
            shutil.copytree(env / TRAINED_RUN, env / run_id)
        store = RunStore(env / run_id)
        m = store.manifest()
        m.pop("cumulative_rank", None)
        if rank is not None:
            m["cumulative_rank"] = rank
        store.write_manifest(m)
        at = _app("pages/bottleneck.py", run=run_id)
        _ok(at)
        assert expected in _captions(at)
        assert "biased low" in _captions(at) if rank is not None else "keeps every direction" in _captions(at)


def test_bottleneck_overlays_several_runs(env):
    at = _app("pages/bottleneck.py", run=TRAINED_RUN, overlay=f"{TRAINED_RUN},{RANDOM_RUN}")
    _ok(at)
    names = " ".join(t.get("name", "") for t in _charts(at)[0]["data"])
    assert TRAINED_RUN in names and RANDOM_RUN in names


def test_bottleneck_says_when_a_run_lacks_the_stage(env):
    at = _app("pages/bottleneck.py", run=BARE_RUN)
    _ok(at)
    assert any("lacks the **cumulative** stage" in w.value for w in at.warning)
    assert not at.get("plotly_chart")


# -- Schur surgery --------------------------------------------------------------------------------

def test_moving_the_dose_slider_changes_the_live_readouts(env):
    grid = _grid(env, TRAINED_RUN)
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, layer="1")
    _ok(at)
    assert _metric(at, "erank") == f"{grid.loc[1.0, 'erank']:.3g}"
    assert f"{grid.loc[0.0, 'erank']:.3g}" != f"{grid.loc[1.0, 'erank']:.3g}"  # the move below is visible
    assert len(_charts(at)) == 3  # dose curves, layer σ, layer complex plane
    at.slider(key="_sel_c").set_value(0.0).run()
    _ok(at)
    assert at.query_params["c"] == "0.00"  # the link follows the slider
    assert _metric(at, "erank") == f"{grid.loc[0.0, 'erank']:.3g}"
    assert _metric(at, "Henrici") == f"{grid.loc[0.0, 'henrici']:.3f}"
    assert any("read from the stored dose grid" in c.value for c in at.caption)
    dose.live_dose(RunStore(env / TRAINED_RUN), "polar")  # the render started it; a reader's pause
    at.slider(key="_sel_c").set_value(0.37).run()
    _ok(at)
    live = dose.dose_response(RunStore(env / TRAINED_RUN), 0.37, layers=[], surrogate="polar")
    assert _metric(at, "log10") == f"{live.log10_fro:.2f}"
    assert _metric(at, "log10") != f"{grid.loc[0.0, 'log10_fro']:.2f}"
    # The per-layer panel follows the slider: σ of the polar J_1(0.37).
    sigma = _charts(at)[1]["data"][-1]["y"]
    np.testing.assert_allclose(sigma, dose.layer_sigma(RunStore(env / TRAINED_RUN), 1, 0.37, surrogate="polar"),
                               rtol=1e-6)
    assert any("recomputed live from the polar factors" in c.value for c in at.caption)


def test_the_surrogate_switch_moves_readouts_curves_and_link(env):
    """Polar is the default where stored; switching to the Schur orders reads their own curves and
    recomputes them live off the grid; all three curves and the band are drawn whichever is chosen."""
    store = RunStore(env / TRAINED_RUN)
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, layer="1", c="0")
    _ok(at)
    assert at.selectbox(key="_sel_surrogate").value == "polar"
    assert _metric(at, "erank") == f"{_grid(env, TRAINED_RUN).loc[0.0, 'erank']:.3g}"
    names = " ".join(t.get("name", "") for t in _charts(at)[0]["data"])
    for label in ("descending |λ| (right flag)", "ascending |λ| (left flag)", "polar U H^c Λ H^−c U*",
                  "ordering band", "control A, polar"):
        assert label in names
    for sur, cons in (("descending", "dose"), ("ascending", "dose_ascending")):
        at.selectbox(key="_sel_surrogate").set_value(sur).run()
        _ok(at)
        assert at.query_params["surrogate"] == sur
        assert _metric(at, "erank") == f"{_grid(env, TRAINED_RUN, cons).loc[0.0, 'erank']:.3g}"
    dose.live_dose(store, "ascending")  # the render started it; a reader's pause
    at.slider(key="_sel_c").set_value(0.63).run()
    _ok(at)
    live = dose.dose_response(store, 0.63, layers=[], surrogate="ascending")
    assert _metric(at, "erank") == f"{live.erank:.3g}"
    sigma = _charts(at)[1]["data"][-1]["y"]
    np.testing.assert_allclose(sigma, dose.layer_sigma(store, 1, 0.63, surrogate="ascending"), rtol=1e-6)
    names = " ".join(t.get("name", "") for t in _charts(at)[0]["data"])
    assert "control A, ascending" in names and "control A, polar" not in names


def test_a_move_off_the_grid_before_the_live_factors_exist_is_interpolated_and_says_so(env, monkeypatch):
    """While the background build runs, an off-grid dose reads the stored curve (interpolated) and
    the caption says the next move is live; it never blocks the page."""
    monkeypatch.setattr(dose, "live_dose", lambda store, surrogate="descending", wait=True: None)
    grid = _grid(env, TRAINED_RUN)
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, c="0.6")
    _ok(at)
    want = dose.grid_values(RunStore(env / TRAINED_RUN), 0.6, surrogate="polar")
    assert _metric(at, "erank") == f"{want[0]:.3g}" and grid.loc[0.5, "erank"] != grid.loc[0.75, "erank"]
    assert any("while the live factors are computed" in c.value for c in at.caption)


def test_runs_from_before_the_surrogates_render_the_descending_dose_with_a_note(env, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(env / TRAINED_RUN, root / "pre")
    pre = RunStore(root / "pre")
    df = pre.read_table("schur_dose")
    df = df[~df["construction"].str.contains("ascending|polar")]
    pre.write_table("schur_dose", df)
    m = pre.manifest()
    m["run_id"] = "pre"
    pre.write_manifest(m)
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    at = _app("pages/schur_surgery.py", run="pre", c="0.5", surrogate="polar")
    _ok(at)
    assert at.selectbox(key="_sel_surrogate").options == ["descending |λ| (right flag)"]
    notes = [c.value for c in at.caption if "--redo schur" in c.value]
    assert len(notes) == 1 and "before the ascending and polar surrogates" in notes[0]
    assert _metric(at, "erank") == f"{_grid(root, 'pre', 'dose').loc[0.5, 'erank']:.3g}"
    names = " ".join(t.get("name", "") for t in _charts(at)[0]["data"])
    assert "descending" in names and "polar" not in names and "ordering band" in names


def test_wide_runs_draw_the_stored_singular_values_without_an_svd(env, monkeypatch):
    """Above SIGMA_MAX_D the layer panel shows layer_sigma at the stored dose nearest the slider
    (and the trained curve at c = 1) instead of running a d×d SVD per move."""
    monkeypatch.setattr(dose, "SIGMA_MAX_D", 4)  # the fixture's d is above this
    monkeypatch.setattr(dose, "layer_sigma", lambda *a, **k: pytest.fail("a live SVD ran"))
    sv = RunStore(env / TRAINED_RUN).read_table("layer_sigma")
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, layer="1", c="0.3")
    _ok(at)
    want = sv[(sv["layer"] == 1) & (sv["c"] == 0.0)].sort_values("i")["sigma"].to_numpy()
    ref = sv[(sv["layer"] == 1) & (sv["c"] == 1.0)].sort_values("i")["sigma"].to_numpy()
    panel = _charts(at)[1]
    np.testing.assert_allclose(panel["data"][-1]["y"], want)
    np.testing.assert_allclose(panel["data"][0]["y"], ref)
    assert any("showing c = 0, the nearest" in c.value for c in at.caption)
    # A run without the table says what to compute, and the page still draws its other figures.
    (env / TRAINED_RUN / "layer_sigma.parquet").rename(env / "layer_sigma.parquet.bak")
    try:
        at = _app("pages/schur_surgery.py", run=TRAINED_RUN, layer="1")
        _ok(at)
        assert "pseudospectra stage" in str(_charts(at)[1]["layout"]["annotations"])
    finally:
        (env / "layer_sigma.parquet.bak").rename(env / TRAINED_RUN / "layer_sigma.parquet")


def test_layer_plane_draws_the_spectrum_of_the_mean_jacobian(env):
    """The complex-plane panel's eigenvalues are J̄_l's (the eigenvalues table), which are the
    diagonal of the stored Schur factor to float32 rounding, shifted by β − 1."""
    for beta in ("1", "0.4"):
        at = _app("pages/schur_surgery.py", run=TRAINED_RUN, layer="2", beta=beta)
        _ok(at)
        (pts,) = [t for t in _charts(at)[2]["data"] if t.get("name") == "eigenvalues (any c)"]
        got = np.asarray(pts["x"], float) + 1j * np.asarray(pts["y"], float)
        want = dose.layer_eigenvalues(RunStore(env / TRAINED_RUN), 2, float(beta))
        assert len(got) == len(want)
        # Each eigenvalue has its counterpart (sorting would pair conjugates by rounding noise).
        assert np.abs(want[:, None] - got[None, :]).min(axis=1).max() < 1e-4
        assert np.abs(got[:, None] - want[None, :]).min(axis=1).max() < 1e-4


def test_dose_comes_from_the_link_and_bad_values_fall_back(env):
    grid = _grid(env, TRAINED_RUN)
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, c="0.5", mode="R")  # an old link's mode is ignored
    _ok(at)
    assert "c = 0.50" in at.metric[0].label
    assert _metric(at, "erank") == f"{grid.loc[0.5, 'erank']:.3g}"
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, c="7")
    _ok(at)
    assert any("not in [0, 2]" in w.value for w in at.sidebar.warning)
    assert "c = 1.00" in at.metric[0].label


def test_surgery_overlays_runs_with_interpolated_readouts(env):
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, overlay=f"{TRAINED_RUN},{RANDOM_RUN}", c="0.6")
    _ok(at)
    traces = _charts(at)[0]["data"]
    names = " ".join(t.get("name", "") for t in traces)
    assert f"{RANDOM_RUN}: dose" in names and f"{TRAINED_RUN}: control A" in names
    assert "mode R" not in names and f"{RANDOM_RUN}: ordering band" in names
    markers = [t for t in traces if t.get("marker", {}).get("symbol") in ("diamond", "diamond-open")]
    assert {m["marker"]["symbol"] for m in markers} == {"diamond", "diamond-open"}  # live + interpolated


def test_surgery_says_when_a_run_lacks_the_stage(env):
    at = _app("pages/schur_surgery.py", run=BARE_RUN)
    _ok(at)
    assert any("lacks the **schur** stage" in w.value for w in at.warning)
    assert not at.get("plotly_chart")


def test_beta_slider_gives_the_live_skip_dose_and_follows_the_link(env):
    """β (URL key ``beta``) moves the readouts to the product of βI + R_l(c) and draws the stored
    skip curve nearest β; the dose-mode switch of older versions is gone."""
    store = RunStore(env / TRAINED_RUN)
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, layer="1", c="0.6", beta="0.3")
    _ok(at)
    assert not [r for r in at.sidebar.radio if "mode" in r.label.lower()]
    want = dose.dose_response(store, 0.6, layers=[], beta=0.3, surrogate="polar")
    assert _metric(at, "erank") == f"{want.erank:.3g}"
    assert _metric(at, "log10") == f"{want.log10_fro:.2f}"
    assert "β = 0.30" in at.metric[0].label
    names = " ".join(t.get("name", "") for t in _charts(at)[0]["data"])
    assert "skip dose βI + R(c), β = 0.5" in names
    sigma = _charts(at)[1]["data"][-1]["y"]
    np.testing.assert_allclose(sigma, dose.layer_sigma(store, 1, 0.6, 0.3, surrogate="polar"), rtol=1e-6)
    at.slider(key="_sel_beta").set_value(1.0).run()
    _ok(at)
    assert at.query_params["beta"] == "1.00"
    assert _metric(at, "log10") == f"{dose.dose_response(store, 0.6, layers=[], surrogate='polar').log10_fro:.2f}"
    assert "skip dose" not in " ".join(t.get("name", "") for t in _charts(at)[0]["data"])


def test_readouts_say_how_wide_the_ordering_band_is(env):
    df = RunStore(env / TRAINED_RUN).read_table("schur_dose")
    at = _app("pages/schur_surgery.py", run=TRAINED_RUN, c="0.25")
    _ok(at)
    lo, hi = dose.band_at(df, 0.25)["erank"]
    (cap,) = [c.value for c in at.caption if c.value.startswith("Ordering band at c = 0.25")]
    assert f"erank {lo:.3g}–{hi:.3g}" in cap and "4 random eigenvalue orders" in cap
    canon = _grid(env, TRAINED_RUN, "dose").loc[0.25, "erank"]
    assert f"{100 * (hi - lo) / canon:.1f} %" in cap
    assert any("descending |λ|, then ascending arg λ" in c.value for c in at.caption)


def test_runs_from_before_the_canonical_order_still_render(env, tmp_path, monkeypatch):
    """An older run (mode-R rows and factors, no beta, order draws or skip rows, no schur_order)
    renders with one caption saying that `--redo schur` adds the band."""
    root = tmp_path / "runs"
    shutil.copytree(env / TRAINED_RUN, root / "old")
    old = RunStore(root / "old")
    df = old.read_table("schur_dose")
    df = df[df["construction"].isin(["dose", "control_a", "control_b"])].drop(columns="beta")
    write_old_table(old, "schur_dose", pd.concat([df, df.assign(mode="R")], ignore_index=True))
    for name in ("schur_Q", "schur_T"):
        shutil.copyfile(old.array_path(name), root / "old" / f"schur_R_{name[-1]}.npy")
    m = old.manifest()
    m.pop("schur_order", None)
    m["run_id"] = "old"
    old.write_manifest(m)
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    for beta in ("1", "0.5"):
        at = _app("pages/schur_surgery.py", run="old", c="0.5", beta=beta)
        _ok(at)
        redo = [c.value for c in at.caption if "--redo schur" in c.value]
        assert len(redo) == 1 and "ordering band" in redo[0]
        assert not any(c.value.startswith("Ordering band") for c in at.caption)
        names = " ".join(t.get("name", "") for t in _charts(at)[0]["data"])
        assert "ordering band" not in names and "mode R" not in names
        assert any("eigenvalue order: LAPACK's" in c.value for c in at.caption)
