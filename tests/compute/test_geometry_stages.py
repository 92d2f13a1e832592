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

from resdyn.compute.stages import cumulative, schur, stages_named
from resdyn.core.spectral import NR_ANGLES, PSEUDO_DOSES, PSEUDO_GRID
from resdyn.compute.context import RunContext
from resdyn.config import RunConfig
from resdyn.core import dose, linalg, spectral, surrogates
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError
from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN
from tests.legacy import write_old_table

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
    for stage in stages_named("cumulative", "schur", "pseudospectra"):
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
    assert [s.name for s in stages_named("cumulative", "schur", "pseudospectra")] == ["cumulative", "schur", "pseudospectra"]
    for stage in stages_named("cumulative", "schur", "pseudospectra"):
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
    cumulative.run(ctx)
    ref = spectral.cumulative_products(jac, k=8)
    cum = store.read_table("cumulative")
    np.testing.assert_allclose(cum["erank"], ref.erank, rtol=1e-12)
    assert store.manifest()["cumulative_rank"] == 8
    assert store.read_table("summary").set_index("name")["value"]["cumulative.k"] == 8
    assert (cum["erank"] < run.read_table("cumulative")["erank"]).all()  # biased low against the exact
    assert (store.read_table("cumulative_spectra").groupby("layer").size() == 8).all()
    # A later --redo without the flag keeps the run's recorded rank.
    cumulative.run(_ctx(store))
    np.testing.assert_allclose(store.read_table("cumulative")["erank"], ref.erank, rtol=1e-12)


def test_run_from_before_the_key_is_recomputed_exact_and_recorded(run, tmp_path):
    store = _copy(run, tmp_path, "old")
    m = store.manifest()
    del m["cumulative_rank"]
    store.write_manifest(m)
    cumulative.run(_ctx(store))
    assert store.manifest()["cumulative_rank"] == D
    np.testing.assert_allclose(store.read_table("cumulative")["erank"], run.read_table("cumulative")["erank"])


def test_cumulative_rank_above_d_is_one_line_error(run, tmp_path):
    store = _copy(run, tmp_path, "too-wide")
    ctx = RunContext(RunConfig(runs_dir=store.path.parent, run_id=store.run_id, cumulative_rank=D + 1), store,
                     quiet=True)
    with pytest.raises(ResdynError, match=f"--cumulative-rank {D + 1} must be between 1 and d_model = {D}"):
        cumulative.run(ctx)


def test_update_summary_merges_with_other_stages_rows(tmp_path):
    store = RunStore(tmp_path / "r")
    store.update_summary({"a": 1.0, "b": 2})
    store.update_summary({"b": 3.0, "c": np.float32(4)})
    df = store.read_table("summary").set_index("name")["value"]
    assert df.to_dict() == {"a": 1.0, "b": 3.0, "c": 4.0}


# -- schur ----------------------------------------------------------------------------------------

def test_schur_factors_are_stored_complex64_and_reconstruct_j(run, jac):
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    assert q.dtype == np.complex64 and t.dtype == np.complex64 and q.shape == t.shape == (L, D, D)
    for l in range(L):
        assert not np.any(np.tril(t[l], -1))
        assert spectral.schur_error(q[l], t[l], jac[l]) < 1e-5
        np.testing.assert_allclose(q[l].conj().T @ q[l], np.eye(D), atol=1e-5)
    summary = run.read_table("summary").set_index("name")["value"]
    assert summary["schur.reconstruction_error.J"] < spectral.SCHUR_RTOL_32
    # Mode R's factors are no longer stored (the same computation in another order).
    assert not run.has_array("schur_R_Q") and not run.has_array("schur_R_T")


def test_stored_schur_order_is_descending_modulus_then_ascending_arg(run, jac):
    """The stored T's diagonal is in the documented order, recorded in the manifest, and each
    layer's eigenvalues are J̄'s."""
    assert run.manifest()["schur_order"] == spectral.SCHUR_ORDER == "descending |λ|, then ascending arg λ"
    t = run.read_array("schur_T")
    for l in range(L):
        lam = np.diag(t[l]).astype(np.complex128)
        mod = np.abs(lam)
        assert np.all(np.diff(mod) <= 1e-6 * mod[0])  # descending (float32 rounding of equal moduli)
        tie = np.abs(np.diff(mod)) <= 1e-6 * mod[0]
        arg = np.angle(lam)
        assert np.all(np.diff(arg)[tie] > 0)  # conjugate pairs: negative imaginary part first
        assert tie.sum() >= 2  # the fixture's J̄ has complex pairs, so the tie-break is exercised
        ref = np.linalg.eigvals(jac[l])
        assert np.abs(lam[:, None] - ref[None, :]).min(axis=1).max() < 1e-4


