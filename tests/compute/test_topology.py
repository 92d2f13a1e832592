"""Topology (METHODS §7–8): graphs, signed Leiden, participation, the coupling tests and the stages."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest

from resdyn.compute.stages import communities as communities_stage
from resdyn.compute.stages import topology_coupling as topology_coupling_stage
from resdyn.core import communities as T
from resdyn.core import topology_coupling as TC
from resdyn.core.correlation import correlation
from resdyn.compute.context import RunContext
from resdyn.config import RunConfig
from resdyn.core.store import RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.conftest import SYNTHETIC_SIZES, TRAINED_RUN

# -- graphs ----------------------------------------------------------------------------------------


def test_correlation_is_pearson_and_constant_units_are_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6))
    x[:, 4] = 3.0  # a dead unit
    c = correlation(x)
    live = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(c[np.ix_(live, live)], np.corrcoef(x[:, live].T), atol=2e-6)
    assert np.all(c[4] == 0) and np.all(c[:, 4] == 0)


def test_top_k_graph_keeps_strongest_edges_and_larger_weight_when_asymmetric():
    c = np.array([
        [1.0, 0.9, 0.1, -0.2],
        [-0.95, 1.0, 0.3, 0.05],   # (1, 0) disagrees with (0, 1): the larger |w| (−0.95) must win
        [0.1, 0.3, 1.0, -0.8],
        [-0.2, 0.05, -0.8, 1.0],
    ], dtype=np.float32)
    i, j, w = T.top_k_graph(c, k=1)
    # unit 0 → 1, unit 1 → 0, unit 2 → 3, unit 3 → 2: two undirected edges.
    assert list(zip(i, j)) == [(0, 1), (2, 3)]
    np.testing.assert_allclose(w, [-0.95, -0.8])
    i, j, w = T.top_k_graph(c, k=2)
    # 0 → {1, 3}, 1 → {0, 2}, 2 → {3, 1}, 3 → {2, 0}: edges 01, 03, 12, 23; no self-loops.
    assert list(zip(i, j)) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    assert np.all(i < j)


def _signed_planted_graph(rng, sizes, p_in=0.4, p_out=0.15):
    """Positive edges inside planted groups, negative edges between them."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = len(labels)
    a, b = np.triu_indices(n, 1)
    same = labels[a] == labels[b]
    keep = rng.random(len(a)) < np.where(same, p_in, p_out)
    w = np.where(same, rng.uniform(0.4, 0.9, len(a)), -rng.uniform(0.3, 0.7, len(a)))
    return labels, a[keep].astype(np.int32), b[keep].astype(np.int32), w[keep].astype(np.float32)


@pytest.mark.parametrize("method", T.METHODS)
def test_planted_signed_partition_is_recovered(method):
    rng = np.random.default_rng(1)
    # InfoMap sees only |w|, so its groups must be sparsely linked; the signed methods must also
    # cut through dense negative links.
    p_out = 0.02 if method == "infomap" else 0.15
    labels, i, j, w = _signed_planted_graph(rng, [40, 30, 30, 20], p_out=p_out)
    found = T.detect(method, len(labels), i, j, w, seed=0)
    assert T.nmi(found, labels) == pytest.approx(1.0)
    # canonical labels: 0 is the largest community
    assert np.bincount(found)[0] == 40


def test_signed_cpm_is_deterministic_under_its_seed():
    rng = np.random.default_rng(2)
    _, i, j, w = _signed_planted_graph(rng, [25] * 6, p_in=0.2, p_out=0.1)
    a = T.signed_cpm(150, i, j, w, seed=3)
    b = T.signed_cpm(150, i, j, w, seed=3)
    np.testing.assert_array_equal(a, b)


def test_participation_zero_inside_one_community_and_one_minus_one_over_m_when_spread():
    m = 4
    labels = np.repeat(np.arange(m + 1), 5)  # communities 0..3 of 5 units, community 4 holds the probes
    probe_in, probe_spread = 20, 21
    edges = [(probe_in, u, 0.7) for u in range(5)]                                   # all into community 0
    # two edges into each of the m communities, of mixed sign (participation uses |w|)
    edges += [(probe_spread, 5 * c + r, -0.5 if r % 2 else 0.5) for c in range(m) for r in range(2)]
    i, j, w = (np.array(x) for x in zip(*edges))
    p = T.participation(labels, i, j, w)
    assert p[probe_in] == pytest.approx(0.0)
    assert p[probe_spread] == pytest.approx(1 - 1 / m)
    assert np.isnan(p[22])  # no edges
    # unit 0 has one edge, to the probe in community 4: p = 0 as well
    assert p[0] == pytest.approx(0.0)
    # uneven spread: weights 3:1 over two communities → 1 − (0.75² + 0.25²) = 0.375
    p2 = T.participation(np.array([0, 1, 1, 2]), np.array([0, 0]), np.array([1, 3]), np.array([0.3, -0.1]))
    assert p2[0] == pytest.approx(0.375)


