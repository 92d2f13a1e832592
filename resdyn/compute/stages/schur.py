"""Stage "schur" (METHODS §6): complex Schur forms of the mean Jacobians and the dose grid.

Reads ``jacobians.npy`` (L, d, d) float32; writes ``schur_Q.npy``/``schur_T.npy`` (J̄ = Q T Q*,
eigenvalues on T's diagonal in the canonical order ``spectral.SCHUR_ORDER``, recorded as the
manifest's ``schur_order``), (L, d, d) complex64, ``schur_dose.parquet`` (mode, construction,
draw, c, beta, erank, log10_fro, henrici) over the paper's dose grid: the dose, controls A and B,
the dose in random eigenvalue orders and the skip dose βI + R(c); and summary rows ``schur.*``.
numpy/scipy only; the math is ``resdyn.core.spectral`` and ``resdyn.core.dose`` (shared with the
dashboard's live slider).
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from resdyn.compute import executors
from resdyn.compute.stages import mean_jacobians, stages_in
from resdyn.core import dose as dose_mod
from resdyn.core import spectral
from resdyn.errors import ResdynError


def _schur_layer(jac: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One layer's complex Schur factors in the canonical order, as stored: J̄_l (d, d) -> Q, T
    (d, d) complex64 and ‖Q T Q* − J̄_l‖_F / ‖J̄_l‖_F. A pure function, so the executor may run
    layers anywhere (``--executor ray``)."""
    j = np.asarray(jac, np.float64)
    q, t = spectral.schur_canonical(j)
    q, t = q.astype(np.complex64), t.astype(np.complex64)
    return q, t, spectral.schur_error(q, t, j)


def schur_factors(jac: np.ndarray, progress=spectral._no_progress, desc: str = "schur",
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Complex Schur factors of every J̄_l, eigenvalues in ``spectral.SCHUR_ORDER``, as stored.

    Returns Q, T (L, d, d) complex64 and the largest relative reconstruction error of the
    complex64 factors, ‖Q T Q* − J̄‖_F / ‖J̄‖_F (checked against SCHUR_RTOL_32).
    The layers are independent and go through the run's executor (one at a time locally, in
    parallel on a Ray cluster).
    """
    n_layers, d, _ = jac.shape
    q_all = np.empty((n_layers, d, d), np.complex64)
    t_all = np.empty((n_layers, d, d), np.complex64)
    worst = 0.0
    bar = progress(None, desc=desc, total=n_layers, unit="layer")
    jobs = (np.asarray(jac[l]) for l in range(n_layers))
    for l, (q, t, err) in executors.parallel_chunks(_schur_layer, jobs):
        if not err <= spectral.SCHUR_RTOL_32:
            raise ResdynError(f"layer {l}: stored Schur factors reproduce J̄ only to {err:.1e} "
                              f"(limit {spectral.SCHUR_RTOL_32:.0e}); the Jacobian may be corrupt")
        q_all[l], t_all[l] = q, t
        worst = max(worst, err)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return q_all, t_all, worst


# Stream indices of the seeded generators (seed, 0, stream, draw[, layer]); 0 and 1 are controls
# A and B (the 0 after the seed was the mode index when mode R had its own grid: draws unchanged).
_ORDER_STREAM = 2


def _order_draw_layer(job: tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of one layer's dose in a seeded random eigenvalue order, complex64 (d, d) each.

    job = (Q_l, T_l, J̄_l, seed, draw, layer). The stored canonical factors are reordered
    (``spectral.random_order_layer``) and A = Q'ΛQ'*, B = J̄_l − A, so c = 1 is J̄_l whatever the
    order. A pure function of its job: the executor may run layers anywhere.
    """
    q, t, jac, seed, draw, layer = job
    rng = np.random.default_rng([seed, 0, _ORDER_STREAM, draw, layer])
    qr, tr = spectral.random_order_layer(q, t, rng)
    a, b = spectral.dose_layer(qr, tr, jac)
    return a.astype(np.complex64), b.astype(np.complex64)


def order_draw_family(q: np.ndarray, t: np.ndarray, jac: np.ndarray, seed: int, draw: int) -> spectral.DoseFamily:
    """The dose family of random-order draw ``draw`` (layers through the run's executor)."""
    n_layers, d, _ = t.shape
    jobs = [(np.asarray(q[l]), np.asarray(t[l]), np.asarray(jac[l]), int(seed), int(draw), l)
            for l in range(n_layers)]
    return spectral.family_from_layers(executors.parallel_map(_order_draw_layer, jobs), n_layers, d)


def _families(q: np.ndarray, t: np.ndarray, jac: np.ndarray, seed: int):
    """Yield (construction, draw, DoseFamily): the dose, N_DRAWS draws of controls A and B and of
    random eigenvalue orders (METHODS §6)."""
    n_layers, d, _ = t.shape
    yield "dose", 0, spectral.family_from_layers(
        (spectral.dose_layer(q[l], t[l], jac[l]) for l in range(n_layers)), n_layers, d)
    for ci, (name, make) in enumerate((("control_a", spectral.control_a_layer),
                                       ("control_b", spectral.control_b_layer))):
        for draw in range(spectral.N_DRAWS):
            # One generator per (seed, control, draw): draws are reproducible one by one.
            rng = np.random.default_rng([seed, 0, ci, draw])
            yield name, draw, spectral.family_from_layers(
                (make(q[l], t[l], rng) for l in range(n_layers)), n_layers, d)
    for draw in range(spectral.N_DRAWS):
        yield "order_draw", draw, order_draw_family(q, t, jac, seed, draw)


