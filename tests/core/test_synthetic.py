"""The synthetic-run generator: full data contract, self-consistency with resdyn.core.linalg, and
the operator character it promises for trained-like and random-init runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.config import resolve_k
from resdyn.core import linalg, nulls, sample_stats
from resdyn.core.store import RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN

MANIFEST_KEYS = {"run_id", "model", "revision", "init", "architecture", "n_layers", "d_model", "n_samples",
                 "corpus", "mode", "dtype", "seed", "k", "status", "stages_done", "timings", "versions"}
LAYER_COLUMNS = ["layer", "operator", "self_alignment", "forward_alignment", "henrici", "frac_expanding",
                 "frac_complex", "mean_abs_eig", "spectral_radius", "residual_norm_ratio", "frac_complex_null",
                 "tau", "frac_complex_null_elliptic", "frac_complex_null_elliptic_sd"]
L, D, N = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"], SYNTHETIC_SIZES["n_samples"]


def test_contract_files_shapes_and_manifest(synthetic_runs_dir):
    store = RunStore(synthetic_runs_dir / TRAINED_RUN)
    m = store.manifest()
    assert MANIFEST_KEYS <= set(m)
    assert (m["n_layers"], m["d_model"], m["n_samples"], m["k"]) == (L, D, N, resolve_k(None, D))
    assert m["cumulative_rank"] == D  # exact products, as init_manifest records by default
    assert m["status"] == "complete" and m["stages_done"] == ["activations", "jacobians", "spectra", "sample_stats"]
    assert set(m["timings"]) == set(m["stages_done"])
    assert {"python", "torch", "transformers", "resdyn"} <= set(m["versions"])
    acts, final, jac = (store.read_array(n) for n in ("activations", "final_state", "jacobians"))
    assert acts.shape == (N, 2 * L, D) and acts.dtype == np.float32
    assert final.shape == (N, D) and final.dtype == np.float32
    assert jac.shape == (L, D, D) and jac.dtype == np.float32
    assert store.read_array("planted_communities").shape == (2 * L, D)
    samples = store.read_table("samples")
    assert list(samples.columns) == ["layer", "sample", "sigma_max", "sigma_min", "kappa", "fro", "pr"]
    assert len(samples) == L * N
    assert list(store.read_table("sample_profiles").columns) == ["layer", *sample_stats.PROFILE_COLUMNS]
    layers = store.read_table("layers")
    assert list(layers.columns) == LAYER_COLUMNS
    assert sorted(zip(layers["layer"], layers["operator"])) == [(l, o) for l in range(L) for o in "JR"]
    eig = store.read_table("eigenvalues")
    assert list(eig.columns) == ["layer", "operator", "idx", "re", "im"]
    assert len(eig) == 2 * L * D


def test_tables_are_linalg_of_the_stored_arrays(synthetic_runs_dir):
    """layers/eigenvalues are operator_table of the stored jacobians (the spectra stage), and
    sample_profiles the layer_profiles of the stored samples (the sample_stats stage)."""
    store = RunStore(synthetic_runs_dir / TRAINED_RUN)
    ref_layers, ref_eig = linalg.operator_table(store.read_array("jacobians", mmap=False), store.manifest()["k"])
    ref_layers = nulls.with_frac_complex_null(ref_layers, store.manifest()["d_model"])  # as the spectra stage
    ref_layers = nulls.elliptic_columns(ref_layers, nulls.residual_taus(store.read_array("jacobians")),
                                        store.manifest()["d_model"])
    pd.testing.assert_frame_equal(store.read_table("layers"), ref_layers, check_dtype=False, atol=1e-12)
    pd.testing.assert_frame_equal(store.read_table("sample_profiles"),
                                  sample_stats.layer_profiles(store.read_table("samples")), check_exact=True)
    pd.testing.assert_frame_equal(store.read_table("eigenvalues"), ref_eig, check_dtype=False, atol=1e-12)
    # The spectrum of J̄ is the spectrum of the stored matrix, and R's is J's shifted by one.
    eig = store.read_table("eigenvalues")
    lam = np.sort_complex(np.linalg.eigvals(store.read_array("jacobians")[2].astype(np.float64)))
    j2 = eig[(eig.operator == "J") & (eig.layer == 2)]
    np.testing.assert_allclose(np.sort_complex(j2["re"].to_numpy() + 1j * j2["im"].to_numpy()), lam, atol=1e-9)
    r2 = eig[(eig.operator == "R") & (eig.layer == 2)]
    np.testing.assert_allclose(np.sort_complex(r2["re"].to_numpy() + 1j * r2["im"].to_numpy()), lam - 1, atol=1e-5)


@pytest.mark.parametrize("init", ["pretrained", "random"])
def test_block_path_equals_dense_path(tmp_path, init):
    """The fast path used at large d (linalg on the blocks) gives the dense operator_table's numbers.

    d = 43 gives k = 10, a 20×20 leading block, eleven 2×2 blocks and one 1×1 block.
    """
    kw = {"n_layers": 3, "d": 43, "n_samples": 8, "seed": 3, "init": init}
    dense = make_synthetic_run(tmp_path, "dense", exact=True, **kw)
    fast = make_synthetic_run(tmp_path, "fast", exact=False, **kw)
    ld, lf = dense.read_table("layers"), fast.read_table("layers")
    assert list(ld.columns) == list(lf.columns)
    assert (ld["operator"] == lf["operator"]).all()
    num = ld.select_dtypes("number").columns
    # float32 storage of J̄ is the only difference between the two paths.
    np.testing.assert_allclose(lf[num].to_numpy(), ld[num].to_numpy(), atol=2e-5, rtol=1e-5)
    ed, ef = dense.read_table("eigenvalues"), fast.read_table("eigenvalues")
    for (l, op), g in ed.groupby(["layer", "operator"]):
        h = ef[(ef.layer == l) & (ef.operator == op)]
        np.testing.assert_allclose(np.sort_complex(h["re"].to_numpy() + 1j * h["im"].to_numpy()),
                                   np.sort_complex(g["re"].to_numpy() + 1j * g["im"].to_numpy()), atol=2e-5)
    pd.testing.assert_frame_equal(fast.read_table("samples"), dense.read_table("samples"), rtol=1e-9)
    pd.testing.assert_frame_equal(fast.read_table("sample_profiles"), dense.read_table("sample_profiles"), rtol=1e-9)
    # The fast path forms Q T Qᵀ in float32 (what is stored anyway), the dense one in float64.
    np.testing.assert_allclose(fast.read_array("jacobians"), dense.read_array("jacobians"), atol=2e-6)


def test_trained_like_versus_random_init(synthetic_runs_dir):
    """Trained-like: complex, non-normal, low self-alignment early; random: near identity (METHODS §3)."""
    tr = RunStore(synthetic_runs_dir / TRAINED_RUN).read_table("layers").query("operator == 'J'")
    rd = RunStore(synthetic_runs_dir / RANDOM_RUN).read_table("layers").query("operator == 'J'")
    assert tr["frac_complex"].mean() > 0.85
    assert tr["henrici"].min() > 0.5 and rd["henrici"].max() < 0.1
    assert tr["self_alignment"].iloc[0] < 0.4 < rd["self_alignment"].min()
    # Operator type drifts with depth in the trained-like run (self-alignment rises).
    assert tr["self_alignment"].iloc[-1] > tr["self_alignment"].iloc[0] + 0.2
    eig = RunStore(synthetic_runs_dir / RANDOM_RUN).read_table("eigenvalues").query("operator == 'J'")
    assert np.median(np.abs(eig["re"] - 1.0)) < 0.05 and np.median(np.abs(eig["im"])) < 0.05
    teig = RunStore(synthetic_runs_dir / TRAINED_RUN).read_table("eigenvalues").query("operator == 'J'")
    assert np.median(np.abs(teig["im"])) > 0.1


def test_per_sample_statistics_are_coherent(synthetic_runs_dir):
    s = RunStore(synthetic_runs_dir / TRAINED_RUN).read_table("samples")
    np.testing.assert_allclose(s["kappa"], s["sigma_max"] / s["sigma_min"], rtol=1e-12)
    assert (s["sigma_max"] <= s["fro"] + 1e-12).all()
    assert ((s["pr"] >= 1) & (s["pr"] <= D)).all()
    # Samples differ from each other (Δ_i ≠ 0) but not wildly.
    assert s.groupby("layer")["fro"].std().min() > 0


def test_deterministic_in_seed(tmp_path):
    a = make_synthetic_run(tmp_path, "a", n_layers=2, d=16, n_samples=4, seed=7)
    b = make_synthetic_run(tmp_path, "b", n_layers=2, d=16, n_samples=4, seed=7)
    c = make_synthetic_run(tmp_path, "c", n_layers=2, d=16, n_samples=4, seed=8)
    for name in ("activations", "jacobians"):
        np.testing.assert_array_equal(a.read_array(name), b.read_array(name))
        assert not np.array_equal(a.read_array(name), c.read_array(name))
    pd.testing.assert_frame_equal(a.read_table("layers"), b.read_table("layers"))


def test_partial_run_has_no_spectra_and_overwrite_removes_them(tmp_path):
    make_synthetic_run(tmp_path, "run", n_layers=2, d=16, n_samples=4)
    store = make_synthetic_run(tmp_path, "run", n_layers=2, d=16, n_samples=4, status="partial")
    m = store.manifest()
    assert m["status"] == "partial" and m["stages_done"] == ["activations", "jacobians"]
    assert "spectra" not in m["timings"] and "sample_stats" not in m["timings"]
    assert not store.has_table("layers") and not store.has_table("eigenvalues")
    assert not store.has_table("samples") and not store.has_table("sample_profiles")
    assert store.has_array("jacobians")


def test_planted_communities_show_in_correlations(tmp_path):
    store = make_synthetic_run(tmp_path, "c", n_layers=1, d=64, n_samples=400, seed=2, exact=False)
    acts = store.read_array("activations")
    labels = store.read_array("planted_communities")
    for snap in (0, 1):
        corr = np.corrcoef(acts[:, snap].T)
        same = labels[snap][:, None] == labels[snap][None, :]
        off = ~np.eye(64, dtype=bool)
        assert corr[same & off].mean() > 0.3 > abs(corr[~same].mean())
    # Pairs of communities are anti-correlated: negative edges exist.
    assert np.corrcoef(acts[:, 0].T).min() < -0.2
    # Norms grow with depth, as residual streams do.
    norms = np.linalg.norm(acts, axis=2).mean(0)
    assert norms[-1] > norms[0]


def test_command_line(tmp_path, capsys):
    from resdyn.testing.synthetic import main

    assert main([str(tmp_path), "cli-run", "--layers", "2", "--d", "16", "--samples", "4", "--init", "random"]) == 0
    m = RunStore(tmp_path / "cli-run").manifest()
    assert (m["n_layers"], m["d_model"], m["n_samples"], m["init"]) == (2, 16, 4, "random")
    assert "wrote" in capsys.readouterr().out


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic_run(tmp_path, "x", init="trained")
    with pytest.raises(ValueError):
        make_synthetic_run(tmp_path, "x", status="done")
    from resdyn.errors import ResdynError

    with pytest.raises(ResdynError):
        make_synthetic_run(tmp_path, "../escape")


def test_wide_mixing_matrix_is_dense_and_orthogonal():
    """Above 2·block the shared Q is built from Haar blocks; it must still be orthogonal and dense."""
    from resdyn.testing.synthetic import _random_orthogonal

    q = _random_orthogonal(np.random.default_rng(0), 300, block=64)
    np.testing.assert_allclose(q.T @ q, np.eye(300), atol=1e-12)
    assert np.mean(np.abs(q) > 1e-12) > 0.95


def test_block_path_on_a_wide_run(tmp_path):
    """The fast path (exact=False, float32 product) at d = 72 agrees with linalg.operator_table
    run on the Jacobians it stored."""
    store = make_synthetic_run(tmp_path, "w", n_layers=2, d=72, n_samples=6, exact=False)
    ref, ref_eig = linalg.operator_table(store.read_array("jacobians", mmap=False), store.manifest()["k"])
    got = store.read_table("layers")
    cols = ["self_alignment", "forward_alignment", "henrici", "frac_complex", "mean_abs_eig",
            "spectral_radius", "residual_norm_ratio"]
    np.testing.assert_allclose(got[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-4)
    assert len(store.read_table("eigenvalues")) == len(ref_eig) == 2 * 2 * 72
