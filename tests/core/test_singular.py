"""Per-sample Jacobian statistics (resdyn.core.singular) against a float64 SVD reference.

The matrices are U·diag(σ)·Vᵀ with planted singular values, so every statistic has a known value;
the tolerances follow the error each method should have (σ_min to ~κε, like the SVD itself) and
are far below what a wrong formula or the Gram matrix's eigenvalues (κ²ε in σ_min) would give.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from resdyn.core import singular

EPS = np.finfo(np.float64).eps


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The references (QR, SVD of d ≤ 128) run single-threaded: threaded BLAS on matrices this
    small stalls for seconds when the cores are shared."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def planted(sigma: np.ndarray, seed: int = 0) -> np.ndarray:
    """U diag(σ) Vᵀ (d, d) float64 with Haar-random U, V."""
    rng = np.random.default_rng(seed)
    d = len(sigma)
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (u * sigma) @ v.T


def reference(j: np.ndarray) -> np.ndarray:
    """σ_max, σ_min, κ, ‖J‖_F, PR from a float64 SVD of j."""
    s = np.linalg.svd(np.asarray(j, dtype=np.float64), compute_uv=False)
    return np.array([s[0], s[-1], s[0] / s[-1], np.sqrt(np.sum(s**2)), np.sum(s**2) ** 2 / np.sum(s**4)])


def check(stats: np.ndarray, ref: np.ndarray, rtol_max: float, rtol_pr: float) -> None:
    kappa = ref[2]
    rtol_min = 100 * EPS * kappa + 1e-12  # the SVD's own σ_min error is about κε
    np.testing.assert_allclose(stats[0], ref[0], rtol=rtol_max, atol=0)
    np.testing.assert_allclose(stats[1], ref[1], rtol=rtol_min, atol=0)
    np.testing.assert_allclose(stats[2], ref[2], rtol=rtol_min + rtol_max, atol=0)
    np.testing.assert_allclose(stats[3], ref[3], rtol=1e-12, atol=0)
    np.testing.assert_allclose(stats[4], ref[4], rtol=rtol_pr, atol=0)


KAPPAS = [1.0, 10.0, 1e3, 1e5, 1e6, 1e8]


@pytest.mark.parametrize("kappa", KAPPAS)
def test_float64_statistics_match_the_svd_from_kappa_1_to_1e8(kappa):
    """d = 96 takes the Krylov path (d > EXACT_MAX_D); float64 input is worked in float64."""
    d = 96
    sigma = 2.5 * np.geomspace(1.0, 1.0 / kappa, d)
    j = planted(sigma, seed=int(np.log10(kappa)))
    stats = singular.jacobian_stats(j)
    check(stats, reference(j), rtol_max=1e-10, rtol_pr=1e-12)
    # The planted values themselves (the SVD reference is only as good as κε in σ_min).
    assert stats[0] == pytest.approx(sigma[0], rel=1e-10)
    assert stats[1] == pytest.approx(sigma[-1], rel=100 * EPS * kappa + 1e-12)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_float32_statistics_match_the_float64_svd_of_the_same_matrix(kappa):
    """A float32 J (the pipeline's default): σ_max steered in float32, then taken in float64;
    σ_min through a float64 LU; PR from a float32 Gram matrix (measured ≤ 4e-8 on real Jacobians)."""
    d = 128
    sigma = 3.0 * np.geomspace(1.0, 1.0 / kappa, d)
    j = planted(sigma, seed=10 + int(np.log10(kappa))).astype(np.float32)
    check(singular.jacobian_stats(j), reference(j), rtol_max=1e-9, rtol_pr=1e-6)


def test_sigma_min_is_not_the_gram_eigenvalue():
    """At κ = 1e7 the Gram matrix's smallest eigenvalue gives σ_min with a relative error near
    κ²ε ≈ 1e-2; the LU-based iteration gives it to ~κε."""
    d = 80
    sigma = np.geomspace(3.0, 3e-7, d)
    j = planted(sigma, seed=3)
    stats = singular.jacobian_stats(j)
    gram_value = np.sqrt(max(np.linalg.eigvalsh(j.T @ j)[0], 0.0))
    assert abs(gram_value / sigma[-1] - 1) > 1e-4
    assert stats[1] == pytest.approx(sigma[-1], rel=1e-7)


def test_pr_and_frobenius_follow_their_definitions():
    """PR = (Σσ²)²/Σσ⁴ and ‖J‖_F = √Σσ² for planted σ; PR is not (Σσ)²/Σσ², the participation
    ratio of the singular values rather than of their squares; a flat spectrum has PR = d."""
    d = 72
    sigma = np.geomspace(4.0, 0.01, d)
    stats = singular.jacobian_stats(planted(sigma, seed=5))
    expected = np.sum(sigma**2) ** 2 / np.sum(sigma**4)
    assert stats[4] == pytest.approx(expected, rel=1e-12)
    assert abs(stats[4] / (np.sum(sigma) ** 2 / np.sum(sigma**2)) - 1) > 0.2
    assert stats[3] == pytest.approx(np.sqrt(np.sum(sigma**2)), rel=1e-13)
    flat = singular.jacobian_stats(planted(np.full(d, 0.7), seed=6))
    assert flat[4] == pytest.approx(d, rel=1e-12) and flat[2] == pytest.approx(1.0, rel=1e-12)


def test_identity_and_orthogonal_matrices_break_down_cleanly():
    """κ = 1 exactly: the Krylov space is invariant after one block (the breakdown path)."""
    d = 64
    for j in (np.eye(d), planted(np.ones(d), seed=7)):
        stats = singular.jacobian_stats(j)
        np.testing.assert_allclose(stats, [1.0, 1.0, 1.0, np.sqrt(d), d], rtol=1e-12)


def test_clustered_top_and_bottom_singular_values():
    """Tight clusters at both ends (a block method's hard case) and a wide one in between."""
    d = 120
    sigma = np.r_[np.full(10, 5.0) * (1 + 1e-9 * np.arange(10)), np.linspace(4.0, 0.1, d - 20),
                  np.full(10, 1e-3) * (1 + 1e-9 * np.arange(10))]
    j = planted(np.sort(sigma)[::-1], seed=8)
    check(singular.jacobian_stats(j), reference(j), rtol_max=1e-10, rtol_pr=1e-12)


def test_near_identity_jacobian_falls_back_when_the_iteration_is_slow(monkeypatch):
    """J = I + small noise has its singular values packed near 1: with a tiny Krylov budget the
    iteration does not converge and the SVD answers instead, so the values stay exact."""
    rng = np.random.default_rng(9)
    d = 96
    j = np.eye(d) + 0.01 * rng.standard_normal((d, d)) / np.sqrt(d)
    monkeypatch.setattr(singular, "MAX_KRYLOV_DIM", 16)
    monkeypatch.setattr(singular, "GRAM_FIRST_PR", 2.0)  # no Gram route: PR ≤ d always
    check(singular.jacobian_stats(j), reference(j), rtol_max=1e-12, rtol_pr=1e-12)


def test_flat_spectrum_takes_the_gram_route_and_matches_the_svd(monkeypatch):
    """A randomly initialised block's Jacobian, I + noise: PR near d and κ of a few. Its statistics
    come from the float64 Gram eigenvalues alone (the iteration is never called) and match the SVD
    to about κ²ε."""
    rng = np.random.default_rng(10)
    d = 96
    j = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)

    def no_iteration(*a, **k):
        raise AssertionError("the Krylov iteration ran")

    monkeypatch.setattr(singular, "sigma_max_squared", no_iteration)
    ref = reference(j)
    assert ref[4] > singular.GRAM_FIRST_PR * d and ref[2] < 10
    check(singular.jacobian_stats(j), ref, rtol_max=1e-13, rtol_pr=1e-12)
    check(singular.jacobian_stats(j.astype(np.float32)), reference(j.astype(np.float32)), rtol_max=1e-13,
          rtol_pr=1e-6)


def test_flat_spectrum_with_one_tiny_singular_value_is_not_left_to_the_gram_route():
    """PR only predicts: all σ = 1 but one at 1e-6 has PR ≈ d and κ = 1e6, where the Gram
    eigenvalue would carry σ_min's error κ²ε ≈ 2e-4. The Gram result is refused by its own κ and
    the iteration gives σ_min to about κε, like the SVD."""
    d = 96
    sigma = np.r_[np.ones(d - 1), 1e-6]
    j = planted(sigma, seed=11)
    ref = reference(j)
    assert ref[4] > singular.GRAM_FIRST_PR * d
    smax2, smin2, ok = singular.gram_extremes(np.array(j))
    assert not ok
    check(singular.jacobian_stats(j), ref, rtol_max=1e-12, rtol_pr=1e-12)


def test_singular_matrices_get_zero_or_rounding_level_sigma_min():
    d = 64
    exact = planted(np.r_[np.geomspace(2.0, 0.5, d - 1), 0.0], seed=11)
    zero_column = planted(np.geomspace(2.0, 0.5, d), seed=12)
    zero_column[:, 5] = 0.0
    for j in (exact, zero_column):
        stats = singular.jacobian_stats(j)
        assert stats[1] < 1e-12 * stats[0] and stats[2] > 1e12
        assert stats[0] == pytest.approx(reference(j)[0], rel=1e-10)
    assert singular.jacobian_stats(zero_column)[1] == 0.0  # an exact zero pivot


def test_small_matrices_use_the_svd_and_batches_match_single_samples():
    """d ≤ EXACT_MAX_D: the exact path. The threaded batch equals the serial one bit for bit."""
    rng = np.random.default_rng(13)
    small = rng.standard_normal((3, singular.EXACT_MAX_D, singular.EXACT_MAX_D))
    for j in small:
        check(singular.jacobian_stats(j), reference(j), rtol_max=1e-13, rtol_pr=1e-13)
    big = np.stack([planted(np.geomspace(4.0, 4.0 / k, 70), seed=20 + i)
                    for i, k in enumerate((10.0, 1e4, 1e6))]).astype(np.float32)
    serial = singular.batch_stats(big, workers=1)
    np.testing.assert_array_equal(singular.batch_stats(big, workers=2), serial)
    np.testing.assert_array_equal(serial[1], singular.jacobian_stats(big[1]))
    assert singular.batch_stats(big[:0]).shape == (0, 5)


def test_a_float64_gram_matrix_passed_in_gives_the_same_extremes(monkeypatch):
    """A float64 run's Gram matrix, formed once in ``_stats``, is the one ``gram_extremes`` forms;
    a float32 run's (float32) Gram matrix is not passed on."""
    j = planted(np.linspace(1.5, 0.5, 80), seed=13)
    assert singular.gram_extremes(j, j.T @ j) == singular.gram_extremes(j)
    passed = []
    real = singular.gram_extremes
    monkeypatch.setattr(singular, "gram_extremes", lambda j64, g64=None: passed.append(g64) or real(j64, g64))
    singular.jacobian_stats(j)
    singular.jacobian_stats(j.astype(np.float32))
    assert len(passed) == 2 and passed[0].dtype == np.float64 and passed[1] is None
    monkeypatch.undo()
    # And a float64 flat-spectrum sample still matches the SVD.
    check(singular.jacobian_stats(j), reference(j), rtol_max=1e-12, rtol_pr=1e-12)
