"""Jacobians per second: resdyn's engines against naive per-sample autograd.

Both compute the same isolated-block Jacobians (METHODS §2) of the same model on the same
samples in the same process; the script prints both rates and their ratio. The model is
SmolLM2-135M (d = 576) when its offline package is installed, else a random model with its
config. Usage: python benchmarks/jacobians.py [--samples 8] [--layer 10] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch

from resdyn.compute.blocks import isolated_calls, isolated_fn
from resdyn.compute.stages.jacobians import batched_jacobian, gram_stats, isolated_jacobians
from resdyn.compute.models import load_bundle, resolve_device
from resdyn.config import RunConfig


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args()
    cfg = RunConfig(model=args.model, device=args.device, dtype=args.dtype, run_id="bench")
    bundle = load_bundle(cfg)
    device = resolve_device(args.device)
    call = isolated_calls(bundle)[args.layer]
    fn = isolated_fn(call)
    d = bundle.d_model
    g = torch.Generator().manual_seed(0)
    h = torch.randn(args.samples, d, generator=g).to(device=device, dtype=bundle.dtype) * 2.0
    batched_jacobian(fn, h[:1])  # warm-up
    fast, t_fast = timed(lambda: batched_jacobian(fn, h), device)
    closed, t_closed = timed(lambda: isolated_jacobians(bundle.adapter, call, h), device)
    _, t_stats = timed(lambda: gram_stats(fast), device)
    naive, t_naive = timed(lambda: torch.stack([torch.autograd.functional.jacobian(fn, x) for x in h]), device)
    err = (fast - naive).abs().max().item()
    err_closed = (closed - naive).abs().max().item()
    has_closed = bundle.adapter.isolated_jacobian is not None
    n = args.samples
    print(f"model {args.model}  d={d}  layer {args.layer}  samples {n}  device {device}  dtype {args.dtype}  threads {torch.get_num_threads()}")
    print(f"naive  torch.autograd.functional.jacobian : {n / t_naive:8.2f} J/s  ({t_naive:.2f} s)")
    print(f"resdyn vmap(jacrev) autodiff engine       : {n / t_fast:8.2f} J/s  ({t_fast:.2f} s)  {t_naive / t_fast:6.1f}x naive")
    if has_closed:
        print(f"resdyn closed-form isolated path          : {n / t_closed:8.2f} J/s  ({t_closed:.2f} s)  {t_naive / t_closed:6.1f}x naive"
              f"  max |difference| {err_closed:.2e}")
    print(f"per-sample stats (float64 Gram eigvalsh)  : {n / t_stats:8.2f} J/s  ({t_stats:.2f} s)")
    best = min(t_fast, t_closed) if has_closed else t_fast
    print(f"speed-up of the pipeline's path vs naive  : {t_naive / best:8.1f}x   (autodiff max |difference| {err:.2e})")


if __name__ == "__main__":
    main()
