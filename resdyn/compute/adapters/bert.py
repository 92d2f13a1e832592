"""BERT (and MiniLM): post-norm encoder blocks, LayerNorm after each residual sum."""

from resdyn.compute.adapters.base import Adapter

ADAPTER = Adapter(
    name="bert",
    model_types=("bert",),
    layers_path="encoder.layer",
    mid_module="intermediate",  # reads the (normalised) attention output
    norm="postnorm",
    causal=False,
    boundaries="2l = block input; 2l+1 = LayerNorm(h + attn(h)), the input of the feed-forward",
)
