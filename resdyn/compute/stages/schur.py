"""Stage "schur" (METHODS §6): complex Schur forms of the mean Jacobians and the dose grid.

Reads ``jacobians.npy`` (L, d, d) float32; writes ``schur_Q.npy``/``schur_T.npy`` (J̄ = Q T Q*,
eigenvalues on T's diagonal in the canonical order ``spectral.SCHUR_ORDER``, recorded as the
manifest's ``schur_order``), (L, d, d) complex64, ``schur_dose.parquet`` (mode, construction,
draw, c, beta, erank, log10_fro, henrici) over the paper's dose grid: the dose in the three normal
surrogates (descending order, ascending order, polar; ``resdyn.core.surrogates``) with a Control A
each, control B, the dose in random eigenvalue orders and the skip dose βI + R(c); and summary
rows ``schur.*``. numpy/scipy only; the math is ``resdyn.core.spectral``, ``resdyn.core.surrogates``
and ``resdyn.core.dose`` (shared with the dashboard's live slider).

Cost at L = 30, d = 576 (one core under load, measured): the Schur forms ~0.5 s a layer, the ascending
reorders ~0.2 s and the polar factors (one real eigendecomposition and one SVD) 0.3–0.5 s a layer,
then 118 chains of L − 1 products and their statistics, ~0.5 s each (the polar ones in real float32).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from resdyn.compute import executors
from resdyn.compute.stages import mean_jacobians, stages_in
from resdyn.core import dose as dose_mod
from resdyn.core import spectral, surrogates
from resdyn.errors import ResdynError


def _schur_layer(jac: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One layer's complex Schur factors in the canonical order, as stored: J̄_l (d, d) -> Q, T
    (d, d) complex64 and ‖Q T Q* − J̄_l‖_F / ‖J̄_l‖_F (``surrogates.schur_layer_stored``). A pure
    function, so the executor may run layers anywhere (``--executor ray``)."""
    return surrogates.schur_layer_stored(jac)


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


CLAIM_CS = (0.0, 1.0)
"""The doses the Claims table reads (``--dose-grid claims``)."""


def _families(q: np.ndarray, t: np.ndarray, jac: np.ndarray, seed: int, info: dict | None = None,
              grid: str = "full"):
    """Yield the ``surrogates.FamilyJob`` of every construction (METHODS §6): the three surrogates'
    doses and Controls A (``surrogates.surrogate_jobs``, shared with ``surrogates.surrogate_doses``),
    then N_DRAWS draws of control B and of random eigenvalue orders. ``grid`` "claims": the
    surrogates' doses and Controls A at ``CLAIM_CS`` only."""
    n_layers, d, _ = t.shape
    if grid == "claims":
        yield from surrogates.surrogate_jobs(q, t, jac, seed, cs=CLAIM_CS, control_cs=CLAIM_CS,
                                             map_fn=executors.parallel_map, info=info)
        return
    yield from surrogates.surrogate_jobs(q, t, jac, seed, map_fn=executors.parallel_map, info=info)
    for draw in range(spectral.N_DRAWS):
        # One generator per (seed, control, draw): draws are reproducible one by one.
        rng = np.random.default_rng([seed, 0, 1, draw])
        yield surrogates.FamilyJob("control_b", draw, spectral.family_from_layers(
            (spectral.control_b_layer(q[l], t[l], rng) for l in range(n_layers)), n_layers, d), spectral.DOSE_GRID)
    for draw in range(spectral.N_DRAWS):
        yield surrogates.FamilyJob("order_draw", draw, order_draw_family(q, t, jac, seed, draw), spectral.DOSE_GRID)


_one_ahead = surrogates.one_ahead


