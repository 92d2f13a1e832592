"""Depth regimes: the paper's fixed split, the least-squares change points, regime means, headlines."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest

from resdyn.core import regimes
from resdyn.core.store import RunStore
from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN


def test_paper_split_is_table_2():
    s32 = regimes.paper_split(32)
    assert s32.breaks == (5, 20)
    assert s32.labels() == {"early": "early (0–4)", "mid": "mid (5–19)", "late": "late (20–31)"}
    assert regimes.paper_split(42).breaks == (8, 28)  # Gemma's 42 layers
    # Other depths: the 32-layer split scaled, rounding half up (5·16/32 = 2.5 -> 3).
    assert regimes.paper_split(16).breaks == (3, 10)
    assert regimes.paper_split(30).breaks == (5, 19)  # SmolLM2: 4.69 -> 5, 18.75 -> 19
    for n in range(3, 80):
        r = regimes.paper_split(n).ranges()
        assert sorted(itertools.chain(*r.values())) == list(range(n))  # a partition of the layers
        assert all(len(v) >= 1 for v in r.values())


def test_fewer_than_three_layers_cannot_be_split():
    with pytest.raises(ValueError):
        regimes.paper_split(2)
    with pytest.raises(ValueError):
        regimes.changepoint_split(np.zeros(2))


def test_segment_costs_by_hand():
    y = np.array([0.0, 0.0, 1.0, 1.0, 5.0])
    c = regimes.segment_costs(y)
    assert c[2, 4] == pytest.approx(0.0)
    # [0] | [0, 1] | [1, 5]: 0 + 0.5 + 8
    assert c[1, 3] == pytest.approx(8.5)
    assert np.isinf(c[0, 3]) and np.isinf(c[3, 3])  # empty segments are not allowed
    assert np.isinf(regimes.segment_costs(y, min_size=2)[1, 3])


def _brute_force(y: np.ndarray, min_size: int) -> tuple[tuple[int, int], float]:
    best, arg = np.inf, None
    n = len(y)
    for b1 in range(min_size, n + 1):
        for b2 in range(b1 + min_size, n - min_size + 1):
            cost = sum(((seg - seg.mean()) ** 2).sum() for seg in (y[:b1], y[b1:b2], y[b2:]))
            if cost < best - 1e-12:
                best, arg = cost, (b1, b2)
    return arg, best


@pytest.mark.parametrize("n,min_size", [(3, 1), (5, 1), (9, 2), (20, 1), (20, 3), (32, 3)])
def test_changepoints_equal_brute_force(n, min_size):
    rng = np.random.default_rng(n * 10 + min_size)
    for _ in range(5):
        y = rng.standard_normal(n).cumsum()
        split = regimes.changepoint_split(y, min_size=min_size)
        arg, best = _brute_force(y, min_size)
        assert split.breaks == arg
        assert regimes.segment_costs(y, min_size)[arg] == pytest.approx(best)


def test_changepoints_recover_planted_regimes():
    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(7, 0.05), np.full(10, 0.4), np.full(15, 0.85)]) + 0.01 * rng.standard_normal(32)
    assert regimes.changepoint_split(y).breaks == (7, 17)
    y[10] = np.nan  # a missing layer inside a regime does not move the breaks
    assert regimes.changepoint_split(y).breaks == (7, 17)


def _layers(n: int, **columns) -> pd.DataFrame:
    frames = []
    for op in ("J", "R"):
        frames.append(pd.DataFrame({"layer": np.arange(n), "operator": op,
                                    **{k: (v if op == "J" else v + 100.0) for k, v in columns.items()}}))
    return pd.concat(frames, ignore_index=True)


def test_regime_table_means_and_geometric_kappa():
    n = 32
    lay = _layers(n, self_alignment=np.arange(n, dtype=float), kappa_median=10.0 ** np.arange(n))
    t = regimes.regime_table(lay, regimes.paper_split(n)).set_index("quantity")
    sa = t.loc["self-alignment of J̄"]
    assert (sa["early"], sa["mid"], sa["late"]) == pytest.approx((2.0, 12.0, 25.5))
    sa_r = t.loc["self-alignment of R = J̄ − I"]  # the R rows, not the J rows
    assert sa_r["early"] == pytest.approx(102.0)
    kappa = t.loc["κ, median over samples (geometric mean)"]
    assert kappa["early"] == pytest.approx(10.0 ** 2) and kappa["late"] == pytest.approx(10.0 ** 25.5)
    assert "Henrici δ of J̄" not in t.index  # columns the table lacks are left out
    extra = regimes.regime_table(lay, regimes.paper_split(n), {"erank(P_l)": np.exp(np.arange(n))})
    assert extra.set_index("quantity").loc["erank(P_l)", "mid"] == pytest.approx(np.exp(12.0))


def test_self_alignment_table_both_splits():
    n = 32
    step = np.concatenate([np.full(8, 0.1), np.full(12, 0.5), np.full(12, 0.9)])
    tables = {"ramp": _layers(n, self_alignment=np.arange(n) / 31), "step": _layers(n, self_alignment=step)}
    paper = regimes.self_alignment_table(tables, "paper").set_index("run")
    assert paper.loc["ramp", ["early", "mid", "late"]].tolist() == pytest.approx([2 / 31, 12 / 31, 25.5 / 31])
    assert paper.loc["ramp", "min_layer"] == 0 and paper.loc["ramp", "split"] == "5, 20"
    data = regimes.self_alignment_table(tables, "changepoint").set_index("run")
    assert data.loc["step", "split"] == "8, 20"
    assert data.loc["step", ["early", "mid", "late"]].tolist() == pytest.approx([0.1, 0.5, 0.9])


def test_headline_of_a_run_and_the_stages_it_lacks(synthetic_runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    store = RunStore(root / TRAINED_RUN)
    lay = store.read_table("layers")
    j = lay[lay["operator"] == "J"]
    h = {x.label: x for x in regimes.headline(store)}
    assert h["complex-pair fraction"].value == f"{j['frac_complex'].mean():.1%}"
    assert h["self-alignment range"].value == f"{j['self_alignment'].min():.2f}–{j['self_alignment'].max():.2f}"
    assert (h["erank(P_0)"].value, h["erank(P_0)"].stage) == (None, "cumulative")
    assert (h["FDR-significant layers"].value, h["FDR-significant layers"].stage) == (None, "topology_coupling")

    n = SYNTHETIC_SIZES["n_layers"]
    store.write_table("cumulative", pd.DataFrame({"layer": np.arange(n), "erank": [6.7, 20.0, 80.0, 400.0],
                                                  "log10_fro": np.zeros(n)}))
    store.write_table("coupling", pd.DataFrame({
        "layer": np.tile(np.arange(n), 2), "method": ["infomap"] * n + ["cpm"] * n,
        "cohens_d": [0.3, -0.2, 0.1, 0.5, 0.3, -0.2, 0.1, 0.5],
        "fdr_significant": [True, True, True, True, True, True, False, False]}))
    h = {x.label: x for x in regimes.headline(store)}
    assert h["erank(P_0)"].value == "6.7"
    assert "Exact products" in h["erank(P_0)"].help  # the synthetic manifest records cumulative_rank = d
    assert h["FDR-significant layers"].value == "2 / 4"  # the cpm rows, not infomap's 4
    assert "1 with d > 0, 1 with d < 0" in h["FDR-significant layers"].help
