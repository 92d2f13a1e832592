"""``resdyn.analyze``: a loaded model and a list of strings give the CLI's run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

import resdyn
from resdyn.compute.cli import main
from resdyn.errors import ResdynError, UsageError
from tests.compute.test_cli import TEXTS, save_tiny_model_and_corpus

STAGES = "activations,jacobians,spectra"


@pytest.fixture(scope="module")
def cli_and_analyze(tmp_path_factory):
    """The same tiny Llama and passages through `resdyn run` (run "cli") and through
    ``resdyn.analyze`` on the model as a user loads it (SDPA attention, run "nb")."""
    root = save_tiny_model_and_corpus(tmp_path_factory.mktemp("analyze"))
    runs = root / "runs"
    assert main(["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"),
                 "--samples", str(len(TEXTS)), "--runs-dir", str(runs), "--run-id", "cli", "--quiet",
                 "--batch-size", "3", "--stages", STAGES]) == 0
    model = tf.AutoModelForCausalLM.from_pretrained(root / "tiny-llama")
    tokenizer = tf.AutoTokenizer.from_pretrained(root / "tiny-llama")
    assert model.config._attn_implementation == "sdpa"  # not what resdyn computes with: analyze switches
    run = resdyn.analyze(model, tokenizer, TEXTS, run_id="nb", runs_dir=runs, stages=STAGES, quiet=True,
                         batch_size=3)
    return root, runs, model, tokenizer, run


def test_analyze_jacobians_equal_the_cli_run(cli_and_analyze):
    _, runs, _, _, run = cli_and_analyze
    cli = resdyn.open("cli", runs_dir=runs)
    assert run.status == cli.status == "partial" and run.missing_stages == cli.missing_stages
    # Same weights, texts and code path: equal to float32 rounding (measured: bit for bit).
    np.testing.assert_allclose(run.array("jacobians"), cli.array("jacobians"), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(run.array("activations"), cli.array("activations"), rtol=1e-6, atol=1e-7)
    assert not np.allclose(cli.array("jacobians")[0], np.eye(32), atol=1e-2)  # a real operator, not I
    pd.testing.assert_frame_equal(run.table("passages"), cli.table("passages"))
    a, b = run.table("layers"), cli.table("layers")
    np.testing.assert_allclose(a["henrici"], b["henrici"], rtol=1e-5)


def test_analyze_records_where_the_model_came_from(cli_and_analyze):
    root, _, _, _, run = cli_and_analyze
    m = run.manifest
    digest = resdyn.compute.analyze.texts_digest(TEXTS)
    assert m["origin"] == {"via": "resdyn.analyze", "name_or_path": str(root / "tiny-llama"),
                           "class": "transformers.models.llama.modeling_llama.LlamaForCausalLM",
                           "dtype": "torch.float32", "texts_sha256": digest}
    assert m["model"] == str(root / "tiny-llama") and m["corpus"] == "texts:" + digest[:16]
    assert m["n_samples"] == len(TEXTS) and m["architecture"] == "llama" and m["dtype"] == "float32"
    assert "origin" not in resdyn.open("cli", runs_dir=run.path.parent).manifest


def test_the_model_is_given_back_as_it_was(cli_and_analyze, tmp_path):
    root, _, model, tokenizer, _ = cli_and_analyze
    assert model.config._attn_implementation == "sdpa"
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    # A bfloat16 model in training mode with one frozen module, computed in float64.
    m = tf.AutoModelForCausalLM.from_pretrained(root / "tiny-llama", dtype=torch.bfloat16)
    m.train()
    m.model.embed_tokens.requires_grad_(False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    inv_freq = m.model.rotary_emb.inv_freq.clone()
    run = resdyn.analyze(m, tokenizer, TEXTS[:2], run_id="bf16", runs_dir=tmp_path, stages="activations,jacobians",
                         dtype="float64", quiet=True)
    assert run.manifest["dtype"] == "float64" and run.manifest["origin"]["dtype"] == "torch.bfloat16"
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert m.model.rotary_emb.inv_freq.dtype == inv_freq.dtype and torch.equal(m.model.rotary_emb.inv_freq, inv_freq)
    assert m.training and all(mod.training for mod in m.modules())
    assert not m.model.embed_tokens.weight.requires_grad and m.model.layers[0].mlp.up_proj.weight.requires_grad
    assert not any(mod._forward_hooks for mod in m.modules())  # float64's RMSNorm hooks are gone


def test_analyze_resumes_and_refuses_other_texts(cli_and_analyze):
    _, runs, model, tokenizer, run = cli_and_analyze
    before = run.manifest["timings"]
    stamp = (run.path / "jacobians.npy").stat().st_mtime_ns
    again = resdyn.analyze(model, tokenizer, TEXTS, run_id="nb", runs_dir=runs, stages=STAGES, quiet=True,
                           batch_size=3)
    assert again == run and again.manifest["timings"] == before
    assert (run.path / "jacobians.npy").stat().st_mtime_ns == stamp  # nothing recomputed
    with pytest.raises(UsageError, match="run nb exists with corpus='texts:"):
        resdyn.analyze(model, tokenizer, TEXTS[::-1], run_id="nb", runs_dir=runs, quiet=True)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"texts": "one string"}, UsageError, "texts must be a list of strings"),
    ({"texts": []}, UsageError, "texts is empty"),
    ({"texts": ["ok", ""]}, UsageError, r"texts\[1\] must be a non-empty string"),
    ({"init": "random"}, UsageError, "unknown setting\\(s\\) init; settings: .*batch_size"),
    ({"run_id": "a/b"}, UsageError, "invalid run id"),
    ({"samples_per_layer": 3}, UsageError, "unknown setting"),
])
def test_bad_calls_are_one_line_errors(cli_and_analyze, tmp_path, kwargs, error, message):
    _, _, model, tokenizer, _ = cli_and_analyze
    call = {"texts": TEXTS, "run_id": "x", "runs_dir": tmp_path, "quiet": True, **kwargs}
    with pytest.raises(error, match=message):
        resdyn.analyze(model, tokenizer, call.pop("texts"), **call)
    assert not (tmp_path / "x").exists()


def test_a_base_model_without_its_head_is_refused(cli_and_analyze, tmp_path):
    root, _, _, tokenizer, _ = cli_and_analyze
    base = tf.AutoModel.from_pretrained(root / "tiny-llama")
    with pytest.raises(UsageError, match="LlamaModel has no model.layers: pass the model as "
                                         r"AutoModelForCausalLM.from_pretrained\(...\) loads it"):
        resdyn.analyze(base, tokenizer, TEXTS, run_id="base", runs_dir=tmp_path)
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, vocab_size=32))
    with pytest.raises(ResdynError, match="unsupported architecture 't5'"):
        resdyn.analyze(t5, tokenizer, TEXTS, run_id="t5", runs_dir=tmp_path)


def test_the_cli_computes_only_the_stages_that_need_no_model_of_an_analyze_run(cli_and_analyze, capsys):
    _, runs, _, _, run = cli_and_analyze
    done = run.manifest["stages_done"]
    code = main(["run", "--run-id", "nb", "--runs-dir", str(runs), "--quiet", "--redo", "activations"])
    err = capsys.readouterr().err
    assert code == 2 and "was computed by resdyn.analyze" in err and "activations, jacobians" in err
    assert run.manifest["stages_done"] == done  # refused before anything was invalidated
    assert main(["run", "--run-id", "nb", "--runs-dir", str(runs), "--quiet", "--stages", "cumulative"]) == 0
    assert "cumulative" in run.manifest["stages_done"] and run.table("cumulative").shape[0] > 0