def test_canonical_order_breaks_modulus_ties_by_ascending_arg():
    lam = np.array([1.0, complex(-2.0, -0.0), 2j, -2j, 0.5 + 0.5j, 3.0, 1 + 1j, (1 - 1j) * (1 + 1e-15)])
    got = lam[spectral.canonical_order(lam)]
    # |3|; |2|: −2j (arg −π/2), 2j (π/2), −2 (arg π, even with a −0 imaginary part); the conjugate
    # pair 1 ∓ i, whose moduli differ by rounding, negative imaginary part first; then 1, then |0.71|.
    want = np.array([3.0, -2j, 2j, -2.0, (1 - 1j) * (1 + 1e-15), 1 + 1j, 1.0, 0.5 + 0.5j])
    np.testing.assert_array_equal(got, want)


def test_reorder_schur_permutes_the_diagonal_exactly_and_keeps_the_matrix():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((24, 24))
    q, t = spectral.schur_complex(a)
    perm = rng.permutation(24)
    q2, t2 = spectral.reorder_schur(q, t, perm)
    np.testing.assert_array_equal(np.diag(t2), np.diag(t)[perm])
    assert not np.any(np.tril(t2, -1))
    assert spectral.schur_error(q2, t2, a) < 1e-13
    np.testing.assert_allclose(q2.conj().T @ q2, np.eye(24), atol=1e-13)
    # A non-normal matrix: another order gives another normal part QΛQ* (the ordering artefact).
    assert np.linalg.norm(spectral.normal_part(q2, t2) - spectral.normal_part(q, t)) > 1e-3 * np.linalg.norm(a)
    qc, tc = spectral.schur_canonical(a)
    np.testing.assert_array_equal(np.diag(tc), np.diag(t)[spectral.canonical_order(np.diag(t))])
    with pytest.raises(ResdynError, match="permutation"):
        spectral.reorder_schur(q, t, np.zeros(24, int))


def test_eigenvector_reorder_agrees_with_givens_swaps():
    """The fast route of reorder_schur (QR of the permuted eigenvectors) gives the same Schur form
    up to column phases as LAPACK's swaps: the same normal part QΛQ*, so the same dose."""
    rng = np.random.default_rng(11)
    d = 80
    a = np.eye(d) + 0.5 * rng.standard_normal((d, d)) / np.sqrt(d) + np.triu(rng.standard_normal((d, d)), 1) / d
    q, t = spectral.schur_complex(a)
    perm = rng.permutation(d)
    fast = spectral._reorder_by_eigenvectors(t, perm)
    assert fast is not None
    w, t_fast = fast
    q_slow, t_slow = spectral._reorder_by_swaps(q, t, perm)
    q_fast, t_fast = spectral.reorder_schur(q, t, perm, fast=True)  # the fast route (d²/4 inversions)
    np.testing.assert_allclose(q_fast, q @ w)
    # By default the swaps: the stored canonical factors keep ztrexc's phases.
    q_default, _ = spectral.reorder_schur(q, t, perm)
    np.testing.assert_array_equal(q_default, q_slow)
    np.testing.assert_array_equal(np.diag(t_fast), np.diag(t)[perm])
    assert not np.any(np.tril(t_fast, -1))
    assert spectral.schur_error(q_fast, t_fast, a) < 1e-12
    np.testing.assert_allclose(spectral.normal_part(q_fast, t_fast), spectral.normal_part(q_slow, t_slow),
                               atol=1e-11 * np.linalg.norm(a))
    # Off-diagonal entries agree up to the phases of the Schur vectors: |T'| is phase-invariant.
    np.testing.assert_allclose(np.abs(t_fast), np.abs(t_slow), atol=1e-11 * np.linalg.norm(a))


def test_reorder_of_a_defective_matrix_falls_back_to_swaps():
    """A Jordan block has one eigenvector: the eigenvector route must refuse, and the swaps still
    give an exact Schur form in the asked order."""
    d = 12
    a = np.diag(np.r_[np.full(6, 0.5), np.linspace(1, 2, 6)]) + np.eye(d, k=1)
    q, t = spectral.schur_complex(a)
    perm = np.arange(d)[::-1]
    assert spectral._reorder_by_eigenvectors(np.asarray(t, np.complex128), perm) is None
    q2, t2 = spectral.reorder_schur(q, t, perm, fast=True)
    np.testing.assert_array_equal(np.diag(t2), np.diag(t)[perm])
    assert spectral.schur_error(q2, t2, a) < 1e-12


