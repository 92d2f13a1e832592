"""End to end: the CLI computes a run of a tiny local model and DuckDB reads it back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers

from resdyn.compute.cli import main
from resdyn.core import nulls, queries

TEXTS = [
    "the cat sat on the mat and looked at the dog",
    "a dog ran in the park while the sun was up",
    "rivers flow to the sea and the sea is wide",
    "the moon is bright at night over the quiet town",
    "birds sing in the morning and sleep at night",
]


def save_tiny_model_and_corpus(root):
    """``root/tiny-llama`` (a tiny random Llama with its tokenizer) and ``root/corpus.txt`` (TEXTS,
    one passage a line): what the end-to-end tests compute runs from. Returns ``root``."""
    _save_tiny_llama(root / "tiny-llama")
    (root / "corpus.txt").write_text("\n".join(TEXTS) + "\n")
    return root


def _save_tiny_llama(path, seed=0):
    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(vocab), max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None)
    # A seeded init plus a perturbation from a separate generator: "trained" weights that no
    # `--init random --seed S` can redraw, so a random-init twin always differs from this model.
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    model.save_pretrained(path)
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    model_dir = root / "tiny-llama"
    _save_tiny_llama(model_dir)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    argv = ["run", "--model", str(model_dir), "--corpus", str(corpus), "--samples", "4",
            "--runs-dir", str(root / "runs"), "--run-id", "e2e", "--quiet", "--batch-size", "3",
            "--stages", "activations,jacobians,spectra,sample_stats"]
    assert main(argv) == 0
    return root, argv


def test_run_is_complete_and_readable_through_duckdb(tiny_run):
    root, _ = tiny_run
    runs_dir = root / "runs"
    manifest = json.loads((runs_dir / "e2e" / "manifest.json").read_text())
    assert manifest["architecture"] == "llama" and manifest["n_layers"] == 3 and manifest["d_model"] == 32
    assert {"activations", "jacobians", "spectra", "sample_stats"} <= set(manifest["stages_done"])
    assert manifest["k"] == 8  # min(64, d // 4)
    assert manifest["files"]["samples.parquet"] == manifest["files"]["sample_profiles.parquet"] == "sample_stats"
    layers = queries.table("e2e", "layers", root=runs_dir)
    assert len(layers) == 2 * 3 and set(layers["operator"]) == {"J", "R"}
    for col in ("self_alignment", "forward_alignment", "henrici", "frac_expanding", "frac_complex", "mean_abs_eig",
                "spectral_radius", "residual_norm_ratio"):
        assert col in layers.columns
    # The per-sample profiles are the sample_stats stage's table, joined on layer by queries.layers.
    profile_cols = ["kappa_median", "kappa_q25", "kappa_q75", "fro_median", "pr_median"]
    assert not set(profile_cols) & set(layers.columns)
    joined = queries.layers("e2e", root=runs_dir)
    profiles = queries.table("e2e", "sample_profiles", root=runs_dir).set_index("layer")
    for op in ("J", "R"):
        rows = joined[joined["operator"] == op].set_index("layer")
        np.testing.assert_array_equal(rows[profile_cols].to_numpy(), profiles.loc[rows.index, profile_cols].to_numpy())
    # METHODS §3's null: the real-Ginibre complex fraction at d = 32, on both operators' rows.
    np.testing.assert_allclose(layers["frac_complex_null"], nulls.ginibre_complex_fraction(32), rtol=1e-15)
    eig = queries.table("e2e", "eigenvalues", where="operator = ? AND layer = ?", params=["J", 1], root=runs_dir)
    assert len(eig) == 32
    samples = queries.table("e2e", "samples", root=runs_dir)
    assert len(samples) == 3 * 4 and (samples["kappa"] >= 1).all()
    acts = np.load(runs_dir / "e2e" / "activations.npy", allow_pickle=False)
    assert acts.shape == (4, 6, 32) and acts.dtype == np.float32
    # Eigenvalues in the table are those of the stored mean Jacobian.
    jac = np.load(runs_dir / "e2e" / "jacobians.npy", allow_pickle=False)
    lam = np.sort_complex(np.linalg.eigvals(jac[1].astype(np.float64)))
    np.testing.assert_allclose(np.sort_complex(eig["re"].to_numpy() + 1j * eig["im"].to_numpy()), lam, atol=1e-4)


def test_mean_jacobian_equals_mean_of_independent_jacobians(tiny_run):
    """The stored J̄_l is the mean over samples of autodiff Jacobians at the stored activations."""
    from resdyn.compute.blocks import isolated_calls, isolated_fn
    from resdyn.compute.block_jacobians import batched_jacobian
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    root, argv = tiny_run
    run = root / "runs" / "e2e"
    bundle = load_bundle(RunConfig(model=str(root / "tiny-llama"), run_id="x"))
    acts = torch.from_numpy(np.load(run / "activations.npy"))
    jac = np.load(run / "jacobians.npy")
    for l, call in enumerate(isolated_calls(bundle)):
        ref = batched_jacobian(isolated_fn(call), acts[:, 2 * l]).mean(0).numpy()
        np.testing.assert_allclose(jac[l], ref, rtol=1e-4, atol=1e-5)


def test_sample_stats_equal_a_float64_svd_of_the_autodiff_jacobians(tiny_run):
    """samples.parquet holds σ_max, σ_min, κ, ‖J‖_F and PR of each sample's own Jacobian: those of a
    dense float64 SVD of the autodiff Jacobian at the stored activations (float32 model, so to
    float32 rounding of J), and sample_profiles.parquet their per-layer medians and quartiles."""
    from resdyn.compute.blocks import isolated_calls, isolated_fn
    from resdyn.compute.block_jacobians import batched_jacobian
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    root, _ = tiny_run
    run = root / "runs" / "e2e"
    bundle = load_bundle(RunConfig(model=str(root / "tiny-llama"), run_id="x"))
    acts = torch.from_numpy(np.load(run / "activations.npy"))
    samples = pd.read_parquet(run / "samples.parquet")
    assert list(samples.columns) == ["layer", "sample", "sigma_max", "sigma_min", "kappa", "fro", "pr"]
    for l, call in enumerate(isolated_calls(bundle)):
        jac = batched_jacobian(isolated_fn(call), acts[:, 2 * l]).double().numpy()
        s = np.linalg.svd(jac, compute_uv=False)
        ref = np.column_stack([s[:, 0], s[:, -1], s[:, 0] / s[:, -1], np.sqrt((s**2).sum(1)),
                               (s**2).sum(1) ** 2 / (s**4).sum(1)])
        got = samples[samples["layer"] == l].sort_values("sample")[["sigma_max", "sigma_min", "kappa", "fro", "pr"]]
        got = got.to_numpy()
        np.testing.assert_allclose(got[:, [0, 3, 4]], ref[:, [0, 3, 4]], rtol=1e-4)
        # σ_min of a float32 Jacobian is good to about κ·ε₃₂ relative (README, Benchmarks): the two
        # Jacobians are float32 computations in different orders (closed form, autodiff).
        tol = 1e-4 + 4 * ref[:, 2] * np.finfo(np.float32).eps
        for col in (1, 2):
            assert (np.abs(got[:, col] - ref[:, col]) <= tol * np.abs(ref[:, col])).all(), (l, col)
    prof = pd.read_parquet(run / "sample_profiles.parquet")
    g = samples.groupby("layer")
    np.testing.assert_array_equal(prof["kappa_median"], g["kappa"].median().to_numpy())
    np.testing.assert_array_equal(prof["kappa_q75"], g["kappa"].quantile(0.75).to_numpy())
    np.testing.assert_array_equal(prof["pr_median"], g["pr"].median().to_numpy())


def test_sample_stats_equal_the_combined_stage(tiny_run):
    """The split changed no statistic: they equal those of the former combined stage, which took
    each batch's Jacobians once and reduced them to the float64 sum and gram_stats in one loop
    (written out here), bit for bit, for the same batches. The mean now comes from the closed-form
    sum over samples in float64 (no per-sample Jacobian), so it equals the loop's float64 sum of
    float32 Jacobians to float32 rounding."""
    from resdyn.compute import block_jacobians as bj
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    root, argv = tiny_run
    run = root / "runs" / "e2e"
    cfg = RunConfig(model=str(root / "tiny-llama"), run_id="x", batch_size=3)
    state = bj.prepare_worker(load_bundle(cfg), cfg)
    acts = np.load(run / "activations.npy")
    means, stats = [], []
    for l in range(acts.shape[1] // 2):
        n, batches = bj.layer_jacobian_batches(state, cfg, l, {"states": np.array(acts[:, 2 * l])})
        total, rows = None, []
        for _, jac in batches:  # the combined stage's loop
            part = bj.batch_sum(jac)
            total = part if total is None else total + part
            rows.append(bj.gram_stats(jac).numpy())
        means.append(total / n)
        stats.append(np.concatenate(rows))
    samples = pd.read_parquet(run / "samples.parquet")
    np.testing.assert_array_equal(samples[list(bj.STAT_COLUMNS)].to_numpy(), np.concatenate(stats))
    stored, loop = np.load(run / "jacobians.npy"), np.stack(means)
    np.testing.assert_allclose(stored, loop, rtol=0, atol=1e-6 * np.abs(loop).max())


@pytest.mark.parametrize("stage, checkpoint, patched, per_layer", [
    ("jacobians", "means", "isolated_jacobian_sum", 2), ("sample_stats", "stats", "gram_stats", 2)])
def test_rerun_skips_and_resume_gives_identical_numbers(tiny_run, monkeypatch, stage, checkpoint, patched,
                                                        per_layer):
    """A crash inside a per-layer stage at layer 2 keeps layers 0 and 1 as checkpoints under
    .partial/STAGE/; the rerun resumes at layer 2 and writes the numbers of an uninterrupted run."""
    root, argv = tiny_run
    run = root / "runs" / "e2e"
    before = np.load(run / "jacobians.npy").copy()
    samples_before = (run / "samples.parquet").read_bytes()
    samples_table_before = _samples(root)
    profiles_before = pd.read_parquet(run / "sample_profiles.parquet")
    assert main(argv) == 0  # everything done: nothing recomputed
    assert (run / "samples.parquet").read_bytes() == samples_before

    # Crash inside the stage at layer 2, after layers 0 and 1 were checkpointed. The engine's helpers
    # are looked up in resdyn.compute.block_jacobians by both stages, so that is where to replace one.
    from resdyn.compute import block_jacobians

    real, calls = getattr(block_jacobians, patched), {"n": 0}

    def failing(*args):
        calls["n"] += 1
        # jacobians: one closed-form sum per half of the passages, two per layer; sample_stats:
        # batch size 3 and N = 4, two batches per layer. Either way the third layer's first call fails.
        if calls["n"] > 2 * per_layer:
            raise RuntimeError("simulated crash")
        return real(*args)

    monkeypatch.setattr(block_jacobians, patched, failing)
    with pytest.raises(RuntimeError):
        main(argv + ["--redo", stage])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "partial" and stage not in manifest["stages_done"]
    assert sorted(p.name for p in (run / ".partial" / stage).iterdir()) == [
        f"{checkpoint}_000.npy", f"{checkpoint}_001.npy"]
    monkeypatch.setattr(block_jacobians, patched, real)
    calls["n"] = 0
    assert main(argv) == 0  # resumes at layer 2
    np.testing.assert_array_equal(np.load(run / "jacobians.npy"), before)
    # The resumed table holds the same numbers (the file's bytes may differ in Parquet metadata).
    np.testing.assert_array_equal(_samples(root), samples_table_before)
    pd.testing.assert_frame_equal(pd.read_parquet(run / "sample_profiles.parquet"), profiles_before, check_exact=True)
    assert not (run / ".partial").exists()


def _samples(root):
    return pd.read_parquet(root / "runs" / "e2e" / "samples.parquet").to_numpy()


@pytest.mark.parametrize("args, message, status", [
    (["--run-id", "../x"], "invalid run id", 2),
    (["--samples", "0"], "--samples must be at least 1", 2),
    (["--model", "/nonexistent/model/dir"], "no model directory", 1),
    (["--corpus", "/nonexistent.txt"], "corpus", 1),
    (["--corpus", "books.csv"], "unknown corpus", 2),
    (["--cumulative-rank", "0"], "--cumulative-rank must be at least 1", 2),
    (["--cumulative-rank", "-4"], "--cumulative-rank must be at least 1", 2),
    (["--mode", "sideways"], "argument --mode: invalid choice", 2),
    (["--samples", "many"], "argument --samples: invalid int value", 2),
])
def test_bad_input_gives_one_line(tmp_path, capsys, args, message, status):
    """Usage errors (the command itself is wrong) exit 2; runtime errors (the model or corpus it
    names is not there) exit 1; both print one line."""
    base = ["run", "--runs-dir", str(tmp_path), "--quiet"]
    code = main(base + args)
    err = capsys.readouterr().err.strip()
    assert code == status
    assert err.startswith("resdyn: error:") and message in err and "\n" not in err


def test_unknown_architecture_lists_supported(tmp_path, capsys):
    cfg = tf.T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, vocab_size=32)
    tf.T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    code = main(["run", "--model", str(tmp_path / "t5"), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "unsupported architecture 't5'" in err and "llama" in err and "gpt2" in err


def test_list_prints_runs(tiny_run, capsys):
    root, _ = tiny_run
    assert main(["list", "--runs-dir", str(root / "runs")]) == 0
    assert "e2e" in capsys.readouterr().out


def test_cumulative_rank_above_d_is_refused_once_the_model_is_known(tiny_run, capsys):
    root, argv = tiny_run
    code = main(argv + ["--run-id", "too-wide", "--cumulative-rank", "33"])  # d = 32
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "resdyn: error: --cumulative-rank 33 must be between 1 and d_model = 32 (leave it out for the exact product)"
    assert not (root / "runs" / "too-wide" / "manifest.json").exists()  # no run was started
    # An existing run checks the flag against its recorded d before anything runs.
    assert main(argv + ["--cumulative-rank", "64"]) == 2
    assert "--cumulative-rank 64 must be between 1 and d_model = 32" in capsys.readouterr().err


def test_run_from_before_cumulative_rank_resumes_and_records_it(tiny_run, tmp_path):
    import shutil

    root, argv = tiny_run
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs" / "e2e", runs / "old")
    manifest = json.loads((runs / "old" / "manifest.json").read_text())
    assert manifest["cumulative_rank"] == 32  # new runs record it: exact
    del manifest["cumulative_rank"]
    (runs / "old" / "manifest.json").write_text(json.dumps(manifest))
    base = argv + ["--runs-dir", str(runs), "--run-id", "old"]  # argparse: the last value of a flag wins
    assert main(base) == 0  # nothing to do, and no settings clash
    # The cumulative stage then records the rank it used (here the paper's truncation, K = 8 < d).
    assert main(base + ["--stages", "activations,jacobians,spectra,cumulative", "--cumulative-rank", "8"]) == 0
    manifest = json.loads((runs / "old" / "manifest.json").read_text())
    assert manifest["cumulative_rank"] == 8


# -- how many samples a run really has (METHODS §1) ----------------------------------------------

def test_a_corpus_ending_in_one_token_has_one_state_at_snapshot_0_and_the_pages_warn(tiny_run, tmp_path,
                                                                                    monkeypatch):
    import pandas as pd

    from tests.app.apptools import open_page

    root, _ = tiny_run
    corpus = tmp_path / "night.txt"
    corpus.write_text("\n".join(f"{t} at night" for t in TEXTS) + "\n")  # every passage ends in "night"
    runs = tmp_path / "runs"
    assert main(["run", "--model", str(root / "tiny-llama"), "--corpus", str(corpus), "--samples", "5",
                 "--runs-dir", str(runs), "--run-id", "night", "--quiet",
                 "--stages", "activations,jacobians,spectra,communities"]) == 0
    run = runs / "night"
    snaps = pd.read_parquet(run / "snapshots.parquet")
    assert list(snaps["snapshot"]) == list(range(2 * 3 + 1))  # 2L snapshots and the final state
    row0 = snaps.iloc[0]
    assert (row0["n_distinct"], row0["rank"], row0["participation_ratio"]) == (1, 0, 0.0)
    assert (snaps["n_distinct"].iloc[1:] == 5).all() and (snaps["rank"].iloc[1:] <= 4).all()
    passages = pd.read_parquet(run / "passages.parquet")
    assert list(passages["position"]) == list(passages["n_tokens"] - 1)
    assert set(passages["token_text"]) == {"night"}
    summary = dict(pd.read_parquet(run / "summary.parquet").itertuples(index=False))
    assert summary["samples.distinct_last_tokens"] == 1 and summary["samples.n"] == 5
    assert summary["samples.min_participation_ratio"] == 0.0
    assert json.loads((run / "manifest.json").read_text())["position"] == "last"

    monkeypatch.setenv("RESDYN_RUNS_DIR", str(runs))
    at = open_page("pages/operator_type.py", run="night")
    assert not at.exception
    warn = " ".join(c.value for c in at.caption if "degenerate" in c.value)
    assert "Layer(s) 0" in warn and "1 of 5 distinct states" in warn
    at = open_page("pages/communities.py", run="night", snapshot="0")
    assert not at.exception and not at.error
    assert any("Degenerate sample at this snapshot" in w.value for w in at.warning)
    assert any("rotated into random axes" in md.value for md in at.markdown)
    at = open_page("pages/runs.py", run="night")
    assert not at.exception
    assert next(x.value for x in at.metric if x.label == "distinct last tokens") == "1 / 5"


def _long_corpus(path):
    """Six passages of about 21 tokens (two TEXTS lines each) and one of 10 (too short for random)."""
    lines = [f"{TEXTS[i % 5]} {TEXTS[(i + 1) % 5]}" for i in range(6)] + [TEXTS[0]]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_position_random_is_seeded_recorded_and_reproducible(tiny_run, tmp_path):
    import pandas as pd

    root, _ = tiny_run
    corpus = _long_corpus(tmp_path / "long.txt")

    def run(run_id, *extra):
        argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(corpus), "--samples", "7",
                "--runs-dir", str(tmp_path / "runs"), "--run-id", run_id, "--quiet", "--stages", "activations",
                "--position", "random", *extra]
        assert main(argv) == 0
        run = tmp_path / "runs" / run_id
        return pd.read_parquet(run / "passages.parquet"), np.load(run / "activations.npy")

    p1, a1 = run("r1")
    p2, a2 = run("r2")
    p3, _ = run("r3", "--seed", "1")
    pd.testing.assert_frame_equal(p1, p2)
    np.testing.assert_array_equal(a1, a2)
    long = p1["n_tokens"] > 16
    assert long.sum() == 6
    assert ((p1.loc[long, "position"] >= 16) & (p1.loc[long, "position"] < p1.loc[long, "n_tokens"])).all()
    assert (p1.loc[~long, "position"] == p1.loc[~long, "n_tokens"] - 1).all()  # the short one: its last token
    assert (p1["position"] != p3["position"]).any()
    assert (p1.loc[long, "position"] != p1.loc[long, "n_tokens"] - 1).any()
    manifest = json.loads((tmp_path / "runs" / "r1" / "manifest.json").read_text())
    assert manifest["position"] == "random"
    summary = dict(pd.read_parquet(tmp_path / "runs" / "r1" / "summary.parquet").itertuples(index=False))
    assert summary["samples.short_passages"] == 1
    # The states are those of the chosen token: the embedding of its id at snapshot 0.
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    bundle = load_bundle(RunConfig(model=str(root / "tiny-llama"), run_id="x"))
    emb = bundle.model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(a1[:, 0], emb[p1["token"].to_numpy()], rtol=1e-6, atol=1e-7)


def test_in_context_jacobians_are_taken_at_the_chosen_position(tiny_run, tmp_path):
    import pandas as pd
    from torch.func import jacrev

    from resdyn.compute.models import tokenize
    from resdyn.compute.blocks import in_context_fn, traced_forward
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    root, _ = tiny_run
    corpus = _long_corpus(tmp_path / "long.txt")
    assert main(["run", "--model", str(root / "tiny-llama"), "--corpus", str(corpus), "--samples", "3",
                 "--runs-dir", str(tmp_path / "runs"), "--run-id", "ic", "--quiet", "--mode", "in-context",
                 "--position", "random", "--stages", "activations,jacobians"]) == 0
    run = tmp_path / "runs" / "ic"
    pos = pd.read_parquet(run / "passages.parquet")["position"].to_numpy()
    jac = np.load(run / "jacobians.npy")
    bundle = load_bundle(RunConfig(model=str(root / "tiny-llama"), run_id="x"))
    seqs = tokenize(bundle, corpus.read_text().splitlines()[:3])
    ref = []
    for ids, t in zip(seqs, pos):
        trace = traced_forward(bundle, ids[None])
        states = trace.inputs[1].to(bundle.dtype)
        with torch.enable_grad():
            ref.append(jacrev(in_context_fn(trace.calls[1], states, t_in=int(t), t_out=int(t)))(states[0, int(t)]))
    np.testing.assert_allclose(jac[1], torch.stack(ref).mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_run_from_before_position_resumes_as_last_and_refuses_random(tiny_run, tmp_path, capsys):
    import shutil

    root, argv = tiny_run
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs" / "e2e", runs / "old")
    path = runs / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["position"]
    path.write_text(json.dumps(manifest))
    base = argv + ["--runs-dir", str(runs), "--run-id", "old"]
    assert main(base) == 0  # an old run meant the last token: no settings clash
    assert json.loads(path.read_text())["position"] == "last"  # and now says so
    capsys.readouterr()
    assert main(base + ["--position", "random"]) == 2
    assert "exists with position='last', not 'random'" in capsys.readouterr().err


def test_seeds_compute_one_run_per_seed_one_after_the_other(tiny_run, tmp_path, capsys):
    """`run --init random --seeds 0,2`: two runs, seed 0 under the plain id and seed 2 under
    -seed2, each with its own weights; rerunning computes nothing; an explicit --run-id names
    seed 0 and the others get -seedS."""
    root, _ = tiny_run
    runs = tmp_path / "runs"
    argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"), "--samples", "3",
            "--runs-dir", str(runs), "--init", "random", "--quiet", "--stages", "activations,jacobians"]
    assert main([*argv, "--seeds", "0,2"]) == 0
    out = capsys.readouterr().out
    assert "run 1 of 2: tiny-llama-random (seed 0)" in out and "run 2 of 2: tiny-llama-random-seed2 (seed 2)" in out
    assert sorted(p.name for p in runs.iterdir()) == ["tiny-llama-random", "tiny-llama-random-seed2"]
    pair = ("tiny-llama-random", "tiny-llama-random-seed2")
    m0, m2 = (json.loads((runs / r / "manifest.json").read_text()) for r in pair)
    assert (m0["seed"], m2["seed"]) == (0, 2) and m0["init"] == m2["init"] == "random"
    assert m0["stages_done"] == m2["stages_done"] == ["activations", "jacobians"]
    j0, j2 = (np.load(runs / r / "jacobians.npy") for r in pair)
    assert not np.allclose(j0, j2)  # other weights, not a copy
    # The same command again: both runs are done, nothing is recomputed.
    before = (runs / "tiny-llama-random-seed2" / "jacobians.npy").stat().st_mtime_ns
    assert main([*argv, "--seeds", "0,2"]) == 0
    assert (runs / "tiny-llama-random-seed2" / "jacobians.npy").stat().st_mtime_ns == before
    # Seed 2 alone with --seed is the same run as with --seeds.
    assert main([*argv, "--seed", "2", "--stages", "activations"]) == 0
    assert "run tiny-llama-random-seed2: partial" in capsys.readouterr().out
    assert main([*argv, "--seeds", "1", "--run-id", "mine", "--stages", "activations"]) == 0
    assert (runs / "mine-seed1" / "activations.npy").is_file() and not (runs / "mine").exists()
