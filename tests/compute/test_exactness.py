"""METHODS §10: the Jacobian engine's exact identities, on a tiny random model of every family.

Each test is named after the identity it checks. Weights (norm gains and biases included) are
perturbed away from their defaults, so an identity that only holds at γ = 1, β = 0 would fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jacrev

from resdyn.compute.blocks import (
    in_context_fn,
    isolated_calls,
    isolated_fn,
    isolated_mid_fn,
    traced_forward,
)
from resdyn.compute.block_jacobians import batched_jacobian, gram_stats

from resdyn.compute.adapters import ADAPTERS, adapter_for

from .tiny import ARCHS, CONFIGS, tiny_bundle

D = 32
PRE_NORM_MLP = ("llama", "phi3", "moe", "gemma")
"""Families whose MLP reads a normalised copy of the residual, so that J_mlp·a = a (METHODS §10)."""
CLOSED_FORM = [a for a in ARCHS if adapter_for(CONFIGS[a]()).isolated_jacobian is not None]


@pytest.fixture(scope="module", params=ARCHS)
def bundle(request):
    return tiny_bundle(request.param)


def _states(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64)


def test_finite_differences_match_jacobian(bundle):
    """J·v ≈ (f(h + εv) − f(h − εv)) / 2ε in float64, within 1e-6 relative, for every block."""
    calls = isolated_calls(bundle)
    h = _states()
    v = _states(seed=2)
    eps = 1e-5
    for call in calls:
        f = isolated_fn(call)
        jac = batched_jacobian(f, h)
        for i in range(len(h)):
            fd = (f(h[i] + eps * v[i]) - f(h[i] - eps * v[i])) / (2 * eps)
            jv = jac[i] @ v[i]
            assert torch.linalg.norm(jv - fd) / torch.linalg.norm(fd) < 1e-6


def test_batched_engine_equals_naive_autograd(bundle):
    """vmap(jacrev) gives the same matrices as per-sample torch.autograd.functional.jacobian."""
    call = isolated_calls(bundle)[1]
    h = _states()
    fast = batched_jacobian(isolated_fn(call), h)
    naive = torch.stack([torch.autograd.functional.jacobian(isolated_fn(call), x) for x in h])
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-12)


def test_isolated_block_reproduces_model_hidden_states(bundle):
    """On a one-token input, block l applied alone to h_l gives the model's own h_{l+1}."""
    ids = torch.tensor([[5]])
    trace = traced_forward(bundle, ids)
    calls = isolated_calls(bundle)
    n = len(calls)
    for l in range(n):
        out = isolated_fn(calls[l])(trace.inputs[l][0, 0])
        want = trace.inputs[l + 1][0, 0] if l + 1 < n else trace.final[0, 0]
        torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    # Independent of our hooks: HF's own hidden_states (entry l is the input of block l).
    hs = bundle.model(input_ids=ids, output_hidden_states=True).hidden_states
    for l in range(n):
        torch.testing.assert_close(trace.inputs[l], hs[l], rtol=1e-12, atol=1e-12)


def test_chain_rule_of_in_context_jacobians(bundle):
    """∏ in-context J_{t,t} over blocks l..L−1 equals one autodiff call through those blocks."""
    if not bundle.adapter.causal:
        pytest.skip("bidirectional encoder: a perturbation at one token reaches the others")
    ids = torch.tensor([[3, 7, 11, 2, 9]])
    trace = traced_forward(bundle, ids)
    n = len(trace.calls)
    prod = torch.eye(D, dtype=torch.float64)
    for l in range(n):
        prod = jacrev(in_context_fn(trace.calls[l], trace.inputs[l]))(trace.inputs[l][0, -1]) @ prod

    def through_all(x):
        h = torch.cat([trace.inputs[0][:, :-1], x.reshape(1, 1, -1)], dim=1)
        for call in trace.calls:
            h = call(h)
        return h[0, -1]

    torch.testing.assert_close(prod, jacrev(through_all)(trace.inputs[0][0, -1]), rtol=1e-9, atol=1e-10)


