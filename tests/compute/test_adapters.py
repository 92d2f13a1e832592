"""Adapters beyond the shared exactness identities: what the mixture-of-experts Jacobian is
(routing held at the sample's own top-k, routing weights differentiated), the float64 router and
the kernel choice behind it, and ``register_adapter`` computing a run on a model type resdyn does
not ship, through the normal CLI pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as tf

from resdyn.compute import adapters
from resdyn.compute.adapters import Adapter, adapter_for, moe, register_adapter, supported_model_types
from resdyn.compute.blocks import isolated_calls, isolated_fn
from resdyn.compute.cli import main
from resdyn.compute.block_jacobians import batched_jacobian
from resdyn.errors import ResdynError

from .test_cli import save_tiny_model_and_corpus
from .tiny import CONFIGS, tiny_bundle

MOE = list(moe.ADAPTER.model_types)


def _states(n=4, seed=1, dtype=torch.float64):
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _router_inputs(bundle, layer, h):
    """The normalised one-token state the router of block ``layer`` reads, at block inputs h (B, d)."""
    block = bundle.adapter.layers(bundle.model)[layer]
    call = isolated_calls(bundle)[layer]
    box = {}
    handle = block.mlp.register_forward_pre_hook(lambda m, args: box.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            for x in h:
                call(x.reshape(1, 1, -1))
                box.setdefault("all", []).append(box["x"].reshape(-1))
    finally:
        handle.remove()
    return block.mlp, torch.stack(box["all"])


@pytest.mark.parametrize("arch", MOE)
def test_float64_router_is_transformers_router_without_its_float32_softmax(arch):
    """``exact_router`` gives transformers' own router output (same experts, same weights to
    float32 rounding) on a float32 model, and the float64 bundle's routers run it in float64."""
    b32 = tiny_bundle(arch, torch.float32)
    mlp, x = _router_inputs(b32, 1, _states(dtype=torch.float32))
    logits, weights, idx = mlp.gate(x)  # no hook in float32
    r_logits, r_weights, r_idx = moe.exact_router(mlp.gate, (x,), None)
    assert torch.equal(idx, r_idx)
    torch.testing.assert_close(r_logits, logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r_weights, weights.to(r_weights.dtype), rtol=1e-6, atol=1e-7)

    b64 = tiny_bundle(arch)
    mlp, x = _router_inputs(b64, 1, _states())
    _, weights, idx = mlp.gate(x)
    probs = torch.softmax(F.linear(x, mlp.gate.weight), dim=-1)
    want = probs.gather(1, idx)
    if getattr(mlp.gate, "norm_topk_prob", True):
        want = want / want.sum(1, keepdim=True)
    assert weights.dtype == torch.float64
    torch.testing.assert_close(weights, want, rtol=1e-14, atol=1e-15)


def _with_router(bundle, layer, hook):
    return bundle.adapter.layers(bundle.model)[layer].mlp.gate.register_forward_hook(hook)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_moe_jacobian_holds_the_routing_and_differentiates_the_weights(arch):
    """The engine's MoE Jacobian is the derivative of the block with each sample's top-k experts
    frozen (a hand-built router that keeps the selected indices gives the same J to 1e-12) and the
    routing weights live: detaching the weights changes J by a clear margin."""
    b = tiny_bundle(arch)
    layer = 1
    h = _states()
    call = isolated_calls(b)[layer]
    mlp, x = _router_inputs(b, layer, h)
    _, _, own = mlp.gate(x)
    assert len({tuple(r) for r in own.tolist()}) > 1  # samples route differently
    jac = batched_jacobian(isolated_fn(call), h)
    held, detached = [], []
    for i in range(len(h)):
        def frozen(m, args, out, i=i):
            logits = F.linear(args[0].reshape(-1, m.weight.shape[1]), m.weight)
            w = torch.softmax(logits, -1).gather(1, own[i].expand(logits.shape[0], -1))
            if getattr(m, "norm_topk_prob", True):
                w = w / w.sum(1, keepdim=True)
            return logits, w, own[i].expand(logits.shape[0], -1)

        def stopped(m, args, out):
            return out[0], out[1].detach(), out[2]

        for hook, sink in ((frozen, held), (stopped, detached)):
            handle = _with_router(b, layer, hook)
            try:
                sink.append(torch.func.jacrev(isolated_fn(call))(h[i]))
            finally:
                handle.remove()
    torch.testing.assert_close(jac, torch.stack(held), rtol=1e-12, atol=1e-12)
    gap = torch.linalg.norm(jac - torch.stack(detached), dim=(1, 2)) / torch.linalg.norm(jac, dim=(1, 2))
    assert (gap > 1e-3).all()