def test_schur_dose_table_covers_the_grid_controls_draws_and_skip(run):
    df = run.read_table("schur_dose")
    assert list(df.columns) == ["mode", "construction", "draw", "c", "beta", "erank", "log10_fro", "henrici"]
    n_c = len(spectral.DOSE_GRID)
    size = df.groupby("construction").size().to_dict()
    n_ctl = len(surrogates.CONTROL_CS)
    assert size == {"dose": n_c, "control_a": spectral.N_DRAWS * n_c, "control_b": spectral.N_DRAWS * n_c,
                    "order_draw": spectral.N_DRAWS * (n_c - 1), "skip": len(spectral.SKIP_BETAS) * n_c,
                    "dose_ascending": n_c, "dose_polar": n_c, "control_a_ascending": spectral.N_DRAWS * n_ctl,
                    "control_a_polar": spectral.N_DRAWS * n_ctl}
    assert set(df["mode"]) == {"J"}
    assert set(df["construction"]) == set(spectral.CONSTRUCTIONS)
    for cons in ("control_b", "order_draw", "control_a_ascending", "control_a_polar"):
        assert sorted(df.loc[df["construction"] == cons, "draw"].unique()) == list(range(spectral.N_DRAWS))
    for cons in ("dose", "dose_ascending", "dose_polar"):
        assert sorted(df.loc[df["construction"] == cons, "c"]) == list(spectral.DOSE_GRID)
    # The ordering band stores no c = 1: its width there is zero by algebra.
    assert 1.0 not in set(df.loc[df["construction"] == "order_draw", "c"])
    assert sorted(df["c"].unique()) == list(spectral.DOSE_GRID)
    assert (df.loc[df["construction"] != "skip", "beta"] == 1.0).all()
    assert sorted(df.loc[df["construction"] == "skip", "beta"].unique()) == list(spectral.SKIP_BETAS)
    assert df["henrici"].between(0, 1).all() and np.isfinite(df["erank"]).all()