def test_nmi_matrix_is_symmetric_with_unit_diagonal():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([1, 1, 0, 0, 2, 2])  # the same partition relabelled
    c = np.array([0, 1, 0, 1, 0, 1])  # independent of a
    mat = T.nmi_matrix([a, b, c])
    np.testing.assert_allclose(np.diag(mat), 1.0)
    np.testing.assert_allclose(mat, mat.T)
    assert mat[0, 1] == pytest.approx(1.0)
    assert mat[0, 2] == pytest.approx(0.0, abs=1e-12)


# -- boundary-node statistics ------------------------------------------------------------------------


def test_cohens_d_and_exact_permutation_p_hand_case():
    # 20 units; norms 1..20 rise with participation. Tails: p ≤ q10 → units 0, 1 (norms 1, 2);
    # p ≥ q90 → units 18, 19 (norms 19, 20). d = (19.5 − 1.5) / std(1..20, ddof=1).
    part = np.arange(20) / 19
    norms = np.arange(1.0, 21.0)
    out = TC.boundary_test(part, norms, rng=np.random.default_rng(0))
    assert (out["n_top"], out["n_bottom"]) == (2, 2)
    assert out["cohens_d"] == pytest.approx(18 / np.std(norms, ddof=1))
    # The pooled values {1, 2, 19, 20} split 2 + 2 in 6 ways; differences +18, −18, ±1, 0, 0:
    # two of six are at least as extreme as +18 → p = 2/6.
    assert out["p_perm"] == pytest.approx(1 / 3)
    assert out["spearman_rho"] == pytest.approx(1.0)


def test_permutation_p_with_resampling_matches_full_enumeration():
    rng = np.random.default_rng(5)
    part = np.arange(100) / 99.0
    norms = rng.normal(size=100)
    norms[90:] += 0.6  # boundary units a little amplified
    out = TC.boundary_test(part, norms, n_perm=5000, rng=np.random.default_rng(1))
    top, bottom = norms[90:], norms[:10]
    pool = np.concatenate([top, bottom])
    obs = top.mean() - bottom.mean()
    combos = np.array(list(itertools.combinations(range(20), 10)))  # all 184,756 splits
    sums = pool[combos].sum(axis=1)
    diffs = sums / 10 - (pool.sum() - sums) / 10
    exact = np.mean(np.abs(diffs) >= abs(obs) - 1e-12)
    assert out["p_perm"] == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 5000) + 2e-4)


def test_tails_take_a_tenth_of_tied_units_and_all_tied_gives_nan():
    part = np.array([0, 0, 0, 0.5, 0.5, 0.5, 0.5, 1, 1, 1.0])
    top, bottom = TC.participation_tails(part)
    assert top.sum() == 1 and bottom.sum() == 1 and part[top] == 1.0 and part[bottom] == 0.0
    out = TC.boundary_test(np.zeros(10), np.arange(10.0))
    assert np.isnan(out["cohens_d"]) and np.isnan(out["p_perm"])


