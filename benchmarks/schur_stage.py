"""Seconds of the "schur" stage (METHODS §6) at demo scale, on dense random mean Jacobians.

    python benchmarks/schur_stage.py                    # d = 576, L = 30 (SmolLM2's size)
    python benchmarks/schur_stage.py --d 256 --layers 12

It writes a synthetic run (``resdyn.testing.synthetic``) and replaces its Jacobians by dense
J̄_l = I + 0.9·G_l/√d (G_l i.i.d. standard Gaussian, seeded): unlike the synthetic run's
block-structured operators these have no structure a Schur form could exploit, like a real
model's. It then times, with the stage's own functions:

- the canonical Schur forms of every layer (LAPACK real Schur, rsf2csf, ztrexc reordering);
- one random-order draw of every layer (the ordering band has ``N_DRAWS`` of them);
- one chain P(c) with its statistics (the grid has about a hundred);
- the whole stage (``geometry.run``), wall and CPU seconds,

and prints the complex64 chain's erank against a complex128 product at c = 0 and 2, and the
ordering band's width at c = 0, 1 and 2 (relative to the canonical order's erank).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resdyn.compute.stages import schur as geometry  # noqa: E402
from resdyn.compute.context import RunContext  # noqa: E402
from resdyn.config import RunConfig  # noqa: E402
from resdyn.core import dose, spectral  # noqa: E402
from resdyn.testing.synthetic import make_synthetic_run  # noqa: E402


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--scale", type=float, default=0.9, help="J̄_l = I + scale·G/√d")
    ap.add_argument("--work-dir", type=Path, default=None)
    ns = ap.parse_args(argv)
    d, n_layers = ns.d, ns.layers
    with tempfile.TemporaryDirectory() as tmp:
        root = ns.work_dir or Path(tmp)
        store = make_synthetic_run(root, "bench-schur", n_layers=n_layers, d=d, n_samples=4, seed=0)
        rng = np.random.default_rng(0)
        jac = np.empty((n_layers, d, d), np.float32)
        for l in range(n_layers):
            jac[l] = np.eye(d) + ns.scale * rng.standard_normal((d, d)) / np.sqrt(d)
        store.write_array("jacobians", jac)
        print(f"dense random J̄: d = {d}, L = {n_layers}")
        with geometry.single_blas_thread():
            w, c, (q, t, err) = timed(lambda: geometry.schur_factors(jac))
            print(f"canonical Schur forms:            {w:7.2f} s wall {c:7.2f} s CPU  ({w / n_layers:.3f} s a layer, "
                  f"error {err:.1e})")
            w, c, fam = timed(lambda: geometry.order_draw_family(q, t, jac, 0, 0))
            print(f"one random-order draw, all layers: {w:6.2f} s wall {c:7.2f} s CPU  ({w / n_layers:.3f} s a layer)")
            w, c, st = timed(lambda: spectral.family_stats(fam, 0.5))
            print(f"one chain P(c) and its statistics: {w:6.2f} s wall {c:7.2f} s CPU")
            dose_fam = spectral.family_from_layers(
                (spectral.dose_layer(q[l], t[l], jac[l]) for l in range(n_layers)), n_layers, d)
            for cc in (0.0, 2.0):
                p = np.eye(d, dtype=np.complex128)
                for l in range(n_layers):
                    p = spectral.dose_matrix(q[l].astype(np.complex128), t[l].astype(np.complex128), cc) @ p
                    p /= np.abs(p).max()
                e128 = spectral.erank(np.linalg.svd(p, compute_uv=False))
                e64 = spectral.family_stats(dose_fam, cc).erank
                print(f"erank at c = {cc:g}: complex64 chain {e64:.6g}, complex128 {e128:.6g} "
                      f"(relative difference {abs(e64 - e128) / e128:.1e})")
        del fam, dose_fam
        ctx = RunContext(RunConfig(runs_dir=root, run_id="bench-schur", seed=0), store, quiet=True)
        w, c, _ = timed(lambda: geometry.run(ctx))
        print(f"whole schur stage:                 {w:6.1f} s wall {c:7.1f} s CPU")
        df = store.read_table("schur_dose")
        band = dose.order_band(df).set_index("c")
        for cc in (0.0, 1.0, 2.0):
            b = band.loc[cc]
            print(f"ordering band at c = {cc:g}: erank {b['lo']:.4g}–{b['hi']:.4g} "
                  f"(width {100 * (b['hi'] - b['lo']) / b['dose']:.2f} % of the canonical {b['dose']:.4g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
