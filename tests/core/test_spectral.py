"""Known-matrix identities of resdyn.core.spectral (METHODS §5, §6, §10, §11)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl
from threadpoolctl import threadpool_limits
from scipy.spatial import ConvexHull

from resdyn.core import linalg, spectral
from resdyn.errors import ResdynError


def _rng(seed=0):
    return np.random.default_rng(seed)


def _unitary(d, seed=0):
    return spectral.haar_unitary(d, _rng(seed))


def _normal(lam, seed=0):
    """A dense (non-diagonal) normal matrix U diag(λ) U* with the given eigenvalues."""
    u = _unitary(len(lam), seed)
    return (u * lam) @ u.conj().T


def _sorted(lam):
    lam = np.asarray(lam)
    return lam[np.lexsort((np.round(lam.imag, 8), np.round(lam.real, 8)))]


def _dense_product(mats):
    p = np.eye(mats[0].shape[0], dtype=np.result_type(*mats))
    for m in mats:
        p = m @ p
    return p


# -- effective rank -------------------------------------------------------------------------------

def test_erank_of_identity_is_d():
    assert spectral.erank(np.linalg.svd(np.eye(37), compute_uv=False)) == pytest.approx(37.0, rel=1e-12)


def test_erank_of_rank_one_matrix_is_one():
    r = _rng(1)
    a = np.outer(r.standard_normal(20), r.standard_normal(20))
    assert spectral.erank(np.linalg.svd(a, compute_uv=False)) == pytest.approx(1.0, abs=1e-9)


def test_erank_matches_entropy_formula_and_is_scale_invariant():
    # σ = (3, 4): p = (9/25, 16/25), erank = exp(−Σ p log p).
    p = np.array([9, 16]) / 25
    expected = np.exp(-(p * np.log(p)).sum())
    assert spectral.erank([3.0, 4.0]) == pytest.approx(expected, rel=1e-12)
    assert spectral.erank([3e-200, 4e-200]) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(spectral.erank(np.zeros(4)))


# -- cumulative products --------------------------------------------------------------------------

def test_cumulative_product_is_exact_by_default():
    r = _rng(2)
    n_layers, d = 6, 12
    jac = (np.eye(d) + 0.6 * r.standard_normal((n_layers, d, d))).astype(np.float32)
    cum = spectral.cumulative_products(jac, keep=[0, 3, 5])
    assert cum.k == d
    for l in range(n_layers):
        p = _dense_product([jac[m].astype(np.float64) for m in range(l, n_layers)])
        s = np.linalg.svd(p, compute_uv=False)
        assert cum.erank[l] == pytest.approx(spectral.erank(s), rel=1e-10)
        assert cum.log10_fro[l] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-10)
        if l in (0, 3, 5):
            np.testing.assert_allclose(cum.log10_sigma[l], np.log10(s), atol=1e-8)


def test_exact_cumulative_erank_equals_dense_float64_product_at_d1024():
    # METHODS §5: the default is the exact product. A rank-512 truncation of the same stack is
    # biased low (it keeps 512 of the 1024 directions at every step). One BLAS thread: on the
    # shared 2-core machine LAPACK under load is several times faster so (about 8 s here).
    with threadpool_limits(limits=1, user_api="blas"):
        _exact_at_d1024()


def _exact_at_d1024():
    r = _rng(5)
    n_layers, d = 7, 1024
    jac = (np.eye(d) + 0.5 * r.standard_normal((n_layers, d, d)) / np.sqrt(d)).astype(np.float32)
    cum = spectral.cumulative_products(jac, keep=[0])
    assert cum.k == d
    p = np.eye(d)
    for l in range(n_layers - 1, -1, -1):
        p = p @ jac[l].astype(np.float64)  # no rescaling needed for 7 well-conditioned layers
        s = sl.svdvals(p)
        assert abs(cum.erank[l] - spectral.erank(s)) < 1e-6
        assert cum.log10_fro[l] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-12)
    np.testing.assert_allclose(cum.log10_sigma[0], np.log10(s), atol=1e-9)
    truncated = spectral.cumulative_products(jac, k=512)
    assert truncated.k == 512
    assert np.all(truncated.erank < cum.erank - 30)


def test_truncated_cumulative_follows_the_rank_k_recursion():
    # The paper's replication option: P̃_{L−1} = [J̄_{L−1}]_k, P̃_l = [P̃_{l+1} J̄_l]_k, with [·]_k the
    # best rank-k approximation; checked against that recursion on dense float64 matrices.
    r = _rng(6)
    n_layers, d, k = 5, 40, 12
    jac = (np.eye(d) + 0.7 * r.standard_normal((n_layers, d, d)) / np.sqrt(d)).astype(np.float32)
    cum = spectral.cumulative_products(jac, k=k, keep=[0, n_layers - 1])
    assert cum.k == k
    p = None
    for l in range(n_layers - 1, -1, -1):
        j = jac[l].astype(np.float64)
        u, s, vt = np.linalg.svd(j if p is None else p @ j)
        p = (u[:, :k] * s[:k]) @ vt[:k]
        assert cum.erank[l] == pytest.approx(spectral.erank(s[:k]), rel=1e-10)
        assert cum.log10_fro[l] == pytest.approx(np.log10(np.linalg.norm(s[:k])), abs=1e-10)
        if l in (0, n_layers - 1):
            np.testing.assert_allclose(cum.log10_sigma[l], np.log10(s[:k]), atol=1e-8)
    assert cum.erank[0] < spectral.cumulative_products(jac).erank[0]


@pytest.mark.parametrize("k", [0, -3, 65])
def test_cumulative_rejects_a_rank_outside_1_to_d(k):
    with pytest.raises(ResdynError, match=r"cumulative rank k = -?\d+ must be in \[1, d = 64\]"):
        spectral.cumulative_products(np.ones((2, 64, 64)), k=k)


def test_float32_cumulative_product_is_close_to_float64():
    # The stage keeps float64; float32 (half the cost) loses about 1e-7 of erank relative.
    r = _rng(7)
    jac = (np.eye(96) + 0.6 * r.standard_normal((10, 96, 96)) / np.sqrt(96)).astype(np.float32)
    e64 = spectral.cumulative_products(jac).erank
    e32 = spectral.cumulative_products(jac, dtype=np.float32).erank
    np.testing.assert_allclose(e32, e64, rtol=1e-5)
    assert not np.array_equal(e32, e64)


def test_cumulative_rank_note_names_exact_truncated_and_old_runs():
    note = spectral.cumulative_rank_note
    assert note({"d_model": 1024, "cumulative_rank": 1024}).startswith("Exact products (rank d = 1024")
    assert "Truncated to rank K = 512" in note({"d_model": 1024, "cumulative_rank": 512})
    assert "biased low unless it is ≪ K" in note({"d_model": 1024, "cumulative_rank": 512})
    old_wide = note({"d_model": 4096})  # before the key: min(512, d)
    assert "Truncated to rank K = 512" in old_wide and "--redo cumulative" in old_wide
    assert "Truncated to rank K = 512" in note({"d_model": 576})  # the demo runs (d = 576)
    assert note({"d_model": 256}).startswith("Exact products") and "min(512, d) = d = 256" in note({"d_model": 256})


def test_truncation_keeps_the_top_of_a_low_rank_product():
    # Every layer maps into the same 3-dim subspace, so P_l has rank 3 and rank-4 truncation is exact.
    r = _rng(3)
    n_layers, d = 5, 16
    basis = np.linalg.qr(r.standard_normal((d, 3)))[0]
    jac = np.stack([basis @ r.standard_normal((3, d)) + basis @ basis.T * 0.5 for _ in range(n_layers)])
    cum = spectral.cumulative_products(jac, k=4)
    p = _dense_product(list(jac))
    assert cum.erank[0] == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-8)
    assert cum.log10_fro[0] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-10)


def test_cumulative_norm_never_overflows():
    # 40 layers of 1e10 × an orthogonal matrix: ‖P_0‖_F = 1e400 √d, far beyond float64.
    d, n_layers = 8, 40
    r = _rng(30)
    jac = np.stack([np.linalg.qr(r.standard_normal((d, d)))[0] * 1e10 for _ in range(n_layers)])
    cum = spectral.cumulative_products(jac)
    assert cum.log10_fro[0] == pytest.approx(400 + 0.5 * np.log10(d), abs=1e-9)
    assert cum.erank[0] == pytest.approx(d, rel=1e-9)


def test_cumulative_rejects_non_finite_jacobians():
    jac = np.ones((2, 4, 4))
    jac[1, 0, 0] = np.nan
    with pytest.raises(ResdynError, match="non-finite"):
        spectral.cumulative_products(jac)


# -- Schur form and dose --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jbar():
    r = _rng(4)
    d = 14
    return np.eye(d) + 0.4 * r.standard_normal((d, d)) + np.triu(r.standard_normal((d, d)), 1)


def test_schur_factors_reconstruct_and_are_triangular(jbar):
    q, t = spectral.schur_complex(jbar)
    assert spectral.schur_error(q, t, jbar) < 1e-13
    np.testing.assert_allclose(q.conj().T @ q, np.eye(len(q)), atol=1e-12)
    assert not np.any(np.tril(t, -1))
    # ‖N‖_F² = ‖J‖_F² − Σ|λ|² (METHODS §6): the Henrici mass.
    assert spectral.henrici_schur(t) == pytest.approx(linalg.henrici(jbar), abs=1e-10)


def test_dose_one_reproduces_the_mean_jacobian(jbar):
    q, t = spectral.schur_complex(jbar)
    np.testing.assert_allclose(spectral.dose_matrix(q, t, 1.0), jbar, atol=1e-12)
    a, b = spectral.dose_layer(q, t, jbar)
    np.testing.assert_allclose(a + b, jbar, atol=1e-12)


def test_dose_zero_is_normal_with_the_same_eigenvalues(jbar):
    q, t = spectral.schur_complex(jbar)
    j0 = spectral.dose_matrix(q, t, 0.0)
    np.testing.assert_allclose(j0 @ j0.conj().T, j0.conj().T @ j0, atol=1e-11)
    assert linalg.henrici(j0) < 1e-6
    np.testing.assert_allclose(_sorted(np.linalg.eigvals(j0)), _sorted(np.linalg.eigvals(jbar)), atol=1e-9)
    # Any dose keeps the spectrum; c = 2 is more non-normal than the model.
    j2 = spectral.dose_matrix(q, t, 2.0)
    np.testing.assert_allclose(_sorted(np.linalg.eigvals(j2)), _sorted(np.linalg.eigvals(jbar)), atol=1e-6)
    assert linalg.henrici(j2) > linalg.henrici(jbar)


def test_mode_r_dose_recovers_j_at_one_and_is_normal_at_zero(jbar):
    d = len(jbar)
    q, t = spectral.schur_complex(jbar - np.eye(d))
    np.testing.assert_allclose(spectral.dose_matrix(q, t, 1.0, shift=1.0), jbar, atol=1e-12)
    j0 = spectral.dose_matrix(q, t, 0.0, shift=1.0)
    assert linalg.henrici(j0) < 1e-6
    np.testing.assert_allclose(_sorted(np.linalg.eigvals(j0)), _sorted(np.linalg.eigvals(jbar)), atol=1e-9)


def test_henrici_of_a_jordan_block():
    d = 8
    jordan = np.eye(d) + np.eye(d, k=1)
    # ‖N‖² = d − 1, ‖J‖² = 2d − 1.
    assert spectral.henrici_schur(jordan) == pytest.approx(np.sqrt((d - 1) / (2 * d - 1)), rel=1e-12)
    assert linalg.henrici(jordan) == pytest.approx(np.sqrt((d - 1) / (2 * d - 1)), rel=1e-6)
    # Jordan-like with a small diagonal: Henrici near 1 (METHODS §10).
    jl = 1e-3 * np.eye(d) + np.eye(d, k=1)
    assert spectral.henrici_schur(jl) > 0.999


def test_control_a_matches_the_frobenius_mass_of_n(jbar):
    q, t = spectral.schur_complex(jbar)
    a, b = spectral.control_a_layer(q, t, _rng(5))
    np.testing.assert_allclose(a, spectral.normal_part(q, t), atol=1e-12)
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(np.triu(t, 1)), rel=1e-12)
    assert np.isrealobj(b)


def test_control_b_keeps_spectrum_and_n_in_a_random_basis(jbar):
    q, t = spectral.schur_complex(jbar)
    a, b = spectral.control_b_layer(q, t, _rng(6))
    jb = a + 0.7 * b
    np.testing.assert_allclose(_sorted(np.linalg.eigvals(jb)), _sorted(np.linalg.eigvals(jbar)), atol=1e-8)
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(np.triu(t, 1)), rel=1e-10)
    assert np.linalg.norm(a + b - jbar) > 1e-3  # another basis: not the model at c = 1


# -- products of a dose family --------------------------------------------------------------------

def test_product_stats_match_dense_for_low_and_full_rank():
    r = _rng(7)
    d = 40
    low = r.standard_normal((d, 4)) @ r.standard_normal((4, d)) + np.triu(r.standard_normal((d, d)), 1) * 1e-9
    for p in (low, r.standard_normal((d, d))):
        st = spectral.product_stats(p.astype(np.complex64) * 1e-3, log10_scale=5.0)
        s = np.linalg.svd(p, compute_uv=False)
        assert st.erank == pytest.approx(spectral.erank(s), rel=1e-5)
        assert st.log10_fro == pytest.approx(2.0 + np.log10(np.linalg.norm(p)), abs=1e-6)
        assert st.henrici == pytest.approx(linalg.henrici(p), abs=1e-4)
    assert spectral.product_stats(low).rank_used <= 6  # the small core path ran
    assert spectral.product_stats(r.standard_normal((d, d))).rank_used == d


def test_family_stats_match_the_dense_dosed_product():
    r = _rng(8)
    n_layers, d = 4, 10
    jac = np.eye(d) + 0.5 * r.standard_normal((n_layers, d, d))
    factors = [spectral.schur_complex(j) for j in jac]
    fam = spectral.family_from_layers((spectral.dose_layer(q, t, j) for (q, t), j in zip(factors, jac)), n_layers, d)
    for c in (0.0, 0.5, 1.0, 2.0):
        p = _dense_product([spectral.dose_matrix(q, t, c) for q, t in factors])
        st = spectral.family_stats(fam, c)
        assert st.erank == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
        assert st.log10_fro == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
        assert st.henrici == pytest.approx(linalg.henrici(p), abs=1e-4)
    # c = 1 is the model's own product.
    model = np.log10(np.linalg.norm(_dense_product(list(jac))))
    assert spectral.family_stats(fam, 1.0).log10_fro == pytest.approx(model, abs=1e-5)


def test_chain_product_is_max_normalised_without_overflow():
    d, n_layers = 6, 40
    a = np.broadcast_to(1e10 * np.eye(d, dtype=np.complex64), (n_layers, d, d)).copy()
    fam = spectral.DoseFamily(a, np.zeros_like(a))
    st = spectral.family_stats(fam, 1.3)
    assert st.log10_fro == pytest.approx(400 + 0.5 * np.log10(d), abs=1e-4)
    assert st.erank == pytest.approx(d, rel=1e-5)
    assert st.henrici == pytest.approx(0.0, abs=1e-3)


# -- pseudospectra --------------------------------------------------------------------------------

def test_pseudospectrum_of_a_normal_matrix_is_a_union_of_discs():
    r = _rng(9)
    lam = r.standard_normal(20) + 1j * r.standard_normal(20)
    a = _normal(lam, seed=1)
    _, t = spectral.schur_complex(a)
    assert np.any(np.triu(t, 1))  # rounding leaves a non-diagonal T: the Lanczos path runs
    x = np.linspace(-3, 3, 25)
    z = (x[None, :] + 1j * x[:, None]).ravel()
    dist = np.abs(z[:, None] - lam[None, :]).min(axis=1)
    smin = spectral.sigma_min_grid(t, z, rtol=1e-9, max_iter=40)
    np.testing.assert_allclose(smin, dist, rtol=1e-4)
    for eps in (0.1, 0.3, 1.0):  # {σ_min < ε} = ⋃ discs of radius ε (away from the circles)
        clear = np.abs(dist - eps) > 1e-3
        assert np.array_equal((smin < eps)[clear], (dist < eps)[clear])
    # A diagonal T takes the exact path.
    np.testing.assert_allclose(spectral.sigma_min_grid(np.diag(lam), z), dist, rtol=1e-12)


def test_sigma_min_grid_matches_dense_svd_for_a_non_normal_matrix():
    r = _rng(10)
    d = 30
    a = np.eye(d) + 0.3 * r.standard_normal((d, d)) + 2 * np.triu(r.standard_normal((d, d)), 1)
    _, t = spectral.schur_complex(a)
    z = 1.5 * (r.standard_normal(40) + 1j * r.standard_normal(40))
    ref = np.array([np.linalg.svd(zz * np.eye(d) - a, compute_uv=False)[-1] for zz in z])
    np.testing.assert_allclose(spectral.sigma_min_grid(t, z, rtol=1e-9, max_iter=d), ref, rtol=2e-4)
    # The default (dashboard) tolerance is good to a few per cent, enough for log10 contours.
    np.testing.assert_allclose(spectral.sigma_min_grid(t, z), ref, rtol=5e-2)


def test_pseudospectrum_grid_covers_the_spectrum():
    r = _rng(11)
    t = np.triu(r.standard_normal((12, 12))) + np.diag(3 * r.standard_normal(12))
    x, y, g = spectral.pseudospectrum_grid(t, n=20)
    lam = np.diag(t)
    assert x.min() < lam.real.min() and x.max() > lam.real.max()
    assert y.min() <= lam.imag.min() and y.max() >= lam.imag.max()
    assert g.shape == (20, 20) and np.isfinite(g).all()


# -- numerical range ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_numerical_range_of_a_hermitian_matrix_is_its_eigenvalue_interval(method):
    r = _rng(12)
    b = r.standard_normal((9, 9)) + 1j * r.standard_normal((9, 9))
    h = b + b.conj().T
    ev = np.linalg.eigvalsh(h)
    w = spectral.numerical_range(h, method=method, steps=9)
    np.testing.assert_allclose(w.imag, 0.0, atol=1e-9)
    assert w.real.min() == pytest.approx(ev[0], abs=1e-8)
    assert w.real.max() == pytest.approx(ev[-1], abs=1e-8)


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_numerical_range_of_a_normal_matrix_is_the_convex_hull_of_its_eigenvalues(method):
    r = _rng(13)
    lam = r.standard_normal(10) + 1j * r.standard_normal(10)
    w = spectral.numerical_range(_normal(lam, seed=2), n_angles=360, method=method, steps=10)
    hull = lam[ConvexHull(np.column_stack([lam.real, lam.imag])).vertices]
    # Every boundary point is a hull vertex, and every vertex is hit.
    dist = np.abs(w[:, None] - hull[None, :]).min(axis=1)
    assert dist.max() < 1e-7
    assert np.abs(hull[:, None] - w[None, :]).min(axis=1).max() < 1e-7
    # The exact path for a diagonal matrix gives the same set.
    wd = spectral.numerical_range(np.diag(lam), n_angles=360)
    assert set(np.round(wd, 8)) == set(np.round(hull, 8))


def test_numerical_range_of_a_2x2_jordan_block_is_the_disc_of_radius_one_half():
    w = spectral.numerical_range(np.array([[0.0, 1.0], [0.0, 0.0]]), n_angles=64)
    np.testing.assert_allclose(np.abs(w), 0.5, atol=1e-12)


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_numerical_range_points_touch_the_supporting_line_of_their_angle(method):
    r = _rng(14)
    d = 90
    a = 0.3 * r.standard_normal((d, d)) + np.triu(r.standard_normal((d, d)), 1) * 0.2
    w = spectral.numerical_range(a, n_angles=24, method=method)
    rot = np.exp(1j * np.linspace(0, 2 * np.pi, 24, endpoint=False))
    support = np.array([np.linalg.eigvalsh(0.5 * (r_ * a + np.conj(r_) * a.conj().T))[-1] for r_ in rot])
    gap = support - (rot * w).real
    assert gap.min() > -1e-9  # inside W
    assert gap.max() < 1e-3 * np.linalg.norm(a, 2)  # and on its boundary to plotting accuracy


# -- transient growth -----------------------------------------------------------------------------

def test_transient_growth_matches_dense_two_norms():
    r = _rng(15)
    n_layers, d = 5, 70  # d > 64 takes the ARPACK path
    jac = (np.eye(d) + 0.3 * r.standard_normal((n_layers, d, d))).astype(np.float32)
    tg = spectral.transient_growth(jac)
    for l in range(n_layers):
        for k in range(1, n_layers + 1):
            if l + k > n_layers:
                assert np.isnan(tg[l, k - 1])
                continue
            p = _dense_product([jac[m].astype(np.float64) for m in range(l, l + k)])
            assert tg[l, k - 1] == pytest.approx(np.log10(np.linalg.norm(p, 2)), abs=1e-5)


def test_transient_growth_shows_non_normal_amplification():
    # A nilpotent shift amplifies once (‖N‖ = 10) and then annihilates: peak inside, not at the end.
    d = 3
    n = 10 * np.eye(d, k=-1)
    jac = np.stack([n + 0.1 * np.eye(d)] * 4)
    tg = spectral.transient_growth(jac)
    assert np.nanargmax(tg[0]) < 3
    assert np.nanmax(tg[0]) > tg[0, 3] + 0.5


def test_schur_complex_rejects_non_finite_input():
    a = np.eye(3)
    a[0, 1] = np.inf
    with pytest.raises(ResdynError):
        spectral.schur_complex(a)


def test_triangular_products_of_the_numerical_range_equal_dense_products(monkeypatch):
    """The Lanczos of an upper-triangular A (a Schur factor) applies A and A* by ztrmm; a wrong
    side, triangle or transpose flag would change every point."""
    r = _rng(16)
    d = 80
    t = np.triu(r.standard_normal((d, d)) + 1j * r.standard_normal((d, d)))
    v = r.standard_normal((d, 7)) + 1j * r.standard_normal((d, 7))
    tv, thv = spectral._triangular_pair(t)(v)
    np.testing.assert_allclose(tv, t @ v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(thv, t.conj().T @ v, rtol=0, atol=1e-12)
    # A triangular A takes that route (a dense A does not), and its points touch their supporting
    # lines, as for a dense A.
    calls = []
    real = spectral._triangular_pair
    monkeypatch.setattr(spectral, "_triangular_pair", lambda a: calls.append(1) or real(a))
    spectral.numerical_range(t + np.tril(np.ones((d, d)), -1), n_angles=24, method="lanczos")
    assert calls == []
    w = spectral.numerical_range(t, n_angles=24, method="lanczos")
    assert calls == [1]
    rot = np.exp(1j * np.linspace(0, 2 * np.pi, 24, endpoint=False))
    support = np.array([np.linalg.eigvalsh(0.5 * (r_ * t + np.conj(r_) * t.conj().T))[-1] for r_ in rot])
    gap = support - (rot * w).real
    assert gap.min() > -1e-9
    assert gap.max() < 1e-3 * np.linalg.norm(t, 2)
