"""METHODS §9 on tiny models: in-context residual Jacobians (causality, finite differences, the
prefix-cache fast path against the full-sequence replay) and the "block_coupling" and
"trajectories" stages end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from resdyn.compute.stages import block_coupling as C
from resdyn.core import block_coupling as bc
from resdyn.compute.blocks import traced_forward
from resdyn.compute.cli import main
from resdyn.core import trajectory as tj

from .test_cli import TEXTS, save_tiny_model_and_corpus
from .tiny import ARCHS, tiny_bundle

CAUSAL = [a for a in ARCHS if a != "bert"]
IDS = torch.tensor([3, 7, 11, 2, 9, 4, 5, 8])  # 8 tokens: longer than gemma3's sliding window of 4
T = len(IDS)


@pytest.fixture(scope="module", params=ARCHS)
def bundle(request):
    return tiny_bundle(request.param)


def _full_output(trace, layer: int, t1: int, t2: int):
    """Block ``layer``'s output at token t2 as a function of its input at t1, everything else at the
    traced values: an independent construction from the recorded call (no InputSite)."""
    ctx = trace.inputs[layer]

    def f(x):
        h = ctx.clone()
        h[0, t1] = x
        return trace.calls[layer](h)[0, t2]

    return f


def test_causality_makes_earlier_outputs_independent_of_later_inputs(bundle):
    """∂ f^l(X)_{t2} / ∂ x_{t1} = 0 exactly for t1 > t2 in a decoder; not so in an encoder."""
    trace = traced_forward(bundle, IDS[None])
    site = C.full_site(bundle, IDS, T - 1, trace)
    for layer in range(3):
        jac = C.residual_jacobians(site, layer, [T - 3, T - 2])
        if bundle.adapter.causal:
            assert torch.count_nonzero(jac) == 0
        else:  # BERT attends both ways: the same call sees the later token
            assert jac.abs().max() > 1e-3


def test_in_context_residual_jacobian_matches_central_differences(bundle):
    """J^l_{t1 t2} v ≈ (f(x + εv) − f(x − εv)) / 2ε − [t1 = t2] v in float64, for t1 = t2 = last and
    t1 < t2, through the site the stage uses (prefix cache for decoders)."""
    trace = traced_forward(bundle, IDS[None])
    g = torch.Generator().manual_seed(0)
    eps = 1e-5
    for t1, t2 in ((T - 1, T - 1), (T - 3, T - 1)):
        site = C.input_site(bundle, IDS, t1, trace)
        for layer in (0, 2):
            jac = C.residual_jacobians(site, layer, [t2])[0]
            f = _full_output(trace, layer, t1, t2)
            x = trace.inputs[layer][0, t1]
            v = torch.randn(x.shape, generator=g, dtype=torch.float64)
            fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps) - (v if t1 == t2 else 0.0)
            assert torch.linalg.norm(jac @ v - fd) / torch.linalg.norm(fd) < 1e-6, (t1, t2, layer)


@pytest.mark.parametrize("arch", CAUSAL)
def test_prefix_cache_site_equals_full_sequence_replay(arch):
    """The cheap site (suffix from t1 plus a read-only KV cache of the prefix) gives exactly the
    Jacobians of the full-sequence replay, for every output t2 ≥ t1 (gemma3: across its sliding
    window)."""
    b = tiny_bundle(arch)
    trace = traced_forward(b, IDS[None])
    for t1 in (T - 1, T - 4):
        fast = C.prefix_site(b, IDS, t1)
        assert fast is not None and fast.offset == t1 and fast.inputs[0].shape[1] == T - t1
        slow = C.full_site(b, IDS, t1, trace)
        t2s = list(range(t1, T))
        for layer in (0, 2):
            torch.testing.assert_close(C.residual_jacobians(fast, layer, t2s),
                                       C.residual_jacobians(slow, layer, t2s), rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="before the site"):
        C.residual_jacobians(C.prefix_site(b, IDS, T - 1), 0, [T - 2])


def test_encoder_has_no_prefix_site():
    assert C.prefix_site(tiny_bundle("bert"), IDS, T - 1) is None


def test_gram_factors_give_the_svd_coupling():
    """The stage's eigh-of-Gram singular vectors give the same m̃ as a float64 SVD."""
    g = torch.Generator().manual_seed(3)
    jac = torch.randn(5, 24, 24, generator=g, dtype=torch.float64)
    u, v = C.svd_factors(jac, 10)
    fast = tj.pairwise_miscoupling(jac.numpy(), [4, 10], (u, v))
    ref = tj.pairwise_miscoupling(jac.numpy(), [4, 10])
    np.testing.assert_allclose(fast, ref, atol=2e-4)
    assert ref[:, ~np.eye(5, dtype=bool)].min() > 0.3  # unrelated random matrices: far from coupled


