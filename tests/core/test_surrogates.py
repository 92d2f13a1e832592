"""The three normal surrogates of the Schur dose (resdyn.core.surrogates, METHODS §6)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

from resdyn.core import linalg, spectral, surrogates
from resdyn.errors import UsageError
from tests.core.test_spectral import _dense_product as _product

D = 10


def _stack(seed: int, n_layers: int = 3, d: int = D) -> np.ndarray:
    """Non-normal, trained-like layers I + G/√d + a strictly upper part (L, d, d) float64."""
    rng = np.random.default_rng(seed)
    return np.stack([np.eye(d) + 0.6 * rng.standard_normal((d, d)) / np.sqrt(d)
                     + 0.4 * np.triu(rng.standard_normal((d, d)), 1) for _ in range(n_layers)])


def _reference_dose(v: np.ndarray, lam: np.ndarray, c: float) -> np.ndarray:
    """U H^c Λ H^{−c} U* from an eigenvector matrix and eigenvalues, the textbook way
    (scipy.linalg.polar, then eigh of H), columns of V scaled to unit norm first."""
    v = v / np.linalg.norm(v, axis=0)
    u, h = sl.polar(v)
    hw, hv = np.linalg.eigh(h)
    hc = (hv * hw**c) @ hv.conj().T
    hm = (hv * hw**-c) @ hv.conj().T
    return u @ hc @ np.diag(lam) @ hm @ u.conj().T


def test_polar_dose_is_normal_at_zero_with_the_spectrum_and_the_matrix_at_one():
    j = _stack(0, 1)[0]
    fam = surrogates.PolarFamily([surrogates.polar_layer(j)])
    j0 = fam.layer(0, 0.0).astype(np.float64)
    assert fam.layer(0, 0.0).dtype == np.float32  # real for a real J̄, by construction
    assert linalg.henrici(j) > 0.3 and linalg.henrici(j0) < 1e-6
    lam, lam0 = np.linalg.eigvals(j), np.linalg.eigvals(j0)
    assert np.abs(lam0[:, None] - lam[None, :]).min(axis=1).max() < 1e-5
    np.testing.assert_allclose(fam.layer(0, 1.0), j, atol=1e-5 * np.abs(j).max())
    p = surrogates.polar_layer(j)
    assert p.ok and p.error < 1e-12 and 1 < p.cond < 1e3
    assert p.mass == pytest.approx(np.linalg.norm(j - j0), rel=1e-5)


@pytest.mark.parametrize("c", [0.0, 0.5, 1.5])
def test_polar_dose_matches_scipy_polar_and_ignores_eigenvalue_order_and_phases(c):
    j = _stack(1, 1)[0]
    lam, v = np.linalg.eig(j)
    ref = _reference_dose(v, lam, c)
    rng = np.random.default_rng(3)
    perm = rng.permutation(D)
    phases = np.exp(2j * np.pi * rng.random(D))
    # Permuted eigenpairs, rephased and rescaled eigenvectors: the same surrogate and dose.
    np.testing.assert_allclose(_reference_dose(v[:, perm], lam[perm], c), ref, atol=1e-10)
    np.testing.assert_allclose(_reference_dose(v * phases * rng.uniform(0.5, 2, D), lam, c), ref, atol=1e-10)
    assert np.abs(ref.imag).max() < 1e-10
    got = surrogates.PolarFamily([surrogates.polar_layer(j)]).layer(0, c)
    np.testing.assert_allclose(got, ref.real, atol=2e-5 * np.abs(ref).max())
    # A complex input takes the complex route and gives the same matrix.
    got_c = surrogates.PolarFamily([surrogates.polar_layer(j.astype(np.complex128))]).layer(0, c)
    assert got_c.dtype == np.complex64
    np.testing.assert_allclose(got_c, ref, atol=2e-5 * np.abs(ref).max())


def test_polar_chain_in_the_layers_bases_is_the_dense_product():
    """``PolarFamily.segment`` (W_{L−1}[M G ··· M]W_0ᴴ) gives the product of the layers J_l(c), as
    the generic chain over ``layer`` does, for the skip shift too."""
    jac = _stack(2, 6)
    fam = surrogates.polar_family(jac)

    class Plain:  # only the protocol's layer(): chain_product's generic path
        n_layers = fam.n_layers
        layer = staticmethod(fam.layer)

    for c, beta in ((0.0, 1.0), (0.7, 1.0), (2.0, 1.0), (0.5, 0.3)):
        mats = [(beta - 1.0) * np.eye(D) + fam.layer(l, c).astype(np.float64) for l in range(6)]
        p = _product(mats)
        st = spectral.family_stats(fam, c, beta)
        assert st.erank == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
        assert st.log10_fro == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
        assert st.henrici == pytest.approx(linalg.henrici(p), abs=1e-4)
        plain = spectral.family_stats(Plain(), c, beta)
        assert plain.erank == pytest.approx(st.erank, rel=1e-4)


def test_near_defective_layer_is_rejected_and_its_polar_rows_are_nan():
    """A Jordan block has no eigenvector basis: cond(V) explodes and the polar dose is not
    approximated; the Schur surrogates are unaffected."""
    jordan = np.eye(D) + np.eye(D, k=1) + 1e-14 * np.random.default_rng(0).standard_normal((D, D))
    p = surrogates.polar_layer(jordan)
    assert not p.ok and (p.cond > surrogates.POLAR_COND_MAX or not p.error <= surrogates.POLAR_RTOL)
    good = surrogates.polar_layer(_stack(4, 1)[0])
    assert good.ok
    jac = np.stack([_stack(4, 1)[0], jordan])
    df = surrogates.surrogate_doses(jac, cs=(0.0, 1.0), control_draws=1)
    polar = df[df["construction"].isin(["dose_polar", "control_a_polar"])]
    assert len(polar) and polar["erank"].isna().all()
    assert df.loc[~df["construction"].isin(["dose_polar", "control_a_polar"]), "erank"].notna().all()


def test_ascending_order_is_the_left_flag():
    """The canonical order reversed: c = 1 is J̄, c = 0 a normal matrix with its spectrum, and the
    last Schur vector is the dominant LEFT eigenvector (the descending order's first is the right one)."""
    j = _stack(5, 1)[0]
    j[0, 0] += 3.0  # a real, simple dominant eigenvalue (a conjugate pair has no single top vector)
    q, t = spectral.schur_canonical(j)
    lam = np.diag(t)
    np.testing.assert_array_equal(surrogates.ascending_order(lam), np.arange(D)[::-1])
    a, mass = surrogates.ascending_layer((q, t))
    qa, ta = spectral.reorder_schur(q, t, np.arange(D)[::-1])
    np.testing.assert_allclose(np.diag(ta), lam[::-1])
    assert np.all(np.diff(np.abs(np.diag(ta))) >= -1e-12)  # ascending |λ|
    np.testing.assert_allclose(a, spectral.normal_part(qa, ta), atol=1e-6)
    assert linalg.henrici(a.astype(np.complex128)) < 1e-6
    assert mass == pytest.approx(np.linalg.norm(np.triu(t, 1)), rel=1e-9)  # every order: the same ‖N‖
    np.testing.assert_allclose(a + (j - a), j)
    wl, vl = sl.eig(j, left=True, right=False)
    top = vl[:, np.argmax(np.abs(wl))]
    assert abs(np.vdot(top, qa[:, -1])) == pytest.approx(1.0, abs=1e-8)
    right = np.linalg.eig(j)[1][:, np.argmax(np.abs(np.linalg.eigvals(j)))]
    assert abs(np.vdot(right, q[:, 0])) == pytest.approx(1.0, abs=1e-8)
    assert abs(np.vdot(top, q[:, 0])) < 0.999  # the two flags differ for a non-normal J̄


def test_control_a_families_share_draws_and_scale_to_each_surrogates_mass():
    jac = _stack(6, 3)
    n, d, _ = jac.shape
    a = np.zeros((n, d, d), np.complex64)
    mass = np.array([1.0, 2.0, 3.0])
    f0 = surrogates.control_family(a, mass, seed=0, draw=1)
    f1 = surrogates.control_family(a.real.copy(), 2 * mass, seed=0, draw=1)
    np.testing.assert_allclose(np.linalg.norm(f0.b, axis=(1, 2)), mass, rtol=1e-6)
    np.testing.assert_allclose(2 * f0.b.real, f1.b, rtol=1e-6)  # the same Gaussian directions
    for c in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(np.linalg.norm(f0.layer(2, c) - a[2]), c * mass[2], rtol=1e-6)
    # The descending Control A is spectral.control_a_layer's draw, layer by layer.
    q, t = spectral.schur_canonical(jac[0])
    ref = spectral.control_a_layer(q, t, np.random.default_rng([0, 0, 0, 1]))[1]
    g = next(surrogates.control_noise(0, 1, n, d))
    np.testing.assert_allclose(g * (np.linalg.norm(np.triu(t, 1)) / np.linalg.norm(g)), ref)


def test_surrogate_doses_rows_and_copies():
    jac = _stack(7, 4)
    df = surrogates.surrogate_doses(jac, cs=(0.0, 1.0), seed=0, control_draws=2)
    assert list(df.columns) == ["construction", "draw", "c", "erank", "log10_fro", "henrici"]
    size = df.groupby("construction").size().to_dict()
    assert size == {"dose": 2, "dose_ascending": 2, "dose_polar": 2,
                    "control_a": 4, "control_a_ascending": 4, "control_a_polar": 4}
    at = df.set_index(["construction", "draw", "c"])
    p = _product(list(jac))
    ref1 = spectral.erank(np.linalg.svd(p, compute_uv=False))
    for con in ("dose", "dose_ascending", "dose_polar"):
        assert at.loc[(con, 0, 1.0), "erank"] == pytest.approx(ref1, rel=1e-4)  # J̄ whatever the surrogate
    for sur in surrogates.SURROGATES:  # c = 0 of every Control A is its surrogate, copied
        for draw in range(2):
            assert at.loc[(surrogates.CONTROL_CONSTRUCTION[sur], draw, 0.0), "erank"] == \
                at.loc[(surrogates.DOSE_CONSTRUCTION[sur], 0, 0.0), "erank"]
    # The polar dose at c = 0, from the textbook construction.
    mats = []
    for l in range(4):
        lam, v = np.linalg.eig(jac[l])
        mats.append(_reference_dose(v, lam, 0.0))
    p0 = _product(mats)
    assert at.loc[("dose_polar", 0, 0.0), "erank"] == pytest.approx(
        spectral.erank(np.linalg.svd(p0, compute_uv=False)), rel=1e-4)
    with pytest.raises(UsageError):
        surrogates.surrogate_doses(jac[0])
    with pytest.raises(UsageError):
        surrogates.surrogate_doses(jac, cs=(3.0,))
