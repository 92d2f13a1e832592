"""Architecture adapters, one file per family. ``adapter_for(config)`` picks one."""

from __future__ import annotations

from resdyn.compute.adapters import bert, gemma, gpt2, llama, neox, olmo
from resdyn.compute.adapters.base import Adapter
from resdyn.errors import ResdynError

ADAPTERS: list[Adapter] = [m.ADAPTER for m in (llama, olmo, gemma, gpt2, neox, bert)]


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(config) -> Adapter:
    model_type = getattr(config, "model_type", None)
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    raise ResdynError(
        f"unsupported architecture {model_type!r}; supported: {', '.join(supported_model_types())}"
    )
