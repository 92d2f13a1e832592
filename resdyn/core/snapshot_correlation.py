"""The correlation matrix of one stored snapshot, as the Communities page draws it (METHODS §7.1).

Reads a run's activations (memory-mapped) or the panels the communities stage stored, and returns
what ``resdyn.core.figures.topology.correlation_figure`` and ``block_figure`` take. Above
``HEATMAP_MAX`` units the d×d matrix is never formed: the overview panels are block means of C,
stored by the communities stage (``corr_blocks``) or, for runs from before it stored them, taken
here from block sums of z (at d = 4096 the full matrix would cost 33 GFLOP per snapshot).
numpy/pandas only, no Streamlit: the page caches these calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resdyn.core.correlation import (HEATMAP_MAX, IMAGE_MAX_PX, block_correlation, community_order,
                                     correlation_block, standardize, standardize_units)
from resdyn.core.store import RunStore


def is_final(snapshot: int, n_layers: int) -> bool:
    """Whether snapshot index ``snapshot`` is the state after the last block (index 2L)."""
    return snapshot >= 2 * n_layers


def source_path(store: RunStore, snapshot: int, n_layers: int) -> Path:
    """The array file the snapshot's states live in: final_state.npy for 2L, else activations.npy."""
    return store.array_path("final_state" if is_final(snapshot, n_layers) else "activations")


def snapshot_states(store: RunStore, snapshot: int, n_layers: int) -> np.ndarray:
    """(N, d) float32 residual states of one snapshot, memory-mapped (snapshot 2L: the final state)."""
    if is_final(snapshot, n_layers):
        return store.read_array("final_state")
    return store.read_array("activations")[:, snapshot, :]


def stored_panels(store: RunStore, snapshot: int, method: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(unit order (m, m) float32, community order (m, m) float32, f) stored by the communities stage
    for ``method``, or None (runs of d ≤ 512, which draw C itself, and runs from before the stage
    stored them)."""
    if not (store.has_array("corr_blocks") and store.has_table("corr_blocks")):
        return None
    index = store.read_table("corr_blocks")
    row = index[index["order"] == method]
    blocks = store.read_array("corr_blocks")  # (S, 1 + M, m, m) float16, memory-mapped
    if row.empty or snapshot >= blocks.shape[0]:
        return None
    panel = int(row["panel"].iloc[0])
    return blocks[snapshot, 0].astype(np.float32), blocks[snapshot, panel].astype(np.float32), int(row["f"].iloc[0])


def overview(store: RunStore, snapshot: int, n_layers: int, method: str, labels: np.ndarray,
             heatmap_max: int = HEATMAP_MAX, max_px: int = IMAGE_MAX_PX,
             ) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray, int] | None]:
    """What ``correlation_figure`` draws for one snapshot: (corr, blocks).

    Up to ``heatmap_max`` units: (the (d, d) float32 correlation matrix, None). Above: (None, the two
    block-averaged panels of at most ``max_px`` blocks a side and their block size f), stored or
    computed from block sums of z. ``labels``: (d,) community labels of ``method`` at this snapshot.
    Pass the figure module's thresholds so that the data and the figure agree on the form.
    """
    labels = np.asarray(labels)
    if len(labels) <= heatmap_max:
        return correlation_block(standardize(snapshot_states(store, snapshot, n_layers))), None
    blocks = stored_panels(store, snapshot, method)
    if blocks is None:
        z = standardize(snapshot_states(store, snapshot, n_layers))
        left, f = block_correlation(z, np.arange(len(labels)), max_px)
        blocks = (left, block_correlation(z, community_order(labels), max_px)[0], f)
    return None, blocks


def submatrix(store: RunStore, snapshot: int, n_layers: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(len(rows), len(cols)) float32 C[rows][:, cols] at full resolution, from the z-scores of those
    units only (so a zoom into d = 4096 units never standardises all of them)."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    z = standardize_units(snapshot_states(store, snapshot, n_layers), np.concatenate([rows, cols]))
    return correlation_block(z, np.arange(len(rows)), np.arange(len(rows), len(rows) + len(cols)))
