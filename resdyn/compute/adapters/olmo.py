"""OLMo2/OLMo3: RMSNorm applied to each sub-layer's OUTPUT (no pre-norm); q/k norms in attention."""

from resdyn.compute.adapters.base import Adapter

ADAPTER = Adapter(
    name="olmo2",
    model_types=("olmo2", "olmo3"),
    layers_path="model.layers",
    mid_module="mlp",  # the MLP reads the raw attention-updated residual
    norm="rmsnorm",
)
