"""METHODS §9 math (resdyn.core.trajectory) on matrices and trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from resdyn.core import trajectory as tj

D = 24


def _orthogonal(seed: int, d: int = D) -> np.ndarray:
    return ortho_group.rvs(d, random_state=seed)


def _shared_basis_jacobians(n: int, seed: int = 0) -> np.ndarray:
    """n Jacobians U diag(s_i) Vᵀ with one U, V and distinct, decreasing spectra."""
    rng = np.random.default_rng(seed)
    u, v = _orthogonal(seed), _orthogonal(seed + 100)
    spectra = np.sort(rng.uniform(0.1, 5.0, size=(n, D)), axis=1)[:, ::-1] * np.arange(1, n + 1)[:, None]
    return np.einsum("ij,nj,kj->nik", u, spectra, v)


def test_miscoupling_of_known_matrices():
    assert tj.miscoupling(np.diag([3.0, -1.0, 2.0])) == 0.0
    # Off-diagonal mass 4 of total 5: m̃ = 0.8.
    assert tj.miscoupling(np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(0.8)
    assert tj.miscoupling(np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(1.0)
    assert np.isnan(tj.miscoupling(np.zeros((3, 3))))
    batch = tj.miscoupling(np.stack([np.eye(2), [[0.0, 2.0], [0.0, 0.0]]]))
    np.testing.assert_allclose(batch, [0.0, 1.0])


def test_miscoupling_is_zero_when_jacobians_share_singular_vectors():
    """J_a = U S_a Vᵀ for all a: every coupling matrix is diagonal, m̃ = 0 for every pair and K;
    A^{ab} = U_bᵀ J_a V_b is then S_a's top-K block."""
    jacs = _shared_basis_jacobians(4)
    m = tj.pairwise_miscoupling(jacs, [2, 5, 10])
    assert m.shape == (3, 4, 4)
    np.testing.assert_allclose(m, 0.0, atol=1e-10)
    a = tj.coupling_matrices(jacs, 5)
    s0 = np.linalg.svd(jacs[0], compute_uv=False)
    np.testing.assert_allclose(np.abs(np.diag(a[0, 3])), s0[:5], rtol=1e-10)


def test_unrelated_jacobians_are_miscoupled_and_a_rotation_sets_the_level():
    """Rotating J_b's singular basis away from J_a's makes m̃ > 0; Haar-random bases give large m̃."""
    jacs = _shared_basis_jacobians(2)
    rot = _orthogonal(7)
    mixed = np.stack([jacs[0], rot @ jacs[1] @ rot.T])
    m = tj.pairwise_miscoupling(mixed, [10])[0]
    assert m[0, 1] > 0.5 and m[1, 0] > 0.5
    np.testing.assert_allclose(np.diag(m), 0.0, atol=1e-10)
    # A small rotation only slightly miscouples: m̃ grows with the angle.
    theta = [0.01, 0.1]
    levels = []
    for t in theta:
        g = np.eye(D)
        g[[0, 0, 1, 1], [0, 1, 0, 1]] = [np.cos(t), -np.sin(t), np.sin(t), np.cos(t)]
        u = _orthogonal(0)
        turned = u @ g @ u.T  # turns the top two left singular directions into each other
        levels.append(tj.pairwise_miscoupling(np.stack([jacs[0], turned @ jacs[1]]), [10])[0, 0, 1])
    assert 0 < levels[0] < levels[1] < 0.5


def test_top_k_restriction_is_the_leading_block_and_matches_an_explicit_product():
    rng = np.random.default_rng(1)
    jacs = rng.normal(size=(3, D, D))
    m = tj.pairwise_miscoupling(jacs, [4, 12])
    for k, mk in zip((4, 12), m):
        for a in range(3):
            for b in range(3):
                u, _, v = tj.top_singular_vectors(jacs[b], k)
                assert mk[a, b] == pytest.approx(tj.miscoupling(tj.coupling_matrix(jacs[a], u, v)), rel=1e-10)
    with pytest.raises(ValueError, match="K = 24"):
        tj.pairwise_miscoupling(jacs, [D])


def test_depth_coupling_mean_leaves_out_the_trivial_diagonal():
    m = np.array([[0.0, 0.5, 0.7], [0.1, 0.0, 0.3], [np.nan, 0.2, 0.0]])
    assert tj.mean_offdiagonal(m) == pytest.approx(np.mean([0.5, 0.7, 0.1, 0.3, 0.2]))
    assert tj.valid_ks(32) == [10, 30] and tj.valid_ks(576) == [10, 30, 50] and tj.valid_ks(8) == []


