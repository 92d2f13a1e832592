"""The block-Jacobian engine: exact J_l = ∂h_{l+1}/∂h_l of every sample, batch by batch (METHODS §2).

Two stages take these Jacobians and neither stores them (N·L·d² floats): ``jacobians`` averages
them into J̄_l (for adapters with ``isolated_jacobian_sum``, Llama and Phi-3, without forming any:
``isolated_jacobian_sum`` here), ``sample_stats`` keeps σ_max, σ_min, κ, ‖J‖_F and PR of each,
batch by batch from ``layer_jacobian_batches``. This module is not a stage; it holds what both
need (no stage imports another):

- the engine: ``torch.func.vmap(jacrev(block))``, one forward per sample batch and one batched
  backward over the d output rows, or the adapter's closed form where it has one
  (``isolated_jacobians``); memory is bounded by ``row_chunk`` (output rows per backward; on CUDA
  chosen from the free GPU memory) and the sample batch size;
- what a worker needs for one layer (``layer_inputs``, ``prepare_worker``), so that an executor can
  run a stage's layers anywhere (each stage's ``SPLITS``; ``resdyn.compute.executors``);
- the per-sample statistics of a batch (``gram_stats``) and the float64 batch sum (``batch_sum``);
- per-layer checkpoints under ``.partial/STAGE/`` (``checkpoint_path``, ``pending_layers``).

Name lookups go through this module at call time (``layer_jacobians_isolated`` calls
``isolated_jacobians``, the stages call ``block_jacobians.gram_stats``), so a test or benchmark that
replaces one of these names here reaches both stages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.func import jacrev, vmap

from resdyn.compute.blocks import in_context_fn, isolated_calls, isolated_fn, traced_forward
from resdyn.core.singular import STAT_NAMES, batch_stats
from resdyn.core.store import npy_ok, save_npy
from resdyn.errors import ResdynError

STAT_COLUMNS = STAT_NAMES
"""Columns of the per-sample statistics (N, 5): sigma_max, sigma_min, kappa, fro, pr."""


def default_row_chunk(d: int) -> int | None:
    """Output rows per batched backward: all of them for small d, bounded for d ≥ 2048."""
    return None if d < 2048 else 512


def batched_jacobian(fn, states: torch.Tensor, row_chunk: int | None = None) -> torch.Tensor:
    """Jacobians of ``fn`` (d,) -> (d,) at each of ``states`` (B, d): (B, d_out, d_in)."""
    with torch.enable_grad():
        return vmap(jacrev(fn, chunk_size=row_chunk))(states)


def gram_stats(jac: torch.Tensor) -> torch.Tensor:
    """(B, d, d) Jacobians -> (B, 5) float64: σ_max, σ_min, κ, ‖J‖_F, PR (METHODS §2).

    On the CPU: ``resdyn.core.singular.batch_stats``, one sample per thread (as many threads as
    torch's), with ‖J‖_F² and Σσ⁴ = ‖JᵀJ‖_F² from norms, σ_max by block Krylov iteration on the
    Gram matrix and σ_min by the same iteration on its inverse through one float64 LU of J:
    σ_min to about κε relative, like a float64 SVD, 2.1–2.9× faster than the Gram matrix's
    eigenvalues with an LU refinement (README, Benchmarks); flat spectra (small κ) take the float64
    Gram eigenvalues when their κ makes them exact to 1e-10 (``singular.GRAM_FIRST_PR``). On other devices: the batched float64
    Gram matrix G = JᵀJ and its eigenvalues σ² (eigvalsh), PR = tr(G)²/‖G‖_F², ‖J‖_F = √tr(G);
    there σ_min carries a relative error of about κ²ε (1e-4 at κ = 1e6).
    """
    if jac.device.type == "cpu":
        return torch.from_numpy(batch_stats(jac.detach().numpy(), workers=torch.get_num_threads()))
    j = jac.to(torch.float64)
    g = j.transpose(1, 2) @ j
    ev = torch.linalg.eigvalsh(g).clamp_min(0.0)
    smax, smin = ev[:, -1].sqrt(), ev[:, 0].sqrt()
    tr = torch.diagonal(g, dim1=1, dim2=2).sum(-1)
    kappa = torch.where(smin > 0, smax / smin, torch.full_like(smax, float("inf")))
    pr = tr**2 / (g * g).sum((1, 2))
    return torch.stack([smax, smin, kappa, tr.sqrt(), pr], dim=1)


def layer_jacobians_isolated(bundle, call, states: np.ndarray, batch: int, row_chunk=None):
    """Yield (start, J (B, d, d)) for block ``call`` at one-token states (N, d), in batches."""
    for start in range(0, len(states), batch):
        h = torch.tensor(np.array(states[start:start + batch]), device=bundle.device, dtype=bundle.dtype)
        yield start, isolated_jacobians(bundle.adapter, call, h, row_chunk)


def isolated_jacobians(adapter, call, h: torch.Tensor, row_chunk: int | None = None) -> torch.Tensor:
    """Isolated-mode Jacobians (B, d, d) at states h (B, d): the adapter's closed form when it has
    one for this block (held equal to autodiff by the tests), else vmap(jacrev)."""
    if adapter.isolated_jacobian is not None:
        with torch.no_grad():
            jac = adapter.isolated_jacobian(call.block, h)
        if jac is not None:
            return jac
    return batched_jacobian(isolated_fn(call), h, row_chunk)


SUM_CHUNK = 4096
"""Samples per call of an adapter's ``isolated_jacobian_sum`` (its work arrays are N × ff float64)."""


def isolated_jacobian_sum(adapter, call, states: np.ndarray, device, dtype) -> np.ndarray | None:
    """Σ_i J(h_i) (d, d) float64 over the one-token states (N, d) of block ``call``, from the
    adapter's ``isolated_jacobian_sum`` (no per-sample Jacobian formed), or None when the adapter
    has none for this block. The states are cast to the run's dtype first, as the per-sample path
    casts them, so both see the same inputs."""
    if adapter.isolated_jacobian_sum is None:
        return None
    total = None
    with torch.no_grad():
        for start in range(0, len(states), SUM_CHUNK):
            h = torch.tensor(np.array(states[start:start + SUM_CHUNK]), device=device, dtype=dtype)
            part = adapter.isolated_jacobian_sum(call.block, h)
            if part is None:
                return None
            total = part if total is None else total + part
    return total.cpu().numpy()


def layer_jacobians_in_context(bundle, layer: int, seqs: list[torch.Tensor], row_chunk=None,
                               positions: list[int] | None = None):
    """Yield (i, J (1, d, d)): J_{t,t} at token t = ``positions[i]`` (default: the last token) with
    the rest of sample i held fixed."""
    for i, ids in enumerate(seqs):
        t = -1 if positions is None else int(positions[i])
        trace = traced_forward(bundle, ids[None])
        ctx_states = trace.inputs[layer].to(bundle.dtype)
        fn = in_context_fn(trace.calls[layer], ctx_states, t_in=t, t_out=t)
        x = ctx_states[0, t]
        with torch.enable_grad():
            yield i, jacrev(fn, chunk_size=row_chunk)(x)[None]


def auto_row_chunk(bundle, batch: int) -> int | None:
    """Output rows per batched backward, bounded by memory; results change by float32 rounding at most.

    On CPU: ``default_row_chunk(d)``. On CUDA: the largest power of two of rows whose backward
    fits in half the free GPU memory, counting about 8·d + 4·ff floats of saved intermediates per
    output row and sample (ff = the MLP width); None (all rows at once) when d rows fit.
    """
    d = bundle.d_model
    if bundle.device.type != "cuda":
        return default_row_chunk(d)
    free, _ = torch.cuda.mem_get_info(bundle.device)
    ff = int(getattr(bundle.config, "intermediate_size", None) or 4 * d)
    per_row = batch * (8 * d + 4 * ff) * torch.finfo(bundle.dtype).bits // 8
    rows = max(1, int(0.5 * free) // per_row)
    if rows >= d:
        return None
    return 1 << (rows.bit_length() - 1)


def layer_jacobian_batches(state, cfg, layer: int, inputs: dict):
    """(N, iterator of (start, J (B, d, d))): every sample's Jacobian of block ``layer``, in the
    batches both Jacobian stages use (``cfg.batch_size`` samples in isolated mode, one sample in
    context), on the worker's device in the run's dtype. ``state`` is ``prepare_worker``'s,
    ``inputs`` ``layer_inputs``'."""
    bundle, calls = state
    if cfg.mode == "isolated":
        row_chunk = auto_row_chunk(bundle, cfg.batch_size)
        return len(inputs["states"]), layer_jacobians_isolated(bundle, calls[layer], inputs["states"],
                                                               cfg.batch_size, row_chunk)
    from resdyn.compute.models import tokenize

    seqs = tokenize(bundle, inputs["texts"])
    return len(seqs), layer_jacobians_in_context(bundle, layer, seqs, auto_row_chunk(bundle, 1),
                                                 inputs.get("positions"))


def non_finite_error(layer: int, start: int) -> ResdynError:
    """The one line for a NaN or inf in a Jacobian batch (a float32 overflow in the block)."""
    return ResdynError(f"non-finite Jacobian at layer {layer}, samples {start}..; recompute under a new "
                       "--run-id with --dtype float64")


def layer_inputs(ctx, layer: int) -> dict:
    """What computing one layer needs besides the model: its input states (isolated; taken at the
    chosen position by the activations stage) or the passages and the chosen positions (in-context)."""
    if ctx.cfg.mode == "isolated":
        return {"states": np.array(ctx.store.read_array("activations")[:, 2 * layer])}
    return {"texts": list(ctx.texts()), "positions": stored_positions(ctx.store)}


def stored_positions(store) -> list[int] | None:
    """The analysed token of each passage (passages.parquet's ``position``, written by the
    activations stage), or None for runs from before it was stored (they used the last token)."""
    if not store.has_table("passages"):
        return None
    p = store.read_table("passages")
    return [int(x) for x in p["position"]] if "position" in p.columns else None


def prepare_worker(bundle, cfg):
    """Per-worker state: the model and, in isolated mode, its recorded one-token block calls."""
    return bundle, (isolated_calls(bundle) if cfg.mode == "isolated" else None)


def batch_sum(jac: torch.Tensor) -> np.ndarray | torch.Tensor:
    """Σ_i J_i (d, d) float64 of a batch (B, d, d), summed in float64 where the batch lives. On the
    CPU through numpy (an ndarray): torch's threaded reduction stalls when the two cores are
    shared (8 ms against 0.3 ms per Jacobian at d = 576, measured). Elsewhere a tensor on the
    device, so the running sum crosses to the host once per layer."""
    if jac.device.type == "cpu":
        return jac.detach().numpy().sum(0, dtype=np.float64)
    return jac.sum(0, dtype=torch.float64)


def all_finite(a: np.ndarray | torch.Tensor) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.isfinite(a).all())
    if a.device.type == "cpu":  # numpy's test is single-pass and does not stall on shared cores
        return bool(np.isfinite(a.detach().numpy()).all())
    return bool(torch.isfinite(a).all())


# -- per-layer checkpoints ------------------------------------------------------------------------
def n_layers(store) -> int:
    """L of the run, from ``activations.npy`` (N, 2L, d)."""
    return store.read_array("activations").shape[1] // 2


def checkpoint_path(part: Path, prefix: str, layer: int) -> Path:
    """``.partial/STAGE/PREFIX_LLL.npy``: one layer's checkpoint of a per-layer stage."""
    return part / f"{prefix}_{layer:03d}.npy"


def pending_layers(ctx, stage: str, prefix: str) -> list[int]:
    """Layers of ``stage`` without a complete checkpoint (a damaged one is recomputed)."""
    part = ctx.store.partial_dir(stage)
    return [l for l in range(n_layers(ctx.store)) if not npy_ok(checkpoint_path(part, prefix, l))]


def save_checkpoint(store, stage: str, prefix: str, layer: int, result: np.ndarray) -> None:
    """Checkpoint one layer of ``stage``. Atomic: a kill mid-layer leaves no checkpoint for it."""
    save_npy(checkpoint_path(store.partial_dir(stage), prefix, layer), result)


def compute_pending(ctx, stage: str, prefix: str, compute_layer, save_layer) -> None:
    """Compute and checkpoint every layer of a per-layer stage that has no checkpoint yet, in this
    process, with a progress bar in Jacobians; the model is loaded only when a layer is left
    (after a Ray executor, none is). ``compute_layer`` and ``save_layer`` are the stage's ``Split``
    functions."""
    todo = pending_layers(ctx, stage, prefix)
    if not todo:
        return
    state = prepare_worker(ctx.model(), ctx.cfg)
    n = ctx.store.read_array("activations").shape[0]
    bar = ctx.progress(total=len(todo) * n, desc=f"{stage} ({ctx.cfg.mode})", unit="J")
    for l in todo:
        save_layer(ctx.store, l, compute_layer(state, ctx.cfg, l, layer_inputs(ctx, l), bar))
    bar.close()


def load_checkpoints(store, stage: str, prefix: str) -> np.ndarray:
    """Every layer's checkpoint of ``stage`` stacked: (L, ...) as saved."""
    part = store.partial_dir(stage)
    return np.stack([np.load(checkpoint_path(part, prefix, l), allow_pickle=False)
                     for l in range(n_layers(store))])
