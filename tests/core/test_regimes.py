"""Depth regimes: the paper's fixed split, the least-squares change points, regime means."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from resdyn.core import regimes


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


def test_regime_summary_splits_a_planted_step_and_adds_the_erank_row():
    """The Runs page's and the report's regime block: the change points of a planted three-level
    self-alignment step, both tables with labelled regime columns, erank(P_l) geometric means."""
    n = 32
    step = np.concatenate([np.full(8, 0.1), np.full(12, 0.5), np.full(12, 0.9)])
    lay = _layers(n, self_alignment=step)
    cum = pd.DataFrame({"layer": np.arange(n), "erank": np.exp(np.arange(n, dtype=float))})
    reg = regimes.regime_summary(lay, n, cum)
    assert [s.method for s in reg.splits] == ["paper", "changepoint"]
    assert reg.splits[1].breaks == (8, 20)
    np.testing.assert_array_equal(reg.profile, step)
    data = reg.tables[1].set_index("quantity")
    assert list(data.columns) == ["early (0–7)", "mid (8–19)", "late (20–31)"]
    assert data.loc["self-alignment of J̄"].tolist() == pytest.approx([0.1, 0.5, 0.9])
    # Geometric mean of e^l over the paper's mid regime 5..19 is e^12.
    assert reg.tables[0].set_index("quantity").loc[regimes.ERANK_LABEL, "mid (5–19)"] == pytest.approx(np.exp(12.0))
    assert regimes.ERANK_LABEL not in regimes.regime_summary(lay, n).tables[0]["quantity"].tolist()
    assert regimes.regime_summary(_layers(2, self_alignment=np.ones(2)), 2) is None


def test_profile_regimes_one_row_per_run():
    ramp = pd.DataFrame({"layer": np.arange(32), "value": np.arange(32, dtype=float)})
    short = pd.DataFrame({"layer": [0, 1], "value": [3.0, 1.0]})
    t = regimes.profile_regimes({"ramp": ramp, "short": short}, {"ramp": 32, "short": 2}).set_index("run")
    assert t.loc["ramp", ["min", "max", "early", "mid", "late"]].tolist() == pytest.approx([0, 31, 2, 12, 25.5])
    assert t.loc["short", ["L", "min", "max"]].tolist() == [2, 1.0, 3.0]
    assert t.loc["short", ["early", "mid", "late"]].isna().all()  # fewer than 3 layers: no regimes
    geo = regimes.profile_regimes({"e": ramp.assign(value=np.exp(ramp["value"]))}, {"e": 32}, log=True)
    assert geo.loc[0, "mid"] == pytest.approx(np.exp(12.0))