# ------------------------------------------------------------------------------------------------
# End to end through the CLI
# ------------------------------------------------------------------------------------------------

STAGES = "activations,block_coupling,trajectories"
N = 3


@pytest.fixture(scope="module")
def coupling_run(tmp_path_factory):
    root = save_tiny_model_and_corpus(tmp_path_factory.mktemp("coupling"))
    corpus = root / "corpus.txt"
    argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(corpus), "--samples", "4",
            "--runs-dir", str(root / "runs"), "--run-id", "c", "--quiet", "--stages", STAGES,
            "--coupling-samples", str(N), "--coupling-window", "3", "--coupling-tokens", "8"]
    assert main(argv) == 0
    return root, argv


def _table(root, name):
    return pd.read_parquet(root / "runs" / "c" / f"{name}.parquet")


def test_block_coupling_table_has_the_contract(coupling_run):
    root, _ = coupling_run
    rows = _table(root, "block_coupling")
    assert list(rows.columns) == list(bc.COLUMNS)
    assert set(rows["kind"]) == set(bc.KINDS)
    assert set(rows["K"]) == {10, 30}  # K < d = 32
    per, agg = rows[~rows["aggregate"]], rows[rows["aggregate"]]
    assert set(per["sample"]) == set(range(N)) and set(agg["sample"]) == {-1}
    depth = per[(per["kind"] == "depth")]
    assert len(depth) == N * 2 * 3 * 3 and set(depth["token_a"]) == {-1}
    assert depth["token_fixed"].isna().all()
    diag = depth[depth["layer_a"] == depth["layer_b"]]["miscoupling"]
    assert diag.max() < 1e-4  # each Jacobian is diagonal in its own singular basis
    off = depth[depth["layer_a"] != depth["layer_b"]]["miscoupling"]
    assert ((off > 0) & (off <= 1)).all()
    # Aggregate rows are the means of the per-sample rows.
    keys = ["kind", "K", "layer_a", "layer_b", "token_a", "token_b"]
    mean = depth.groupby(keys)["miscoupling"].mean()
    got = agg[agg["kind"] == "depth"].set_index(keys)["miscoupling"]
    np.testing.assert_allclose(got.loc[mean.index], mean, rtol=1e-12)
    assert (agg[agg["kind"] == "depth"]["n"] == N).all()
    # Token-wise (window 3, same layer): only causal pairs, tokens counted from the end.
    fi = per[per["kind"] == "fixed_input"]
    assert (fi["token_a"] >= fi["token_fixed"]).all() and (fi["token_b"] >= fi["token_fixed"]).all()
    fo = per[per["kind"] == "fixed_output"]
    assert (fo["token_a"] <= fo["token_fixed"]).all() and (fo["layer_a"] == fo["layer_b"]).all()
    selfc = per[per["kind"] == "self"]
    assert set(selfc["token_a"]) == {-3, -2, -1}
    assert len(selfc) == N * 2 * 3 * 9


