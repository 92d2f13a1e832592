"""GPT-NeoX / Pythia: LayerNorm, usually a parallel block h + attn(ln1 h) + mlp(ln2 h)."""

from resdyn.compute.adapters.base import Adapter

ADAPTER = Adapter(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layers_path="gpt_neox.layers",
    mid_module=None,
    mid_attn="attention",
    norm="layernorm",
    boundaries="2l = block input; 2l+1 = h + attn(h) (parallel block: the MLP reads h, not this state)",
)
