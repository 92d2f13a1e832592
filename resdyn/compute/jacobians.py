"""Stage "jacobians": exact block Jacobians J_l = ∂h_{l+1}/∂h_l per sample (METHODS §2).

The engine is ``torch.func.vmap(jacrev(block))``: one forward per sample batch and one batched
backward over all d output rows, so there is no Python loop over columns. Memory is bounded by
``row_chunk`` (output rows per backward) and the sample batch size.

Per sample it keeps σ_max, σ_min, κ, ‖J‖_F and PR, taken from the float64 Gram matrix JᵀJ
(eigvalsh), and it accumulates the mean Jacobian in float64. Each finished layer is checkpointed
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
from resdyn.compute.stages import Stage
from resdyn.core.store import save_npy
from resdyn.errors import ResdynError

STAT_COLUMNS = ("sigma_max", "sigma_min", "kappa", "fro", "pr")


def default_row_chunk(d: int) -> int | None:
    """Output rows per batched backward: all of them for small d, bounded for d ≥ 2048."""
    return None if d < 2048 else 512


def batched_jacobian(fn, states: torch.Tensor, row_chunk: int | None = None) -> torch.Tensor:
    """Jacobians of ``fn`` (d,) -> (d,) at each of ``states`` (B, d): (B, d_out, d_in)."""
    with torch.enable_grad():
        return vmap(jacrev(fn, chunk_size=row_chunk))(states)


def gram_stats(jac: torch.Tensor) -> torch.Tensor:
    """(B, d, d) Jacobians -> (B, 5) float64: σ_max, σ_min, κ, ‖J‖_F, PR.

    σ² are the eigenvalues of G = JᵀJ, formed in float64 so that κ up to ~1e6 keeps about four
    digits; PR = tr(G)² / ‖G‖_F² (METHODS §2). Cheaper than an SVD per sample (benchmarked).
    """
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


def layer_jacobians_in_context(bundle, layer: int, seqs: list[torch.Tensor], row_chunk=None):
    """Yield (i, J (1, d, d)): the last token's J_{t,t} with the rest of sample i held fixed."""
    for i, ids in enumerate(seqs):
        trace = traced_forward(bundle, ids[None])
        ctx_states = trace.inputs[layer].to(bundle.dtype)
        fn = in_context_fn(trace.calls[layer], ctx_states)
        x = ctx_states[0, -1]
        with torch.enable_grad():
            yield i, jacrev(fn, chunk_size=row_chunk)(x)[None]


def run(ctx) -> None:
    bundle = ctx.model()
    store = ctx.store
    acts = store.read_array("activations")
    N, twoL, d = acts.shape
    L = twoL // 2
    part = store.partial_dir("jacobians")
    row_chunk = default_row_chunk(d)
    calls = isolated_calls(bundle) if ctx.cfg.mode == "isolated" else None
    seqs = None
    if ctx.cfg.mode == "in-context":
        from resdyn.compute.activations import tokenize

        seqs = tokenize(bundle, ctx.texts())
    bar = ctx.progress(total=L * N, desc=f"jacobians ({ctx.cfg.mode})", unit="J")
    for l in range(L):
        mean_path, stats_path = part / f"mean_{l:03d}.npy", part / f"stats_{l:03d}.npy"
        if mean_path.is_file() and stats_path.is_file():
            bar.update(N)
            continue
        total = torch.zeros((d, d), dtype=torch.float64, device=bundle.device)
        stats = np.zeros((N, len(STAT_COLUMNS)), dtype=np.float64)
        if calls is not None:
            batches = layer_jacobians_isolated(bundle, calls[l], acts[:, 2 * l], ctx.cfg.batch_size, row_chunk)
        else:
            batches = layer_jacobians_in_context(bundle, l, seqs, row_chunk)
        for start, jac in batches:
            if not torch.isfinite(jac).all():
                raise ResdynError(f"non-finite Jacobian at layer {l}, samples {start}..; rerun with --dtype float64")
            total += jac.to(torch.float64).sum(0)
            stats[start:start + len(jac)] = gram_stats(jac).cpu().numpy()
            bar.update(len(jac))
        # Atomic: a kill mid-layer leaves no checkpoint for that layer.
        save_npy(mean_path, (total / N).cpu().numpy())
        save_npy(stats_path, stats)
    bar.close()
    means = np.stack([np.load(part / f"mean_{l:03d}.npy", allow_pickle=False) for l in range(L)])
    stats = np.stack([np.load(part / f"stats_{l:03d}.npy", allow_pickle=False) for l in range(L)])
    store.write_array("jacobians", means.astype(np.float32))
    samples = pd.DataFrame(stats.reshape(L * N, -1), columns=list(STAT_COLUMNS))
    samples.insert(0, "sample", np.tile(np.arange(N, dtype=np.int32), L))
    samples.insert(0, "layer", np.repeat(np.arange(L, dtype=np.int32), N))
    store.write_table("samples", samples)
    store.clear_partial("jacobians")


STAGE = Stage(
    name="jacobians", fn=run, requires=("activations",), needs_model=True,
    outputs=("jacobians.npy", "samples.parquet"),
    description="exact per-sample block Jacobians, their statistics and the float64 mean",
)