def test_depth_rows_match_an_independent_recomputation(coupling_run):
    """Sample 0's depth-wise m̃ from the table equals m̃ recomputed from autodiff Jacobians of the
    full-sequence replay (no prefix cache) and a float64 SVD; A of the first prompt is stored."""
    from resdyn.compute.models import tokenize
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    root, _ = coupling_run
    bundle = load_bundle(RunConfig(model=str(root / "tiny-llama"), run_id="x"))
    ids = tokenize(bundle, TEXTS[:1])[0][:8]
    trace = traced_forward(bundle, ids[None])
    t = len(ids) - 1
    jac = np.stack([torch.func.jacrev(_full_output(trace, l, t, t))(trace.inputs[l][0, t]).numpy()
                    - np.eye(32) for l in range(3)])
    ref = tj.depth_coupling(jac, [10, 30])
    rows = _table(root, "block_coupling")
    got = rows[(rows["kind"] == "depth") & (rows["sample"] == 0)]
    for i, k in enumerate((10, 30)):
        sub = got[got["K"] == k]
        mat = np.full((3, 3), np.nan)
        mat[sub["layer_a"], sub["layer_b"]] = sub["miscoupling"]
        np.testing.assert_allclose(mat, ref[i], atol=2e-3)
    a = np.load(root / "runs" / "c" / "block_coupling_A.npy")
    assert a.shape == (3, 3, 30, 30) and a.dtype == np.float32
    np.testing.assert_allclose(tj.miscoupling(a[..., :10, :10]), ref[0], atol=2e-3)


def test_summary_holds_the_run_scores(coupling_run):
    root, _ = coupling_run
    summary = dict(_table(root, "summary")[["name", "value"]].itertuples(index=False))
    rows = _table(root, "block_coupling")
    depth = rows[(rows["kind"] == "depth") & ~rows["aggregate"] & (rows["K"] == 30)]
    off = depth[depth["layer_a"] != depth["layer_b"]]
    assert summary["block_coupling.mean_miscoupling.K30"] == pytest.approx(off["miscoupling"].mean())
    assert summary["block_coupling.coupling_score"] == pytest.approx(1 - off["miscoupling"].mean())
    assert summary["block_coupling.score_K"] == 30 and summary["block_coupling.n_samples"] == N
    traj = _table(root, "trajectories")
    assert summary["trajectories.lss_median"] == pytest.approx(traj[traj["layer"] == 0]["lss"].median())
    assert summary["trajectories.window"] == 4  # min(11, L + 1)


def test_trajectories_table_matches_the_activations(coupling_run):
    """The last token's norms are those of the stored activations (x^l = snapshot 2l, x^L = the
    final state); LSS / ED columns equal the core functions on those states; every token is there."""
    root, _ = coupling_run
    run = root / "runs" / "c"
    traj = _table(root, "trajectories")
    passages = pd.read_parquet(run / "passages.parquet")
    assert len(traj) == int(passages["n_tokens"].sum()) * 4  # L + 1 = 4 states per token
    assert list(traj.columns) == ["sample", "token", "position", "layer", "norm", "alpha", "lss_window",
                                  "ed_window", "lss", "ed"]
    acts = np.load(run / "activations.npy")
    final = np.load(run / "final_state.npy")
    states = np.concatenate([acts[:, 0::2], final[:, None]], axis=1)  # (N, L + 1, d)
    last = traj[traj["token"] == -1].sort_values(["sample", "layer"])
    np.testing.assert_allclose(last["norm"].to_numpy().reshape(4, 4), np.linalg.norm(states, axis=-1), rtol=1e-5)
    lss = last[last["layer"] == 0]["lss"].to_numpy()
    np.testing.assert_allclose(lss, tj.line_shape_score(states), rtol=1e-4)
    np.testing.assert_allclose(last[last["layer"] == 0]["ed"], tj.expodistance(np.linalg.norm(states, axis=-1)),
                               rtol=1e-4)
    assert (traj["lss"] >= 1 - 1e-6).all()
    # One window of 4 states (L + 1 = 4): centred at layer 2, NaN elsewhere.
    assert traj.loc[traj["layer"] == 2, "lss_window"].notna().all()
    assert traj.loc[traj["layer"] != 2, "lss_window"].isna().all()
    np.testing.assert_allclose(traj.loc[traj["layer"] == 2, "lss_window"].to_numpy(),
                               traj.loc[traj["layer"] == 2, "lss"].to_numpy(), rtol=1e-6)