def dose_table(q: np.ndarray, t: np.ndarray, jac: np.ndarray, seed: int,
               progress=spectral._no_progress, info: dict | None = None, grid: str = "full") -> pd.DataFrame:
    """Rows (mode, construction, draw, c, beta, erank, log10_fro, henrici) over DOSE_GRID.

    Every row is mode "J". construction: "dose" (the stored, canonical order: descending |λ|),
    "dose_ascending" and "dose_polar" (the other normal surrogates, ``resdyn.core.surrogates``),
    "control_a" (whole grid) with "control_a_ascending" and "control_a_polar" (c ∈
    ``surrogates.CONTROL_CS``), "control_b", "order_draw" (draws 0..N_DRAWS−1, c ≠ 1) and "skip"
    (βI + R(c) for β in SKIP_BETAS, draw 0); beta is 1.0 on every row but the skip rows'.

    Rows equal to another by algebra are copied, not recomputed (``surrogates.COPIES``): every
    Control A at c = 0 is its surrogate's dose there, the ascending dose at c = 1 and the skip dose
    at β = 1 are the dose's own rows; the order draws at c = 1 (J̄ in any order: the band has zero
    width there) are not stored. At the paper's grid that leaves 118 chains of L − 1 products:
    7 for the dose, 14 skip, 6 ascending, 7 polar (float32, real), 24 control A, 8 for the other two
    Controls A, 28 control B, 24 order draws. ``info`` receives the ``PolarFamily`` ("polar").
    ``grid`` "claims" (``--dose-grid claims``): only the three surrogates' doses and Controls A at
    c = 0 and 1, what the Claims table reads (no control B, band or skip dose): 17 chains.
    """
    rows = []

    def skip(job, c, s):
        if job.construction != "dose" or grid == "claims":
            return
        for beta in spectral.SKIP_BETAS:  # the skip dose shares the dose's family
            st = s if beta == 1.0 else spectral.family_stats(job.family, c, beta)
            rows.append({"construction": "skip", "draw": 0, "c": c, "beta": float(beta),
                         "erank": st.erank, "log10_fro": st.log10_fro, "henrici": st.henrici})

    n_fam = 3 + (5 if grid == "full" else 3) * spectral.N_DRAWS
    jobs = progress(_one_ahead(_families(q, t, jac, seed, info, grid)), desc="dose grid", total=n_fam,
                    unit="family")
    rows.extend(surrogates.evaluate_jobs(jobs, on_stats=skip))
    df = pd.DataFrame(rows)
    df.insert(0, "mode", "J")
    df["beta"] = df["beta"].fillna(1.0) if "beta" in df.columns else 1.0  # (no skip rows: claims grid)
    df = df[["mode", "construction", "draw", "c", "beta", "erank", "log10_fro", "henrici"]]
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
    info = {}
    df = dose_table(q, t, jac, ctx.cfg.seed, ctx.progress, info, grid=getattr(ctx.cfg, "dose_grid", "full"))
    store.write_table("schur_dose", df)
    store.update_summary(summary_values(df, worst, info.get("polar")))


def summary_values(df: pd.DataFrame, worst: float, polar: surrogates.PolarFamily | None) -> dict[str, float]:
    """The stage's ``schur.*`` summary rows from its dose table (and the polar factors' checks)."""
    values = {"schur.reconstruction_error.J": worst}
    band = dose_mod.order_band(df)
    band = None if band is None else band.set_index("c")
    for sur, suffix in (("descending", "J"), ("ascending", "J_ascending"), ("polar", "J_polar")):
        rows = df[df["construction"] == surrogates.DOSE_CONSTRUCTION[sur]].set_index("c")
        for c in (0.0, 1.0, 2.0):
            if c in rows.index:  # a --dose-grid claims table stops at c = 1
                values[f"schur.erank.{suffix}.c{c:g}"] = rows.loc[c, "erank"]
        con = surrogates.CONTROL_CONSTRUCTION[sur]
        values[f"schur.erank.{con}.c1"] = df.loc[(df["construction"] == con) & (df["c"] == 1.0), "erank"].mean()
    for c in (0.0, 1.0, 2.0) if band is not None else ():
        # The ordering band's width relative to the canonical value; at c = 1 it is 0 by algebra (no
        # order draws are stored there, ``dose.order_band`` puts the dose's own value).
        values[f"schur.order_band.erank.c{c:g}"] = (band.loc[c, "hi"] - band.loc[c, "lo"]) / band.loc[c, "dose"]
    if polar is not None:
        values["schur.polar.cond_max"] = float(np.max(polar.cond))
        finite = polar.error[np.isfinite(polar.error)]
        values["schur.polar.error_max"] = float(finite.max()) if len(finite) else float("nan")
        values["schur.polar.rejected_layers"] = float(np.count_nonzero(~polar.ok))
    return values


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
