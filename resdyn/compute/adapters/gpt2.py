"""GPT-2: pre-norm LayerNorm blocks, learned absolute positions added before block 0."""

from resdyn.compute.adapters.base import Adapter

ADAPTER = Adapter(
    name="gpt2",
    model_types=("gpt2",),
    layers_path="transformer.h",
    mid_module="ln_2",
    norm="layernorm",
)
