"""The "cumulative" stage at paper scale on the CPU: exact products against the rank-512 truncation.

Random mean Jacobians J̄_l = I + 0.5 G_l / √d (G_l i.i.d. standard normal, seeded), stored as the
stage reads them: a float32 (L, d, d) ``jacobians.npy`` in a scratch run store. The real stage
function runs twice on it, exact (the default, K = d) and with ``--cumulative-rank 512`` (the
paper's truncation, the baseline), then the exact product once more in float32 to measure what
that precision would cost in erank. Prints seconds, erank(P_0) and erank(P_{L−1}) of each, and the
cost of one ``svdvals`` against one Gram ``eigvalsh`` at this d.

    nice python benchmarks/cumulative.py                # d = 4096, L = 32 (the issue's size)
    python benchmarks/cumulative.py --d 1024 --layers 8

BLAS runs with ``--threads`` threads (default 1): on the shared 2-core machine under load LAPACK
was measured several times slower with two threads than with one. The scratch files (L·d²·4 bytes:
2.1 GB at the default size) go to ``--scratch`` (default: a temporary directory) and are deleted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.linalg as sl  # noqa: E402
from numpy.lib.format import open_memmap  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from resdyn.compute.context import RunContext  # noqa: E402
from resdyn.compute.stages.cumulative import run as compute_cumulative  # noqa: E402
from resdyn.config import RunConfig  # noqa: E402
from resdyn.core import spectral  # noqa: E402
from resdyn.core.store import RunStore  # noqa: E402


def scratch_run(root: Path, run_id: str, d: int, n_layers: int, seed: int, jac_from: Path | None = None) -> RunStore:
    """A run store holding only a manifest and ``jacobians.npy`` (written, or hard-linked from ``jac_from``)."""
    store = RunStore(root / run_id)
    store.path.mkdir(parents=True)
    store.write_manifest({"run_id": run_id, "n_layers": n_layers, "d_model": d, "stages_done": [],
                          "timings": {}, "status": "partial"})
    path = store.array_path("jacobians")
    if jac_from is not None:
        os.link(jac_from, path)
        return store
    arr = open_memmap(path, mode="w+", dtype=np.float32, shape=(n_layers, d, d))
    rng = np.random.default_rng(seed)
    for l in range(n_layers):
        g = rng.standard_normal((d, d), dtype=np.float32)
        g *= 0.5 / np.sqrt(d)
        g[np.diag_indices(d)] += 1.0
        arr[l] = g
    arr.flush()
    del arr
    return store


def timed_stage(store: RunStore, rank: int | None) -> tuple[float, np.ndarray]:
    ctx = RunContext(RunConfig(runs_dir=store.path.parent, run_id=store.run_id, cumulative_rank=rank), store,
                     quiet=True)
    t0 = time.perf_counter()
    compute_cumulative(ctx)
    secs = time.perf_counter() - t0
    return secs, store.read_table("cumulative").sort_values("layer")["erank"].to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--baseline-rank", type=int, default=spectral.K_CUM)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", default=None, help="directory for the scratch runs (default: a temp dir)")
    args = ap.parse_args()
    d, n_layers = args.d, args.layers
    root = Path(tempfile.mkdtemp(prefix="resdyn-cumulative-", dir=args.scratch))
    try:
        with threadpool_limits(limits=args.threads, user_api="blas"):
            print(f"d = {d}, L = {n_layers}, BLAS threads = {args.threads}, CPUs = {os.cpu_count()}", flush=True)
            t0 = time.perf_counter()
            exact = scratch_run(root, "exact", d, n_layers, args.seed)
            print(f"random Jacobians      {time.perf_counter() - t0:8.1f} s  (float32, {n_layers * d * d * 4 / 2**30:.1f} GiB)",
                  flush=True)
            truncated = scratch_run(root, "truncated", d, n_layers, args.seed, jac_from=exact.array_path("jacobians"))

            t_exact, e_exact = timed_stage(exact, None)
            print(f"exact, float64        {t_exact:8.1f} s  erank(P_0) = {e_exact[0]:.2f}, "
                  f"erank(P_{n_layers - 1}) = {e_exact[-1]:.2f}", flush=True)
            t_trunc, e_trunc = timed_stage(truncated, args.baseline_rank)
            print(f"truncated, K = {args.baseline_rank:<5}  {t_trunc:8.1f} s  erank(P_0) = {e_trunc[0]:.2f}, "
                  f"erank(P_{n_layers - 1}) = {e_trunc[-1]:.2f}", flush=True)

            jac = exact.read_array("jacobians")
            t0 = time.perf_counter()
            e32 = spectral.cumulative_products(jac, dtype=np.float32).erank
            t32 = time.perf_counter() - t0
            rel = np.max(np.abs(e32 - e_exact) / e_exact)
            print(f"exact, float32        {t32:8.1f} s  max |Δerank| = {np.max(np.abs(e32 - e_exact)):.2e} "
                  f"({rel:.1e} relative) against float64", flush=True)

            p = np.asarray(jac[0], dtype=np.float64)
            t0 = time.perf_counter()
            sl.svdvals(p, check_finite=False)
            t_svd = time.perf_counter() - t0
            t0 = time.perf_counter()
            sl.eigvalsh(p @ p.T, check_finite=False, overwrite_a=True)
            t_gram = time.perf_counter() - t0
            print(f"one layer: svdvals {t_svd:.1f} s, Gram + eigvalsh {t_gram:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
