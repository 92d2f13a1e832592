"""The Compare page and the Runs page's headline cards and regime tables, under AppTest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from resdyn.core import nulls, queries, regimes
from resdyn.core.store import RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.app.apptools import open_page
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN
from tests.figtools import decode

DEEP = "synthetic-deep"
L = SYNTHETIC_SIZES["n_layers"]


@pytest.fixture(scope="module")
def runs_root(synthetic_runs_dir, tmp_path_factory) -> Path:
    """The shared runs, a deeper run (L = 6), a partial run; the trained run gets a cumulative table."""
    root = tmp_path_factory.mktemp("compare") / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    make_synthetic_run(root, DEEP, n_layers=6, d=16, n_samples=8, seed=3)
    make_synthetic_run(root, "half-done", n_layers=3, d=16, n_samples=4, status="partial")
    RunStore(root / TRAINED_RUN).write_table("cumulative", pd.DataFrame(
        {"layer": np.arange(L), "erank": [5.0, 9.0, 14.0, 30.0], "log10_fro": np.zeros(L)}))
    return root


def _page(page: str, root: Path, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    at = open_page(page, **params)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _traces(at: AppTest) -> list[dict]:
    (chart,) = at.get("plotly_chart")
    return [t for t in json.loads(chart.proto.spec)["data"] if "baseline" not in t["name"]]


def _layers(root: Path, run: str, op: str) -> pd.DataFrame:
    lay = queries.layers(run, root=root)
    return lay[lay["operator"] == op].sort_values("layer")


def test_overlay_of_runs_with_different_depths(runs_root, monkeypatch):
    at = _page("pages/compare.py", runs_root, monkeypatch, runs=f"{TRAINED_RUN},{DEEP}", profile="layers:henrici",
               op="R")
    traces = _traces(at)
    assert [t["name"] for t in traces] == [f"{TRAINED_RUN} (L = {L})", f"{DEEP} (L = 6)"]
    np.testing.assert_allclose(decode(traces[1]["x"]), np.arange(6) / 5)  # depth normalised to [0, 1]
    np.testing.assert_allclose(decode(traces[1]["y"]), _layers(runs_root, DEEP, "R")["henrici"])
    # The table under the plot: the paper-split regime means of each run.
    table = at.dataframe[0].value.set_index("run")
    expected = regimes.regime_means(_layers(runs_root, DEEP, "R")["henrici"].to_numpy(), regimes.paper_split(6))
    assert table.loc[DEEP, "mid"] == pytest.approx(expected["mid"])
    # Forcing the layer axis keeps block indices.
    at.selectbox(key="_sel_depth").set_value("layer").run()
    assert at.query_params["depth"] == "layer"
    np.testing.assert_allclose(decode(_traces(at)[1]["x"]), np.arange(6))


def test_cumulative_profile_and_runs_without_it(runs_root, monkeypatch):
    at = _page("pages/compare.py", runs_root, monkeypatch, runs=f"{TRAINED_RUN},{RANDOM_RUN}",
               profile="cumulative:erank")
    traces = _traces(at)
    assert [t["name"] for t in traces] == [f"{TRAINED_RUN} (L = {L})"]
    np.testing.assert_allclose(decode(traces[0]["y"]), [5.0, 9.0, 14.0, 30.0])
    assert any(RANDOM_RUN in w.value and "cumulative" in w.value for w in at.warning)
    assert at.sidebar.toggle(key="_log_cumulative:erank").value is True  # erank spans decades: log axis


def test_bad_link_values_fall_back(runs_root, monkeypatch):
    at = _page("pages/compare.py", runs_root, monkeypatch, runs=f"nope,{DEEP}", profile="bogus", depth="sideways")
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "'nope'" in warnings and "'bogus'" in warnings and "'sideways'" in warnings
    assert at.query_params["runs"] == DEEP
    assert at.query_params["profile"] == "layers:self_alignment" and at.query_params["depth"] == "auto"
    np.testing.assert_allclose(decode(_traces(at)[0]["y"]), _layers(runs_root, DEEP, "J")["self_alignment"])
    at = _page("pages/compare.py", runs_root, monkeypatch, runs="nope")
    assert "Choose one or more runs" in at.info[0].value  # the link's only run was unknown


def test_default_runs_follow_the_run_of_the_other_pages_and_partial_runs_say_so(runs_root, monkeypatch):
    at = _page("pages/compare.py", runs_root, monkeypatch, run="half-done")
    assert at.sidebar.multiselect[0].value[0] == "half-done"
    banner = " ".join(w.value for w in at.warning)
    assert "`half-done` is partial" in banner and "missing stages: spectra" in banner
    assert {t["name"].split(" ")[0] for t in _traces(at)} >= {TRAINED_RUN}  # the others still draw


def test_default_runs_leave_out_the_extra_seeds_of_an_ensemble(synthetic_runs_dir, tmp_path, monkeypatch):
    """Several random-init seeds of a model (the demo's twin ensemble): the Compare page opens on
    the run and the lowest seed, the twin the headline cards pick; the other seeds can be chosen."""
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    make_synthetic_run(root, f"{RANDOM_RUN}-seed2", init="random", seed=2, **SYNTHETIC_SIZES)
    at = _page("pages/compare.py", root, monkeypatch, run=TRAINED_RUN)
    assert at.sidebar.multiselect[0].value == [TRAINED_RUN, RANDOM_RUN]
    assert f"{RANDOM_RUN}-seed2" in at.sidebar.multiselect[0].options


def test_runs_page_cards_and_regime_tables(runs_root, monkeypatch):
    at = _page("pages/runs.py", runs_root, monkeypatch, run=DEEP)
    metrics = [(m.label, m.value) for m in at.metric]
    # One card of six numbers per run, runs in id order; then the chosen run's five facts.
    cards = [dict(metrics[i:i + 6]) for i in range(0, 24, 6)]
    half, deep, random_, trained = cards
    assert {k: half[k] for k in ("complex-pair fraction", "erank(P_0)", "self-alignment range",
                                 "FDR-significant layers")} == dict.fromkeys(("complex-pair fraction", "erank(P_0)",
                                                                               "self-alignment range",
                                                                               "FDR-significant layers"), "—")
    # The sample cards come from the activations stage, which even the partial run has.
    assert half["distinct last tokens"] == "4 / 4" and half["smallest participation ratio"] != "—"
    assert trained["erank(P_0)"] == "5" and deep["erank(P_0)"] == "—"
    j = _layers(runs_root, DEEP, "J")
    assert deep["complex-pair fraction"] == f"{j['frac_complex'].mean():.1%}"
    assert any("erank(P_0) ← `cumulative`" in c.value for c in at.caption)
    # Under each number of the trained run's card: its random-init twin's value and the null.
    captions = [c.value for c in at.caption]
    tj = _layers(runs_root, RANDOM_RUN, "J")
    d = SYNTHETIC_SIZES["d"]
    assert f"init twin {tj['frac_complex'].mean():.1%} · null {nulls.ginibre_complex_fraction(d):.1%}" in captions
    assert f"init twin — · null ≤ {d}" in captions  # the twin has no cumulative table
    assert f"Init twin: `{RANDOM_RUN}` (same model and shape, random weights)." in captions
    # Regime tables of the chosen run: the paper's split and the change-point split.
    lay = queries.layers(DEEP, root=runs_root)  # with the per-sample profiles, as the page reads it
    split = regimes.paper_split(6)
    paper = at.dataframe[1].value.set_index("quantity")
    assert list(paper.columns) == list(split.labels().values())
    expected = regimes.regime_table(lay, split).set_index("quantity")
    np.testing.assert_allclose(paper.to_numpy(float), expected.to_numpy(float))
    sa = regimes.profile(lay, "self_alignment", "J", 6)
    data = at.dataframe[2].value
    assert list(data.columns)[1:] == list(regimes.changepoint_split(sa).labels().values())
    # Table 2 across runs (paper split), with the partial run left out.
    t2 = at.dataframe[3].value
    assert sorted(t2["run"]) == sorted([DEEP, RANDOM_RUN, TRAINED_RUN])
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["layout"]["title"]["text"].startswith("self-alignment of J̄: depth regimes")


def test_complex_fraction_overlay_has_each_runs_ginibre_line(runs_root, monkeypatch):
    at = _page("pages/compare.py", runs_root, monkeypatch, runs=f"{TRAINED_RUN},{DEEP}", profile="layers:frac_complex")
    (chart,) = at.get("plotly_chart")
    base = [t for t in json.loads(chart.proto.spec)["data"] if "baseline" in t["name"]]
    assert len(base) == 2
    for t in base:
        assert decode(t["y"]) == pytest.approx([nulls.ginibre_complex_fraction(16 if DEEP in t["name"] else 32)] * 2)