def test_bh_on_benjamini_hochberg_1995_example():
    # The 15 p-values of Benjamini & Hochberg (1995), §4: BH at q = 0.05 rejects the 4 smallest
    # (Bonferroni would reject only 3).
    p = np.array([0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
                  0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000])
    q, sig = TC.bh_fdr(p[::-1], alpha=0.05)  # order must not matter
    q, sig = q[::-1], sig[::-1]
    assert sig.tolist() == [True] * 4 + [False] * 11
    assert q[3] == pytest.approx(0.0095 * 15 / 4)
    assert q[2] == pytest.approx(0.0095)  # step-up: min over larger ranks
    q2, sig2 = TC.bh_fdr(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(q2[1]) and not sig2[1] and q2[0] == pytest.approx(0.02)


def test_permutation_spearman_exact_small_case():
    # n = 5 pairs: 5! = 120 < 10,000 orderings, so scipy enumerates them all. A monotone pair has
    # ρ = 1; only the identity and the reversal reach |ρ| = 1 → p = 2/120.
    rho, p = TC.permutation_spearman([1, 2, 3, 4, 5], [10, 20, 25, 40, 41], rng=np.random.default_rng(0))
    assert rho == pytest.approx(1.0)
    assert p == pytest.approx(2 / 120)
    assert np.isnan(TC.permutation_spearman([1, 2], [3, 4])[0])


# -- mesoscale operator ---------------------------------------------------------------------------


def test_mesoscale_operator_matches_dense_community_basis():
    rng = np.random.default_rng(3)
    d = 30
    lab_in, lab_out = rng.integers(0, 4, d), rng.integers(0, 5, d)
    lab_in, lab_out = T.canonical_labels(lab_in), T.canonical_labels(lab_out)
    jac = rng.standard_normal((d, d))

    def basis(lab):
        c = np.zeros((d, lab.max() + 1))
        c[np.arange(d), lab] = 1.0
        return c / np.sqrt(c.sum(axis=0))

    c_in, c_out = basis(lab_in), basis(lab_out)
    k = c_out.T @ jac @ c_in
    np.testing.assert_allclose(TC.mesoscale_operator(jac, lab_out, lab_in), k, atol=1e-12)
    vc = np.linalg.norm(c_out @ k @ c_in.T) ** 2 / np.linalg.norm(jac) ** 2
    assert TC.variance_captured(jac, lab_out, lab_in) == pytest.approx(vc)


def test_variance_captured_is_one_for_block_constant_jacobian():
    rng = np.random.default_rng(4)
    lab_in, lab_out = T.canonical_labels(rng.integers(0, 6, 60)), T.canonical_labels(rng.integers(0, 3, 60))
    blocks = rng.standard_normal((lab_out.max() + 1, lab_in.max() + 1))
    jac = blocks[np.ix_(lab_out, lab_in)]
    assert TC.variance_captured(jac, lab_out, lab_in) == pytest.approx(1.0, abs=1e-12)
    res = TC.mesoscale_test(jac + 0.05 * rng.standard_normal(jac.shape), lab_out, lab_in,
                           rng=np.random.default_rng(0))
    assert res["variance_captured"] > res["null_q95"] and res["z"] > 5
    assert res["p_empirical"] == pytest.approx(1 / (TC.N_NULL_PARTITIONS + 1))
    # a partition unrelated to J captures no more than chance
    noise = TC.mesoscale_test(rng.standard_normal((60, 60)), lab_out, lab_in, rng=np.random.default_rng(0))
    assert abs(noise["z"]) < 4


# -- stages ------------------------------------------------------------------------------------------

CONTRACT = {
    "units": ["snapshot", "method", "unit", "community", "participation", "column_norm"],
    "communities": ["snapshot", "method", "community", "size"],
    "nmi": ["method", "snapshot_a", "snapshot_b", "nmi"],
    "graph_edges": ["snapshot", "i", "j", "weight"],
    "community_null": ["snapshot", "method", "n_communities", "n_multi", "quality", "null_n_communities",
                       "null_n_multi", "null_quality"],
    "mesoscale": ["layer", "method", "null", "operator", "snapshot_in", "snapshot_out", "variance_captured",
                  "null_mean", "null_std", "z", "sigma_max_K", "disruption", "d_sigma_max", "d_variance_captured"],
    "coupling": ["layer", "method", "snapshot", "cohens_d", "p_perm", "q_bh", "fdr_significant", "spearman_rho",
                 "self_alignment"],
}


def _ctx(root, run_id, communities="cpm"):
    return RunContext(RunConfig(runs_dir=root, run_id=run_id, communities=communities), RunStore(root / run_id),
                      quiet=True)


@pytest.fixture(scope="module")
def topo_run(tmp_path_factory, synthetic_runs_dir):
    """A copy of the shared trained synthetic run with both topology stages computed (all methods)."""
    root = tmp_path_factory.mktemp("topo")
    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, root / TRAINED_RUN)
    store = RunStore(root / TRAINED_RUN)
    store.write_table("summary", pd.DataFrame({"name": ["other.stage.value"], "value": [7.0]}))
    ctx = _ctx(root, TRAINED_RUN, "all")
    communities_stage.run(ctx)
    topology_coupling_stage.run(ctx)
    return ctx


