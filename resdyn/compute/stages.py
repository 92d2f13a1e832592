"""The pipeline's stages and their order.

A stage is a function of a ``RunContext`` that reads earlier stages' outputs from the run store
and writes its own. Stages never decide where they run: the executor (local or Ray) and the
device come from the context. A finished stage is recorded in the manifest and skipped on rerun.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

# Order matters: a stage may only read what the stages before it wrote.
STAGE_MODULES = [
    "resdyn.compute.activations",
    "resdyn.compute.jacobians",
    "resdyn.compute.spectra",
    "resdyn.compute.geometry",
    "resdyn.compute.topology",
    "resdyn.compute.coupling",
]


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable  # fn(ctx: RunContext) -> None
    requires: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # file names in the run directory (for --redo and corruption checks)
    needs_model: bool = False
    description: str = ""


def all_stages() -> list[Stage]:
    out = []
    for mod in STAGE_MODULES:
        m = importlib.import_module(mod)
        out.extend(getattr(m, "STAGES", None) or [m.STAGE])
    return out


def stage_names() -> list[str]:
    return [s.name for s in all_stages()]