@pytest.mark.parametrize("arch", MOE)
def test_dense_experts_equal_the_sparse_kernels(arch):
    """``dense_experts`` (the kernel inside vmap) reads every MoE family's expert layout and gives
    the family's own eager kernel's output, as transformers' batched_mm does, on 6 tokens."""
    from transformers.integrations.moe import batched_mm_experts_forward

    b = tiny_bundle(arch)
    block = moe.sparse_blocks(b.model)[0]
    assert moe._dense_layout(block.experts)
    x = _states(6)
    _, w, idx = block.gate(x)
    eager = type(block.experts).forward.__wrapped__(block.experts, x, idx, w)
    torch.testing.assert_close(moe.dense_experts(block.experts, x, idx, w), eager, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(batched_mm_experts_forward(block.experts, x, idx, w), eager, rtol=1e-13, atol=1e-14)


def test_experts_kernel_follows_vmap():
    """The ``resdyn`` experts kernel sees vmap inside vmap(jacrev) only; both routes (dense
    experts inside vmap, the eager loop outside) give the same block output."""
    seen = []

    def probe(x):
        seen.append(moe._vmapped())
        return x * 2

    torch.func.vmap(torch.func.jacrev(probe))(torch.ones(2, 3))
    torch.func.jacrev(probe)(torch.ones(3))
    probe(torch.ones(3))
    assert seen == [True, False, False]
    b = tiny_bundle("olmoe")
    f = isolated_fn(isolated_calls(b)[0])
    h = _states(3)
    with torch.no_grad():
        torch.testing.assert_close(torch.func.vmap(f)(h), torch.stack([f(x) for x in h]), rtol=1e-13, atol=1e-13)
    assert b.model.config._experts_implementation == moe.EXPERTS_IMPLEMENTATION


@pytest.mark.parametrize("arch", ["phi3", "mixtral"])
def test_new_family_runs_through_the_cli(arch, tmp_path):
    """A saved Phi-3 / Mixtral loads through ``load_bundle`` (from_pretrained, float32: the MoE
    kernel is chosen by the adapter, Phi-3 takes its closed form) and its stored mean Jacobians
    equal float64 autodiff at the stored activations to float32 accuracy."""
    import shutil

    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    root = save_tiny_model_and_corpus(tmp_path)
    config = CONFIGS[arch]()
    config.vocab_size = json.loads((root / "tiny-llama" / "config.json").read_text())["vocab_size"]
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 1, 2, None
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(root / arch)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "tiny-llama" / name, root / arch / name)
    argv = ["run", "--model", str(root / arch), "--corpus", str(root / "corpus.txt"), "--samples", "3",
            "--runs-dir", str(root / "runs"), "--run-id", arch, "--quiet", "--stages", "activations,jacobians,spectra"]
    assert main(argv) == 0
    run = root / "runs" / arch
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["architecture"] == adapter_for(config).name and manifest["model_type"] == arch
    ref = load_bundle(RunConfig(model=str(root / arch), run_id="x", dtype="float64"))
    acts = torch.from_numpy(np.load(run / "activations.npy")).double()
    jac = np.load(run / "jacobians.npy")
    for l, call in enumerate(isolated_calls(ref)):
        want = batched_jacobian(isolated_fn(call), acts[:, 2 * l]).mean(0).numpy()
        np.testing.assert_allclose(jac[l], want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# register_adapter
# ------------------------------------------------------------------------------------------------

CUSTOM = "resdyn_tiny_custom"


class TinyCustomConfig(tf.LlamaConfig):
    model_type = CUSTOM


class TinyCustomForCausalLM(tf.LlamaForCausalLM):
    config_class = TinyCustomConfig


@pytest.fixture
def registry(monkeypatch):
    """An empty registry for the test, restored afterwards."""
    monkeypatch.setattr(adapters, "_REGISTERED", {})
    return adapters._REGISTERED


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A saved model whose model_type transformers knows (registered Auto classes) and resdyn does not."""
    tf.AutoConfig.register(CUSTOM, TinyCustomConfig, exist_ok=True)
    tf.AutoModelForCausalLM.register(TinyCustomConfig, TinyCustomForCausalLM, exist_ok=True)
    root = save_tiny_model_and_corpus(tmp_path_factory.mktemp("custom"))
    cfg_path = root / "tiny-llama" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(model_type=CUSTOM, architectures=["TinyCustomForCausalLM"])
    cfg_path.write_text(json.dumps(cfg))
    return root


def test_register_adapter_computes_a_run_on_an_unshipped_model_type(custom_model, registry, capsys):
    root = custom_model
    argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"), "--samples", "3",
            "--runs-dir", str(root / "runs"), "--quiet", "--stages", "activations,jacobians,spectra"]
    assert main(argv + ["--run-id", "refused"]) == 1
    err = capsys.readouterr().err
    assert f"unsupported architecture {CUSTOM!r}" in err and "register_adapter" in err

    mine = Adapter(name="tiny_custom", model_types=(), layers_path="model.layers",
                   mid_module="post_attention_layernorm", norm="rmsnorm")
    registered = register_adapter(CUSTOM, mine)
    assert registered.model_types == (CUSTOM,) and registered.isolated_jacobian is None  # autodiff path
    assert CUSTOM in supported_model_types()
    assert main(argv + ["--run-id", "custom"]) == 0

    run = root / "runs" / "custom"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["architecture"] == "tiny_custom" and manifest["model_type"] == CUSTOM
    assert {"activations", "jacobians", "spectra"} <= set(manifest["stages_done"])
    # The stored mean Jacobians are those of the model's own blocks at the stored activations.
    from resdyn.compute.models import load_bundle
    from resdyn.config import RunConfig

    bundle = load_bundle(RunConfig(model=str(root / "tiny-llama"), run_id="x"))
    assert type(bundle.model) is TinyCustomForCausalLM and bundle.adapter is registered
    acts = torch.from_numpy(np.load(run / "activations.npy"))
    jac = np.load(run / "jacobians.npy")
    assert jac.shape == (3, 32, 32)
    for l, call in enumerate(isolated_calls(bundle)):
        ref = batched_jacobian(isolated_fn(call), acts[:, 2 * l]).mean(0).numpy()
        np.testing.assert_allclose(jac[l], ref, rtol=1e-4, atol=1e-5)
    assert (run / "layers.parquet").is_file()


def test_register_adapter_by_family_name_and_precedence(registry):
    a = register_adapter("my_llama", "llama")
    assert "my_llama" in a.model_types and a.isolated_jacobian is not None and a.name == "llama"
    config = CONFIGS["llama"]()
    config.model_type = "my_llama"
    assert adapter_for(config) is a
    # A registration overrides a shipped type.
    override = register_adapter("llama", Adapter(name="mine", model_types=("llama",), layers_path="model.layers",
                                                 mid_module="post_attention_layernorm", norm="rmsnorm"))
    assert adapter_for(CONFIGS["llama"]()) is override


@pytest.mark.parametrize("args, message", [
    (("", "llama"), "non-empty string"),
    (("x", "t5"), "no shipped family 't5'"),
    (("x", 3), "must be an Adapter"),
    (("x", Adapter(name="p", model_types=(), layers_path="h", mid_module=None, norm="layernorm")), "mid_module"),
    (("x", Adapter(name="p", model_types=(), layers_path="h", mid_module="m", norm="batchnorm")), "norm must be"),
])
def test_register_adapter_refuses_bad_input(registry, args, message):
    with pytest.raises(ResdynError, match=message):
        register_adapter(*args)
    assert registry == {}


def test_readme_register_adapter_example_runs(registry):
    """The README's "Adding an architecture" example executes and registers what it says."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Adding an architecture", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    assert registry["my_llama_variant"].name == "llama"
    assert registry["my_decoder"].model_types == ("my_decoder",)