def _one_ahead(items):
    """Yield the items of the iterator ``items``, building the next one in a background thread while
    the caller works on the current one.

    Building a family (Schur reorders, Haar draws, normal parts) is mostly single-threaded; its
    statistics (chain products on two threads, an SVD, eigenvalues) mostly run outside the GIL, so
    the two overlap on the two cores. The items come in their order, so results do not change;
    the background thread runs in a copy of this context, so it sees the run's executor.
    """
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        it = iter(items)
        nxt = pool.submit(ctx.run, next, it, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(ctx.run, next, it, None)
            yield item


def dose_table(q: np.ndarray, t: np.ndarray, jac: np.ndarray, seed: int,
               progress=spectral._no_progress) -> pd.DataFrame:
    """Rows (mode, construction, draw, c, beta, erank, log10_fro, henrici) over DOSE_GRID.

    Every row is mode "J". construction: "dose" (the stored, canonical order), "control_a",
    "control_b", "order_draw" (draws 0..N_DRAWS−1) and "skip" (βI + R(c) for β in SKIP_BETAS,
    draw 0); beta is 1.0 on every row but the skip rows'. Rows equal to another by construction
    are copied, not recomputed: control A at c = 0, every order draw at c = 1 and the skip
    dose at β = 1 are the dose's own rows. At the paper's grid that leaves 97 chains of L − 1
    complex64 products: 7 for the dose, 14 skip, 24 control A, 28 control B, 24 order draws.
    """
    n_fam = 1 + 3 * spectral.N_DRAWS
    rows = []

    def row(construction, draw, c, beta, s):
        rows.append({"mode": "J", "construction": construction, "draw": draw, "c": float(c), "beta": float(beta),
                     "erank": s.erank, "log10_fro": s.log10_fro, "henrici": s.henrici})

    stats = {}
    for construction, draw, fam in progress(_one_ahead(_families(q, t, jac, seed)), desc="dose grid",
                                            total=n_fam, unit="family"):
        for c in spectral.DOSE_GRID:
            if (construction == "control_a" and c == 0.0) or (construction == "order_draw" and c == 1.0):
                # c = 0 adds 0·M: identical to the dose at c = 0. In any eigenvalue order c = 1 is
                # A + (J̄ − A) = J̄, the dose's own product (the band's width there is 0 by
                # construction, not by rounding). No need to recompute either.
                row(construction, draw, c, 1.0, stats[c])
                continue
            s = spectral.family_stats(fam, c)
            row(construction, draw, c, 1.0, s)
            if construction == "dose":
                stats[c] = s
                for beta in spectral.SKIP_BETAS:  # the skip dose shares the dose's family
                    row("skip", 0, c, beta, s if beta == 1.0 else spectral.family_stats(fam, c, beta))
        del fam
    df = pd.DataFrame(rows)
    df["draw"] = df["draw"].astype(np.int32)
    return df


def single_blas_thread():
    """Context with one BLAS thread. The schur stage's parallelism is its own (the executor's layers,
    ``chain_product``'s two segments); OpenBLAS threads on top of it oversubscribe the cores, which
    on the shared 2-core machine was measured to slow the Schur forms 18× under load
    (benchmarks/dose_slider.py)."""
    return threadpool_limits(limits=1, user_api="blas")


def run(ctx) -> None:
    with single_blas_thread():
        _compute_schur(ctx)


def _compute_schur(ctx) -> None:
    store = ctx.store
    jac = mean_jacobians(store)
    q, t, worst = schur_factors(jac, ctx.progress, desc="schur (canonical order)")
    store.write_array("schur_Q", q)
    store.write_array("schur_T", t)
    # Runs computed before the canonical order also stored R = J̄ − I's factors (mode R); they
    # are the same computation in another eigenvalue order, so they go rather than go stale.
    for stale in ("schur_R_Q", "schur_R_T"):
        store.array_path(stale).unlink(missing_ok=True)
    store.update_manifest(schur_order=spectral.SCHUR_ORDER)
    df = dose_table(q, t, jac, ctx.cfg.seed, ctx.progress)
    store.write_table("schur_dose", df)
    dose = df[df["construction"] == "dose"].set_index("c")
    band = dose_mod.order_band(df).set_index("c")
    values = {"schur.reconstruction_error.J": worst}
    for c in (0.0, 1.0, 2.0):
        values[f"schur.erank.J.c{c:g}"] = dose.loc[c, "erank"]
        # The ordering band's width relative to the canonical value (0 at c = 1 by construction).
        values[f"schur.order_band.erank.c{c:g}"] = (band.loc[c, "hi"] - band.loc[c, "lo"]) / band.loc[c, "dose"]
    store.update_summary(values)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
