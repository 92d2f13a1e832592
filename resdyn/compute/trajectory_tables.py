"""The "trajectories" stage's per-token tables, built batch by batch from a traced forward pass.

Not a stage: both the ``trajectories`` stage and the ``activations`` stage use it. The tables need
every token's residual state at every depth, which only a forward pass gives; the activations stage
already runs that pass (both run passages through ``blocks.traced_batches``), so it builds the
tables on the way and leaves them under ``.partial/trajectories/``. The trajectories stage then
only assembles them, instead of a second forward pass
(on the demo's 128 passages, one core: about 23 s of the stage's 26 s). Built either way, the
tables are equal bit for bit (``tests/compute/test_coupling.py``).

The leftover is keyed (``key``) by the number of passages, the PCA and window settings and a hash
of the activations stage's ``final_state.npy``: a recomputed forward pass, or another setting,
makes the trajectories stage ignore it and run its own forward. The activations stage builds the
tables only when the trajectories stage is planned (``RunContext.planned``): in the same
invocation, or next by the caller (``pipeline.run``'s ``ahead``, as the demo's first pass does).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import torch

from resdyn.core import trajectory as tj
from resdyn.core.schema import SCHEMA_VERSION
from resdyn.core.store import PARTIAL, RunStore, write_json
from resdyn.errors import ResdynError

STAGE = "trajectories"
KEY_FILE = "key.json"
TABLES = ("rows", "pca")
TABLES_VERSION = 1
"""Raise when what ``TableBuilder`` writes changes: tables left by an older resdyn are then ignored."""


class TableBuilder:
    """Collects one passage's trajectory rows (``trajectory.trajectory_rows``) and, for the first
    ``n_pca`` passages, its PCA rows, from each forward batch (``add``)."""

    def __init__(self, n_pca: int, width: int):
        self.n_pca, self.width = int(n_pca), int(width)
        self.rows: dict[int, pd.DataFrame] = {}
        self.pcas: dict[int, pd.DataFrame] = {}
        self.finite = True
        """False once a batch held NaN or Inf: its caller reports that (one line) and nothing is kept."""

    def add(self, idx: list[int], chunk: list[torch.Tensor], trace) -> None:
        """One right-padded batch: passages ``idx`` with token ids ``chunk`` and their ``Trace``."""
        if not self.finite:
            return
        # (B, T, L + 1, d): block inputs x⁰..x^{L−1} and the last block's output x^L, stacked on
        # the host (the float64 copy of a large model's batch would not fit beside it on a GPU).
        states = torch.stack([x.cpu() for x in (*trace.inputs, trace.final)], dim=2).double().numpy()
        for b, (i, s) in enumerate(zip(idx, chunk)):
            traj = states[b, :len(s)]  # right padding: the real tokens are the first len(s)
            if not np.isfinite(traj).all():  # an overflow: no PCA of it (the SVD would not converge)
                self.finite = False
                self.rows.clear()
                self.pcas.clear()
                return
            self.rows[i] = tj.trajectory_rows(traj, i, self.width)
            if i < self.n_pca:
                self.pcas[i] = tj.pca_rows(traj, i)

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(rows, pca) in passage order, whatever order the batches came in."""
        rows = pd.concat([self.rows[i] for i in sorted(self.rows)], ignore_index=True)
        pca = pd.concat([self.pcas[i] for i in sorted(self.pcas)], ignore_index=True)
        return rows, pca


def settings(cfg, n_layers: int) -> tuple[int, int]:
    """(n_pca, width) of a run of ``n_layers`` blocks: its coupling prompts and the sliding window
    (at most L + 1 states)."""
    return int(cfg.coupling_samples), min(tj.WINDOW, int(n_layers) + 1)


def key(final_state: np.ndarray, n_pca: int, width: int) -> dict:
    """What a leftover must match: the tables' layout (``TABLES_VERSION``, the schema), passages,
    settings and the forward pass's final states (N, d)."""
    digest = hashlib.sha256(np.ascontiguousarray(final_state).tobytes()).hexdigest()
    return {"tables": TABLES_VERSION, "schema": SCHEMA_VERSION, "n_samples": int(len(final_state)),
            "n_pca": int(n_pca), "width": int(width), "final_state": digest}


def save(store: RunStore, builder: TableBuilder, final_state: np.ndarray) -> None:
    """Leave the tables for the trajectories stage (none when a batch was not finite). The key
    goes last: a kill before it leaves tables that ``load`` ignores."""
    part = RunStore(store.partial_dir(STAGE))
    (part.path / KEY_FILE).unlink(missing_ok=True)
    if not builder.finite:
        return
    for name, table in zip(TABLES, builder.tables()):
        part.write_table(name, table)
    write_json(part.path / KEY_FILE, key(final_state, builder.n_pca, builder.width))


def load(store: RunStore, n_pca: int, width: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The tables the activations stage left for this run's forward pass and settings, or None."""
    part = store.path / PARTIAL / STAGE
    try:
        found = json.loads((part / KEY_FILE).read_text())
        want = key(np.asarray(store.read_array("final_state", mmap=False)), n_pca, width)
        if found != want:
            return None
        return tuple(pd.read_parquet(part / f"{name}.parquet") for name in TABLES)
    except (OSError, ValueError, KeyError, ResdynError):
        return None  # absent, partly written or unreadable: compute instead
