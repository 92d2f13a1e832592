"""How many samples a run really has (resdyn.core.samples): distinct states, rank, participation
ratio, the degenerate-sample rule, --position random and the Gaussian null, on planted clouds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core import samples


def _cloud(rng, n: int, d: int, r: int, scale=1.0) -> np.ndarray:
    """n samples of r equal-variance directions in R^d (random axes) around a large offset."""
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return (rng.standard_normal((n, r)) * scale) @ q.T + 50.0 * rng.standard_normal(d)


def _factor_blocks(rng, n: int, d: int, r: int, noise: float = 0.0) -> np.ndarray:
    """n samples where the d units fall in r equal groups, each group copying one latent factor
    (plus independent noise): the correlation matrix is r all-ones blocks when noise = 0."""
    f = rng.standard_normal((n, r))
    f, _ = np.linalg.qr(f - f.mean(axis=0))  # centred, exactly uncorrelated factors
    x = f[:, np.arange(d) % r] * rng.uniform(0.5, 50.0, d)  # unequal unit scales: the PR ignores them
    return x + noise * rng.standard_normal((n, d)) + 50.0 * rng.standard_normal(d)


@pytest.mark.parametrize("r", [1, 3, 8, 20])
def test_participation_ratio_of_r_equal_factor_blocks_is_r(r):
    rng = np.random.default_rng(r)
    x = _factor_blocks(rng, 400, 120, r)
    st = samples.snapshot_stats(x)
    assert st["rank"] == r and st["pr_basis"] == "correlation"
    # C is r blocks of ones (eigenvalues d/r, r times) whatever the units' scales: PR = r.
    assert st["participation_ratio"] == pytest.approx(r, rel=1e-9)
    assert samples.participation_ratio(np.r_[np.ones(r), np.zeros(5)]) == pytest.approx(r, rel=1e-12)


def test_one_heavy_unit_does_not_make_a_rich_sample_degenerate():
    # METHODS §1: a covariance PR of a rich sample with one unit of 50x the spread collapses to
    # about 1.5; the correlation PR does not see the scale at all.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((128, 100))
    x[:, 7] *= 50.0
    cov_pr = samples.participation_ratio(samples.covariance_spectrum(x) ** 2)
    assert cov_pr < 2.0
    st = samples.snapshot_stats(x)
    assert st["participation_ratio"] > 30.0
    table = pd.DataFrame([{"snapshot": 0, **st}])
    assert samples.degenerate_snapshots(table, 128) == []
    # A sample of a few distinct states is degenerate, heavy unit or not.
    few = x[rng.integers(0, 3, 128)]
    st = samples.snapshot_stats(few)
    assert st["n_distinct"] == 3 and st["participation_ratio"] <= 2.0 + 1e-9
    assert samples.degenerate_snapshots(pd.DataFrame([{"snapshot": 0, **st}]), 128) == [0]
    # A richer cloud that still spans only two directions is degenerate by its PR alone.
    two = _factor_blocks(rng, 128, 100, 2, noise=0.01)
    st = samples.snapshot_stats(two)
    assert st["n_distinct"] == 128 and st["participation_ratio"] < samples.DEGENERATE_PR
    assert samples.degenerate_snapshots(pd.DataFrame([{"snapshot": 0, **st}]), 128) == [0]


def test_participation_ratio_weighs_unequal_directions():
    # Eigenvalues 4, 1: (5)² / (16 + 1) = 25 / 17.
    assert samples.participation_ratio([4.0, 1.0]) == pytest.approx(25 / 17, rel=1e-12)
    assert samples.participation_ratio([0.0, 0.0]) == 0.0


def test_repeated_tokens_give_that_many_distinct_states_and_rank_one_less():
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((8, 40)).astype(np.float32)
    x = tokens[rng.integers(0, 8, 128)]  # 128 samples, 8 token embeddings (snapshot 0 of the audit)
    st = samples.snapshot_stats(x)
    assert st["n_distinct"] == len(np.unique(x, axis=0)) == 8
    assert st["rank"] == 7  # 8 points span a 7-dimensional affine hull
    assert 1.0 <= st["participation_ratio"] <= 7.0


def test_distinct_states_merge_within_the_tolerance_only():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5, 30)) * 10.0
    scale = np.linalg.norm(base, axis=1).max()
    near = base + 0.1 * samples.DISTINCT_RTOL * scale * rng.standard_normal((5, 30)) / np.sqrt(30)
    far = base + 10 * samples.DISTINCT_RTOL * scale * np.eye(30)[:5]
    assert samples.distinct_states(np.vstack([base, near])) == 5  # float32-level noise: the same states
    assert samples.distinct_states(np.vstack([base, far])) == 10
    assert samples.distinct_states(np.zeros((4, 3))) == 1
    st = samples.snapshot_stats(np.ones((6, 5)))
    assert st == {"n_distinct": 1, "rank": 0, "participation_ratio": 0.0, "pr_basis": "correlation"}


def test_rank_is_bounded_by_n_minus_one():
    x = np.random.default_rng(2).standard_normal((16, 100))
    st = samples.snapshot_stats(x)
    assert st["rank"] == 15 and st["n_distinct"] == 16


def test_snapshot_table_numbers_the_final_state_last():
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((12, 4, 10)).astype(np.float32)
    acts[:, 0, :] = acts[0, 0, :]  # every passage ends in the same token: one state at snapshot 0
    final = rng.standard_normal((12, 10)).astype(np.float32)
    t = samples.snapshot_table(acts, final)
    assert list(t.columns) == list(samples.COLUMNS) and list(t["snapshot"]) == [0, 1, 2, 3, 4]
    assert t["n_distinct"].tolist() == [1, 12, 12, 12, 12]
    assert samples.degenerate_snapshots(t, 12) == [0]
    assert samples.degenerate_layers(t, 12, 2) == [0]
    v = samples.summary_values(t, 12, np.zeros(12, int))
    assert v["samples.distinct_last_tokens"] == 1 and v["samples.min_participation_ratio"] == 0.0
    assert v["samples.degenerate_snapshots"] == 1
    assert np.isnan(samples.summary_values(t, 12, None)["samples.distinct_last_tokens"])


def test_degenerate_rule_thresholds():
    t = pd.DataFrame({"snapshot": [0, 1, 2, 3], "n_distinct": [12, 13, 100, 100],
                      "rank": [99] * 4, "participation_ratio": [10.0, 10.0, 2.99, 3.0]})
    # N = 128: 10 % is 12.8, so 12 distinct states are degenerate and 13 are not; PR 2.99 is, 3.0 is not.
    assert samples.degenerate_snapshots(t, 128) == [0, 2]


def test_random_positions_are_seeded_in_range_and_short_passages_use_the_last_token():
    n_tokens = np.array([3, 16, 17, 18, 40, 400] * 50)
    last = samples.choose_positions(n_tokens, "last")
    np.testing.assert_array_equal(last, n_tokens - 1)
    a = samples.choose_positions(n_tokens, "random", seed=0)
    np.testing.assert_array_equal(a, samples.choose_positions(n_tokens, "random", seed=0))
    b = samples.choose_positions(n_tokens, "random", seed=1)
    assert (a != b).any()
    long = n_tokens > samples.MIN_CONTEXT
    assert ((a[long] >= samples.MIN_CONTEXT) & (a[long] <= n_tokens[long] - 1)).all()
    np.testing.assert_array_equal(a[~long], n_tokens[~long] - 1)
    assert samples.short_passages(n_tokens) == 100
    assert (a[n_tokens == 17] == 16).all()  # one admissible position
    assert len(np.unique(a[n_tokens == 400])) > 30  # spread over the passage, not stuck at the end
    # A prefix of the corpus gets the same positions (one draw per passage, in order).
    np.testing.assert_array_equal(samples.choose_positions(n_tokens[:7], "random", 0), a[:7])
    with pytest.raises(ValueError):
        samples.choose_positions(n_tokens, "middle")


def test_rotation_null_keeps_the_correlation_spectrum_and_randomises_the_axes():
    rng = np.random.default_rng(4)
    x = _cloud(rng, 128, 200, 6, scale=3.0)
    x[:, :6] += 5.0 * rng.standard_normal((128, 1))  # a direction aligned with units 0..5
    x[:, 199] = 7.0  # a constant unit stays constant (0) in the null
    null = samples.rotation_null(x, np.random.default_rng(0))
    assert null.shape == x.shape and (null[:, 199] == 0).all()
    np.testing.assert_allclose(null[:, :199].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(null[:, :199].std(0), 1, rtol=1e-5)  # z-scored again
    sx, sn = samples.snapshot_stats(x), samples.snapshot_stats(null)
    assert sn["rank"] == sx["rank"] == 7
    # The samples' own Gram matrix, re-z-scored: the correlation PR moves by a few % only.
    assert sn["participation_ratio"] == pytest.approx(sx["participation_ratio"], rel=0.1)
    # Random axes: the real cloud's strongest direction sits on units 0..5, the null's anywhere.
    def top_mass(y):
        v = np.linalg.svd(y - y.mean(0), full_matrices=False)[2][0]
        return float((v[:6] ** 2).sum())

    assert top_mass(x) > 0.9 and top_mass(null) < 0.3
    np.testing.assert_array_equal(null, samples.rotation_null(x, np.random.default_rng(0)))
    draws = samples.rotation_nulls(x, np.random.default_rng(0), 2)
    np.testing.assert_array_equal(draws[0], null)
    assert not np.allclose(draws[1], null)


def test_rotation_null_matches_heavy_independent_units_where_a_covariance_null_does_not():
    # METHODS §7: 5 units of 30x the variance on independent data. A Gaussian with the covariance
    # spectrum has a correlation PR of a handful; the rotation keeps the data's.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((128, 150))
    x[:, :5] *= np.sqrt(30.0)
    pr = samples.correlation_participation_ratio(x)
    s = samples.covariance_spectrum(x)
    q, _ = np.linalg.qr(rng.standard_normal((150, len(s))))
    gauss = (rng.standard_normal((128, len(s))) * s / np.sqrt(127)) @ q.T
    assert samples.correlation_participation_ratio(gauss) < 0.5 * pr
    rot = samples.rotation_null(x, rng)
    assert samples.correlation_participation_ratio(rot) == pytest.approx(pr, rel=0.05)


def test_run_snapshot_table_is_stored_or_computed_on_read(tmp_path):
    from resdyn.testing.synthetic import make_synthetic_run

    store = make_synthetic_run(tmp_path, "r", n_layers=2, d=16, n_samples=8)
    stored, how = samples.run_snapshot_table(store)
    assert how == "stored" and len(stored) == 2 * 2 + 1
    store.table_path("snapshots").unlink()
    computed, how = samples.run_snapshot_table(store)
    assert how == "computed"
    pd.testing.assert_frame_equal(stored, computed)
    assert samples.run_snapshot_table(store, compute=False) == (None, "no activations")


def test_a_stored_covariance_pr_is_recomputed_on_read(tmp_path):
    from resdyn.testing.synthetic import make_synthetic_run

    store = make_synthetic_run(tmp_path, "r", n_layers=2, d=16, n_samples=8)
    current, _ = samples.run_snapshot_table(store)
    old = current.drop(columns="pr_basis").assign(participation_ratio=-1.0)  # an older run's table
    old.to_parquet(store.table_path("snapshots"), index=False)
    again, how = samples.run_snapshot_table(store)
    assert how == "stored, PR recomputed"
    pd.testing.assert_frame_equal(again, current)
    kept, how = samples.run_snapshot_table(store, compute=False)
    assert how == "stored" and (kept["pr_basis"] == "covariance").all() and (kept["participation_ratio"] == -1).all()