def test_stages_write_every_table_with_the_contract_columns(topo_run):
    store = topo_run.store
    L, d = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]
    n_snap = 2 * L + 1  # the synthetic run has final_state.npy → snapshot 2L
    for name, cols in CONTRACT.items():
        df = store.read_table(name)
        assert set(cols) <= set(df.columns), name
    units = store.read_table("units")
    assert len(units) == n_snap * len(T.METHODS) * d
    jac = store.read_array("jacobians")
    u2 = units[(units.method == "cpm") & (units.snapshot == 2)].sort_values("unit")
    np.testing.assert_allclose(u2["column_norm"], np.linalg.norm(jac[1].astype(np.float64), axis=0), rtol=1e-6)
    assert units.loc[units.snapshot % 2 == 1, "column_norm"].isna().all()
    comms = store.read_table("communities")
    assert (comms.groupby(["method", "snapshot"])["size"].sum() == d).all()
    nmi = store.read_table("nmi")
    assert len(nmi) == len(T.METHODS) * n_snap**2
    diag = nmi[nmi.snapshot_a == nmi.snapshot_b]
    np.testing.assert_allclose(diag["nmi"], 1.0)
    edges = store.read_table("graph_edges")
    assert (edges.i < edges.j).all() and set(edges.snapshot) == set(range(n_snap))
    meso = store.read_table("mesoscale")
    assert len(meso) == len(T.METHODS) * L * 4  # (null, operator) ∈ {independent, joint} × {J, R}
    assert (meso.groupby(["layer", "method", "null", "operator"]).size() == 1).all()
    assert set(meso["null"]) == {"independent", "joint"} and set(meso["operator"]) == {"J", "R"}
    jac = store.read_array("jacobians")
    lab = {k: g.sort_values("unit")["community"].to_numpy() for k, g in units.groupby(["method", "snapshot"])}
    for _, row in meso[(meso.method == "cpm") & (meso.layer == 1)].iterrows():
        j = jac[1].astype(np.float64) - (np.eye(d) if row["operator"] == "R" else 0.0)
        assert row["variance_captured"] == pytest.approx(
            TC.variance_captured(j, lab[("cpm", row["snapshot_out"])], lab[("cpm", 2)]), rel=1e-9)
    assert meso["bh_significant"].dtype == bool
    for m in T.METHODS:  # the summary counts the BH-significant layers of each test (one rule everywhere)
        g = meso[(meso.method == m) & (meso.null == "joint") & (meso.operator == "R")].sort_values("layer")
        summary = dict(store.read_table("summary").itertuples(index=False))
        q, sig = TC.bh_fdr(g["p_empirical"].to_numpy())
        np.testing.assert_array_equal(g["bh_significant"].to_numpy(), sig)
        np.testing.assert_allclose(g["q_bh"].to_numpy(), q)
        assert summary[f"topology.{m}.mesoscale.joint.R.bh_significant"] == sig.sum()
        old = meso[(meso.method == m) & (meso.null == "independent") & (meso.operator == "J")]
        assert summary[f"topology.{m}.mesoscale.above_null"] == old["bh_significant"].sum()
        assert (g["p_empirical"] >= 1 / (TC.N_NULL_PARTITIONS + 1)).all()
    assert meso.loc[meso.layer == L - 1, "snapshot_out"].eq(2 * L).all()
    assert meso.loc[meso.layer < L - 1, "disruption"].between(0, 1).all()
    assert meso.loc[meso.layer == L - 1, "disruption"].isna().all()
    coup = store.read_table("coupling")
    assert len(coup) == len(T.METHODS) * L and coup["fdr_significant"].dtype == bool
    assert (coup["n_top"] == d // 10).all() and (coup["n_bottom"] == d // 10).all()  # exactly ⌊0.1 d⌋
    lay = store.read_table("layers")
    sa = lay[lay.operator == "J"].sort_values("layer")["self_alignment"].to_numpy()
    np.testing.assert_allclose(coup[coup.method == "cpm"].sort_values("layer")["self_alignment"], sa)
    summary = dict(store.read_table("summary").itertuples(index=False))
    assert summary["other.stage.value"] == 7.0  # another stage's row survives the merge
    for m in T.METHODS:
        assert f"topology.{m}.selfalign_vs_d.rho" in summary
        assert summary[f"topology.{m}.fdr_sig_pos"] + summary[f"topology.{m}.fdr_sig_neg"] == \
            coup[coup.method == m]["fdr_significant"].sum()
    null = store.read_table("community_null")
    assert len(null) == len(T.METHODS) * n_snap
    per = comms.groupby(["method", "snapshot"])["size"]
    got = null.set_index(["method", "snapshot"]).sort_index()
    np.testing.assert_array_equal(got["n_communities"], per.size().sort_index())
    np.testing.assert_array_equal(got["n_multi"], per.apply(lambda x: (x >= 2).sum()).sort_index())
    assert null.loc[null.method == "cpm", ["quality", "null_quality"]].notna().all().all()
    assert null.loc[null.method != "cpm", "quality"].isna().all()
    # The planted communities are structure beyond the cloud's shape: the real partition scores a
    # higher CPM quality than the null's at every snapshot.
    cpm = null[null.method == "cpm"]
    assert (cpm["quality"] > cpm["null_quality"]).all()
    # The null is the rotated sample: its correlation participation ratio is the sample's up to the
    # second z-scoring, which flattens a strongly structured cloud's spectrum somewhat (here by
    # 15-30 %; within 5 % on structureless data, tests/core/test_samples.py).
    assert (null["null_kind"] == "rotation").all()
    ratio = null["null_participation_ratio"] / null["participation_ratio"]
    assert ratio.between(1.0, 1.4).all()
    assert not (store.path / ".partial" / "communities").exists()


def test_cpm_quality_on_a_hand_graph():
    # Two positive triangles {0,1,2} and {3,4,5} joined by edge 2–3, and a negative edge 0–3.
    i = np.array([0, 0, 1, 3, 3, 4, 2, 0])
    j = np.array([1, 2, 2, 4, 5, 5, 3, 3])
    w = np.array([1.0] * 7 + [-0.5])
    g = T.CPM_GAMMA
    two = np.array([0, 0, 0, 1, 1, 1])
    # Σ_c Σ_{i≠j in c} (A_ij − γ) per layer, divided by 2Σ|w| = 15.
    assert T.cpm_quality(6, i, j, w, two) == pytest.approx((12 - 12 * g) / 15, rel=1e-12)
    one = np.zeros(6, int)
    assert T.cpm_quality(6, i, j, w, one) == pytest.approx((14 - 30 * g - 1.0) / 15, rel=1e-12)


def test_communities_stage_resumes_from_checkpoints_with_identical_tables(tmp_path, synthetic_runs_dir,
                                                                         monkeypatch, topo_run):
    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, tmp_path / TRAINED_RUN)
    ctx = _ctx(tmp_path, TRAINED_RUN, "all")
    real, calls = T.detect, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:  # die part-way, after a few snapshots were checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(communities_stage, "detect", flaky)
    with pytest.raises(KeyboardInterrupt):
        communities_stage.run(ctx)
    assert any((tmp_path / TRAINED_RUN / ".partial" / "communities").iterdir())
    monkeypatch.setattr(communities_stage, "detect", real)
    communities_stage.run(ctx)
    for name in ("units", "communities", "nmi", "graph_edges", "community_null"):
        pd.testing.assert_frame_equal(ctx.store.read_table(name), topo_run.store.read_table(name))


