"""Mixture-of-experts decoders: Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE.

All four have Llama's pre-norm RMSNorm block with the MLP replaced by a sparse block
``mlp.gate`` (a linear router: logits → softmax → top-k → optionally renormalised weights) plus
``mlp.experts`` (E SiLU-gated MLPs stored as (E, ·, ·) tensors); Qwen2-MoE adds an always-on
shared expert scaled by a sigmoid gate, and some of its layers may be dense. The pre-MLP
snapshot is the input of ``post_attention_layernorm``, as for Llama.

**The Jacobian through the router** (METHODS §2 on a piecewise-smooth block) is the one autograd
gives: the top-k selection is an index and has no derivative, so it is held at the sample's own
routing, while the k routing weights are differentiated through the softmax (and the top-k
renormalisation where the family has it). Off the measure-zero set of routing ties this is the
exact derivative of the block, which the finite-difference tests check.

**Kernels.** transformers' default experts kernel (``grouped_mm``) has no float64 and no vmap
batching rule (torch falls back to a loop per Jacobian row); its ``eager`` kernel is exact in any
dtype but loops over the experts a batch hits, which ``torch.func.vmap`` cannot trace
(data-dependent ``nonzero``); its ``batched_mm`` kernel can be vmapped but gathers each token's
expert weights, which makes the vmapped backward slow. ``prepare_model`` therefore registers one
experts kernel, ``resdyn``, that runs the family's own eager loop outside vmap (model forwards,
in-context Jacobians) and ``dense_experts`` inside vmap (the isolated engine
``vmap(jacrev(block))``): every expert on every token, weighted by its routing weight, which is
zero for the experts not selected. That is the same sum, hence the same Jacobian, at E/k times
the expert FLOPs but in plain matrix products that vmap batches. Measured for 16 isolated
Jacobians of one block (d = 256, ff = 512, top 2, float32, 2 shared CPU cores, best of 3):
``dense_experts`` 4.2 s at E = 8 and at E = 16; ``batched_mm`` 35 s and 32 s; a per-sample
``jacrev`` loop over the eager kernel 3.3 to 17 s (the machine was loaded).

**float64.** The routers take their softmax in float32 whatever the model dtype, which would cap
a float64 run at float32 accuracy (and break float64 finite differences); in float64 a forward
hook recomputes the known routers' outputs in float64 with the same formula (transformers stays
unpatched), as ``exact_rmsnorm_hooks`` does for RMSNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resdyn.compute.adapters.base import Adapter
from resdyn.errors import ResdynError

EXPERTS_IMPLEMENTATION = "resdyn"
"""The name under which ``experts_forward`` is registered in transformers' experts interface."""

ROUTERS = ("MixtralTopKRouter", "Qwen2MoeTopKRouter", "Qwen3MoeTopKRouter", "OlmoeTopKRouter")
"""Router classes whose float64 recomputation (``exact_router``) is checked against transformers."""


def _vmapped() -> bool:
    """True while ``torch.func.vmap`` traces the current call (the batched Jacobian engine)."""
    try:
        from torch._C._functorch import TransformType, get_interpreter_stack

        return any(i.key() == TransformType.Vmap for i in (get_interpreter_stack() or []))
    except (ImportError, AttributeError):  # a torch without this API: the vmap-safe kernel works everywhere
        return True


def dense_experts(experts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                  top_k_weights: torch.Tensor) -> torch.Tensor:
    """Σ_e w_e(token)·expert_e(token) over all E experts, w_e = the token's routing weight of e
    (0 when e is not in its top k): (N, d), (N, k), (N, k) -> (N, d). Differentiating it holds
    the selection (``top_k_index == e`` is a constant mask) and differentiates the weights."""
    out = torch.zeros_like(hidden_states)
    for e in range(experts.num_experts):
        w = (top_k_weights * (top_k_index == e)).sum(-1, keepdim=True).to(hidden_states.dtype)
        y = experts._apply_gate(F.linear(hidden_states, experts.gate_up_proj[e]))
        out = out + w * F.linear(y, experts.down_proj[e])
    return out


def _dense_layout(experts) -> bool:
    """Whether ``dense_experts`` reads this experts module right: stacked [gate; up] and down
    weights stored (E, out, in), no biases, no post-expert norm, no expert parallelism."""
    return (getattr(experts, "has_gate", False) and getattr(experts, "is_concatenated", False)
            and not getattr(experts, "is_transposed", True) and not getattr(experts, "has_bias", True)
            and not getattr(experts, "has_post_expert_norm", True) and not getattr(experts, "_is_expert_parallel", True))


def experts_forward(experts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """The ``resdyn`` experts kernel: (N, d) tokens, (N, k) expert ids, (N, k) weights -> (N, d).

    Inside vmap: ``dense_experts`` (transformers' ``batched_mm`` for a layout it does not read).
    Elsewhere: the family's own eager loop (the undecorated ``forward`` that transformers'
    ``use_experts_implementation`` decorator wraps).
    """
    from transformers.integrations.moe import batched_mm_experts_forward

    eager = getattr(type(experts).forward, "__wrapped__", None)
    if _vmapped() or eager is None:
        kernel = dense_experts if _dense_layout(experts) else batched_mm_experts_forward
        return kernel(experts, hidden_states, top_k_index, top_k_weights)
    return eager(experts, hidden_states, top_k_index, top_k_weights)


def exact_router(router, args, out):
    """Forward hook: the router's (logits (N, E), weights (N, k), indices (N, k)) in the input's dtype.

    Same formula as transformers' routers: softmax over all E logits, top-k, and renormalisation
    of the k weights when ``norm_topk_prob`` (Mixtral has no such flag and always renormalises).
    """
    h = args[0].reshape(-1, router.weight.shape[1])
    logits = F.linear(h, router.weight, getattr(router, "bias", None))
    top, idx = torch.topk(torch.softmax(logits, dim=-1), router.top_k, dim=-1)
    if getattr(router, "norm_topk_prob", True):
        top = top / top.sum(dim=-1, keepdim=True)
    return logits, top, idx


def sparse_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The MLP modules of ``model`` that route (they have both ``gate`` and ``experts``)."""
    return [m for m in model.modules() if hasattr(m, "gate") and hasattr(m, "experts")]


def prepare_model(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Select the ``resdyn`` experts kernel and, in float64, hook the routers (module docstring)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(EXPERTS_IMPLEMENTATION, experts_forward)
    model.set_experts_implementation(EXPERTS_IMPLEMENTATION)
    if model.config._experts_implementation != EXPERTS_IMPLEMENTATION:
        raise ResdynError(f"{type(model).__name__} does not let resdyn choose its experts kernel")
    if dtype != torch.float64:
        return
    for block in sparse_blocks(model):
        name = type(block.gate).__name__
        if name not in ROUTERS:
            raise ResdynError(f"router {name} has no float64 recomputation in resdyn; use --dtype float32")
        block.gate.register_forward_hook(exact_router)


ADAPTER = Adapter(
    name="moe",
    model_types=("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"),
    layers_path="model.layers",
    mid_module="post_attention_layernorm",
    norm="rmsnorm",
    prepare_model=prepare_model,
)
