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
from resdyn.compute.adapters.llama import gated_prenorm_jacobian, is_silu


def _rows(lin: torch.nn.Linear, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = None if lin.bias is None else lin.bias[start:stop]
    return lin.weight[start:stop], bias


def isolated_jacobian(block, h: torch.Tensor) -> torch.Tensor | None:
    """Closed-form isolated Jacobians (B, d, d) of a Phi-3 block at states h (B, d)."""
    attn, mlp = block.self_attn, block.mlp
    if not is_silu(getattr(mlp, "activation_fn", None)):
        return None
    n_q = attn.config.num_attention_heads * attn.head_dim
    n_kv = attn.num_key_value_heads * attn.head_dim
    wv, bv = _rows(attn.qkv_proj, n_q + n_kv, n_q + 2 * n_kv)
    ff = mlp.down_proj.weight.shape[1]
    gate, up = _rows(mlp.gate_up_proj, 0, ff), _rows(mlp.gate_up_proj, ff, 2 * ff)
    return gated_prenorm_jacobian(block, h, wv, bv, gate, up)


ADAPTER = Adapter(
    name="phi3",
    model_types=("phi3",),
    layers_path="model.layers",
    mid_module="post_attention_layernorm",
    norm="rmsnorm",
    isolated_jacobian=isolated_jacobian,
)
