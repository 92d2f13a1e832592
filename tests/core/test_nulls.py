"""Null baselines (resdyn.core.nulls): the real-Ginibre eigenvalue count and the BH null count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core import nulls
from tests.legacy import write_old_table


def _expected_real_by_sums(n: int) -> float:
    """E[#real] from Edelman–Kostlan–Shub's finite sums (independent of the ₂F₁ form):
    even n: √2 Σ_{k=0}^{n/2−1} (4k−1)!!/(4k)!!; odd n: 1 + √2 Σ_{k=1}^{(n−1)/2} (4k−3)!!/(4k−2)!!."""
    def ratio(m: int) -> float:  # (m−1)!!/m!! as a running product of (j−1)/j over j = m, m−2, ...
        out = 1.0
        for j in range(m, 0, -2):
            out *= (j - 1) / j if j > 1 else 1.0
        return out
    if n % 2 == 0:
        return float(np.sqrt(2) * sum(ratio(4 * k) if k else 1.0 for k in range(n // 2)))
    return float(1 + np.sqrt(2) * sum(ratio(4 * k - 2) for k in range(1, (n - 1) // 2 + 1)))


def test_exact_small_sizes():
    assert nulls.ginibre_expected_real(1) == pytest.approx(1.0, abs=1e-13)
    assert nulls.ginibre_expected_real(2) == pytest.approx(np.sqrt(2), abs=1e-13)
    assert nulls.ginibre_expected_real(3) == pytest.approx(1 + np.sqrt(2) / 2, abs=1e-13)
    assert nulls.ginibre_complex_fraction(1) == pytest.approx(0.0, abs=1e-13)


@pytest.mark.parametrize("n", [4, 5, 10, 11, 64, 101, 200])
def test_hypergeometric_form_matches_the_finite_sums(n):
    assert nulls.ginibre_expected_real(n) == pytest.approx(_expected_real_by_sums(n), rel=1e-12)


def test_monte_carlo_of_gaussian_matrices():
    d, n_mat = 50, 3000
    rng = np.random.default_rng(2024)
    counts = np.array([np.sum(np.abs(np.linalg.eigvals(rng.standard_normal((d, d))).imag) <= 1e-9)
                       for _ in range(n_mat)])
    se = counts.std(ddof=1) / np.sqrt(n_mat)
    expected = nulls.ginibre_expected_real(d)  # 6.0995
    assert abs(counts.mean() - expected) < 4 * se
    # The spread of one matrix's count matches Forrester–Nagao's (2 − √2)·E[#real] variance.
    assert counts.std(ddof=1) / d == pytest.approx(nulls.ginibre_complex_fraction_sd(d), rel=0.1)
    # Tight enough to reject a formula off by 0.3 (e.g. dropping the 1/2, or √(2d/π) alone: 5.64).
    assert 4 * se < 0.3


def test_asymptotics_for_large_d_and_arrays():
    d = np.array([1024, 4096, 16384])
    e = nulls.ginibre_expected_real(d)
    asym = np.sqrt(2 * d / np.pi) + 0.5
    # next term of the expansion: −(3/8)√(2/π)/√d
    np.testing.assert_allclose((asym - e) * np.sqrt(d), 0.375 * np.sqrt(2 / np.pi), rtol=0.01)
    assert np.isfinite(nulls.ginibre_expected_real(10**6))


def test_values_quoted_in_methods_and_the_readme():
    # METHODS §3 quotes 0.967 at d = 576 from the leading-order 1 − √(2/(πd)); the exact value is 0.9659.
    assert round(nulls.ginibre_complex_fraction(576), 3) == 0.966
    assert round(nulls.ginibre_complex_fraction(1024), 3) == 0.975
    assert round(nulls.ginibre_complex_fraction(4096), 3) == 0.987
    # The demo's measured fractions (trained 94.0 %, random init 94.9 %) are both below the null.
    assert nulls.ginibre_complex_fraction(576) > 0.949


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        nulls.ginibre_expected_real(0)
    with pytest.raises(ValueError):
        nulls.ginibre_expected_real(2.5)


def test_column_added_on_read_only_when_missing():
    lay = pd.DataFrame({"layer": [0, 0], "operator": ["J", "R"], "frac_complex": [0.9, 0.8]})
    out = nulls.with_frac_complex_null(lay, 576)
    assert "frac_complex_null" not in lay
    np.testing.assert_allclose(out["frac_complex_null"], nulls.ginibre_complex_fraction(576))
    assert out["frac_complex_null"].dtype == np.float64
    same = out.assign(frac_complex_null=0.5)
    assert nulls.with_frac_complex_null(same, 576) is same


def test_bh_null_count_against_simulation():
    rng = np.random.default_rng(7)
    for n in (4, 30):
        dist = nulls.bh_null_distribution(n)
        assert dist.sum() == pytest.approx(1.0, abs=1e-12)
        assert 1 - dist[0] == pytest.approx(nulls.FDR_ALPHA, abs=1e-12)  # P(R ≥ 1) = α
        p = np.sort(rng.random((100_000, n)), axis=1)
        ok = p <= nulls.FDR_ALPHA * np.arange(1, n + 1) / n
        r = np.where(ok.any(1), n - np.argmax(ok[:, ::-1], axis=1), 0)
        se = r.std() / np.sqrt(len(r))
        assert abs(r.mean() - nulls.bh_null_discoveries(n)) < 4 * se
    assert nulls.bh_null_discoveries(30) < 0.06 < 0.05 * 30


def test_synthetic_runs_write_the_column_and_older_runs_get_it_on_read(synthetic_runs_dir, tmp_path):
    import shutil

    from resdyn.core import queries
    from resdyn.core.store import RunStore
    from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN

    d = SYNTHETIC_SIZES["d"]
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    store = RunStore(root / TRAINED_RUN)
    lay = store.read_table("layers")
    np.testing.assert_allclose(lay["frac_complex_null"], nulls.ginibre_complex_fraction(d))
    write_old_table(store, "layers", lay.drop(columns="frac_complex_null"))  # as an older run wrote it
    got = queries.layers(TRAINED_RUN, root=root)
    np.testing.assert_allclose(got["frac_complex_null"], nulls.ginibre_complex_fraction(d))
    assert len(got) == len(lay)


def test_lss_of_random_directions_is_sqrt_of_the_steps():
    rng = np.random.default_rng(3)
    n, d = 30, 4096
    steps = rng.standard_normal((200, n, d))
    steps /= np.linalg.norm(steps, axis=-1, keepdims=True)
    lss = n / np.linalg.norm(steps.sum(1), axis=-1)
    assert np.median(lss) == pytest.approx(nulls.lss_random_walk(n), rel=0.05)


def test_run_k_reads_the_manifest_or_the_default_an_older_run_used():
    assert nulls.run_k({"k": 7, "d_model": 576}) == 7
    assert nulls.run_k({"d_model": 576}) == 64  # min(64, d // 4)
    assert nulls.run_k({"k": None, "d_model": 32}) == 8


# -- the real elliptic law (METHODS §12) -------------------------------------------------------------

def test_elliptic_matrices_have_the_requested_tau():
    rng = np.random.default_rng(0)
    for tau in (-0.6, 0.0, 0.5, 0.9):
        t = [nulls.operator_tau(nulls.elliptic_matrix(60, tau, rng)) for _ in range(40)]
        assert np.mean(t) == pytest.approx(tau, abs=0.02)
    assert nulls.operator_tau(np.eye(3)) == 1.0 and nulls.operator_tau(np.array([[0, 1], [-1, 0.0]])) == -1.0
    assert np.isnan(nulls.operator_tau(np.zeros((2, 2))))
    assert nulls.elliptic_parameter(1.0, 50) == 1.0 and nulls.elliptic_parameter(-1.0, 50) == -1.0


def test_elliptic_real_counts_match_the_figure_in_methods():
    # METHODS §12: n = 200, 20.1 real eigenvalues at τ = 0.5 against 11.9 at τ = 0. Direct simulation
    # (24 matrices: standard errors ≈ 0.7 and 0.5) and the table-based null both reproduce it.
    from threadpoolctl import threadpool_limits

    for tau, want in ((0.5, 20.1), (0.0, 11.9)):
        with threadpool_limits(1):  # small eigensolves: threads only contend
            mean, sd = nulls.elliptic_real_mc(200, tau, n_mat=24, seed=1)
        assert mean == pytest.approx(want, abs=3 * sd / np.sqrt(24))
        frac, frac_sd = nulls.elliptic_real_fraction([tau], 200)
        assert frac[0] * 200 == pytest.approx(want, abs=0.35)
        assert frac_sd[0] * 200 == pytest.approx(np.sqrt((2 - np.sqrt(2)) * want), rel=0.15)
    # τ = 0 is Ginibre exactly (the strong-non-Hermiticity branch is anchored on it).
    g, _ = nulls.complex_fraction_null(np.array([0.0]), 576)
    assert g[0] == pytest.approx(nulls.ginibre_complex_fraction(576), abs=1e-12)


def test_elliptic_null_is_monotone_fast_and_deterministic():
    import time

    taus = np.linspace(-0.95, 0.999, 30)
    t0 = time.perf_counter()
    mean, sd = nulls.complex_fraction_null(taus, 576)
    assert time.perf_counter() - t0 < 0.2  # the Claims page reads it at d = 576, L = 30
    assert (np.diff(mean) < 0).all()  # a larger symmetric part, more real eigenvalues
    assert mean[0] > nulls.ginibre_complex_fraction(576) > mean[-1] and mean[-1] < 0.6
    assert (sd > 0).all() and (sd < 0.05).all()
    again = nulls.complex_fraction_null(taus, 576)
    np.testing.assert_array_equal(again[0], mean)
    np.testing.assert_array_equal(nulls.complex_fraction_null(np.array([1.0]), 576)[0], [0.0])
    # Near τ = 1 (the table's regime), against direct simulation at a width other than the table's.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        mc, mc_sd = nulls.elliptic_real_mc(160, 0.97, n_mat=24, seed=2)
    assert nulls.elliptic_real_fraction([0.97], 160)[0][0] * 160 == pytest.approx(mc, abs=3 * mc_sd / np.sqrt(24) + 1.0)


def test_elliptic_columns_written_by_the_spectra_code_and_added_on_read(tmp_path):
    from resdyn.core.headlines import RunTables
    from resdyn.testing.synthetic import make_synthetic_run

    store = make_synthetic_run(tmp_path, "r", n_layers=3, d=16, n_samples=8)
    lay = store.read_table("layers")
    jac = store.read_array("jacobians")
    taus = np.array([nulls.operator_tau(jac[l].astype(np.float64) - np.eye(16)) for l in range(3)])
    for op in ("J", "R"):
        rows = lay[lay.operator == op].sort_values("layer")
        np.testing.assert_allclose(rows["tau"], taus, rtol=1e-12)
        np.testing.assert_allclose(rows["frac_complex_null_elliptic"], nulls.complex_fraction_null(taus, 16)[0])
    write_old_table(store, "layers", lay.drop(columns=list(nulls.ELLIPTIC_COLUMNS)))  # an older run's table
    got = RunTables.from_store(store).layers
    key = ["operator", "layer"]
    np.testing.assert_allclose(got.sort_values(key)["frac_complex_null_elliptic"],
                               lay.sort_values(key)["frac_complex_null_elliptic"], rtol=1e-12)
    old = lay.drop(columns=list(nulls.ELLIPTIC_COLUMNS))
    assert nulls.with_elliptic_null(old, 16, None)[list(nulls.ELLIPTIC_COLUMNS)].isna().all().all()
