"""The pipeline's stages, one module per stage named after it: the torch-free registry (``resdyn.stages``) with compute functions attached.

A stage is a function of a ``RunContext`` that reads earlier stages' outputs from the run store
and writes its own. Stages never decide where they run: the executor (local or Ray) and the
device come from the context. A finished stage is recorded in the manifest and skipped on rerun.
Names, inputs and outputs live in ``resdyn/stages.py`` only; this module adds the function.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from resdyn import stages as registry
from resdyn.errors import ResdynError


@dataclass(frozen=True)
class Stage:
    """A registry record plus its compute function, resolved on first use (so a stage module can
    list its own stages with ``stages_in(__name__)`` while it is being imported)."""

    spec: registry.StageSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def requires(self) -> tuple[str, ...]:
        return self.spec.needs

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.spec.outputs

    @property
    def needs_model(self) -> bool:
        return self.spec.needs_model

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def module(self) -> str:
        return self.spec.function.split(":")[0]

    @property
    def fn(self) -> Callable:  # fn(ctx: RunContext) -> None
        module, name = self.spec.function.split(":")
        return getattr(importlib.import_module(module), name)


def all_stages() -> list[Stage]:
    """Every stage, in computation order."""
    return [Stage(spec) for spec in registry.STAGES]


def stages_in(module: str) -> list[Stage]:
    """The stages whose compute function lives in ``module``."""
    return [s for s in all_stages() if s.module == module]


def stage(name: str) -> Stage:
    """The stage called ``name`` (a KeyError names an unknown one)."""
    return Stage(registry.get(name))


def stages_named(*names: str) -> list[Stage]:
    """The stages called ``names``, in the order given."""
    return [stage(n) for n in names]


def stage_names() -> list[str]:
    return registry.names()


def mean_jacobians(store) -> np.ndarray:
    """The run's ``jacobians.npy``, J̄_l for every layer: (L, d, d) float32, memory-mapped; a
    clear error when its shape is not square (read by cumulative, schur and pseudospectra)."""
    jac = store.read_array("jacobians")
    if jac.ndim != 3 or jac.shape[1] != jac.shape[2]:
        raise ResdynError(f"jacobians.npy of run {store.run_id} has shape {jac.shape}, expected (L, d, d)")
    return jac
