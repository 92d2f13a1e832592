"""The block-by-block "schur" and "pseudospectra" files of a synthetic run (the latency benchmark's
d = 4096 run) against dense computations with the real stages' functions on a small run."""

from __future__ import annotations

import numpy as np
import pytest

from resdyn.core import dose, spectral
from resdyn.testing.synthetic import make_synthetic_run
from resdyn.testing.synthetic_geometry import (NR_ANGLES, PSEUDO_DOSES, PSEUDO_GRID, PSEUDO_PAD,
                                            SYNTHETIC_SCHUR_ORDER, _schur_2x2, add_geometry_stages)

L, D = 3, 33  # k = 8: a 16×16 block, eight 2×2 blocks and a 1×1 block


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = make_synthetic_run(tmp_path_factory.mktemp("synth-geom"), "g", n_layers=L, d=D, n_samples=8)
    add_geometry_stages(store)
    return store


@pytest.fixture(scope="module")
def jac(run):
    return run.read_array("jacobians", mmap=False).astype(np.float64)


def _dosed(q, t, c):
    return q @ spectral.dosed_schur_factor(t.astype(np.complex128), c) @ q.conj().T


def test_schur_factors_are_a_schur_form_of_every_layer(run, jac):
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    for l in range(L):
        np.testing.assert_allclose(q[l].conj().T @ q[l], np.eye(D), atol=1e-5)
        assert not np.any(np.tril(t[l], -1))
        np.testing.assert_allclose(_dosed(q[l], t[l], 1.0), jac[l], atol=2e-5 * np.abs(jac[l]).max())
    m = run.manifest()
    assert {"schur", "pseudospectra"} <= set(m["stages_done"]) and m["status"] == "complete"
    # Block by block, not the canonical order, and the manifest says so.
    assert m["schur_order"] == SYNTHETIC_SCHUR_ORDER != spectral.SCHUR_ORDER
    assert not run.has_array("schur_R_Q") and not run.has_array("schur_R_T")
    from resdyn.compute.stages import stages_named

    for stage in stages_named("schur", "pseudospectra"):
        for out in stage.outputs:
            assert (run.path / out).is_file(), out


def _stats(mats):
    p = np.eye(D, dtype=np.complex128)
    for m in mats:
        p = m @ p
    return spectral.product_stats(p)


def test_dose_rows_equal_dense_products_of_the_stored_factors(run, jac):
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    df = run.read_table("schur_dose")
    assert list(df.columns) == ["mode", "construction", "draw", "c", "beta", "erank", "log10_fro", "henrici"]
    assert set(df["construction"]) == {"dose", "order_draw", "skip"} and set(df["mode"]) == {"J"}
    assert (df.loc[df["construction"] != "skip", "beta"] == 1.0).all()
    for c in (0.0, 0.5, 1.0, 2.0):
        for cons, beta in (("dose", 1.0), ("skip", 0.0), ("skip", 0.5), ("skip", 1.0)):
            want = _stats([_dosed(q[l], t[l], c) + (beta - 1.0) * np.eye(D) for l in range(L)])
            row = df[(df["construction"] == cons) & (df["beta"] == beta) & (df["c"] == c)].iloc[0]
            assert row["erank"] == pytest.approx(want.erank, rel=1e-4)
            assert row["log10_fro"] == pytest.approx(want.log10_fro, abs=1e-5)
            assert row["henrici"] == pytest.approx(want.henrici, abs=1e-4)
    # At c = 1 the product is the model's own linearised stack, in every eigenvalue order.
    p = np.eye(D)
    for l in range(L):
        p = jac[l] @ p
    one = df[df["c"] == 1.0]
    np.testing.assert_allclose(one[one["beta"] == 1.0]["log10_fro"], np.log10(np.linalg.norm(p)), atol=1e-4)


def test_order_draws_are_block_orders_that_move_the_dose_below_one(run):
    """The draws permute eigenvalues within blocks: c = 1 is unchanged, c = 0 is not, and the
    2×2 Schur forms with the pair swapped are still Schur forms of the same blocks."""
    df = run.read_table("schur_dose")
    draws = df[df["construction"] == "order_draw"]
    assert sorted(draws["draw"].unique()) == list(range(spectral.N_DRAWS))
    band = dose.order_band(df).set_index("c")
    assert band.loc[1.0, "hi"] - band.loc[1.0, "lo"] < 1e-9 * band.loc[1.0, "dose"]
    assert band.loc[0.0, "hi"] - band.loc[0.0, "lo"] > 1e-3 * band.loc[0.0, "dose"]
    b = np.array([[[0.9, 0.4], [-0.3, 1.1]], [[0.2, 1.0], [-1.0, 0.2]]])
    for swap in (np.array([False, False]), np.array([True, True])):
        u, s = _schur_2x2(b, swap)
        np.testing.assert_allclose(np.einsum("mij,mjk,mlk->mil", u, s, u.conj()), b, atol=1e-12)
        np.testing.assert_allclose(s[:, 1, 0], 0)
    u0, s0 = _schur_2x2(b)
    u1, s1 = _schur_2x2(b, np.array([True, True]))
    np.testing.assert_allclose(s1[:, 0, 0], s0[:, 1, 1], atol=1e-12)  # the pair in the other order


def test_layer_sigma_numerical_range_and_pseudospectra_match_dense(run):
    t = run.read_array("schur_T")
    sv, nr, ps = run.read_table("layer_sigma"), run.read_table("numerical_range"), run.read_table("pseudospectra")
    assert (ps.groupby(["layer", "c"]).size() == PSEUDO_GRID**2).all()
    for l in range(L):
        for c in PSEUDO_DOSES:
            got = sv[(sv["layer"] == l) & (sv["c"] == c)].sort_values("i")["sigma"].to_numpy()
            np.testing.assert_allclose(got, dose.layer_sigma(run, l, c), rtol=1e-5, atol=1e-7)
            tc = spectral.dosed_schur_factor(t[l].astype(np.complex128), c)
            w = nr[(nr["layer"] == l) & (nr["c"] == c)].sort_values("idx")
            want = spectral.numerical_range(tc, NR_ANGLES, method="dense")
            # Each point touches the same supporting line (where a side of W lies on it, as for
            # conjugate pairs at θ = π, either end of that side is right).
            rot = np.exp(1j * np.linspace(0, 2 * np.pi, NR_ANGLES, endpoint=False))
            np.testing.assert_allclose((rot * (w["x"] + 1j * w["y"]).to_numpy()).real, (rot * want).real, atol=1e-6)
            rows = ps[(ps["layer"] == l) & (ps["c"] == c)]
            x, y = spectral.pseudospectrum_box(np.diag(tc), want, PSEUDO_GRID, PSEUDO_PAD)
            np.testing.assert_allclose(np.unique(rows["x"]), x, atol=1e-6)
            for _, r in rows.iloc[::211].iterrows():
                ref = np.linalg.svd((r["x"] + 1j * r["y"]) * np.eye(D) - tc, compute_uv=False)[-1]
                assert r["log10_sigma_min"] == pytest.approx(np.log10(ref), abs=0.02)


def test_transient_growth_matches_the_real_function(run, jac):
    tg = run.read_table("transient_growth")
    want = spectral.transient_growth(jac)
    assert len(tg) == L * (L + 1) // 2
    for _, r in tg.iterrows():
        assert r["log10_norm"] == pytest.approx(want[int(r["layer"]), int(r["k"]) - 1], abs=1e-5)
