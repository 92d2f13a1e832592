"""The mesoscale nulls and the boundary tails of METHODS §8 on planted structure (no torch, no Leiden)."""

from __future__ import annotations

import numpy as np
import pytest

from resdyn.core import topology_coupling as TC

D, M = 240, 8  # units, planted communities


def _labels(seed: int) -> np.ndarray:
    """(D,) labels 0..M−1 of equal-sized communities, in random unit order."""
    return np.random.default_rng(seed).permutation(np.arange(D) % M)


def _z(jac, lab_out, lab_in, null, operator, seed=0):
    return TC.mesoscale_test(jac, lab_out, lab_in, rng=np.random.default_rng(seed), null=null, operator=operator)["z"]


def test_skip_connection_fools_only_the_independent_null():
    # J = I + R, R i.i.d. Gaussian (no community structure), one partition shared by both sides
    # (adjacent snapshots share most communities). The identity puts n_c on every diagonal block
    # of K; the independent null shuffles that overlap away, the joint null keeps it.
    rng = np.random.default_rng(1)
    lab = _labels(2)
    r = rng.standard_normal((D, D)) / np.sqrt(D)
    jac = np.eye(D) + r
    z_ind_j = _z(jac, lab, lab, "independent", "J")
    z_joint_j = _z(jac, lab, lab, "joint", "J")
    assert z_ind_j > 20
    assert abs(z_joint_j) < 3
    for null in TC.NULLS:  # R has no structure: neither null finds any
        assert abs(_z(jac, lab, lab, null, "R")) < 3
    # J = I alone: far above the independent null; the joint null has no spread at all (every
    # draw keeps the overlap), so z is undefined rather than a division by rounding noise.
    assert _z(np.eye(D), lab, lab, "independent", "J") > 50
    joint_eye = TC.mesoscale_test(np.eye(D), lab, lab, rng=np.random.default_rng(0), null="joint")
    assert np.isnan(joint_eye["z"]) and joint_eye["null_std"] <= 1e-9 * joint_eye["null_mean"]
    assert joint_eye["variance_captured"] == pytest.approx(joint_eye["null_mean"], rel=1e-12)


def test_planted_blocks_in_r_beat_both_nulls():
    # R constant on (output community, input community) blocks plus noise: real coupling.
    rng = np.random.default_rng(3)
    lab_in, lab_out = _labels(4), _labels(5)
    blocks = rng.standard_normal((M, M))
    r = 0.01 * blocks[np.ix_(lab_out, lab_in)] + rng.standard_normal((D, D)) / np.sqrt(D)
    jac = np.eye(D) + r
    for null in TC.NULLS:
        assert _z(jac, lab_out, lab_in, null, "R") > 3
        assert _z(jac, lab_out, lab_in, null, "J") > 3
    # and with one partition on both sides, where the skip also inflates J's independent z
    assert _z(jac, lab_in, lab_in, "joint", "R") > 3


