"""Architecture adapters, one file per family. ``adapter_for(config)`` picks one.

A model type resdyn does not ship gets an adapter with ``register_adapter`` (public, re-exported
as ``resdyn.register_adapter``); see the README's "Adding an architecture".
"""

from __future__ import annotations

import dataclasses

from resdyn.compute.adapters import bert, gemma, gpt2, llama, moe, neox, olmo, phi3
from resdyn.compute.adapters.base import Adapter
from resdyn.errors import ResdynError

ADAPTERS: list[Adapter] = [m.ADAPTER for m in (llama, phi3, moe, olmo, gemma, gpt2, neox, bert)]
"""The shipped families."""

_REGISTERED: dict[str, Adapter] = {}
"""model_type -> adapter registered in this process; looked up before the shipped families."""

NORMS = ("rmsnorm", "layernorm", "postnorm")

__all__ = ["ADAPTERS", "Adapter", "adapter_for", "register_adapter", "supported_model_types"]


def supported_model_types() -> list[str]:
    """Every ``config.model_type`` resdyn computes runs for: shipped and registered, sorted."""
    return sorted({t for a in ADAPTERS for t in a.model_types} | set(_REGISTERED))


def adapter_for(config) -> Adapter:
    """The adapter for a transformers config: a registered one first, else the shipped family."""
    model_type = getattr(config, "model_type", None)
    if model_type in _REGISTERED:
        return _REGISTERED[model_type]
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    raise ResdynError(
        f"unsupported architecture {model_type!r}; supported: {', '.join(supported_model_types())} "
        "(or register an adapter with resdyn.register_adapter)"
    )


def register_adapter(model_type: str, adapter: Adapter | str) -> Adapter:
    """Compute runs for models whose ``config.model_type`` is ``model_type`` with ``adapter``.

    Args:
        model_type: the ``model_type`` string of the model's transformers config.
        adapter: an ``Adapter`` describing the blocks (``resdyn.compute.adapters.base.Adapter``),
            or the name of a shipped family (``"llama"``, ``"phi3"``, ``"moe"``, ``"olmo2"``,
            ``"gemma"``, ``"gpt2"``, ``"gpt_neox"``, ``"bert"``) whose layout the model shares.

    Returns the adapter as registered (its ``model_types`` include ``model_type``). A registered
    adapter takes precedence over a shipped one, so a shipped type can be overridden;
    registering the same type again replaces the earlier registration. The registry lives in
    this process: ``--executor ray`` workers load the model themselves and do not see it.
    Raises ``ResdynError`` for an empty model type, an unknown family name or an adapter that
    names neither a pre-MLP module nor a parallel block's attention.
    """
    if not isinstance(model_type, str) or not model_type:
        raise ResdynError(f"register_adapter: model_type must be a non-empty string, not {model_type!r}")
    if isinstance(adapter, str):
        named = {a.name: a for a in ADAPTERS}
        if adapter not in named:
            raise ResdynError(f"register_adapter: no shipped family {adapter!r}; families: {', '.join(sorted(named))}")
        adapter = named[adapter]
    if not isinstance(adapter, Adapter):
        raise ResdynError(f"register_adapter: adapter must be an Adapter or a family name, not {type(adapter).__name__}")
    if adapter.mid_module is None and adapter.mid_attn is None:
        raise ResdynError("register_adapter: the adapter needs mid_module (or mid_attn for a parallel block)")
    if adapter.norm not in NORMS:
        raise ResdynError(f"register_adapter: norm must be one of {', '.join(NORMS)}, not {adapter.norm!r}")
    if model_type not in adapter.model_types:
        adapter = dataclasses.replace(adapter, model_types=(*adapter.model_types, model_type))
    _REGISTERED[model_type] = adapter
    return adapter
