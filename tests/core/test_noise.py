"""Split-half noise (resdyn.core.noise): the half, the normal surrogates from one eigendecomposition,
and the half statistics."""

from __future__ import annotations

import numpy as np
import pytest

from resdyn.core import noise, spectral
from resdyn.core.linalg import henrici


def _jac(seed=0, d=24, scale=0.7):
    rng = np.random.default_rng(seed)
    return np.eye(d) + scale * rng.standard_normal((d, d)) / np.sqrt(d)


def test_split_half_is_seeded_and_half():
    a, b = noise.split_half(11, 3), noise.split_half(11, 3)
    assert (a == b).all() and a.sum() == 5
    assert not (noise.split_half(11, 4) == a).all()
    assert not (a == (np.arange(11) % 2 == 0)).all()  # not the alternating split


def test_surrogates_are_normal_with_the_spectrum_and_the_schur_order_agrees():
    j = _jac()
    lam = np.linalg.eigvals(j)
    parts = noise.surrogate_normal_parts(j)
    for s, a in parts.items():
        assert henrici(a) < 1e-6, s
        got = np.linalg.eigvals(a)
        # (the polar factors are stored in float32 by the schur stage: agreement to 1e-6)
        assert max(np.abs(got - x).min() for x in lam) < 1e-6 and max(np.abs(lam - x).min() for x in got) < 1e-6
    # The descending surrogate is the schur stage's canonical normal part (Q Λ Q*).
    q, t = spectral.schur_canonical(j)
    np.testing.assert_allclose(parts["descending"], spectral.normal_part(q, t), atol=1e-10)
    assert np.abs(parts["descending"] - parts["ascending"]).max() > 1e-3  # the order matters
    # The polar surrogate is the schur stage's (order- and phase-freedom: tests/core/test_surrogates.py).
    p = noise.surrogates.polar_layer(j)
    np.testing.assert_allclose(parts["polar"], p.w.astype(complex) @ p.k @ p.w.T, atol=1e-12)


def test_half_statistics_match_the_stages_definitions():
    jac = np.stack([_jac(s) for s in range(3)])
    df = noise.half_statistics(jac, k=4)
    from resdyn.core.linalg import operator_table

    layers, _ = operator_table(jac, 4)
    j = layers[layers["operator"] == "J"].set_index("layer")
    np.testing.assert_allclose(noise.layer_values(df, "frac_complex").to_numpy(), j["frac_complex"].to_numpy())
    np.testing.assert_allclose(noise.layer_values(df, "self_alignment").to_numpy(), j["self_alignment"].to_numpy(),
                               rtol=1e-10)
    assert noise.scalar(df, "erank_p0") == pytest.approx(spectral.cumulative_products(jac).erank[0])
    e0, e1 = noise.dose_values(df, "polar")
    assert e1 == pytest.approx(noise.scalar(df, "erank_p0"), rel=1e-4)  # c = 1 is J̄'s own product
    assert e0 != pytest.approx(e1, rel=1e-3)
    assert set(df["statistic"]) == set(noise.HALF_STATISTICS)


def test_bootstrap_sd_resamples_groups():
    values = np.repeat([0.0, 10.0], 50)
    groups = np.repeat([0, 1], 50)
    assert noise.bootstrap_sd(values, groups, np.mean) > 3  # two groups: the mean swings 0 / 5 / 10
    assert noise.bootstrap_sd(values, None, np.mean) < 1  # 100 independent values
    assert np.isnan(noise.bootstrap_sd(values, np.zeros(100), np.mean))


def test_polar_factors_from_numpys_eigendecomposition_equal_the_stages():
    """noise passes numpy's eig to ``surrogates.polar_layer`` rather than taking it twice; the real
    basis built from it must be the stage's own (dgeev's) to rounding, pairs and all."""
    j = _jac(4, d=60)
    a, b = noise.surrogates.polar_layer(j), noise.surrogates.polar_layer(j, np.linalg.eig(j))
    assert a.ok and b.ok and b.error < 1e-12
    np.testing.assert_allclose(b.w.astype(float) @ b.k @ b.w.T, a.w.astype(float) @ a.k @ a.w.T, atol=1e-6)
    np.testing.assert_allclose(b.cond, a.cond, rtol=1e-10)
    swapped = np.linalg.eig(j)
    lam, v = swapped[0].copy(), swapped[1].copy()
    pair = int(np.flatnonzero(lam.imag > 0)[0])
    lam[[pair, pair + 1]], v[:, [pair, pair + 1]] = lam[[pair + 1, pair]], v[:, [pair + 1, pair]]
    assert noise.surrogates.polar_layer(j, (lam, v)).error > 1e-6  # a layout it does not expect is caught