def test_planted_synthetic_communities_are_found(tmp_path):
    # Activations → correlation → top-k graph → signed Leiden, against the generator's planted
    # signed communities (12 groups of 8 units, pairs of groups anti-correlated). Signed modularity
    # separates the anti-correlated pairs; at this tiny d CPM γ = 0.001 merges groups smaller than k.
    store = make_synthetic_run(tmp_path, "planted", n_layers=1, d=96, n_samples=256, seed=3, exact=False)
    ctx = _ctx(tmp_path, "planted", "modularity1")
    communities_stage.run(ctx)
    planted = store.read_array("planted_communities")
    units = store.read_table("units")
    for s in range(2):
        found = units[units.snapshot == s].sort_values("unit")["community"].to_numpy()
        assert T.nmi(found, planted[s]) > 0.75


def test_methods_for_rejects_unknown_choice():
    assert T.methods_for("all") == list(T.METHODS)
    assert T.methods_for("infomap") == ["infomap"]
    with pytest.raises(Exception, match="unknown --communities"):
        T.methods_for("louvain")


def test_block_correlation_equals_block_averaged_correlation_without_forming_it():
    """The Communities page's panels: block means of C from block sums of z equal block-averaging
    the full matrix (ragged edge blocks included), and a sub-block equals C's rows and columns."""
    from resdyn.core.correlation import block_correlation, correlation, correlation_block, standardize
    from resdyn.core.figures.topology import block_average

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 23)) @ rng.standard_normal((23, 23))  # correlated units
    x[:, 5] = 2.0  # a constant unit: z = 0, its row and column of C are 0
    order = rng.permutation(23)
    full = correlation(x)
    want, f_want = block_average(full[np.ix_(order, order)], 5)
    got, f = block_correlation(standardize(x), order, 5)
    assert f == f_want == 5 and got.shape == want.shape == (5, 5)
    np.testing.assert_allclose(got, want, atol=2e-6)
    rows, cols = order[:7], order[10:19]
    np.testing.assert_allclose(correlation_block(standardize(x), rows, cols), full[np.ix_(rows, cols)], atol=1e-6)


