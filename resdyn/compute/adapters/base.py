"""What an architecture adapter says: where the blocks are, where the pre-MLP boundary is, and
which norm identity its blocks satisfy. Calling a block alone is generic (see ``blocks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Adapter:
    """One architecture family.

    Attributes:
        name: family name written to the manifest (``architecture``).
        model_types: ``config.model_type`` values handled by this family.
        layers_path: dotted attribute path from the loaded model to its ``nn.ModuleList`` of blocks.
        mid_module: attribute of a block whose INPUT is the pre-MLP residual state, or None for a
            parallel block, whose pre-MLP snapshot is defined as h + attn(h) (see ``mid_attn``).
        mid_attn: attribute of a parallel block's attention module (its output[0] is added to h).
        norm: "rmsnorm" | "layernorm" | "postnorm": the invariance the tests check (METHODS §10).
        causal: decoder (True) or encoder (False); encoders use AutoModel, decoders AutoModelForCausalLM.
        boundaries: what the two snapshots of a block really are, written to the manifest.
        isolated_jacobian: optional closed form ``f(block, h (B, d)) -> J (B, d, d)`` of the
            isolated one-token block, or None when it cannot be used for this config; the engine
            then falls back to autodiff. Tests hold it equal to autodiff in float64.
        isolated_jacobian_sum: optional ``f(block, h (N, d)) -> Σ_i J(h_i) (d, d) float64``
            computed without forming the per-sample Jacobians, or None; the jacobians stage (which
            keeps only the mean) uses it when present. Tests hold it to the sum of autodiff
            Jacobians.
        prepare_model: optional ``f(model, dtype) -> None`` run once on a loaded model after it is
            on its device and dtype and before any forward (``resdyn.compute.models.prepare``):
            where a family needs a kernel choice or a hook for ``torch.func`` or float64 (the
            mixture-of-experts adapter selects its experts kernel there).
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    mid_module: str | None
    norm: str
    causal: bool = True
    mid_attn: str | None = None
    boundaries: str = "2l = block input (pre-attention), 2l+1 = attention-updated residual (pre-MLP)"
    isolated_jacobian: Callable | None = None
    isolated_jacobian_sum: Callable | None = None
    prepare_model: Callable | None = None

    def layers(self, model: nn.Module) -> nn.ModuleList:
        obj = model
        for part in self.layers_path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise AttributeError(f"{type(model).__name__} has no {self.layers_path}")
        return obj

    def register_mid_hook(self, block: nn.Module, callback) -> list[torch.utils.hooks.RemovableHandle]:
        """Call ``callback(state (B, T, d))`` with the pre-MLP residual state on every block forward."""
        if self.mid_module is not None:
            mod = block.get_submodule(self.mid_module)
            return [mod.register_forward_pre_hook(lambda m, args, kwargs: callback(_first(args, kwargs)), with_kwargs=True)]
        # Parallel block: attention and MLP both read h; the honest "attention-updated" state is h + attn(h).
        box = {}
        h1 = block.register_forward_pre_hook(lambda m, args, kwargs: box.__setitem__("h", _first(args, kwargs)), with_kwargs=True)
        attn = block.get_submodule(self.mid_attn)
        h2 = attn.register_forward_hook(lambda m, args, out: callback(box["h"] + (out[0] if isinstance(out, tuple) else out)))
        return [h1, h2]


def _first(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]