def test_trajectory_windows_are_the_quartiles_duckdb_gives_on_the_table(coupling_run):
    """The stored per-layer quartiles equal DuckDB's quantile_cont over the trajectories table
    (what the page computed before the stage stored them), for every token and for last tokens."""
    from resdyn.core import queries

    root, _ = coupling_run
    run = root / "runs" / "c"
    win = _table(root, "trajectory_windows")
    assert list(win.columns) == ["scope", "metric", "layer", "q25", "median", "q75", "n"]
    for scope, where in (("all", "TRUE"), ("last", "token = -1")):
        for metric in tj.WINDOW_METRICS:
            want = queries.query(
                f"SELECT layer, quantile_cont({metric}, 0.25) AS q25, median({metric}) AS median, "
                f"quantile_cont({metric}, 0.75) AS q75, count({metric}) AS n FROM read_parquet(?) "
                f"WHERE {metric} IS NOT NULL AND {where} GROUP BY layer ORDER BY layer",
                [str(run / "trajectories.parquet")])
            got = win[(win["scope"] == scope) & (win["metric"] == metric)].sort_values("layer")
            assert len(got) == len(want) > 0
            np.testing.assert_array_equal(got["layer"], want["layer"])
            np.testing.assert_array_equal(got["n"], want["n"])
            for col in ("q25", "median", "q75"):
                np.testing.assert_allclose(got[col], want[col], rtol=1e-6)  # float32 columns


def test_trajectory_pca_covers_the_coupling_prompts(coupling_run):
    root, _ = coupling_run
    pca = _table(root, "trajectory_pca")
    assert sorted(set(pca["sample"])) == list(range(N)) and set(pca["fit"]) == set(tj.PCA_FITS)
    n_tok = pd.read_parquet(root / "runs" / "c" / "passages.parquet")["n_tokens"][0]
    for fit, first in (("all", 0), ("skip_first", 1)):
        rows = pca[(pca["sample"] == 0) & (pca["fit"] == fit)]
        assert len(rows) == (n_tok - first) * 4 and rows["position"].min() == first
        last_layer = rows[rows["layer"] == 3]
        # Fitted on the last layer: its projection is centred.
        np.testing.assert_allclose(last_layer[["pc1", "pc2"]].mean(), 0, atol=1e-4)
        assert 0 < last_layer["var1"].iloc[0] <= 1 and last_layer["var1"].iloc[0] >= last_layer["var2"].iloc[0]


TRAJECTORY_TABLES = ("trajectories", "trajectory_pca", "trajectory_windows")


def test_trajectories_take_the_activations_pass_and_equal_a_forward_of_their_own(coupling_run, monkeypatch):
    """The activations stage leaves the per-token tables and the trajectories stage runs no forward
    pass of its own; recomputed by that stage's own forward pass (no tables left), every table is
    equal bit for bit."""
    from resdyn.compute.stages import trajectories as stage

    root, argv = coupling_run
    run = root / "runs" / "c"
    before = {name: _table(root, name) for name in TRAJECTORY_TABLES}
    assert not (run / ".partial").exists()  # the finished stage took its tables away
    real, calls = stage.forward_tables, {"n": 0}

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(stage, "forward_tables", counting)
    assert main(argv + ["--redo", "trajectories"]) == 0
    assert calls["n"] == 1
    for name in TRAJECTORY_TABLES:
        pd.testing.assert_frame_equal(_table(root, name), before[name], check_exact=True)

    def second_pass(*args):
        raise AssertionError("the trajectories stage ran a forward pass of its own")

    monkeypatch.setattr(stage, "forward_tables", second_pass)
    assert main(argv + ["--redo", "activations"]) == 0  # its dependents, trajectories included, follow
    for name in TRAJECTORY_TABLES:
        pd.testing.assert_frame_equal(_table(root, name), before[name], check_exact=True)


