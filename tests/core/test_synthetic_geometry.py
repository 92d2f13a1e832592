"""The block-by-block "schur" and "pseudospectra" files of a synthetic run (the latency benchmark's
d = 4096 run) against dense computations with the real stages' functions on a small run."""

from __future__ import annotations

import numpy as np
import pytest

from resdyn.core import dose, spectral
from resdyn.core.synthetic import make_synthetic_run
from resdyn.core.synthetic_geometry import NR_ANGLES, PSEUDO_DOSES, PSEUDO_GRID, PSEUDO_PAD, add_geometry_stages

L, D = 3, 33  # k = 8: a 16×16 block, eight 2×2 blocks and a 1×1 block


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = make_synthetic_run(tmp_path_factory.mktemp("synth-geom"), "g", n_layers=L, d=D, n_samples=8)
    add_geometry_stages(store)
    return store


@pytest.fixture(scope="module")
def jac(run):
    return run.read_array("jacobians", mmap=False).astype(np.float64)


def _dosed(q, t, c, shift=0.0):
    return shift * np.eye(D) + q @ spectral.dosed_schur_factor(t.astype(np.complex128), c) @ q.conj().T


def test_schur_factors_are_a_schur_form_of_every_layer(run, jac):
    for qn, tn, shift in (("schur_Q", "schur_T", 0.0), ("schur_R_Q", "schur_R_T", 1.0)):
        q, t = run.read_array(qn).astype(np.complex128), run.read_array(tn).astype(np.complex128)
        for l in range(L):
            np.testing.assert_allclose(q[l].conj().T @ q[l], np.eye(D), atol=1e-5)
            assert not np.any(np.tril(t[l], -1))
            np.testing.assert_allclose(_dosed(q[l], t[l], 1.0, shift), jac[l], atol=2e-5 * np.abs(jac[l]).max())
    m = run.manifest()
    assert {"schur", "pseudospectra"} <= set(m["stages_done"]) and m["status"] == "complete"
    from resdyn.compute import geometry

    for stage in geometry.STAGES[1:]:
        for out in stage.outputs:
            assert (run.path / out).is_file(), out


def test_dose_rows_equal_dense_products_of_the_stored_factors(run, jac):
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    df = run.read_table("schur_dose")
    assert set(df["construction"]) == {"dose"} and sorted(df["mode"].unique()) == ["J", "R"]
    for c in (0.0, 0.5, 1.0, 2.0):
        p = np.eye(D, dtype=np.complex128)
        for l in range(L):
            p = _dosed(q[l], t[l], c) @ p
        want = spectral.product_stats(p)
        for mode in ("J", "R"):
            row = df[(df["mode"] == mode) & (df["c"] == c)].iloc[0]
            assert row["erank"] == pytest.approx(want.erank, rel=1e-4)
            assert row["log10_fro"] == pytest.approx(want.log10_fro, abs=1e-5)
            assert row["henrici"] == pytest.approx(want.henrici, abs=1e-4)
    # At c = 1 the product is the model's own linearised stack.
    p = np.eye(D)
    for l in range(L):
        p = jac[l] @ p
    one = df[(df["mode"] == "J") & (df["c"] == 1.0)].iloc[0]
    assert one["log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-4)


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
