"""Profiles of several runs on one axis, and a profile with its regimes (figures/compare.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core import regimes
from resdyn.core.figures import compare
from resdyn.core.figures.common import PALETTE
from tests.figtools import plain


def _frame(values) -> pd.DataFrame:
    return pd.DataFrame({"layer": np.arange(len(values)), "value": np.asarray(values, float)})


def test_depth_is_normalised_when_depths_differ():
    profiles = {"deep": _frame(np.linspace(0, 1, 12)), "shallow": _frame([0.1, 0.2, 0.3, 0.4])}
    d = plain(compare.profile_overlay(profiles, {"deep": 12, "shallow": 4}, label="x"))
    lines = [t for t in d["data"] if t["name"].startswith(("deep", "shallow"))]
    np.testing.assert_allclose(lines[0]["x"], np.arange(12) / 11)
    np.testing.assert_allclose(lines[1]["x"], np.arange(4) / 3)
    np.testing.assert_allclose(lines[1]["y"], [0.1, 0.2, 0.3, 0.4])
    assert lines[0]["name"] == "deep (L = 12)"
    assert "relative depth" in d["layout"]["xaxis"]["title"]["text"]
    # Same depth: layer indices, unless asked otherwise.
    same = plain(compare.profile_overlay({"a": _frame([1, 2, 3]), "b": _frame([3, 2, 1])}, {"a": 3, "b": 3}, label="x"))
    np.testing.assert_allclose(same["data"][0]["x"], [0, 1, 2])
    forced = plain(compare.profile_overlay({"a": _frame([1, 2, 3])}, {"a": 3}, label="x", normalise=True))
    np.testing.assert_allclose(forced["data"][0]["x"], [0, 0.5, 1])


def test_runs_keep_their_colours_and_baselines():
    ids = [f"r{i}" for i in range(10)]
    profiles = {r: _frame([i, i + 1.0]) for i, r in enumerate(ids)}
    d = plain(compare.profile_overlay(profiles, {r: 2 for r in ids}, label="x", baselines={"r1": 0.25}))
    lines = {t["name"].split(" ")[0]: t for t in d["data"] if "baseline" not in t["name"]}
    assert lines["r0"]["line"]["color"] == PALETTE[0] and lines["r1"]["line"]["color"] == PALETTE[1]
    # After the 8 colours, dashes tell the runs apart.
    assert lines["r8"]["line"]["color"] == PALETTE[0] and lines["r8"]["line"]["dash"] == "dash"
    base = [t for t in d["data"] if "baseline" in t["name"]]
    assert len(base) == 1 and base[0]["y"] == pytest.approx([0.25, 0.25])
    assert base[0]["line"]["color"] == PALETTE[1]


def test_empty_overlay_says_why():
    d = plain(compare.profile_overlay({"a": None}, {"a": 3}, label="x"))
    assert "none of the chosen runs" in d["layout"]["annotations"][0]["text"]


def test_profile_frame_picks_one_operator():
    t = pd.DataFrame({"layer": [1, 0, 0, 1], "operator": ["J", "J", "R", "R"], "henrici": [0.5, 0.9, 0.1, 0.2]})
    f = compare.profile_frame(t, "henrici", "R")
    assert f["layer"].tolist() == [0, 1] and f["value"].tolist() == [0.1, 0.2]


def test_regime_profile_draws_each_splits_means():
    y = np.concatenate([np.full(5, 0.1), np.full(15, 0.4), np.full(12, 0.8)])
    y[3] = 0.3
    splits = [regimes.paper_split(32), regimes.changepoint_split(y)]
    d = plain(compare.regime_profile(y, splits, label="self-alignment", baseline=0.016))
    steps = [t for t in d["data"] if "breaks" in t["name"]]
    assert [t["name"].split(":")[0] for t in steps] == ["paper's fixed split", "change points (least squares)"]
    paper = [v for v in steps[0]["y"] if v is not None]
    assert paper == pytest.approx([np.mean(y[:5]), np.mean(y[:5]), 0.4, 0.4, 0.8, 0.8])
    xs = [v for v in steps[0]["x"] if v is not None]
    assert xs == [-0.5, 4.5, 4.5, 19.5, 19.5, 31.5]
    assert len(d["layout"]["shapes"]) == 4  # two break lines per split