def test_activations_leave_the_tables_only_when_the_trajectories_stage_is_planned(coupling_run):
    """Left out of --stages, the trajectories stage gets no tables (nor the cost of building them);
    named ahead, as the demo's first pass names the rest of the run, it gets them."""
    from resdyn.compute import pipeline
    from resdyn.config import RunConfig

    root, _ = coupling_run
    runs = root / "runs"
    common = dict(model=str(root / "tiny-llama"), corpus=str(root / "corpus.txt"), samples=4, runs_dir=runs,
                  stages="activations", coupling_samples=N)
    pipeline.run(RunConfig(run_id="not-planned", **common), quiet=True)
    assert (runs / "not-planned" / "activations.npy").is_file()
    assert not (runs / "not-planned" / ".partial").exists()
    pipeline.run(RunConfig(run_id="ahead", **common), quiet=True, ahead=("trajectories",))
    assert sorted(p.name for p in (runs / "ahead" / ".partial" / "trajectories").iterdir()) == [
        "key.json", "pca.parquet", "rows.parquet"]


def test_tables_left_by_another_forward_pass_are_ignored(coupling_run):
    from resdyn.compute import trajectory_tables as tt
    from resdyn.core.store import RunStore

    root, _ = coupling_run
    store = RunStore(root / "runs" / "c")
    final = np.load(store.path / "final_state.npy")
    builder = tt.TableBuilder(N, 4)
    builder.rows[0] = _table(root, "trajectories").head(3)
    builder.pcas[0] = _table(root, "trajectory_pca").head(3)
    try:
        tt.save(store, builder, final)
        rows, pca = tt.load(store, N, 4)
        pd.testing.assert_frame_equal(rows, builder.rows[0])
        assert tt.load(store, N, 5) is None  # another window
        assert tt.load(store, N + 1, 4) is None  # other PCA prompts
        key_file = store.path / ".partial" / "trajectories" / "key.json"
        older = json.loads(key_file.read_text())
        key_file.write_text(json.dumps(dict(older, tables=older["tables"] - 1)))  # an older layout
        assert tt.load(store, N, 4) is None
        other = final.copy()
        other[0, 0] += 1.0
        tt.save(store, builder, other)  # tables of another forward pass
        assert tt.load(store, N, 4) is None
        (store.path / ".partial" / "trajectories" / "key.json").unlink()  # a kill before the key
        assert tt.load(store, N, 4) is None
    finally:
        store.clear_partial("trajectories")


def test_killed_stage_resumes_at_the_next_sample(coupling_run, monkeypatch):
    root, argv = coupling_run
    run = root / "runs" / "c"
    before = _table(root, "block_coupling")
    real, calls = C.sample_coupling, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "sample_coupling", failing)
    with pytest.raises(RuntimeError):
        main(argv + ["--redo", "block_coupling"])
    assert sorted(p.name for p in (run / ".partial" / "block_coupling").glob("sample_*")) == [
        "sample_00000.parquet", "sample_00001.parquet"]
    monkeypatch.setattr(C, "sample_coupling", real)
    assert main(argv) == 0
    pd.testing.assert_frame_equal(_table(root, "block_coupling"), before)
    assert not (run / ".partial").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["coupling_samples"] == N and manifest["coupling_window"] == 3


@pytest.mark.parametrize("flag, value, message", [
    ("--coupling-samples", "0", "--coupling-samples must be at least 1"),
    ("--coupling-window", "-1", "--coupling-window must be 0"),
])
def test_bad_coupling_settings_give_one_line(coupling_run, capsys, flag, value, message):
    root, argv = coupling_run
    base = [a if a != "c" else "bad" + flag for a in argv]  # a fresh run per case
    base[base.index(flag) + 1] = value
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
