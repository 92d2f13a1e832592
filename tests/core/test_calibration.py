"""Calibration of every null on planted data (METHODS §12): at α = 0.05, a false-positive rate of at
most 0.08 over at least 200 structureless replicates and a power of at least 0.8 on a planted
effect. The checks and their planted data are ``resdyn.testing.calibration``; here they run small
and seeded (benchmarks/calibration.py runs them larger and prints the table)."""

from __future__ import annotations

import numpy as np
import pytest

from resdyn.testing import calibration as C

CHECKS = dict(C.CHECKS)


@pytest.mark.parametrize("name", [n for n, _ in C.CHECKS])
def test_null_is_calibrated_and_has_power(name):
    n_rep = 400 if name.startswith("mesoscale") else 200  # the mesoscale checks are cheap: more replicates
    res = CHECKS[name](n_rep, 0, False)
    assert res.replicates >= 200
    assert res.fpr <= C.MAX_FPR, f"{res.name}: false-positive rate {res.fpr:.3f} at α = {C.ALPHA}"
    assert res.power >= C.MIN_POWER, f"{res.name}: power {res.power:.3f} on {res.effect}"


def test_heavy_singletons_break_the_unstratified_null_only():
    # METHODS §8: heavy units that are singleton communities push the unstratified joint/R test to
    # reject structureless data almost always; the stratified relabelling (above) does not.
    old = C.mesoscale_heavy_unstratified(60, 0, False)
    assert old.fpr > 0.5


def test_heavy_independent_units_score_like_their_rotation_null():
    # The audit's case (METHODS §7): 5 of the units with 30x the variance, otherwise independent.
    # The data's CPM quality and correlation PR sit inside their null; planted blocks sit far above.
    from resdyn.core.communities import community_null_test

    rng = np.random.default_rng(3)
    x = C._heavy_independent(rng, 128, 48)
    res = community_null_test(x, rng=rng)
    assert res["null_participation_ratio"] == pytest.approx(res["participation_ratio"], rel=0.05)
    assert np.quantile(res["null_quality"], 0.05) <= res["quality"] <= np.quantile(res["null_quality"], 0.95)
    y = C._factor_blocks(rng, 128, 48, 4, 1.5)
    res = community_null_test(y, rng=rng)
    assert res["null_participation_ratio"] == pytest.approx(res["participation_ratio"], rel=0.1)
    assert res["quality"] > res["null_quality"].max() + 0.1 and res["p_empirical"] == 1 / 20


def test_run_checks_builds_the_table():
    table = C.run_checks([("boundary", C.boundary)], 8, 1, False)
    assert list(table.columns) == ["test", "replicates", "fpr", "power", "power_replicates", "effect", "seconds"]
    assert len(table) == 1 and table["seconds"].iloc[0] >= 0
