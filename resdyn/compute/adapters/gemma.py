"""Gemma2/Gemma3: RMSNorm both before and after each sub-layer (weights act as 1 + w)."""

from resdyn.compute.adapters.base import Adapter

ADAPTER = Adapter(
    name="gemma",
    model_types=("gemma2", "gemma3_text", "gemma3"),
    layers_path="model.layers",
    mid_module="pre_feedforward_layernorm",
    norm="rmsnorm",
)
