"""Phi-3 and Phi-3.5 (``model_type`` phi3): a Llama-shaped pre-norm RMSNorm block
with two fused projections, ``qkv_proj`` (rows: queries, then keys, then values) and
``gate_up_proj`` (rows: the SiLU gate, then the up projection).

Partial rotary embeddings and LongRoPE change q and k only, so they do not enter the isolated
(one-token) Jacobian, and Llama's closed form applies once the fused weights are split:
W_v = the last kv·head_dim rows of ``qkv_proj``, W_g / W_u = the two halves of ``gate_up_proj``.
"""

from __future__ import annotations

import torch

from resdyn.compute.adapters.base import Adapter
from resdyn.compute.adapters.llama import gated_prenorm_jacobian, gated_prenorm_jacobian_sum, is_silu


def _rows(lin: torch.nn.Linear, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = None if lin.bias is None else lin.bias[start:stop]
    return lin.weight[start:stop], bias


def _weights(block) -> tuple | None:
    """(W_v, b_v, (W_g, b_g), (W_u, b_u)) split out of the fused projections, or None when the
    MLP's activation is not SiLU (no closed form)."""
    attn, mlp = block.self_attn, block.mlp
    if not is_silu(getattr(mlp, "activation_fn", None)):
        return None
    n_q = attn.config.num_attention_heads * attn.head_dim
    n_kv = attn.num_key_value_heads * attn.head_dim
    wv, bv = _rows(attn.qkv_proj, n_q + n_kv, n_q + 2 * n_kv)
    ff = mlp.down_proj.weight.shape[1]
    return wv, bv, _rows(mlp.gate_up_proj, 0, ff), _rows(mlp.gate_up_proj, ff, 2 * ff)


def isolated_jacobian(block, h: torch.Tensor) -> torch.Tensor | None:
    """Closed-form isolated Jacobians (B, d, d) of a Phi-3 block at states h (B, d)."""
    ws = _weights(block)
    return None if ws is None else gated_prenorm_jacobian(block, h, *ws)


def isolated_jacobian_sum(block, h: torch.Tensor) -> torch.Tensor | None:
    """Σ_i of the closed-form isolated Jacobians at states h (N, d): (d, d) float64, or None."""
    ws = _weights(block)
    return None if ws is None else gated_prenorm_jacobian_sum(block, h, *ws)


ADAPTER = Adapter(
    name="phi3",
    model_types=("phi3",),
    layers_path="model.layers",
    mid_module="post_attention_layernorm",
    norm="rmsnorm",
    isolated_jacobian=isolated_jacobian,
    isolated_jacobian_sum=isolated_jacobian_sum,
)
