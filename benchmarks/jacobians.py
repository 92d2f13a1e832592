"""Per-sample Jacobian work: resdyn's two Jacobian stages against the paper's method, in one run.

The paper's method, per sample: ``torch.autograd.functional.jacobian`` of the isolated block and
``torch.linalg.svd`` of the result, giving σ_max, σ_min, κ, ‖J‖_F and PR (METHODS §2). resdyn's
per-sample work is what its two stages that take the Jacobians do for a layer (each stage's
``compute_layer``): ``jacobians`` sums them over the samples in float64 (for Llama and Phi-3 from
the closed-form sum, ``Adapter.isolated_jacobian_sum``, without forming any of them; else in
batches of ``--batch-size``); ``sample_stats`` takes every sample's Jacobian (the adapter's closed
form where it has one, else ``vmap(jacrev)``), batch by batch, and reduces each to the statistics
(``gram_stats``). Both methods run
on the same samples, the real states of the first ``--samples`` passages at the input of
``--layer``, in the same process; the script prints the rates, the ratio of the paper's time to
both stages' and to ``sample_stats`` alone (the stage that gives the paper's output), both
methods' errors against a float64 SVD of the same Jacobians, and the parts: the ``vmap(jacrev)``
engine, the closed form, the statistics, and the statistics they replaced (float64 Gram
eigenvalues, σ_min refined through an LU of J where κ > 1e5). The paper's loop is cut into
``--repeats`` chunks with a run of both stages after each, so that both see the same machine
load; each stage's time is the median of those runs. The load average is printed because the
2-core machine is often shared.

Usage: python benchmarks/jacobians.py [--model smollm2-135m] [--samples 16] [--layer 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from resdyn.compute.blocks import isolated_calls, isolated_fn
from resdyn.compute.corpus import passages
from resdyn.compute.models import load_bundle, resolve_device, tokenize
from resdyn.compute.block_jacobians import batched_jacobian, gram_stats, isolated_jacobians, layer_jacobians_isolated
from resdyn.compute.stages import jacobians as mean_stage
from resdyn.compute.stages import sample_stats as stats_stage
from resdyn.compute.stages.activations import extract
from resdyn.config import RunConfig


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def svd_stats(s: torch.Tensor) -> np.ndarray:
    """(5,) σ_max, σ_min, κ, ‖J‖_F, PR from singular values s (d,), in float64 (METHODS §2)."""
    s = s.to(torch.float64)
    s2 = s**2
    return np.array([s[0], s[-1], s[0] / s[-1], s2.sum().sqrt(), s2.sum() ** 2 / (s2**2).sum()],
                    dtype=np.float64)


def svdvals64(jac: torch.Tensor) -> torch.Tensor:
    """Singular values (d,) of one Jacobian in float64 (numpy's SVD, descending)."""
    return torch.from_numpy(np.linalg.svd(jac.detach().cpu().double().numpy(), compute_uv=False))


def paper_method(fn, states: torch.Tensor) -> np.ndarray:
    """Per sample: one autograd Jacobian, one full SVD. Returns (N, 5) statistics."""
    rows = []
    for x in states:
        jac = torch.autograd.functional.jacobian(fn, x)
        _, s, _ = torch.linalg.svd(jac)
        rows.append(svd_stats(s))
    return np.stack(rows)


def previous_stats(jac: torch.Tensor) -> torch.Tensor:
    """The statistics this stage used before (for comparison): the float64 Gram matrix JᵀJ and all
    its eigenvalues, with σ_min taken again through an LU of J and Lanczos on its inverse
    (scipy's ARPACK) where κ > 1e5."""
    import scipy.linalg as sl
    from scipy.sparse.linalg import LinearOperator, eigsh

    j = jac.to(torch.float64)
    g = j.mT @ j
    ev = torch.linalg.eigvalsh(g).clamp_min(0)
    smax, smin = ev[:, -1].sqrt(), ev[:, 0].sqrt()
    for i in torch.nonzero(smax > 1e5 * smin).flatten().tolist():
        lu = sl.lu_factor(j[i].numpy(), check_finite=False)
        inv = LinearOperator(g.shape[1:], dtype=np.float64, matvec=lambda x: sl.lu_solve(
            lu, sl.lu_solve(lu, x, trans=1, check_finite=False), check_finite=False))
        top = eigsh(inv, k=1, which="LA", tol=1e-13, v0=np.ones(g.shape[1]), return_eigenvectors=False)[0]
        smin[i] = 1.0 / np.sqrt(top)
    tr = torch.diagonal(g, dim1=1, dim2=2).sum(-1)
    return torch.stack([smax, smin, smax / smin, tr.sqrt(), tr**2 / (g * g).sum((1, 2))], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=RunConfig.batch_size)
    ap.add_argument("--repeats", type=int, default=4,
                    help="runs of both stages, one after each chunk of the paper's loop")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both methods (the statistics use as many); default torch's own")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(model=args.model, device=args.device, dtype=args.dtype, run_id="bench",
                    batch_size=args.batch_size)
    load0 = os.getloadavg()[0]
    bundle = load_bundle(cfg)
    device = resolve_device(args.device)
    texts = passages(cfg.corpus)[:args.samples]
    acts, _ = extract(bundle, tokenize(bundle, texts))
    states_np = np.ascontiguousarray(acts[:, 2 * args.layer])
    calls = isolated_calls(bundle)
    call, fn = calls[args.layer], isolated_fn(calls[args.layer])
    h = torch.tensor(states_np, device=device, dtype=bundle.dtype)
    n, d = len(h), bundle.d_model

    def stages():
        """Both stages' work on this layer: (statistics (N, 5), seconds of jacobians, of sample_stats)."""
        inputs = {"states": states_np}
        _, t_mean = timed(lambda: mean_stage.compute_layer((bundle, calls), cfg, args.layer, inputs), device)
        stats, t_stats_stage = timed(lambda: stats_stage.compute_layer((bundle, calls), cfg, args.layer, inputs),
                                     device)
        return stats, t_mean, t_stats_stage

    # Interleaved, so that both methods see the same machine load: the paper's method one chunk
    # of samples at a time, a run of both stages (all samples) after each chunk.
    ours, _, _ = stages()  # warm-up; also the statistics compared below
    chunk = max(1, -(-n // args.repeats))
    paper, t_paper, runs = [], 0.0, []
    for start in range(0, n, chunk):
        rows, t = timed(lambda: paper_method(fn, h[start:start + chunk]), device)
        paper.append(rows)
        t_paper += t
        runs.append(stages()[1:])
    paper = np.concatenate(paper)
    t_mean = statistics.median(r[0] for r in runs)
    t_sample = statistics.median(r[1] for r in runs)
    t_stage = statistics.median(r[0] + r[1] for r in runs)

    fast, t_vmap = timed(lambda: batched_jacobian(fn, h), device)
    closed, t_closed = timed(lambda: isolated_jacobians(bundle.adapter, call, h), device)
    jac = closed if bundle.adapter.isolated_jacobian is not None else fast
    t_stats = statistics.median(timed(lambda: gram_stats(jac), device)[1] for _ in range(3))
    t_old = statistics.median(timed(lambda: previous_stats(jac), device)[1] for _ in range(3)) \
        if device.type == "cpu" else float("nan")
    load1 = os.getloadavg()[0]
    # The float64 reference of the stage's statistics must see the stage's own float32 Jacobians
    # (same batches, so the same rounding): at κ = 1e7 one float32 rounding of J moves σ_min by
    # about κ·ε₃₂, i.e. by 1e-2 relative.
    stage_jac = torch.cat([j for _, j in layer_jacobians_isolated(bundle, call, states_np, args.batch_size)])
    with threadpool_limits(limits=1, user_api="blas"):  # float64 references
        exact = np.stack([svd_stats(svdvals64(j)) for j in stage_jac])
        exact_paper = np.stack([svd_stats(svdvals64(torch.autograd.functional.jacobian(fn, x)))
                                for x in h[:min(n, 4)]])

    names = ("sigma_max", "sigma_min", "kappa", "fro", "pr")

    def worst(a, b):
        rel = np.abs(a - b) / np.abs(b)
        return "  ".join(f"{c} {rel[:, i].max():.1e}" for i, c in enumerate(names))

    print(f"model {args.model}  d={d}  layer {args.layer}  samples {n} (batches of {args.batch_size})  "
          f"device {device}  dtype {args.dtype}  torch threads {torch.get_num_threads()}  "
          f"load average {load0:.1f} -> {load1:.1f}")
    print(f"kappa of these samples: median {np.median(exact[:, 2]):.3g}, max {exact[:, 2].max():.3g}")
    print(f"paper: autograd jacobian + svd per sample : {n / t_paper:8.2f} J/s  ({t_paper:.2f} s)")
    print(f"resdyn jacobians stage (float64 mean)     : {n / t_mean:8.2f} J/s  ({t_mean:.3f} s, median)")
    print(f"resdyn sample_stats stage (J + statistics): {n / t_sample:8.2f} J/s  ({t_sample:.3f} s, median)")
    print(f"both stages (each Jacobian taken twice)   : {n / t_stage:8.2f} J/s  ({t_stage:.3f} s, median of "
          f"{len(runs)}: {' '.join(f'{a + b:.3f}' for a, b in runs)} s)")
    print(f"speed-up of both stages over the paper    : {t_paper / t_stage:8.1f}x   (target >= 30x)")
    print(f"speed-up of sample_stats over the paper   : {t_paper / t_sample:8.1f}x   (the same output)")
    print(f"max relative error against a float64 SVD of the same Jacobians:")
    print(f"  resdyn statistics                       : {worst(ours, exact)}")
    first = f"first {len(exact_paper)} samples"
    print(f"  paper's float32 SVD ({first})  : {worst(paper[:len(exact_paper)], exact_paper)}")
    print("parts:")
    print(f"  vmap(jacrev) autodiff engine            : {n / t_vmap:8.2f} J/s  ({t_vmap:.3f} s)")
    if bundle.adapter.isolated_jacobian is not None:
        print(f"  closed-form isolated Jacobian           : {n / t_closed:8.2f} J/s  ({t_closed:.3f} s)"
              f"  max |difference| from autodiff {(closed - fast).abs().max().item():.1e}")
    print(f"  statistics (gram_stats)                 : {n / t_stats:8.2f} J/s  ({t_stats:.3f} s)")
    print(f"  previous statistics (Gram eigvalsh + LU): {n / t_old:8.2f} J/s  ({t_old:.3f} s)")


if __name__ == "__main__":
    main()
