"""Stage "jacobians": the mean block Jacobians J̄_l = (1/N) Σ_i ∂h_{l+1}/∂h_l (METHODS §2).

For adapters with a closed form (Llama, Phi-3) the sum over samples is taken directly in float64
from per-sample scalars, diagonals and rank-one terms (``Adapter.isolated_jacobian_sum``), without
forming any sample's Jacobian. Otherwise every sample's exact Jacobian comes from the engine in
``resdyn.compute.block_jacobians`` (the adapter's closed form, else ``vmap(jacrev(block))``),
batch by batch, summed in float64. Nothing else is kept, so the spectra can follow as soon as
this stage ends. The per-sample statistics (σ_max, σ_min, κ, ‖J‖_F, PR) are the ``sample_stats``
stage, which forms every sample's Jacobian. Each layer is a pure ``compute_layer`` call, so an executor may run layers
anywhere (``SPLITS``), and each finished layer is checkpointed under ``.partial/jacobians/`` so a
killed run resumes at the next layer with identical numbers.

Writes ``jacobians.npy`` (L, d, d) float32 (accumulated in float64) and ``jacobians_half.npy``
(L, d, d) float32, the same mean over a seeded random half of the passages
(``resdyn.core.noise.split_half``): the ``noise`` stage estimates the claims' sampling noise from it.
The half costs nothing extra: the sum over all samples is the sum of the two halves' sums.
"""

from __future__ import annotations

import numpy as np

from resdyn.compute import block_jacobians as bj
from resdyn.compute.executors import Split
from resdyn.compute.stages import stages_in
from resdyn.core.noise import split_half

# .partial/jacobians/means_LLL.npy: (2, d, d) float64, J̄_l and the half's mean J̄_l^A. (Checkpoints
# of the former name "mean" held J̄_l alone; they are not read, so such a layer is recomputed.)
CHECKPOINT = "means"


def pending_layers(ctx) -> list[int]:
    """Layers without a complete checkpoint (a damaged one is recomputed)."""
    return bj.pending_layers(ctx, STAGE.name, CHECKPOINT)


def compute_layer(state, cfg, layer: int, inputs: dict, bar=None) -> np.ndarray:
    """Mean Jacobians (2, d, d) float64 of block ``layer``: over every sample, and over the
    samples of half A (``split_half(N, cfg.seed)``).

    In isolated mode, when the adapter has a closed-form sum (``isolated_jacobian_sum``: Llama,
    Phi-3), the sum over samples comes from it directly, in float64, without forming any sample's
    Jacobian (at d = 576, N = 128 about 40× fewer flops); otherwise every sample's Jacobian is
    taken and summed in float64. A pure function of the model and ``inputs``
    (``block_jacobians.layer_inputs``): the local executor calls it in the driver, the Ray executor
    on a worker that holds its own copy of the model.
    """
    if cfg.mode == "isolated":
        bundle, calls = state
        states = inputs["states"]
        half = split_half(len(states), cfg.seed)
        sums = [bj.isolated_jacobian_sum(bundle.adapter, calls[layer], states[rows], bundle.device, bundle.dtype)
                for rows in (half, ~half)]
        if sums[0] is not None and sums[1] is not None:
            if not (bj.all_finite(sums[0]) and bj.all_finite(sums[1])):
                raise bj.non_finite_error(layer, 0)
            if bar is not None:
                bar.update(len(states))
            return np.stack([(sums[0] + sums[1]) / len(states), sums[0] / max(int(half.sum()), 1)])
    n, batches = bj.layer_jacobian_batches(state, cfg, layer, inputs)
    half = split_half(n, cfg.seed)
    total = part_a = None
    for start, jac in batches:
        whole = bj.batch_sum(jac)
        if not bj.all_finite(whole):  # a NaN or inf anywhere in the batch reaches its sum
            raise bj.non_finite_error(layer, start)
        pick = np.flatnonzero(half[start:start + len(jac)])
        a = bj.batch_sum(jac[pick]) if len(pick) else 0.0 * whole
        total = whole if total is None else total + whole
        part_a = a if part_a is None else part_a + a
        if bar is not None:
            bar.update(len(jac))
    out = [total / n, part_a / max(int(half.sum()), 1)]
    return np.stack([m if isinstance(m, np.ndarray) else m.cpu().numpy() for m in out])


def save_layer(store, layer: int, result: np.ndarray) -> None:
    """Checkpoint one layer. Atomic: a kill mid-layer leaves no checkpoint for that layer."""
    bj.save_checkpoint(store, STAGE.name, CHECKPOINT, layer, result)


def run(ctx) -> None:
    store = ctx.store
    bj.compute_pending(ctx, STAGE.name, CHECKPOINT, compute_layer, save_layer)
    means = bj.load_checkpoints(store, STAGE.name, CHECKPOINT)  # (L, 2, d, d)
    store.write_array("jacobians", means[:, 0].astype(np.float32))
    store.write_array("jacobians_half", means[:, 1].astype(np.float32))
    store.clear_partial(STAGE.name)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py

# Per-layer units for the executors (resdyn.compute.executors): a Ray worker computes whole layers.
SPLITS = {STAGE.name: Split(pending=pending_layers, inputs=bj.layer_inputs, prepare=bj.prepare_worker,
                            compute=compute_layer, save=save_layer)}
