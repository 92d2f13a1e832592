"""Stage "sample_stats": σ_max, σ_min, κ, ‖J‖_F and PR of every sample's block Jacobian (METHODS §2).

The per-sample Jacobians are not stored (N·L·d² floats), and for Llama and Phi-3 the ``jacobians``
stage never forms them, so this stage forms every one with the shared engine
(``resdyn.compute.block_jacobians.layer_jacobian_batches``: the adapter's closed form or
``vmap(jacrev)``, in batches of ``--batch-size``) and reduces each to five numbers
(``block_jacobians.gram_stats``: block Krylov iteration for the extreme singular values, σ_min
through a float64 LU of J; ``resdyn.core.singular``). Forming a Jacobian costs less
than its statistics (README, *Benchmarks*), and keeping this stage apart lets the mean Jacobians
and their spectra land first. It reads only the activations and the model, so it may run before or
after ``jacobians``. Each finished layer is checkpointed under ``.partial/sample_stats/`` so a
killed run resumes at the next layer with identical numbers; ``SPLITS`` lets Ray run its layers.

Writes ``samples.parquet`` (layer, sample, sigma_max, sigma_min, kappa, fro, pr) and
``sample_profiles.parquet`` (their per-layer medians and quartiles, ``resdyn.core.sample_stats``).
"""

from __future__ import annotations

import numpy as np

from resdyn.compute import block_jacobians as bj
from resdyn.compute.executors import Split
from resdyn.compute.stages import stages_in
from resdyn.core import sample_stats

CHECKPOINT = "stats"  # .partial/sample_stats/stats_LLL.npy: (N, 5) float64


def pending_layers(ctx) -> list[int]:
    """Layers without a complete checkpoint (a damaged one is recomputed)."""
    return bj.pending_layers(ctx, STAGE.name, CHECKPOINT)


def compute_layer(state, cfg, layer: int, inputs: dict, bar=None) -> np.ndarray:
    """Per-sample statistics (N, 5) float64 of block ``layer``, columns ``block_jacobians.STAT_COLUMNS``.

    A pure function of the model and ``inputs`` (``block_jacobians.layer_inputs``), like the
    ``jacobians`` stage's, so either executor may call it.
    """
    n, batches = bj.layer_jacobian_batches(state, cfg, layer, inputs)
    stats = np.zeros((n, len(bj.STAT_COLUMNS)), dtype=np.float64)
    for start, jac in batches:
        if not bj.all_finite(jac):
            raise bj.non_finite_error(layer, start)
        stats[start:start + len(jac)] = bj.gram_stats(jac).cpu().numpy()
        if bar is not None:
            bar.update(len(jac))
    return stats


def save_layer(store, layer: int, result: np.ndarray) -> None:
    """Checkpoint one layer. Atomic: a kill mid-layer leaves no checkpoint for that layer."""
    bj.save_checkpoint(store, STAGE.name, CHECKPOINT, layer, result)


def run(ctx) -> None:
    store = ctx.store
    bj.compute_pending(ctx, STAGE.name, CHECKPOINT, compute_layer, save_layer)
    samples = sample_stats.samples_table(bj.load_checkpoints(store, STAGE.name, CHECKPOINT))
    store.write_table("samples", samples)
    store.write_table("sample_profiles", sample_stats.layer_profiles(samples))
    store.clear_partial(STAGE.name)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py

# Per-layer units for the executors (resdyn.compute.executors): a Ray worker computes whole layers.
SPLITS = {STAGE.name: Split(pending=pending_layers, inputs=bj.layer_inputs, prepare=bj.prepare_worker,
                            compute=compute_layer, save=save_layer)}
