"""Stages "cumulative", "schur", "pseudospectra" on a small synthetic run, and the live dose.

Every table is checked against a direct dense computation (d = 32 ≤ K_cum, so the cumulative
products are exact), and the live slider function against the stored dose grid.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from resdyn.compute import geometry
from resdyn.compute.context import RunContext
from resdyn.config import RunConfig
from resdyn.core import dose, linalg, spectral
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError
from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN

L, D = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]


def _ctx(store: RunStore, seed: int = 0) -> RunContext:
    return RunContext(RunConfig(runs_dir=store.path.parent, run_id=store.run_id, seed=seed), store, quiet=True)


@pytest.fixture(scope="module")
def run(synthetic_runs_dir, tmp_path_factory) -> RunStore:
    """A copy of the trained synthetic run with the three geometry stages done."""
    root = tmp_path_factory.mktemp("geometry") / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    store = RunStore(root / TRAINED_RUN)
    ctx = _ctx(store)
    for stage in geometry.STAGES:
        stage.fn(ctx)
    return store


@pytest.fixture(scope="module")
def jac(run) -> np.ndarray:
    return run.read_array("jacobians", mmap=False).astype(np.float64)


def _product(mats):
    p = np.eye(mats[0].shape[0], dtype=np.result_type(*mats))
    for m in mats:
        p = m @ p
    return p


def test_stage_declarations_match_what_they_write(run):
    assert [s.name for s in geometry.STAGES] == ["cumulative", "schur", "pseudospectra"]
    for stage in geometry.STAGES:
        assert not stage.needs_model
        for out in stage.outputs:
            assert (run.path / out).is_file(), out


# -- cumulative -----------------------------------------------------------------------------------

def test_cumulative_table_is_the_dense_products_erank_and_norm(run, jac):
    cum = run.read_table("cumulative")
    assert list(cum.columns) == ["layer", "erank", "log10_fro"]
    assert cum["layer"].tolist() == list(range(L))
    for l in range(L):
        p = _product([jac[m] for m in range(l, L)])
        row = cum[cum["layer"] == l].iloc[0]
        assert row["erank"] == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-9)
        assert row["log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-9)


def test_cumulative_spectra_hold_three_depths(run, jac):
    spec = run.read_table("cumulative_spectra")
    assert list(spec.columns) == ["layer", "idx", "sigma", "log10_sigma"]
    assert sorted(spec["layer"].unique()) == [0, L // 2, L - 1]
    for l in (0, L // 2, L - 1):
        rows = spec[spec["layer"] == l].sort_values("idx")
        s = np.linalg.svd(_product([jac[m] for m in range(l, L)]), compute_uv=False)
        np.testing.assert_allclose(rows["sigma"].to_numpy(), s, rtol=1e-8, atol=1e-12 * s[0])


def test_summary_has_spearman_of_erank_against_spectral_radius(run):
    summary = run.read_table("summary").set_index("name")["value"]
    cum = run.read_table("cumulative")
    lay = run.read_table("layers")
    lay = lay[lay["operator"] == "J"].sort_values("layer")
    ref = stats.spearmanr(cum.sort_values("layer")["erank"], lay["spectral_radius"])
    assert summary["cumulative.spearman_erank_radius.rho"] == pytest.approx(ref.statistic)
    assert summary["cumulative.spearman_erank_radius.p"] == pytest.approx(ref.pvalue)
    assert summary["cumulative.k"] == D
    assert summary["cumulative.erank_P0"] == pytest.approx(cum["erank"].iloc[0])


def test_cumulative_rank_is_recorded_exact_by_default(run):
    assert run.manifest()["cumulative_rank"] == D


def _copy(run: RunStore, tmp_path, run_id: str) -> RunStore:
    root = tmp_path / "runs"
    shutil.copytree(run.path, root / run_id)
    return RunStore(root / run_id)


def test_cumulative_rank_flag_keeps_the_papers_truncation(run, jac, tmp_path):
    store = _copy(run, tmp_path, "truncated")
    ctx = RunContext(RunConfig(runs_dir=store.path.parent, run_id=store.run_id, cumulative_rank=8), store, quiet=True)
    geometry.compute_cumulative(ctx)
    ref = spectral.cumulative_products(jac, k=8)
    cum = store.read_table("cumulative")
    np.testing.assert_allclose(cum["erank"], ref.erank, rtol=1e-12)
    assert store.manifest()["cumulative_rank"] == 8
    assert store.read_table("summary").set_index("name")["value"]["cumulative.k"] == 8
    assert (cum["erank"] < run.read_table("cumulative")["erank"]).all()  # biased low against the exact
    assert (store.read_table("cumulative_spectra").groupby("layer").size() == 8).all()
    # A later --redo without the flag keeps the run's recorded rank.
    geometry.compute_cumulative(_ctx(store))
    np.testing.assert_allclose(store.read_table("cumulative")["erank"], ref.erank, rtol=1e-12)


def test_run_from_before_the_key_is_recomputed_exact_and_recorded(run, tmp_path):
    store = _copy(run, tmp_path, "old")
    m = store.manifest()
    del m["cumulative_rank"]
    store.write_manifest(m)
    geometry.compute_cumulative(_ctx(store))
    assert store.manifest()["cumulative_rank"] == D
    np.testing.assert_allclose(store.read_table("cumulative")["erank"], run.read_table("cumulative")["erank"])


def test_cumulative_rank_above_d_is_one_line_error(run, tmp_path):
    store = _copy(run, tmp_path, "too-wide")
    ctx = RunContext(RunConfig(runs_dir=store.path.parent, run_id=store.run_id, cumulative_rank=D + 1), store,
                     quiet=True)
    with pytest.raises(ResdynError, match=f"--cumulative-rank {D + 1} must be between 1 and d_model = {D}"):
        geometry.compute_cumulative(ctx)


def test_update_summary_merges_with_other_stages_rows(tmp_path):
    store = RunStore(tmp_path / "r")
    geometry.update_summary(store, {"a": 1.0, "b": 2})
    geometry.update_summary(store, {"b": 3.0, "c": np.float32(4)})
    df = store.read_table("summary").set_index("name")["value"]
    assert df.to_dict() == {"a": 1.0, "b": 3.0, "c": 4.0}


# -- schur ----------------------------------------------------------------------------------------

def test_schur_factors_are_stored_complex64_and_reconstruct_j_and_r(run, jac):
    for qn, tn, shift in (("schur_Q", "schur_T", 0.0), ("schur_R_Q", "schur_R_T", 1.0)):
        q, t = run.read_array(qn), run.read_array(tn)
        assert q.dtype == np.complex64 and t.dtype == np.complex64 and q.shape == t.shape == (L, D, D)
        for l in range(L):
            assert not np.any(np.tril(t[l], -1))
            assert spectral.schur_error(q[l], t[l], jac[l], shift) < 1e-5
            np.testing.assert_allclose(q[l].conj().T @ q[l], np.eye(D), atol=1e-5)
    summary = run.read_table("summary").set_index("name")["value"]
    assert summary["schur.reconstruction_error.J"] < spectral.SCHUR_RTOL_32


def test_schur_dose_table_covers_the_grid_controls_and_modes(run):
    df = run.read_table("schur_dose")
    assert list(df.columns) == ["mode", "construction", "draw", "c", "erank", "log10_fro", "henrici"]
    assert len(df) == 2 * (1 + 2 * spectral.N_DRAWS) * len(spectral.DOSE_GRID)
    assert set(df["mode"]) == {"J", "R"}
    assert set(df["construction"]) == set(spectral.CONSTRUCTIONS)
    assert sorted(df.loc[df["construction"] == "control_b", "draw"].unique()) == list(range(spectral.N_DRAWS))
    assert sorted(df["c"].unique()) == list(spectral.DOSE_GRID)
    assert df["henrici"].between(0, 1).all() and np.isfinite(df["erank"]).all()


def test_dose_at_one_is_the_model_and_at_zero_is_the_normal_stack(run, jac):
    df = run.read_table("schur_dose")
    dose_j = df[(df["mode"] == "J") & (df["construction"] == "dose")].set_index("c")
    p = _product(list(jac))
    assert dose_j.loc[1.0, "erank"] == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
    assert dose_j.loc[1.0, "log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
    assert dose_j.loc[1.0, "henrici"] == pytest.approx(linalg.henrici(p), abs=1e-4)
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    p0 = _product([spectral.normal_part(q[l].astype(np.complex128), t[l].astype(np.complex128)) for l in range(L)])
    assert dose_j.loc[0.0, "erank"] == pytest.approx(spectral.erank(np.linalg.svd(p0, compute_uv=False)), rel=1e-4)
    # Control A at c = 0 adds nothing: it is the dose at c = 0.
    a0 = df[(df["mode"] == "J") & (df["construction"] == "control_a") & (df["c"] == 0.0)]
    np.testing.assert_allclose(a0["erank"], dose_j.loc[0.0, "erank"])


def test_control_draws_are_seeded(run, jac):
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    a = geometry.dose_table(q, t, jac, "J", seed=0)
    b = geometry.dose_table(q, t, jac, "J", seed=0)
    c = geometry.dose_table(q, t, jac, "J", seed=1)
    stored = run.read_table("schur_dose")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_allclose(a["erank"], stored[stored["mode"] == "J"]["erank"], rtol=1e-12)
    ctrl = a["construction"] != "dose"
    assert not np.allclose(a.loc[ctrl & (a["c"] > 0), "erank"], c.loc[ctrl & (c["c"] > 0), "erank"])


# -- pseudospectra --------------------------------------------------------------------------------

def test_pseudospectra_grid_is_exact_at_zero_dose_and_close_to_svd_at_one(run, jac):
    ps = run.read_table("pseudospectra")
    assert list(ps.columns) == ["layer", "c", "x", "y", "log10_sigma_min"]
    n = geometry.PSEUDO_GRID
    assert (ps.groupby(["layer", "c"]).size() == n * n).all()
    t = run.read_array("schur_T")
    l = 1
    lam = np.diag(t[l]).astype(np.complex128)
    rows = ps[(ps["layer"] == l) & (ps["c"] == 0.0)]
    z = rows["x"].to_numpy() + 1j * rows["y"].to_numpy()
    np.testing.assert_allclose(rows["log10_sigma_min"], np.log10(np.abs(z[:, None] - lam).min(axis=1)), atol=1e-9)
    rows = ps[(ps["layer"] == l) & (ps["c"] == 1.0)].iloc[:: 97]
    for _, r in rows.iterrows():
        ref = np.linalg.svd((r["x"] + 1j * r["y"]) * np.eye(D) - jac[l], compute_uv=False)[-1]
        assert r["log10_sigma_min"] == pytest.approx(np.log10(ref), abs=0.02)


def test_numerical_range_supports_the_hermitian_parts(run, jac):
    nr = run.read_table("numerical_range")
    assert list(nr.columns) == ["layer", "c", "idx", "x", "y"]
    l = 2
    rows = nr[(nr["layer"] == l) & (nr["c"] == 1.0)].sort_values("idx")
    assert len(rows) == geometry.NR_ANGLES
    w = rows["x"].to_numpy() + 1j * rows["y"].to_numpy()
    rot = np.exp(1j * np.linspace(0, 2 * np.pi, geometry.NR_ANGLES, endpoint=False))
    support = np.array([np.linalg.eigvalsh(0.5 * (r * jac[l] + np.conj(r) * jac[l].T))[-1] for r in rot])
    np.testing.assert_allclose((rot * w).real, support, atol=1e-4)


def test_layer_sigma_is_the_svd_of_the_dosed_jacobian(run, jac):
    """layer_sigma holds σ(J_l(c)) at the stored doses: at c = 1 that of J̄_l itself, at c = 0 that
    of the normal matrix with J̄_l's eigenvalues, and every c matches the live dose's SVD."""
    sv = run.read_table("layer_sigma")
    assert list(sv.columns) == ["layer", "c", "i", "sigma"]
    assert (sv.groupby(["layer", "c"]).size() == D).all()
    assert sorted(sv["c"].unique()) == sorted(geometry.PSEUDO_DOSES)
    for l, c in ((0, 1.0), (2, 0.0), (L - 1, 2.0)):
        got = sv[(sv["layer"] == l) & (sv["c"] == c)].sort_values("i")["sigma"].to_numpy()
        np.testing.assert_allclose(got, dose.layer_sigma(run, l, c), rtol=1e-6)
        if c == 1.0:
            np.testing.assert_allclose(got, np.linalg.svd(jac[l], compute_uv=False), rtol=1e-4, atol=1e-6)
        if c == 0.0:
            lam = np.linalg.eigvals(jac[l])
            np.testing.assert_allclose(got, np.sort(np.abs(lam))[::-1], rtol=1e-4, atol=1e-6)


def test_transient_growth_table_is_the_norm_of_partial_products(run, jac):
    tg = run.read_table("transient_growth")
    assert list(tg.columns) == ["layer", "k", "log10_norm"]
    assert len(tg) == L * (L + 1) // 2
    for l, k in ((0, L), (1, 2), (L - 1, 1)):
        ref = np.log10(np.linalg.norm(_product([jac[m] for m in range(l, l + k)]), 2))
        assert tg[(tg["layer"] == l) & (tg["k"] == k)]["log10_norm"].iloc[0] == pytest.approx(ref, abs=1e-5)


# -- the live dose behind the slider --------------------------------------------------------------

@pytest.mark.parametrize("mode", ["J", "R"])
def test_live_dose_reproduces_the_stored_grid(run, mode):
    df = run.read_table("schur_dose")
    grid = df[(df["mode"] == mode) & (df["construction"] == "dose")].set_index("c")
    for c in (0.0, 0.5, 2.0):
        res = dose.dose_response(run, c, mode, layers=[0])
        assert res.path == "live"
        assert res.erank == pytest.approx(grid.loc[c, "erank"], rel=1e-6)
        assert res.log10_fro == pytest.approx(grid.loc[c, "log10_fro"], abs=1e-6)
        assert res.henrici == pytest.approx(grid.loc[c, "henrici"], abs=1e-6)


def test_live_dose_singular_values_and_fixed_eigenvalues(run, jac):
    res = dose.dose_response(run, 1.0, "J", layers=[1, 3])
    assert set(res.sigma) == {1, 3}
    np.testing.assert_allclose(res.sigma[3], np.linalg.svd(jac[3], compute_uv=False), rtol=1e-4)
    half = dose.dose_response(run, 0.5, "J", layers=[2]).sigma[2]
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    ref = np.linalg.svd(spectral.dose_matrix(q[2].astype(np.complex128), t[2].astype(np.complex128), 0.5),
                        compute_uv=False)
    np.testing.assert_allclose(half, ref, rtol=1e-4)
    lam = dose.layer_eigenvalues(run, 2)
    np.testing.assert_allclose(np.sort(np.abs(lam)), np.sort(np.abs(np.linalg.eigvals(jac[2]))), rtol=1e-4)


def test_live_dose_between_grid_points_is_exact_not_interpolated(run, jac):
    res = dose.dose_response(run, 0.37, "J", layers=[])
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    p = _product([spectral.dose_matrix(q[l].astype(np.complex128), t[l].astype(np.complex128), 0.37)
                  for l in range(L)])
    assert res.erank == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
    assert res.henrici == pytest.approx(linalg.henrici(p), abs=1e-4)


def test_interpolated_fallback_is_labelled_and_hits_the_grid(run):
    df = run.read_table("schur_dose")
    grid = df[(df["mode"] == "J") & (df["construction"] == "dose")].set_index("c")
    res = dose.dose_response(run, 0.5, "J", layers=[0], path="interpolated")
    assert res.path == "interpolated"
    assert res.erank == pytest.approx(grid.loc[0.5, "erank"], rel=1e-12)
    assert 0 in res.sigma
    # "auto" falls back when L·d³ exceeds the budget.
    mid = dose.dose_response(run, 0.6, "J", layers=[], max_work=1.0)
    assert mid.path == "interpolated"
    lo, hi = sorted(grid.loc[[0.5, 0.75], "log10_fro"])
    assert lo <= mid.log10_fro <= hi
    er = np.exp(np.log(grid.loc[0.5, "erank"]) * 0.6 + np.log(grid.loc[0.75, "erank"]) * 0.4)
    assert mid.erank == pytest.approx(er, rel=1e-12)


def test_dose_rejects_out_of_range_c_and_missing_stage(run, synthetic_runs_dir):
    with pytest.raises(ResdynError, match="outside"):
        dose.dose_response(run, 2.5)
    with pytest.raises(ResdynError, match="schur"):
        dose.dose_response(RunStore(synthetic_runs_dir / TRAINED_RUN), 1.0, path="live")
