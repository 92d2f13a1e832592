"""Llama family: SmolLM2, Llama 2/3, Mistral, Qwen2/Qwen3. Pre-norm RMSNorm blocks.

Besides where things are, this family has a closed-form isolated Jacobian. With one token the
softmax is constant, so attention is the linear map C = W_o·W_v (kv heads repeated), and

    J_attn = I + C·diag(g₁)·(I − h hᵀ/(d r₁²)) / r₁                       (RMSNorm, r² = mean h² + ε)
    J_mlp  = I + W_d·[diag(silu'(z_g)⊙z_u)·W_g + diag(silu(z_g))·W_u]·diag(g₂)·(I − a aᵀ/(d r₂²)) / r₂
    J      = J_mlp · J_attn

costing one (d × ff)·(ff × d) and one d³ product per sample instead of d backward passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resdyn.compute.adapters.base import Adapter


def _rms_jacobian_times(m: torch.Tensor, gain: torch.Tensor, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """M·J_rms(x) for M (B, d, d): M·diag(g)·(I − x xᵀ/(d r²))/r without forming J_rms.

    As M·diag(g/r) minus the rank-one term (M (g∘x)) xᵀ/(d r³): one scaled copy of M and one
    in-place batched outer-product update (fewer passes over the B·d² entries than forming
    M·diag(g) first). ``m`` is not modified.
    """
    d = x.shape[-1]
    out = m * (gain / r)[:, None, :]
    mgx = m @ (gain * x)[:, :, None]  # (B, d, 1)
    return out.baddbmm_(mgx, x[:, None, :] / (d * r[:, :, None] ** 3), alpha=-1.0)


def _one_token_forward(h: torch.Tensor, norms: tuple, wv, bv, wo, bo, gate: tuple, up: tuple,
                       n_rep: int, hd: int) -> tuple[torch.Tensor, ...]:
    """The forward quantities the closed form needs at one-token states h (B, d), in the dtype of
    h and the weights: r₁ (B, 1), a = h + attention output (B, d), r₂ (B, 1), and
    α = silu'(z_g)⊙z_u, β = silu(z_g) (B, ff). ``norms`` = ((g₁, ε₁), (g₂, ε₂)) of the two RMSNorms;
    wv, bv / wo, bo the value and output projections (kv heads repeated n_rep times)."""
    (g1, eps1), (g2, eps2) = norms
    b = h.shape[0]
    kv = wv.shape[0] // hd
    r1 = torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps1)
    v = F.linear(g1 * h / r1, wv, bv).view(b, kv, hd).repeat_interleave(n_rep, 1).reshape(b, -1)
    a = h + F.linear(v, wo, bo)
    r2 = torch.sqrt(a.pow(2).mean(-1, keepdim=True) + eps2)
    x2 = g2 * a / r2
    zg, zu = F.linear(x2, *gate), F.linear(x2, *up)
    sig = torch.sigmoid(zg)
    return r1, a, r2, sig * (1 + zg * (1 - sig)) * zu, zg * sig


def _attention_map(wv: torch.Tensor, wo: torch.Tensor, n_rep: int, hd: int) -> torch.Tensor:
    """C = W_o·W_v (d, d) with the kv heads of W_v repeated n_rep times: one-token attention."""
    kv = wv.shape[0] // hd
    return wo @ wv.view(kv, hd, -1).repeat_interleave(n_rep, 0).reshape(kv * n_rep * hd, -1)


def gated_prenorm_jacobian_sum(block, h: torch.Tensor, wv: torch.Tensor, bv: torch.Tensor | None,
                               gate: tuple, up: tuple) -> torch.Tensor:
    """Σ_i J(h_i) (d, d) float64 over the states h (N, d), without forming any J(h_i).

    Same block and arguments as ``gated_prenorm_jacobian``. Every per-sample factor of the closed
    form is a fixed matrix scaled by a per-sample scalar or diagonal, or a rank-one term:

        J_attn,i = I + C_g / r₁ᵢ − pᵢ hᵢᵀ / (d r₁ᵢ³)               C_g = C·diag(g₁), pᵢ = C_g hᵢ
        Nᵢ       = diag(αᵢ/r₂ᵢ) G_g + diag(βᵢ/r₂ᵢ) G_u − qᵢ aᵢᵀ / (d r₂ᵢ³)
                   G_g = W_g·diag(g₂), G_u = W_u·diag(g₂), qᵢ = αᵢ∘(G_g aᵢ) + βᵢ∘(G_u aᵢ)
        Jᵢ       = J_attn,i + W_d Nᵢ J_attn,i

    so the sum over samples is a few sums of scaled fixed matrices (G_g C_g and G_u C_g, formed
    once) plus sums of outer products, which are (ff × N)·(N × d) products: about 2·ff·d·(d + 2N)
    multiply-adds per layer instead of N·ff·d² (at d = 576, ff = 1,536, N = 128: 1.5 GFLOP
    against 65). Computed in float64 whatever the model's dtype, so the mean Jacobian carries no
    float32 rounding of the per-sample products; tests hold it to the sum of per-sample closed
    forms and to autodiff.
    """
    f64 = torch.float64
    attn, mlp = block.self_attn, block.mlp
    n_rep, hd = attn.num_key_value_groups, attn.head_dim

    def w(t):
        return None if t is None else t.detach().to(f64)

    wv, bv, wo, bo = w(wv), w(bv), w(attn.o_proj.weight), w(attn.o_proj.bias)
    (wg, bg), (wu, bu), wd = (w(gate[0]), w(gate[1])), (w(up[0]), w(up[1])), w(mlp.down_proj.weight)
    n1, n2 = block.input_layernorm, block.post_attention_layernorm
    g1, g2 = w(n1.weight), w(n2.weight)
    h = h.detach().to(f64)
    n, d = h.shape

    # The forward quantities of every sample: r₁, a, r₂ (N,), α = silu'(z_g)⊙z_u, β = silu(z_g) (N, ff).
    r1, a, r2, alpha, beta = _one_token_forward(h, ((g1, n1.variance_epsilon), (g2, n2.variance_epsilon)),
                                                wv, bv, wo, bo, (wg, bg), (wu, bu), n_rep, hd)
    r1, r2 = r1[:, 0], r2[:, 0]

    cg = _attention_map(wv, wo, n_rep, hd) * g1  # C·diag(g₁) (d, d)
    gg, gu = wg * g2, wu * g2  # (ff, d)
    p = h @ cg.T  # rows pᵢᵀ (N, d)
    w1 = 1.0 / (d * r2**3)  # (N,)
    q = alpha * (a @ gg.T) + beta * (a @ gu.T)  # rows qᵢᵀ (N, ff)
    n_p = (alpha * (p @ gg.T) + beta * (p @ gu.T)) / r2[:, None] - q * ((a * p).sum(-1) * w1)[:, None]  # Nᵢpᵢ

    # Σ J_attn,i
    total = cg * (1.0 / r1).sum() - (p / (d * r1**3)[:, None]).T @ h
    total.diagonal().add_(float(n))
    # Σ Nᵢ J_attn,i = Σ Nᵢ + Σ Nᵢ C_g / r₁ᵢ − Σ (Nᵢpᵢ) hᵢᵀ / (d r₁ᵢ³)
    s = ((alpha / r2[:, None]).sum(0)[:, None] * gg + (beta / r2[:, None]).sum(0)[:, None] * gu
         + (alpha / (r2 * r1)[:, None]).sum(0)[:, None] * (gg @ cg)
         + (beta / (r2 * r1)[:, None]).sum(0)[:, None] * (gu @ cg))
    s -= (q * w1[:, None]).T @ (a + (a @ cg) / r1[:, None])
    s -= (n_p / (d * r1**3)[:, None]).T @ h
    return total + wd @ s


def isolated_jacobian_sum(block, h: torch.Tensor) -> torch.Tensor | None:
    """Σ_i of the closed-form isolated Jacobians at states h (N, d): (d, d) float64, or None."""
    attn, mlp = block.self_attn, block.mlp
    if not is_silu(getattr(mlp, "act_fn", None)):
        return None
    return gated_prenorm_jacobian_sum(block, h, attn.v_proj.weight, attn.v_proj.bias,
                                      (mlp.gate_proj.weight, mlp.gate_proj.bias),
                                      (mlp.up_proj.weight, mlp.up_proj.bias))


def is_silu(act) -> bool:
    """Whether an MLP's activation module is SiLU (the closed form assumes silu(z_g) ⊙ z_u)."""
    return type(act).__name__ == "SiLUActivation" or isinstance(act, torch.nn.SiLU)