def test_r_test_equals_the_j_test_of_j_minus_identity():
    # S_R = S_J − N (the overlap counts): the same draws scored on J − I directly give the same numbers.
    rng = np.random.default_rng(6)
    lab_in, lab_out = _labels(7), _labels_uneven(8)
    jac = np.eye(D) + rng.standard_normal((D, D)) / np.sqrt(D)
    for null in TC.NULLS:
        # Unstratified: the norm strata are of R, which is not the same matrix in the two calls.
        via_r = TC.mesoscale_null(jac, lab_out, lab_in, null=null, n_null=30, rng=np.random.default_rng(9),
                                  n_strata=1)["R"]
        direct = TC.mesoscale_null(jac - np.eye(D), lab_out, lab_in, null=null, n_null=30,
                                   rng=np.random.default_rng(9), n_strata=1)["J"]
        for key, value in direct.items():
            assert via_r[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert via_r["variance_captured"] == pytest.approx(TC.variance_captured(jac - np.eye(D), lab_out, lab_in))


def _labels_uneven(seed: int) -> np.ndarray:
    """(D,) labels of unequal communities (sizes 5, 10, ..., in random order), every label used."""
    sizes = np.arange(1, 9) * 5
    lab = np.repeat(np.arange(len(sizes)), sizes)
    lab = np.concatenate([lab, np.full(D - len(lab), len(sizes))])
    return np.random.default_rng(seed).permutation(lab)


def test_mesoscale_rows_cover_both_nulls_and_operators():
    rng = np.random.default_rng(10)
    lab = _labels(11)
    rows = TC.mesoscale_rows(np.eye(D) + rng.standard_normal((D, D)) / np.sqrt(D), lab, lab, seed=[0, 1], n_null=10)
    assert [(r["null"], r["operator"]) for r in rows] == [(n, o) for n in TC.NULLS for o in TC.OPERATORS]
    again = TC.mesoscale_rows(np.eye(D) + np.random.default_rng(10).standard_normal((D, D)) / np.sqrt(D), lab, lab,
                              seed=[0, 1], n_null=10)
    assert rows == again


# -- boundary tails ---------------------------------------------------------------------------------

def test_tails_hold_exactly_a_tenth_with_ties_broken_by_the_seed():
    d = 205  # ⌊0.1 d⌋ = 20
    part = np.full(d, 0.5)
    part[:60] = 0.0   # 60 units tied at the bottom value
    part[60:130] = 1.0  # 70 tied at the top value
    part[130:140] = np.linspace(0.6, 0.9, 10)
    top, bottom = TC.participation_tails(part, seed=3)
    assert top.sum() == 20 and bottom.sum() == 20 and not (top & bottom).any()
    assert (part[top] == 1.0).all() and (part[bottom] == 0.0).all()
    again = TC.participation_tails(part, seed=3)
    assert np.array_equal(again[0], top) and np.array_equal(again[1], bottom)
    other = TC.participation_tails(part, seed=4)
    assert not np.array_equal(other[0], top)  # another seed picks other tied units
    # Strictly higher values always get in before tied ones: 10 units above a tie at 0.5.
    part2 = np.full(d, 0.5)
    part2[:10] = np.linspace(0.6, 0.9, 10)
    top2, bottom2 = TC.participation_tails(part2, seed=0)
    assert top2[:10].all() and top2.sum() == 20 and bottom2.sum() == 20


def test_tails_leave_out_nan_and_count_the_finite_units():
    part = np.arange(100, dtype=float)
    part[::10] = np.nan  # 90 finite → 9 per tail
    top, bottom = TC.participation_tails(part)
    assert top.sum() == 9 and bottom.sum() == 9
    assert not (top | bottom)[::10].any()
    assert set(np.flatnonzero(top)) == set(np.argsort(np.nan_to_num(part, nan=-1))[-9:])


def test_boundary_test_uses_the_seeded_tails():
    rng = np.random.default_rng(12)
    d = 150
    part = np.round(rng.uniform(size=d), 1)  # heavy ties
    norms = rng.uniform(1, 2, d)
    out = TC.boundary_test(part, norms, n_perm=200, rng=np.random.default_rng(0), seed=5)
    assert out["n_top"] == out["n_bottom"] == 15
    top, bottom = TC.participation_tails(part, seed=5)
    assert out["cohens_d"] == pytest.approx((norms[top].mean() - norms[bottom].mean()) / norms.std(ddof=1))
    out_all_tied = TC.boundary_test(np.zeros(d), norms)
    assert np.isnan(out_all_tied["cohens_d"])


def test_batched_block_sums_equal_one_draw_at_a_time():
    rng = np.random.default_rng(12)
    d, m_out, m_in = 37, 5, 4
    jac = rng.standard_normal((d, d))
    lo, li = rng.integers(0, m_out, (6, d)), rng.integers(0, m_in, (6, d))
    got = TC._batched_block_sums(np.ascontiguousarray(jac.T), lo, li, m_out, m_in)
    over = TC._batched_overlap(lo, li, m_out, m_in)
    for b in range(6):
        want = np.zeros((m_out, m_in))
        np.add.at(want, (lo[b][:, None], li[b][None, :]), jac)
        np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(over[b], TC._overlap(lo[b], li[b], m_out, m_in))


def test_relabellings_stay_within_norm_strata_and_singletons():
    rng = np.random.default_rng(13)
    d = 50
    r = rng.standard_normal((d, d))
    heavy = np.array([3, 17, 41])
    r[heavy] *= 30.0
    strata = TC.norm_strata(r, 10)
    assert np.bincount(strata).tolist() == [5] * 10
    assert set(np.flatnonzero(strata == 9)) >= set(heavy)  # row + column norm: the heavy rows rank top
    lab = np.arange(d) % 6
    lab[heavy] = [6, 7, 8]  # singletons
    lo, li = TC._null_label_draws(lab, lab, "joint", 200, rng, strata)
    for b in range(200):
        assert sorted(lo[b]) == sorted(lab)  # a permutation of the labels
    singles = np.isin(lab, [6, 7, 8])
    assert np.isin(lo[:, singles], [6, 7, 8]).all() and not np.isin(lo[:, ~singles], [6, 7, 8]).any()
    # Labels move, but only among units of one stratum: each stratum keeps its multiset of labels.
    assert (lo != lab).mean() > 0.5
    for s in range(10):
        units = strata == s
        assert all(sorted(lo[b, units]) == sorted(lab[units]) for b in range(200))
    with pytest.raises(ValueError):
        TC._null_label_draws(lab, lab, "shuffled", 1, rng, strata)