def test_dose_at_one_is_the_model_and_at_zero_is_the_normal_stack(run, jac):
    df = run.read_table("schur_dose")
    dose_j = df[df["construction"] == "dose"].set_index("c")
    p = _product(list(jac))
    assert dose_j.loc[1.0, "erank"] == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
    assert dose_j.loc[1.0, "log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
    assert dose_j.loc[1.0, "henrici"] == pytest.approx(linalg.henrici(p), abs=1e-4)
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    p0 = _product([spectral.normal_part(q[l].astype(np.complex128), t[l].astype(np.complex128)) for l in range(L)])
    assert dose_j.loc[0.0, "erank"] == pytest.approx(spectral.erank(np.linalg.svd(p0, compute_uv=False)), rel=1e-4)
    # Control A at c = 0 adds nothing: it is the dose at c = 0.
    a0 = df[(df["construction"] == "control_a") & (df["c"] == 0.0)]
    np.testing.assert_allclose(a0["erank"], dose_j.loc[0.0, "erank"])


def _draw_layers(run, jac, draw, seed=0):
    """The (A_l, B_l) of one stored order draw, rebuilt by the stage's own pure per-layer function."""
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    return [schur._order_draw_layer((q[l], t[l], jac[l], seed, draw, l)) for l in range(L)]


def test_order_draws_agree_at_one_and_are_normal_at_zero(run, jac):
    """c = 1 is the model in every eigenvalue order; c = 0 is a normal matrix with J̄'s spectrum in
    every order, but a different one per order, so the band is wide there."""
    df = run.read_table("schur_dose")
    draws = df[df["construction"] == "order_draw"]
    assert draws[draws["c"] == 1.0].empty  # not stored: every order gives J̄ there
    at0 = []
    for draw in range(spectral.N_DRAWS):
        layers = _draw_layers(run, jac, draw)
        for l, (a, b) in enumerate(layers):
            a = a.astype(np.complex128)
            assert linalg.henrici(a) < 1e-3  # normal (float32 storage of A)
            # c = 1 is J̄ in every order (why the table omits the band there).
            np.testing.assert_allclose(a + b.astype(np.complex128), jac[l], atol=1e-5 * np.abs(jac[l]).max())
            lam = np.linalg.eigvals(a)
            ref = np.linalg.eigvals(jac[l])
            assert np.abs(lam[:, None] - ref[None, :]).min(axis=1).max() < 1e-4
        for c in (0.0, 2.0):
            pc = _product([(a + c * b).astype(np.complex128) for a, b in layers])
            row = draws[(draws["draw"] == draw) & (draws["c"] == c)].iloc[0]
            assert row["erank"] == pytest.approx(spectral.erank(np.linalg.svd(pc, compute_uv=False)), rel=1e-4)
            assert row["henrici"] == pytest.approx(linalg.henrici(pc), abs=1e-4)
        at0.append(layers[0][0])
    assert np.linalg.norm(at0[0] - at0[1]) > 1e-3 * np.linalg.norm(at0[0])  # the orders really differ
    band = dose.order_band(df).set_index("c")
    assert band.loc[1.0, "hi"] == band.loc[1.0, "lo"] == band.loc[1.0, "dose"]  # the dose's own row
    assert band.loc[0.0, "hi"] - band.loc[0.0, "lo"] > 1e-3 * band.loc[0.0, "dose"]
    summary = run.read_table("summary").set_index("name")["value"]
    assert summary["schur.order_band.erank.c0"] == pytest.approx(
        (band.loc[0.0, "hi"] - band.loc[0.0, "lo"]) / band.loc[0.0, "dose"])
    assert summary["schur.order_band.erank.c1"] == 0.0  # by algebra, not measured


def test_surrogate_doses_are_the_dense_products_of_each_surrogate(run, jac):
    """dose_ascending: the Schur dose in the reversed canonical order; dose_polar: U H^c Λ H^{−c} U*;
    at c = 1 both are J̄'s product, and each Control A at c = 0 is its surrogate's dose."""
    df = run.read_table("schur_dose")
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    asc = [spectral.reorder_schur(q[l], t[l], np.arange(D)[::-1]) for l in range(L)]
    polar = surrogates.polar_family(jac)
    for cons, layer in (("dose_ascending", lambda l, c: spectral.dose_matrix(*asc[l], c)),
                        ("dose_polar", lambda l, c: polar.layer(l, c).astype(np.float64))):
        rows = df[df["construction"] == cons].set_index("c")
        for c in (0.0, 0.5, 1.0, 2.0):
            p = _product([layer(l, c) for l in range(L)])
            assert rows.loc[c, "erank"] == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
            assert rows.loc[c, "log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
            assert rows.loc[c, "henrici"] == pytest.approx(linalg.henrici(p), abs=1e-4)
    dose_j = df[df["construction"] == "dose"].set_index("c")
    assert df[(df["construction"] == "dose_polar") & (df["c"] == 1.0)]["erank"].iloc[0] == pytest.approx(
        dose_j.loc[1.0, "erank"], rel=1e-4)
    for sur in surrogates.SURROGATES:
        ctl = df[(df["construction"] == surrogates.CONTROL_CONSTRUCTION[sur]) & (df["c"] == 0.0)]
        own = df[(df["construction"] == surrogates.DOSE_CONSTRUCTION[sur]) & (df["c"] == 0.0)]["erank"].iloc[0]
        assert len(ctl) == spectral.N_DRAWS and (ctl["erank"] == own).all()
    summary = run.read_table("summary").set_index("name")["value"]
    for suffix, cons in (("J_ascending", "dose_ascending"), ("J_polar", "dose_polar")):
        at0 = df[(df["construction"] == cons) & (df["c"] == 0.0)]["erank"].iloc[0]
        assert summary[f"schur.erank.{suffix}.c0"] == at0
    assert summary["schur.polar.rejected_layers"] == 0 and summary["schur.polar.cond_max"] >= 1.0
    assert summary["schur.polar.error_max"] < surrogates.POLAR_RTOL


def test_surrogate_doses_function_is_the_stages_code_path(run, jac):
    """``surrogates.surrogate_doses`` (for split halves) takes its own Schur factors and gives the
    stage's rows."""
    df = run.read_table("schur_dose")
    got = surrogates.surrogate_doses(jac, cs=(0.0, 1.0), seed=0)
    stored = df[df["construction"].isin(got["construction"].unique()) & df["c"].isin([0.0, 1.0])]
    merged = got.merge(stored, on=["construction", "draw", "c"], suffixes=("", "_stage"))
    assert len(merged) == len(got) == 2 * 3 + 2 * 3 * spectral.N_DRAWS
    np.testing.assert_allclose(merged["erank"], merged["erank_stage"], rtol=1e-9)
    np.testing.assert_allclose(merged["henrici"], merged["henrici_stage"], rtol=1e-9, atol=1e-12)


def test_mode_r_in_the_same_order_is_mode_j(run, jac):
    """METHODS §6: R = J̄ − I has J̄'s Schur vectors and N, so the dose of R's own Schur form,
    reordered so that λ_R + 1 follow J̄'s stored order, is mode J's dose curve to rounding."""
    df = run.read_table("schur_dose")
    dose_j = df[df["construction"] == "dose"].set_index("c")
    layers = []
    for l in range(L):
        r = jac[l] - np.eye(D)
        q, t = spectral.schur_complex(r)  # R's own (LAPACK) order
        q, t = spectral.reorder_schur(q, t, spectral.canonical_order(np.diag(t) + 1.0))
        assert spectral.schur_error(q, t, r) < 1e-12
        layers.append(spectral.dose_layer(q, t, jac[l], shift=1.0))
    fam = spectral.family_from_layers(layers, L, D)
    for c in spectral.DOSE_GRID:
        st = spectral.family_stats(fam, c)
        assert st.erank == pytest.approx(dose_j.loc[c, "erank"], rel=1e-4)
        assert st.log10_fro == pytest.approx(dose_j.loc[c, "log10_fro"], abs=1e-5)
        assert st.henrici == pytest.approx(dose_j.loc[c, "henrici"], abs=1e-4)


def test_skip_dose_rows_are_beta_identity_plus_the_residual_branch(run, jac):
    """Stored skip rows: β = 1 is the dose curve, and β = 0 (and 0.5) the dense product of
    βI + R_l(c), R_l(c) = Q(Λ − I + cN)Q* from the stored factors."""
    df = run.read_table("schur_dose")
    skip = df[df["construction"] == "skip"]
    dose_j = df[df["construction"] == "dose"].set_index("c")
    one = skip[skip["beta"] == 1.0].set_index("c")
    pd.testing.assert_frame_equal(one[["erank", "log10_fro", "henrici"]], dose_j[["erank", "log10_fro", "henrici"]])
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    for beta, c in ((0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.5, 0.5)):
        r = [spectral.dose_matrix(q[l], t[l], c, shift=-1.0) for l in range(L)]
        # R(c) = J(c) − I up to the float32 unitarity of the stored Q.
        np.testing.assert_allclose(r[0], spectral.dose_matrix(q[0], t[0], c) - np.eye(D), atol=1e-6)
        p = _product([beta * np.eye(D) + rl for rl in r])
        row = skip[(skip["beta"] == beta) & (skip["c"] == c)].iloc[0]
        assert row["erank"] == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
        assert row["log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
        assert row["henrici"] == pytest.approx(linalg.henrici(p), abs=1e-4)
    # At c = 1, β = 0 is the product of the residual branches R_l = J̄_l − I themselves.
    p = _product([jac[l] - np.eye(D) for l in range(L)])
    row = skip[(skip["beta"] == 0.0) & (skip["c"] == 1.0)].iloc[0]
    assert row["log10_fro"] == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)


def test_complex64_chains_match_complex128_on_the_trained_fixture(run, jac):
    """The stage multiplies complex64 chains; in complex128 the readouts agree to 1e-5."""
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    for c in (0.0, 2.0):
        p = _product([spectral.dose_matrix(q[l], t[l], c) for l in range(L)])
        fam = spectral.family_from_layers((spectral.dose_layer(q[l], t[l], jac[l]) for l in range(L)), L, D)
        st = spectral.family_stats(fam, c)
        assert st.erank == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-5)


def test_control_and_order_draws_are_seeded(run, jac):
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    a = schur.dose_table(q, t, jac, seed=0)
    b = schur.dose_table(q, t, jac, seed=0)
    c = schur.dose_table(q, t, jac, seed=1)
    stored = run.read_table("schur_dose")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_allclose(a["erank"], stored["erank"], rtol=1e-12)
    seeded = ["control_a", "control_a_ascending", "control_a_polar", "control_b", "order_draw"]
    drawn = a["construction"].isin(seeded) & (a["c"] != 1.0)
    assert not np.allclose(a.loc[drawn & (a["c"] > 0), "erank"], c.loc[drawn & (c["c"] > 0), "erank"])
    for con in seeded[:3]:  # every Control A moves with the seed at c = 1
        at1 = (a["construction"] == con) & (a["c"] == 1.0)
        assert not np.allclose(a.loc[at1, "erank"], c.loc[at1, "erank"])
    same = ~a["construction"].isin(seeded)
    np.testing.assert_allclose(a.loc[same, "erank"], c.loc[same, "erank"], rtol=1e-12)


# -- pseudospectra --------------------------------------------------------------------------------

def test_pseudospectra_grid_is_exact_at_zero_dose_and_close_to_svd_at_one(run, jac):
    ps = run.read_table("pseudospectra")
    assert list(ps.columns) == ["layer", "c", "x", "y", "log10_sigma_min"]
    n = PSEUDO_GRID
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
    assert len(rows) == NR_ANGLES
    w = rows["x"].to_numpy() + 1j * rows["y"].to_numpy()
    rot = np.exp(1j * np.linspace(0, 2 * np.pi, NR_ANGLES, endpoint=False))
    support = np.array([np.linalg.eigvalsh(0.5 * (r * jac[l] + np.conj(r) * jac[l].T))[-1] for r in rot])
    np.testing.assert_allclose((rot * w).real, support, atol=1e-4)


def test_layer_sigma_is_the_svd_of_the_dosed_jacobian(run, jac):
    """layer_sigma holds σ(J_l(c)) at the stored doses: at c = 1 that of J̄_l itself, at c = 0 that
    of the normal matrix with J̄_l's eigenvalues, and every c matches the live dose's SVD."""
    sv = run.read_table("layer_sigma")
    assert list(sv.columns) == ["layer", "c", "i", "sigma"]
    assert (sv.groupby(["layer", "c"]).size() == D).all()
    assert sorted(sv["c"].unique()) == sorted(PSEUDO_DOSES)
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


# -- the live dose behind the sliders -------------------------------------------------------------

def test_live_dose_reproduces_the_stored_grid(run):
    df = run.read_table("schur_dose")
    grid = df[df["construction"] == "dose"].set_index("c")
    for c in (0.0, 0.5, 2.0):
        res = dose.dose_response(run, c, layers=[0])
        assert res.path == "live" and res.beta == 1.0
        assert res.erank == pytest.approx(grid.loc[c, "erank"], rel=1e-6)
        assert res.log10_fro == pytest.approx(grid.loc[c, "log10_fro"], abs=1e-6)
        assert res.henrici == pytest.approx(grid.loc[c, "henrici"], abs=1e-6)


@pytest.mark.parametrize("surrogate", ["ascending", "polar"])
def test_live_dose_of_each_surrogate_reproduces_its_stored_curve(run, jac, surrogate):
    df = run.read_table("schur_dose")
    grid = df[df["construction"] == surrogates.DOSE_CONSTRUCTION[surrogate]].set_index("c")
    for c in (0.0, 0.5, 2.0):
        res = dose.dose_response(run, c, layers=[1], surrogate=surrogate)
        assert res.path == "live" and res.surrogate == surrogate
        assert res.erank == pytest.approx(grid.loc[c, "erank"], rel=1e-5)
        assert res.henrici == pytest.approx(grid.loc[c, "henrici"], abs=1e-5)
        # The layer's singular values: those of the surrogate's J_1(c), live and from the per-layer cache.
        if surrogate == "polar":
            ref = surrogates.polar_layer(jac[1])
            mat = surrogates.PolarFamily([ref]).layer(0, c)
        else:
            q, t = run.read_array("schur_Q")[1], run.read_array("schur_T")[1]
            mat = spectral.dose_matrix(*spectral.reorder_schur(q, t, np.arange(D)[::-1]), c)
        want = np.linalg.svd(mat.astype(np.complex128), compute_uv=False)
        np.testing.assert_allclose(res.sigma[1], want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(dose.layer_sigma(run, 1, c, surrogate=surrogate), want, rtol=1e-4, atol=1e-6)
    # Interpolated from its own stored curve; exact at the stored doses.
    res = dose.dose_response(run, 0.5, layers=[], path="interpolated", surrogate=surrogate)
    assert res.erank == pytest.approx(grid.loc[0.5, "erank"])
    assert dose.stored_at(df, 0.5, 1.0, surrogate) and not dose.stored_at(df, 0.37, 1.0, surrogate)
    assert not dose.stored_at(df, 0.5, 0.5, surrogate) and dose.stored_at(df, 0.5, 0.5, "descending")
    with pytest.raises(ResdynError, match="β = 1 only"):
        dose.grid_values(run, 0.5, 0.5, surrogate)
    assert dose.stored_surrogates(df) == list(surrogates.SURROGATES)
    assert dose.grid_answers(df, 1.0, surrogate) and not dose.grid_answers(df, 0.3, surrogate)
    assert dose.grid_answers(df, 0.3, "descending")


def test_live_dose_can_be_prefetched_without_waiting(run):
    """``live_dose(wait=False)`` starts the build and returns None until it is done, then the same
    object as a waiting call; an unknown surrogate is one clear error."""
    dose._LIVE.clear()
    first = dose.live_dose(run, "polar", wait=False)
    built = dose.live_dose(run, "polar")
    assert first is None or first is built
    assert dose.live_dose(run, "polar", wait=False) is built
    with pytest.raises(ResdynError, match="surrogate must be one of"):
        dose.dose_response(run, 0.5, surrogate="sideways")


def test_live_skip_dose_is_beta_identity_plus_residual(run, jac):
    """Live (c, β): β = 1 is the dose; any β is the dense product of βI + R_l(c), and the layer's
    singular values are those of βI + R_l(c)."""
    skip = run.read_table("schur_dose")
    skip = skip[skip["construction"] == "skip"]
    q, t = run.read_array("schur_Q").astype(np.complex128), run.read_array("schur_T").astype(np.complex128)
    one = dose.dose_response(run, 0.37, layers=[], beta=1.0)
    assert one.erank == dose.dose_response(run, 0.37, layers=[]).erank
    for beta, c in ((0.0, 0.37), (0.3, 1.6), (1.0, 0.37)):
        res = dose.dose_response(run, c, layers=[2], beta=beta)
        mats = [beta * np.eye(D) + spectral.dose_matrix(q[l], t[l], c, shift=-1.0) for l in range(L)]
        p = _product(mats)
        assert res.erank == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
        assert res.log10_fro == pytest.approx(np.log10(np.linalg.norm(p)), abs=1e-5)
        assert res.henrici == pytest.approx(linalg.henrici(p), abs=1e-4)
        np.testing.assert_allclose(res.sigma[2], np.linalg.svd(mats[2], compute_uv=False), rtol=1e-4, atol=1e-6)
    for c in (0.0, 2.0):
        row = skip[(skip["beta"] == 0.0) & (skip["c"] == c)].iloc[0]
        assert dose.dose_response(run, c, layers=[], beta=0.0).erank == pytest.approx(row["erank"], rel=1e-6)
    lam = dose.layer_eigenvalues(run, 2, beta=0.25)
    np.testing.assert_allclose(lam, dose.layer_eigenvalues(run, 2) - 0.75)


def test_interpolated_skip_dose_is_linear_in_beta_between_stored_curves(run):
    df = run.read_table("schur_dose")
    skip = df[df["construction"] == "skip"].set_index(["beta", "c"])
    er, lf, he = dose.grid_values(run, 0.5, 0.25)
    assert lf == pytest.approx(0.5 * (skip.loc[(0.0, 0.5), "log10_fro"] + skip.loc[(0.5, 0.5), "log10_fro"]))
    assert er == pytest.approx(0.5 * (skip.loc[(0.0, 0.5), "erank"] + skip.loc[(0.5, 0.5), "erank"]))
    res = dose.dose_response(run, 0.5, layers=[], path="interpolated", beta=0.25)
    assert res.path == "interpolated" and res.log10_fro == pytest.approx(lf)
    assert dose.grid_values(run, 2.0, 0.5)[2] == pytest.approx(skip.loc[(0.5, 2.0), "henrici"])
    # Between 0.5 and 1 the other neighbour is the dose curve itself (β = 1).
    dose_j = df[df["construction"] == "dose"].set_index("c")
    assert dose.grid_values(run, 1.5, 0.75)[1] == pytest.approx(
        0.5 * (skip.loc[(0.5, 1.5), "log10_fro"] + dose_j.loc[1.5, "log10_fro"]))


def test_band_at_interpolates_the_min_and_max_over_orders(run):
    df = run.read_table("schur_dose")
    draws = df[df["construction"] == "order_draw"]
    at = dose.band_at(df, 0.25)
    assert at["erank"] == pytest.approx((draws[draws["c"] == 0.25]["erank"].min(),
                                         draws[draws["c"] == 0.25]["erank"].max()))
    lo = draws.groupby("c")["log10_fro"].min()
    assert dose.band_at(df, 0.6)["log10_fro"][0] == pytest.approx(0.6 * lo[0.5] + 0.4 * lo[0.75])


def test_older_tables_without_band_or_skip_rows_still_read():
    """Runs computed before the canonical order: mode-R rows, no beta, no order draws or skip rows."""
    rows = [{"mode": m, "construction": "dose", "draw": 0, "c": c, "erank": 5.0 + c + (m == "R"),
             "log10_fro": c, "henrici": 0.1} for m in ("J", "R") for c in spectral.DOSE_GRID]
    old = pd.DataFrame(rows)
    assert dose.band_at(old, 0.5) is None and dose.order_band(old) is None
    assert dose.stored_betas(old) == [1.0]
    # What the stored grid can answer (the page interpolates it only then, while live factors build).
    assert dose.stored_surrogates(old) == ["descending"]
    assert dose.grid_answers(old, 1.0) and not dose.grid_answers(old, 0.5)
    assert not dose.grid_answers(old, 1.0, "polar")


def test_old_run_reads_at_beta_one_and_says_how_to_add_the_skip_grid(run, tmp_path):
    old = RunStore(tmp_path / "old")
    shutil.copytree(run.path, old.path)
    df = old.read_table("schur_dose")
    df = df[df["construction"].isin(["dose", "control_a", "control_b"])].drop(columns="beta")
    df = pd.concat([df, df[df["construction"] == "dose"].assign(mode="R")], ignore_index=True)
    write_old_table(old, "schur_dose", df)
    m = old.manifest()
    m.pop("schur_order")
    old.write_manifest(m)
    assert dose.schur_order(old) is None
    er, _, _ = dose.grid_values(old, 0.5)
    assert er == pytest.approx(df[(df["mode"] == "J") & (df["construction"] == "dose") & (df["c"] == 0.5)]["erank"].iloc[0])
    with pytest.raises(ResdynError, match="--redo schur"):
        dose.grid_values(old, 0.5, 0.5)
    # The live path needs only the factors: any β works on an old run.
    assert np.isfinite(dose.dose_response(old, 0.5, layers=[], beta=0.5, path="live").erank)


def test_live_dose_singular_values_and_fixed_eigenvalues(run, jac):
    res = dose.dose_response(run, 1.0, layers=[1, 3])
    assert set(res.sigma) == {1, 3}
    np.testing.assert_allclose(res.sigma[3], np.linalg.svd(jac[3], compute_uv=False), rtol=1e-4)
    half = dose.dose_response(run, 0.5, layers=[2]).sigma[2]
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    ref = np.linalg.svd(spectral.dose_matrix(q[2].astype(np.complex128), t[2].astype(np.complex128), 0.5),
                        compute_uv=False)
    np.testing.assert_allclose(half, ref, rtol=1e-4)
    lam = dose.layer_eigenvalues(run, 2)
    np.testing.assert_allclose(np.sort(np.abs(lam)), np.sort(np.abs(np.linalg.eigvals(jac[2]))), rtol=1e-4)


def test_live_dose_between_grid_points_is_exact_not_interpolated(run, jac):
    res = dose.dose_response(run, 0.37, layers=[])
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    p = _product([spectral.dose_matrix(q[l].astype(np.complex128), t[l].astype(np.complex128), 0.37)
                  for l in range(L)])
    assert res.erank == pytest.approx(spectral.erank(np.linalg.svd(p, compute_uv=False)), rel=1e-4)
    assert res.henrici == pytest.approx(linalg.henrici(p), abs=1e-4)


def test_interpolated_fallback_is_labelled_and_hits_the_grid(run):
    df = run.read_table("schur_dose")
    grid = df[df["construction"] == "dose"].set_index("c")
    res = dose.dose_response(run, 0.5, layers=[0], path="interpolated")
    assert res.path == "interpolated"
    assert res.erank == pytest.approx(grid.loc[0.5, "erank"], rel=1e-12)
    assert 0 in res.sigma
    # "auto" falls back when L·d³ exceeds the budget.
    mid = dose.dose_response(run, 0.6, layers=[], max_work=1.0)
    assert mid.path == "interpolated"
    lo, hi = sorted(grid.loc[[0.5, 0.75], "log10_fro"])
    assert lo <= mid.log10_fro <= hi
    er = np.exp(np.log(grid.loc[0.5, "erank"]) * 0.6 + np.log(grid.loc[0.75, "erank"]) * 0.4)
    assert mid.erank == pytest.approx(er, rel=1e-12)


def test_dose_rejects_out_of_range_c_beta_and_missing_stage(run, synthetic_runs_dir):
    with pytest.raises(ResdynError, match="outside"):
        dose.dose_response(run, 2.5)
    with pytest.raises(ResdynError, match="β = 1.5 is outside"):
        dose.dose_response(run, 1.0, beta=1.5)
    with pytest.raises(ResdynError, match="schur"):
        dose.dose_response(RunStore(synthetic_runs_dir / TRAINED_RUN), 1.0, path="live")


def test_the_claims_grid_holds_the_full_grids_rows_the_claims_read(run, jac):
    """--dose-grid claims (the ensemble seeds of the demo): each surrogate's dose and Control A at
    c = 0 and 1, equal to the full grid's rows there; nothing else."""
    q, t = run.read_array("schur_Q"), run.read_array("schur_T")
    full = schur.dose_table(q, t, jac, seed=0)
    small = schur.dose_table(q, t, jac, seed=0, grid="claims")
    want = {"dose", "dose_ascending", "dose_polar", "control_a", "control_a_ascending", "control_a_polar"}
    assert set(small["construction"]) == want and set(small["c"]) == {0.0, 1.0}
    key = ["construction", "draw", "c"]
    both = small.merge(full[full["beta"] == 1.0], on=key, suffixes=("", "_full"))
    assert len(both) == len(small)
    np.testing.assert_allclose(both["erank"], both["erank_full"], rtol=1e-12)