def isolated_jacobian(block, h: torch.Tensor) -> torch.Tensor | None:
    """Closed-form isolated Jacobians (B, d, d) of a Llama-style block at states h (B, d)."""
    attn, mlp = block.self_attn, block.mlp
    if not is_silu(getattr(mlp, "act_fn", None)):
        return None
    return gated_prenorm_jacobian(block, h, attn.v_proj.weight, attn.v_proj.bias,
                                  (mlp.gate_proj.weight, mlp.gate_proj.bias), (mlp.up_proj.weight, mlp.up_proj.bias))


def gated_prenorm_jacobian(block, h: torch.Tensor, wv: torch.Tensor, bv: torch.Tensor | None,
                           gate: tuple, up: tuple) -> torch.Tensor:
    """The closed form of the module docstring for any pre-norm RMSNorm block with a SiLU-gated MLP.

    Args:
        block: has ``input_layernorm``, ``post_attention_layernorm`` (RMSNorm: ``weight``,
            ``variance_epsilon``), ``self_attn`` (``o_proj``, ``head_dim``, ``num_key_value_groups``)
            and ``mlp.down_proj``.
        h: one-token block inputs (B, d).
        wv, bv: the value projection (kv·head_dim, d) and its bias or None, however the family
            stores it (Llama: ``v_proj``; Phi-3: rows of the fused ``qkv_proj``).
        gate, up: (weight (ff, d), bias (ff,) or None) of the gate and up projections (Phi-3:
            the two halves of the fused ``gate_up_proj``).

    Returns J (B, d, d), same dtype as h.
    """
    attn, mlp = block.self_attn, block.mlp
    n_rep, hd = attn.num_key_value_groups, attn.head_dim
    n1, n2 = block.input_layernorm, block.post_attention_layernorm
    c = _attention_map(wv, attn.o_proj.weight, n_rep, hd)  # (d, d): the one-token attention map
    B, d = h.shape
    r1, a, r2, alpha, beta = _one_token_forward(h, ((n1.weight, n1.variance_epsilon), (n2.weight, n2.variance_epsilon)),
                                                wv, bv, attn.o_proj.weight, attn.o_proj.bias, gate, up, n_rep, hd)
    j_attn = _rms_jacobian_times(c.expand(B, d, d), n1.weight, h, r1)
    j_attn.diagonal(dim1=1, dim2=2).add_(1.0)  # + I, in place
    inner = torch.addcmul(alpha[:, :, None] * gate[0], beta[:, :, None], up[0])  # (B, ff, d)
    m = mlp.down_proj.weight @ inner  # (B, d, d)
    m_n = _rms_jacobian_times(m, n2.weight, a, r2)
    return torch.baddbmm(j_attn, m_n, j_attn)  # J_attn + M_n·J_attn


ADAPTER = Adapter(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    layers_path="model.layers",
    mid_module="post_attention_layernorm",
    norm="rmsnorm",
    isolated_jacobian=isolated_jacobian,
    isolated_jacobian_sum=isolated_jacobian_sum,
)