def test_norm_invariance(bundle):
    """The exact identity of the family's normalisation (METHODS §10).

    - LayerNorm pre-norm (GPT-2, Pythia): J·1 = 1 (LN ignores a constant shift at both sub-layers).
    - RMSNorm (Llama, Phi-3, MoE, OLMo2, Gemma): RMSNorm ignores scale, so the attention half
      satisfies J_attn·h = h up to eps; with a pre-norm MLP (all but OLMo2) also J_mlp·a = a at its
      input a (for MoE the router reads the normalised state too, so routing is scale-free).
      The whole block does NOT satisfy J·h = h: the two halves act on different states.
    - Post-norm (BERT): the output LayerNorm has zero mean after dividing by its gain γ, so
      (1/γ)ᵀ J = 0: J is singular, with the constant direction killed on the output side.
    """
    call = isolated_calls(bundle)[1]
    h = _states(1)[0]
    jac = jacrev(isolated_fn(call))(h)
    one = torch.ones(D, dtype=torch.float64)
    kind = bundle.adapter.norm
    if kind == "layernorm":
        torch.testing.assert_close(jac @ one, one, rtol=0, atol=1e-12)
    elif kind == "rmsnorm":
        mid = isolated_mid_fn(bundle.adapter, call)
        j_attn = jacrev(mid)(h)
        torch.testing.assert_close(j_attn @ h, h, rtol=0, atol=1e-4)
        assert torch.linalg.norm(jac @ h - h) > 1e-2  # the whole-block version genuinely fails
        if bundle.adapter.name in PRE_NORM_MLP:
            a = mid(h)
            j_mlp = jac @ torch.linalg.inv(j_attn)
            torch.testing.assert_close(j_mlp @ a, a, rtol=0, atol=1e-4)
    else:
        gain = bundle.adapter.layers(bundle.model)[1].output.LayerNorm.weight
        torch.testing.assert_close((1.0 / gain) @ jac, torch.zeros(D, dtype=torch.float64), rtol=0, atol=1e-12)


def test_gram_stats_match_svd():
    """σ_max, σ_min, κ, ‖J‖_F and PR from the Gram matrix agree with a full SVD."""
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(4, 20, 20, generator=g, dtype=torch.float64)
    stats = gram_stats(jac)
    s = torch.linalg.svdvals(jac)
    torch.testing.assert_close(stats[:, 0], s[:, 0])
    torch.testing.assert_close(stats[:, 1], s[:, -1], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats[:, 2], s[:, 0] / s[:, -1], rtol=1e-6, atol=0)
    torch.testing.assert_close(stats[:, 3], torch.linalg.norm(jac, dim=(1, 2)))
    torch.testing.assert_close(stats[:, 4], (s**2).sum(1) ** 2 / (s**4).sum(1))


def test_gram_stats_keep_sigma_min_where_kappa_is_large():
    """At κ = 1e7 the Gram matrix's smallest eigenvalue alone would give σ_min with a relative
    error near κ²ε ≈ 1e-2; the refinement through an LU of J gives it to ~κε. A singular J gets a
    σ_min at rounding level (κ > 1e12), not a spurious finite one."""
    rng = np.random.default_rng(0)
    d = 64
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    sigma = np.geomspace(3.0, 3e-7, d)  # κ = 1e7
    jac = torch.tensor(np.stack([(u * sigma) @ v.T, (u * np.r_[sigma[:-1], 0.0]) @ v.T]))
    stats = gram_stats(jac).numpy()
    assert stats[0, 1] == pytest.approx(sigma[-1], rel=1e-7)
    assert stats[0, 2] == pytest.approx(1e7, rel=1e-7)
    assert stats[0, 0] == pytest.approx(3.0, rel=1e-12)
    ev = np.linalg.eigvalsh(jac[0].numpy().T @ jac[0].numpy())  # what the Gram matrix alone gives
    assert abs(np.sqrt(max(ev[0], 0.0)) / sigma[-1] - 1) > 1e-4
    assert stats[1, 1] < 1e-12 * stats[1, 0] and stats[1, 2] > 1e12


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mixtral"])
def test_float32_eager_engine_agrees_with_float64(arch):
    """The default float32 path (eager attention; for MoE transformers' float32 router and the
    batched experts kernel) matches the float64 reference to float32 accuracy."""
    ref, fast = tiny_bundle(arch, torch.float64), tiny_bundle(arch, torch.float32)
    h = _states()
    j64 = batched_jacobian(isolated_fn(isolated_calls(ref)[1]), h)
    j32 = batched_jacobian(isolated_fn(isolated_calls(fast)[1]), h.float())
    torch.testing.assert_close(j32.double(), j64, rtol=1e-4, atol=1e-5)