def test_token_coupling_layout_and_causal_mask():
    """Shared singular vectors for every token pair: 0 on every causal entry, NaN on t1 > t2."""
    w = 3
    pool = _shared_basis_jacobians(w * w, seed=4)
    jacs = pool.reshape(w, w, D, D)
    out = tj.token_coupling(jacs, [5])
    assert out["self"].shape == (1, w, w)
    np.testing.assert_allclose(out["self"], 0.0, atol=1e-10)
    fi, fo = out["fixed_input"][0], out["fixed_output"][0]
    for t1 in range(w):
        for t2 in range(w):
            for t3 in range(w):
                assert np.isfinite(fi[t1, t2, t3]) == (t2 >= t1 and t3 >= t1)
                assert np.isfinite(fo[t1, t2, t3]) == (t2 <= t1 and t3 <= t1)
    np.testing.assert_allclose(fi[np.isfinite(fi)], 0.0, atol=1e-10)
    # Unrelated Jacobians on the off-diagonal pairs make those entries miscoupled.
    rng = np.random.default_rng(5)
    jacs[0, 2] = rng.normal(size=(D, D))
    out = tj.token_coupling(jacs, [5])
    assert out["fixed_input"][0, 0, 2, 0] > 0.3  # J_{0,2} in the basis of J_{0,0}
    assert out["fixed_output"][0, 2, 0, 2] > 0.3  # J_{0,2} in the basis of J_{2,2}
    assert out["fixed_output"][0, 2, 1, 2] < 1e-10  # J_{1,2} vs J_{2,2}: still shared


# ------------------------------------------------------------------------------------------------
# Trajectories
# ------------------------------------------------------------------------------------------------

def test_lss_is_one_for_collinear_trajectories_and_larger_otherwise():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    start = rng.normal(size=16)
    # Irregular but monotone spacing along one line: LSS = 1 exactly (up to rounding).
    t = np.cumsum(rng.uniform(0.1, 3.0, size=12))
    line = start + t[:, None] * direction
    assert tj.line_shape_score(line) == pytest.approx(1.0, abs=1e-12)
    # Right then up in a plane: x̃ ends at (1, 1), LSS = 2 / √2.
    corner = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 5.0]])
    assert tj.line_shape_score(corner) == pytest.approx(np.sqrt(2))
    # A random walk is far from straight; a batch keeps its leading shape.
    walk = np.cumsum(rng.normal(size=(4, 31, 16)), axis=1)
    lss = tj.line_shape_score(walk)
    assert lss.shape == (4,) and (lss > 1.5).all()
    # A repeated state (zero step) is skipped, not a division by zero.
    np.testing.assert_allclose(tj.line_shape_score(np.concatenate([line[:3], line[2:]])), 1.0, atol=1e-12)


def test_expodistance_is_zero_for_exponential_norms():
    rng = np.random.default_rng(2)
    rot = [_orthogonal(s, 8) for s in range(10)]
    x0 = rng.normal(size=8)
    # Norms e^{0.3 l}‖x⁰‖ with the direction changing freely: ED = 0 (only norms matter).
    traj = np.stack([np.exp(0.3 * l) * (rot[l] @ x0) for l in range(10)])
    assert tj.expodistance(np.linalg.norm(traj, axis=-1)) == pytest.approx(0.0, abs=1e-20)
    # α = (1, 2): mean 1.5, variance 0.25, ED = 1/9.
    assert tj.expodistance(np.exp([0.0, 1.0, 3.0])) == pytest.approx(1 / 9)
    np.testing.assert_allclose(tj.log_growth(np.exp([0.0, 1.0, 3.0])), [1.0, 2.0])


def test_sliding_windows_equal_the_whole_depth_scores_of_each_slice():
    rng = np.random.default_rng(3)
    traj = np.cumsum(rng.normal(size=(2, 31, 12)), axis=1)
    norms = np.linalg.norm(traj, axis=-1)
    lw, ew = tj.lss_windows(traj, 11), tj.ed_windows(norms, 11)
    assert lw.shape == ew.shape == (2, 21)
    for j in (0, 7, 20):
        np.testing.assert_allclose(lw[:, j], tj.line_shape_score(traj[:, j:j + 11]), rtol=1e-12)
        np.testing.assert_allclose(ew[:, j], tj.expodistance(norms[:, j:j + 11]), rtol=1e-12)
    np.testing.assert_array_equal(tj.window_centres(31, 11), np.arange(5, 26))
    assert tj.lss_windows(traj[:, :5], 11).shape == (2, 0)
    with pytest.raises(ValueError, match="at least 2"):
        tj.lss_windows(traj, 1)


def test_pca_fitted_on_the_last_layer():
    """Last-layer states in a 2-D plane: the two axes explain all their variance and the
    projection keeps their pairwise distances; earlier layers are projected on the same axes."""
    rng = np.random.default_rng(4)
    T, n_points, d = 9, 5, 16
    plane = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    coords = rng.normal(size=(T, 2)) * [3.0, 1.0]
    traj = rng.normal(size=(T, n_points, d))
    traj[:, -1] = 2.0 + coords @ plane.T
    proj, ratio = tj.trajectory_pca(traj)
    assert proj.shape == (T, n_points, 2)
    np.testing.assert_allclose(ratio.sum(), 1.0)
    assert ratio[0] > ratio[1]
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(proj[:, -1]), dist(coords), atol=1e-10)
    np.testing.assert_allclose(proj[:, -1].mean(0), 0.0, atol=1e-12)
    # Same affine map for every layer: projection of layer 0 = (x − mean) · axes.
    mean = traj[:, -1].mean(0)
    axes = np.linalg.lstsq(traj[:, -1] - mean, proj[:, -1], rcond=None)[0]
    np.testing.assert_allclose(proj[:, 0], (traj[:, 0] - mean) @ axes, atol=1e-8)
    # Deterministic signs: the largest loading of each axis is positive.
    again, _ = tj.trajectory_pca(-traj)
    np.testing.assert_allclose(np.abs(again), np.abs(proj), atol=1e-10)