def test_standardize_is_unit_major_zscores_and_zero_for_constant_units():
    """standardize(x) is scipy's z-score (ddof 0) transposed to (d, N); a constant unit is all 0."""
    from scipy import stats

    from resdyn.core.correlation import standardize

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((30, 7)) * 10.0 + 3.0).astype(np.float32)
    x[:, 2] = 4.5
    zu = standardize(x)
    assert zu.shape == (7, 30) and zu.dtype == np.float32 and zu.flags.c_contiguous
    live = [0, 1, 3, 4, 5, 6]
    want = np.zeros((30, 7))
    want[:, live] = stats.zscore(x[:, live].astype(np.float64), axis=0)
    np.testing.assert_allclose(zu, want.T, atol=1e-5)


def test_overview_blocks_and_standardize_units_equal_the_full_computation():
    """overview_blocks = block means of C in unit order and in each labeling's community order
    (float16); standardize_units(x, units) = standardize(x)[units], repeats and any order."""
    from resdyn.core.correlation import (community_order, correlation, overview_blocks, standardize,
                                         standardize_units)
    from resdyn.core.figures.topology import block_average

    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 31)) @ rng.standard_normal((31, 31))
    labs = [rng.integers(0, 4, 31), rng.integers(0, 6, 31)]
    panels, f = overview_blocks(standardize(x), labs, max_px=8)
    full = correlation(x)
    assert panels.dtype == np.float16 and panels.shape == (3, 8, 8) and f == 4
    for panel, order in zip(panels, [np.arange(31)] + [community_order(lab) for lab in labs]):
        want, _ = block_average(full[np.ix_(order, order)], 8)
        np.testing.assert_allclose(panel.astype(np.float32), want, atol=2e-3)  # float16
    units = np.array([7, 2, 7, 30])
    np.testing.assert_allclose(standardize_units(x, units), standardize(x)[units], atol=1e-6)


def test_communities_stage_stores_the_overview_panels_above_the_heatmap_width(tmp_path, synthetic_runs_dir,
                                                                              monkeypatch):
    """Runs wider than HEATMAP_MAX get corr_blocks (one panel per snapshot in unit order and per
    method), equal to overview_blocks of each snapshot with the stored labels; narrower runs none."""
    from resdyn.core.correlation import overview_blocks, standardize

    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, tmp_path / TRAINED_RUN)
    ctx = _ctx(tmp_path, TRAINED_RUN, "all")
    monkeypatch.setattr(communities_stage, "HEATMAP_MAX", 8)  # the fixture's d is above this
    communities_stage.run(ctx)
    store = ctx.store
    index = store.read_table("corr_blocks")
    assert list(index["order"]) == ["unit", *T.METHODS] and list(index["panel"]) == list(range(1 + len(T.METHODS)))
    blocks = store.read_array("corr_blocks")
    units = store.read_table("units")
    acts, final = store.read_array("activations"), store.read_array("final_state")
    assert blocks.shape[:2] == (acts.shape[1] + 1, 1 + len(T.METHODS))
    for s in (0, 3, acts.shape[1]):  # the last one is the final state
        x = final if s == acts.shape[1] else acts[:, s, :]
        labs = [units[(units.snapshot == s) & (units.method == m)].sort_values("unit")["community"].to_numpy()
                for m in T.METHODS]
        want, f = overview_blocks(standardize(np.asarray(x)), labs)
        np.testing.assert_array_equal(blocks[s], want)
        assert int(index["f"].iloc[0]) == f
    monkeypatch.setattr(communities_stage, "HEATMAP_MAX", 512)
    communities_stage.run(ctx)
    assert not store.has_array("corr_blocks") and not store.has_table("corr_blocks")