def test_every_shipped_family_has_a_tiny_config():
    """Each shipped adapter is exercised by the parametrised tests above (none can drop out)."""
    covered = {adapter_for(CONFIGS[a]()).name for a in ARCHS}
    assert covered == {a.name for a in ADAPTERS}
    moe = next(a for a in ADAPTERS if a.name == "moe")
    assert set(moe.model_types) <= set(ARCHS)  # every MoE type: their sparse blocks differ


@pytest.mark.parametrize("arch", CLOSED_FORM)
def test_closed_form_equals_autodiff(arch):
    """A family's closed-form isolated Jacobian equals vmap(jacrev) in float64, at every block."""
    b = tiny_bundle(arch)
    h = _states(4)
    for call in isolated_calls(b):
        closed = b.adapter.isolated_jacobian(call.block, h)
        assert closed is not None
        torch.testing.assert_close(closed, batched_jacobian(isolated_fn(call), h), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch, config_kw", [(a, {}) for a in CLOSED_FORM] + [
    ("llama", {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1})])
def test_closed_form_sum_equals_the_sum_of_autodiff_jacobians(arch, config_kw):
    """The closed-form sum over samples (what the jacobians stage stores, divided by N) equals the
    sum of autodiff Jacobians in float64, at every block: with the operating point spread over
    several samples of different norms, biases (Llama) and grouped KV heads."""
    base = CONFIGS[arch]
    CONFIGS[arch] = lambda: base().__class__(**{**base().to_dict(), **config_kw})
    try:
        b = tiny_bundle(arch)
    finally:
        CONFIGS[arch] = base
    h = _states(6) * torch.linspace(0.2, 3.0, 6, dtype=torch.float64)[:, None]
    for call in isolated_calls(b):
        total = b.adapter.isolated_jacobian_sum(call.block, h)
        ref = batched_jacobian(isolated_fn(call), h).sum(0)
        assert total.dtype == torch.float64 and total.shape == ref.shape
        torch.testing.assert_close(total, ref, rtol=1e-10, atol=1e-11)
        # The sum is not just one sample's Jacobian times N, nor the Jacobian at the mean state.
        at_mean = batched_jacobian(isolated_fn(call), h.mean(0, keepdim=True))[0]
        assert (total - 6 * at_mean).abs().max() > 1e-3


def test_closed_form_families():
    """Llama and Phi-3 keep their closed forms (the pipeline's fast path); MoE has none."""
    assert CLOSED_FORM == ["llama", "phi3"]


@pytest.mark.parametrize("config_kw", [{"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1}])
def test_llama_closed_form_equals_autodiff(config_kw):
    """The Llama adapter's closed-form isolated Jacobian equals vmap(jacrev) in float64 with the
    Qwen2-style biases that only shift the operating point, and one KV head."""
    base = CONFIGS["llama"]
    CONFIGS["llama"] = lambda: base().__class__(**{**base().to_dict(), **config_kw})
    try:
        b = tiny_bundle("llama")
    finally:
        CONFIGS["llama"] = base
    h = _states(4)
    for call in isolated_calls(b):
        closed = b.adapter.isolated_jacobian(call.block, h)
        torch.testing.assert_close(closed, batched_jacobian(isolated_fn(call), h), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_half_mean_is_the_mean_over_the_half(arch):
    """The jacobians stage's second output, J̄^A (the split-half noise's input), equals the mean of
    autodiff Jacobians over exactly the passages of ``split_half``, for the closed-form sum (Llama)
    and the per-sample path (GPT-2); and J̄ is still the mean over all."""
    from types import SimpleNamespace

    from resdyn.compute.stages import jacobians
    from resdyn.core.noise import split_half

    b = tiny_bundle(arch)
    calls = isolated_calls(b)
    h = _states(7) * torch.linspace(0.5, 2.0, 7, dtype=torch.float64)[:, None]
    cfg = SimpleNamespace(mode="isolated", seed=5, batch_size=3)
    half = split_half(7, 5)
    for layer, call in enumerate(calls):
        out = jacobians.compute_layer((b, calls), cfg, layer, {"states": h.numpy()})
        ref = batched_jacobian(isolated_fn(call), h).numpy()
        np.testing.assert_allclose(out[0], ref.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[1], ref[half].mean(0), rtol=1e-10, atol=1e-12)
        assert np.abs(out[1] - ref[~half].mean(0)).max() > 1e-4  # the half, not the other half
