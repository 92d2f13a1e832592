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

Writes ``jacobians.npy`` (L, d, d) float32 (accumulated in float64).
"""

from __future__ import annotations

import numpy as np

from resdyn.compute import block_jacobians as bj
from resdyn.compute.executors import Split
from resdyn.compute.stages import stages_in

CHECKPOINT = "mean"  # .partial/jacobians/mean_LLL.npy: J̄_l (d, d) float64


def pending_layers(ctx) -> list[int]:
    """Layers without a complete checkpoint (a damaged one is recomputed)."""
    return bj.pending_layers(ctx, STAGE.name, CHECKPOINT)


def compute_layer(state, cfg, layer: int, inputs: dict, bar=None) -> np.ndarray:
    """Mean Jacobian (d, d) float64 of block ``layer`` over every sample.

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
        total = bj.isolated_jacobian_sum(bundle.adapter, calls[layer], states, bundle.device, bundle.dtype)
        if total is not None:
            if not bj.all_finite(total):
                raise bj.non_finite_error(layer, 0)
            if bar is not None:
                bar.update(len(states))
            return total / len(states)
    n, batches = bj.layer_jacobian_batches(state, cfg, layer, inputs)
    total = None
    for start, jac in batches:
        part = bj.batch_sum(jac)
        if not bj.all_finite(part):  # a NaN or inf anywhere in the batch reaches its sum
            raise bj.non_finite_error(layer, start)
        if total is None:
            total = part
        else:
            total += part
        if bar is not None:
            bar.update(len(jac))
    mean = total / n
    return mean if isinstance(mean, np.ndarray) else mean.cpu().numpy()


def save_layer(store, layer: int, result: np.ndarray) -> None:
    """Checkpoint one layer. Atomic: a kill mid-layer leaves no checkpoint for that layer."""
    bj.save_checkpoint(store, STAGE.name, CHECKPOINT, layer, result)


def run(ctx) -> None:
    store = ctx.store
    bj.compute_pending(ctx, STAGE.name, CHECKPOINT, compute_layer, save_layer)
    means = bj.load_checkpoints(store, STAGE.name, CHECKPOINT)
    store.write_array("jacobians", means.astype(np.float32))
    store.clear_partial(STAGE.name)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py

# Per-layer units for the executors (resdyn.compute.executors): a Ray worker computes whole layers.
SPLITS = {STAGE.name: Split(pending=pending_layers, inputs=bj.layer_inputs, prepare=bj.prepare_worker,
                            compute=compute_layer, save=save_layer)}
