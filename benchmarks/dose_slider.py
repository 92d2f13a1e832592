"""Seconds per call of the dashboard's live Schur dose (``resdyn.core.dose``) at demo scale.

    python benchmarks/dose_slider.py                      # synthetic run, d = 576, L = 30 (SmolLM2's size)
    python benchmarks/dose_slider.py --init random        # near-identity layers: a high-erank product
    python benchmarks/dose_slider.py --d 256 --layers 12  # another size
    python benchmarks/dose_slider.py --work-dir /tmp/db   # keep the prepared run and reuse it next time
    python benchmarks/dose_slider.py --run-dir data/runs/smollm2-135m   # a real run with the schur stage
    python benchmarks/dose_slider.py --threads 0          # BLAS threads of a live call (0: library default)

It builds a synthetic run (``resdyn.testing.synthetic``), takes the Schur factors of every layer
(the "schur" stage's first half) and the dose grid, then times:

- the one-time precomputation of a run (``LiveDose``: A = QΛQ*, B = J̄ − A for every layer);
- one live call at a dose c off the grid, with the singular values of one layer (what the page
  asks for on every slider move), the same at skip weight β = 0.5, and with every layer's;
- the interpolated fallback (the stored grid) for comparison.

Prints the median wall-clock and CPU seconds over ``--repeat`` calls (on a shared machine the wall
time follows the load, the CPU time much less); the target is ≤ 1 s per live call on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resdyn.compute.stages.schur import schur_factors  # noqa: E402
from resdyn.core import dose, spectral  # noqa: E402
from resdyn.core.store import RunStore  # noqa: E402
from resdyn.testing.synthetic import make_synthetic_run  # noqa: E402


def prepare(root: Path, d: int, n_layers: int, init: str) -> RunStore:
    """A synthetic run with schur_Q/schur_T (canonical order) and the dose rows of schur_dose (reused if present)."""
    run_id = f"bench-{init}-d{d}-L{n_layers}"
    store = RunStore(root / run_id)
    if store.has_table("schur_dose"):
        return store
    t0 = time.perf_counter()
    store = make_synthetic_run(root, run_id, n_layers=n_layers, d=d, n_samples=4, seed=0, init=init)
    jac = store.read_array("jacobians")
    # One BLAS thread: on the shared 2-core machine the Schur forms took 25 s this way and 450 s
    # with OpenBLAS's own threads while other processes ran.
    with threadpool_limits(limits=1, user_api="blas"):
        q, t, err = schur_factors(jac)
    store.write_array("schur_Q", q)
    store.write_array("schur_T", t)
    fam = spectral.family_from_layers((spectral.dose_layer(q[l], t[l], jac[l]) for l in range(n_layers)),
                                      n_layers, d)
    rows = []
    for c in spectral.DOSE_GRID:
        with threadpool_limits(limits=1, user_api="blas"):
            s = spectral.family_stats(fam, c)
        rows.append({"mode": "J", "construction": "dose", "draw": 0, "c": c, "beta": 1.0, "erank": s.erank,
                     "log10_fro": s.log10_fro, "henrici": s.henrici})
    store.write_table("schur_dose", pd.DataFrame(rows))
    print(f"prepared synthetic run d={d}, L={n_layers} in {time.perf_counter() - t0:.1f} s "
          f"(Schur reconstruction error {err:.1e})")
    return store


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall-clock seconds, median CPU seconds (all threads of the process) and the last result.

    On a shared machine the wall time depends on the load; the CPU time much less so.
    """
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=dose.LIVE_BLAS_THREADS or 0,
                    help="BLAS threads of a live call, dose.LIVE_BLAS_THREADS (0: the library's default)")
    ap.add_argument("--init", choices=("pretrained", "random"), default="pretrained",
                    help="synthetic operators: trained-like (low erank) or near-identity (high erank)")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="keep the prepared synthetic run here and reuse it next time (default: a temporary dir)")
    ap.add_argument("--run-dir", type=Path, default=None, help="benchmark an existing run instead")
    ns = ap.parse_args(argv)
    dose.LIVE_BLAS_THREADS = ns.threads or None
    with tempfile.TemporaryDirectory() as tmp:
        work = ns.work_dir or Path(tmp)
        store = RunStore(ns.run_dir) if ns.run_dir else prepare(work, ns.d, ns.layers, ns.init)
        m = store.manifest()
        n_layers, d = int(m["n_layers"]), int(m["d_model"])
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"run {store.run_id}: L={n_layers}, d={d}; BLAS threads of a live call: {ns.threads or 'default'}; "
              f"cpus: {os.cpu_count()}; load average {load:.1f}")
        t0 = time.perf_counter()
        live = dose.live_dose(store)
        print(f"precompute (once per run):                  {time.perf_counter() - t0:7.3f} s wall")
        print("                                              wall s   CPU s")
        mid = n_layers // 2
        cs = iter(np.linspace(0.13, 1.87, 4 * ns.repeat))  # off-grid doses, a fresh c every call
        sec, cpu, res = timed(lambda: live.evaluate(next(cs), layers=[mid]), ns.repeat)
        print(f"live call, one layer's σ (the page):       {sec:7.3f} {cpu:7.3f}   "
              f"erank={res.erank:.3g} log10‖P‖={res.log10_fro:.2f} henrici={res.henrici:.3f}")
        sec_b, cpu_b, _ = timed(lambda: live.evaluate(next(cs), layers=[mid], beta=0.5), ns.repeat)
        print(f"live call at β = 0.5 (the skip slider):    {sec_b:7.3f} {cpu_b:7.3f}")
        sec_all, cpu_all, _ = timed(lambda: live.evaluate(next(cs), layers=None), max(1, ns.repeat // 2))
        print(f"live call, every layer's σ:                {sec_all:7.3f} {cpu_all:7.3f}")
        limit = threadpool_limits(limits=ns.threads, user_api="blas") if ns.threads else contextlib.nullcontext()
        with limit:
            sec_p, cpu_p, _ = timed(lambda: spectral.chain_product(live.family, next(cs)), ns.repeat)
            p, scale = spectral.chain_product(live.family, 0.77)
            sec_s, cpu_s, st = timed(lambda: spectral.product_stats(p, scale), ns.repeat)
        print(f"  of which the product P(c):               {sec_p:7.3f} {cpu_p:7.3f}")
        print(f"  and its SVD + eigenvalues (core {st.rank_used:4d}): {sec_s:7.3f} {cpu_s:7.3f}")
        sec_i, cpu_i, _ = timed(lambda: dose.dose_response(store, 0.6, layers=[mid], path="interpolated"),
                                ns.repeat)
        print(f"interpolated fallback, one layer's σ:      {sec_i:7.3f} {cpu_i:7.3f}")
        print(f"target ≤ 1 s per live call: {'met' if sec <= 1.0 else 'NOT met'} ({sec:.3f} s wall"
              f"{'; the machine is loaded, see the CPU column' if load > 1.5 else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
