"""One snapshot of the topology stage at paper scale: correlation, top-k graph and signed CPM Leiden.

Synthetic activations (N, d) float32 with planted signed communities: unit u loads on the latent
factor of its community, communities 2j and 2j+1 are anti-correlated (so the graph has negative
edges), plus unit noise. Prints the seconds of each step, their total (target ≤ 30 s at
d = 4096, N = 1,000 on a CPU), the number of communities found and their NMI with the planted ones.
Usage: python benchmarks/topology.py [--d 4096] [--samples 1000] [--communities 80] [--methods cpm]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from resdyn.core import communities as T
from resdyn.core.correlation import correlation


def planted_activations(n: int, d: int, n_comm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) float32 activations and (d,) planted labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(d) % n_comm)
    f = rng.standard_normal((n, n_comm))
    pairs = 2 * (n_comm // 2)
    f[:, 1:pairs:2] = -0.8 * f[:, 0:pairs:2] + 0.6 * f[:, 1:pairs:2]
    x = f[:, labels] * rng.uniform(0.3, 1.5, d) + 0.8 * rng.standard_normal((n, d))
    return x.astype(np.float32), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--communities", type=int, default=80)
    ap.add_argument("--methods", default="cpm", help="comma-separated, or 'all' (cpm is the timed target)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, planted = planted_activations(args.samples, args.d, args.communities, args.seed)
    print(f"d = {args.d}, N = {args.samples}, planted communities = {args.communities}, "
          f"CPU threads = {os.cpu_count()}")

    t0 = time.perf_counter()
    corr = correlation(x)
    t1 = time.perf_counter()
    i, j, w = T.top_k_graph(corr, T.TOP_K)
    t2 = time.perf_counter()
    print(f"correlation          {t1 - t0:7.2f} s")
    print(f"top-{T.TOP_K} graph         {t2 - t1:7.2f} s   ({len(w)} edges, {np.mean(w < 0):.0%} negative)")
    total = t2 - t0
    for m in T.methods_for(args.methods) if args.methods == "all" else args.methods.split(","):
        t3 = time.perf_counter()
        lab = T.detect(m, args.d, i, j, w, seed=args.seed)
        t4 = time.perf_counter()
        sizes = np.bincount(lab)
        print(f"{m:<20} {t4 - t3:7.2f} s   ({int((sizes >= 2).sum())} communities of ≥ 2 units, "
              f"NMI with planted {T.nmi(lab, planted):.3f})")
        if m == "cpm":
            total += t4 - t3
            t5 = time.perf_counter()
            T.participation(lab, i, j, w)
            print(f"participation        {time.perf_counter() - t5:7.2f} s")
    print(f"TOTAL correlation + graph + signed CPM: {total:.2f} s (target ≤ 30 s)")


if __name__ == "__main__":
    main()
