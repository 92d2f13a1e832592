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
