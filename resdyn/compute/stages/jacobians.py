"""Stage "jacobians": exact block Jacobians J_l = ∂h_{l+1}/∂h_l per sample (METHODS §2).

The engine is ``torch.func.vmap(jacrev(block))``: one forward per sample batch and one batched
backward over all d output rows, so there is no Python loop over columns. Memory is bounded by
``row_chunk`` (output rows per backward; on CUDA chosen from the free GPU memory) and the sample
batch size. Each layer is a pure ``compute_layer`` call, so an executor may run layers anywhere
(``SPLITS``; see ``resdyn.compute.executors``).

Per sample it keeps σ_max, σ_min, κ, ‖J‖_F and PR (``gram_stats``: block Krylov iteration for the
two extreme singular values, σ_min through a float64 LU of J; ``resdyn.core.singular``), and it
accumulates the mean Jacobian in float64. Each finished layer is checkpointed
under ``.partial/jacobians/`` so a killed run resumes at the next layer with identical numbers.

Writes ``jacobians.npy`` (L, d, d) float32 and ``samples.parquet``
(layer, sample, sigma_max, sigma_min, kappa, fro, pr).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.func import jacrev, vmap

from resdyn.compute.blocks import in_context_fn, isolated_calls, isolated_fn, traced_forward
from resdyn.compute.stages import stages_in
from resdyn.compute.executors import Split
from resdyn.core.singular import STAT_NAMES, batch_stats
from resdyn.core.store import npy_ok, save_npy
from resdyn.errors import ResdynError

STAT_COLUMNS = STAT_NAMES


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
    eigenvalues with an LU refinement (README, Benchmarks). On other devices: the batched float64
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


def checkpoint_paths(part, layer: int):
    """(.partial/jacobians/mean_LLL.npy, stats_LLL.npy) of one layer."""
    return part / f"mean_{layer:03d}.npy", part / f"stats_{layer:03d}.npy"


def pending_layers(ctx) -> list[int]:
    """Layers without a complete checkpoint (a damaged one is recomputed)."""
    store = ctx.store
    n_layers = store.read_array("activations").shape[1] // 2
    part = store.partial_dir("jacobians")
    return [l for l in range(n_layers) if not all(npy_ok(p) for p in checkpoint_paths(part, l))]


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


def compute_layer(state, cfg, layer: int, inputs: dict, bar=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean Jacobian (d, d) float64 and per-sample statistics (N, 5) float64 of block ``layer``.

    A pure function of the model and ``inputs`` (from ``layer_inputs``): the local executor calls
    it in the driver, the Ray executor on a worker that holds its own copy of the model.
    """
    bundle, calls = state
    if cfg.mode == "isolated":
        n = len(inputs["states"])
        row_chunk = auto_row_chunk(bundle, cfg.batch_size)
        batches = layer_jacobians_isolated(bundle, calls[layer], inputs["states"], cfg.batch_size, row_chunk)
    else:
        from resdyn.compute.models import tokenize

        seqs = tokenize(bundle, inputs["texts"])
        n = len(seqs)
        batches = layer_jacobians_in_context(bundle, layer, seqs, auto_row_chunk(bundle, 1), inputs.get("positions"))
    total = None
    stats = np.zeros((n, len(STAT_COLUMNS)), dtype=np.float64)
    for start, jac in batches:
        part = batch_sum(jac)
        if not all_finite(part):  # a NaN or inf anywhere in the batch reaches its sum
            raise ResdynError(f"non-finite Jacobian at layer {layer}, samples {start}..; recompute under a new "
                              "--run-id with --dtype float64")
        if total is None:
            total = part
        else:
            total += part
        stats[start:start + len(jac)] = gram_stats(jac).cpu().numpy()
        if bar is not None:
            bar.update(len(jac))
    mean = total / n
    return (mean if isinstance(mean, np.ndarray) else mean.cpu().numpy()), stats


def batch_sum(jac: torch.Tensor) -> np.ndarray | torch.Tensor:
    """Σ_i J_i (d, d) float64 of a batch (B, d, d), summed in float64 where the batch lives. On the
    CPU through numpy (an ndarray): torch's threaded reduction stalls when the two cores are
    shared (8 ms against 0.3 ms per Jacobian at d = 576, measured). Elsewhere a tensor on the
    device, so the running sum crosses to the host once per layer."""
    if jac.device.type == "cpu":
        return jac.detach().numpy().sum(0, dtype=np.float64)
    return jac.sum(0, dtype=torch.float64)


def all_finite(a: np.ndarray | torch.Tensor) -> bool:
    return bool(np.isfinite(a).all()) if isinstance(a, np.ndarray) else bool(torch.isfinite(a).all())


def save_layer(store, layer: int, result: tuple[np.ndarray, np.ndarray]) -> None:
    """Checkpoint one layer. Atomic: a kill mid-layer leaves no checkpoint for that layer."""
    mean_path, stats_path = checkpoint_paths(store.partial_dir("jacobians"), layer)
    save_npy(mean_path, result[0])
    save_npy(stats_path, result[1])


def run(ctx) -> None:
    store = ctx.store
    acts = store.read_array("activations")
    N, twoL, d = acts.shape
    L = twoL // 2
    todo = pending_layers(ctx)
    if todo:  # the model is loaded only when a layer is left (after a Ray executor, none is)
        state = prepare_worker(ctx.model(), ctx.cfg)
        bar = ctx.progress(total=len(todo) * N, desc=f"jacobians ({ctx.cfg.mode})", unit="J")
        for l in todo:
            save_layer(store, l, compute_layer(state, ctx.cfg, l, layer_inputs(ctx, l), bar))
        bar.close()
    part = store.partial_dir("jacobians")
    means = np.stack([np.load(checkpoint_paths(part, l)[0], allow_pickle=False) for l in range(L)])
    stats = np.stack([np.load(checkpoint_paths(part, l)[1], allow_pickle=False) for l in range(L)])
    store.write_array("jacobians", means.astype(np.float32))
    samples = pd.DataFrame(stats.reshape(L * N, -1), columns=list(STAT_COLUMNS))
    samples.insert(0, "sample", np.tile(np.arange(N, dtype=np.int32), L))
    samples.insert(0, "layer", np.repeat(np.arange(L, dtype=np.int32), N))
    store.write_table("samples", samples)
    store.clear_partial("jacobians")


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py

# Per-layer units for the executors (resdyn.compute.executors): a Ray worker computes whole layers.
SPLITS = {"jacobians": Split(pending=pending_layers, inputs=layer_inputs, prepare=prepare_worker,
                             compute=compute_layer, save=save_layer)}
