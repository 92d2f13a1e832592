"""The live Schur dose behind the dashboard's sliders (METHODS §6). numpy/scipy only, no torch.

Given a run with the "schur" stage done, any dose c ∈ [0, 2] and skip weight β ∈ [0, 1],
``dose_response`` returns erank(P_{0:L−1}(c, β)), log10 ‖P_{0:L−1}(c, β)‖_F, Henrici δ(P_{0:L−1}(c, β))
and the singular values of the chosen layers' J_l(c, β), where J_l(c, β) = βI + R_l(c),
R_l(c) = Q(Λ − I + cN)Q* (the residual branch at dose c; J_l(c, 1) = J_l(c) = Q(Λ + cN)Q*).

Two paths, and the result says which one ran:

- "live": exact recomputation from the stored Schur factors. Everything that does not depend
  on (c, β) is done once per run and cached (``LiveDose``): J_l(c, β) = (β − 1)I + A_l + c B_l
  with A_l = QΛQ* and B_l = J̄_l − A_l, both complex64. A call is then L − 1 complex64 d×d
  products, one SVD of the product and one small eigensolve (see ``spectral.product_stats``).
  Measured by ``benchmarks/dose_slider.py``.
- "interpolated": linear interpolation of the precomputed grid in ``schur_dose.parquet`` (erank
  interpolated in log space; in β between the stored skip rows) for runs where L·d³ makes the
  live path too slow (``LIVE_MAX_WORK``); per-layer singular values are still exact for
  d ≤ ``SIGMA_MAX_D``.

The stored factors' eigenvalue order matters for c ≠ 1 (METHODS §6): runs computed since the
canonical order record it as the manifest's ``schur_order`` and store the dose in random orders
(``order_draw`` rows, c ≠ 1), whose spread ``order_band`` reports. Every function takes a
``surrogate``: "descending" (the stored order, the default), "ascending" or "polar"
(``resdyn.core.surrogates``); the live path of the last two is built once per run from the stored
factors or jacobians.npy (a few seconds at d = 576), possibly in the background (``live_dose``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg as sl
from threadpoolctl import ThreadpoolController

from resdyn.core import spectral, surrogates
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError

C_MIN, C_MAX = 0.0, 2.0
B_MIN, B_MAX = 0.0, 1.0  # skip weight β: 0 = the residual branches alone, 1 = the model's skip
# "auto" runs live while L·d³ stays below this: 1.4 × the SmolLM2 demo (L = 30, d = 576), where one
# call costs about 1.0 CPU-second (0.58 s wall measured at load average 2.8 on the 2-core machine;
# benchmarks/dose_slider.py).
LIVE_MAX_WORK = 1.4 * 30 * 576**3
# Per-layer singular values cost one d×d SVD each; above this width the grid path omits them.
SIGMA_MAX_D = 1024
# BLAS threads of a live call (None: the library's default). One thread: on the shared 2-core
# machine a multi-threaded SVD was measured 3–10× slower than a single-threaded one whenever
# other processes ran, and a dashboard serving several sessions gains nothing from more.
LIVE_BLAS_THREADS: int | None = 1
PATHS = ("auto", "live", "interpolated")
SCHUR_NAMES = ("schur_Q", "schur_T")
METRICS = ("erank", "log10_fro", "henrici")
SURROGATES = surrogates.SURROGATES  # "descending" (the stored Schur order), "ascending", "polar"
# Live runs kept in memory (each 2·L·d² complex64 values, 160 MB at L = 30, d = 576; polar 3·L·d² float32).
LIVE_CACHE = 4


def has_schur(store: RunStore) -> bool:
    """Whether the run holds J̄'s stored Schur factors (``schur_Q.npy``, ``schur_T.npy``)."""
    return all(store.has_array(n) for n in SCHUR_NAMES)


def schur_order(store: RunStore) -> str | None:
    """The manifest's ``schur_order`` (None for runs computed before the canonical order: LAPACK's)."""
    return store.manifest().get("schur_order")


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    """threadpoolctl's view of the loaded BLAS libraries, taken once: ``threadpool_limits`` takes it
    anew on every call, 0.1 s each under load on the shared 2-core machine (measured: two of them
    were 0.24 s of a 3.4 s page render)."""
    return ThreadpoolController()


def live_threads():
    """Context capping BLAS threads at ``LIVE_BLAS_THREADS`` (no cap when None)."""
    if LIVE_BLAS_THREADS:
        return _controller().limit(limits=LIVE_BLAS_THREADS, user_api="blas")
    return contextlib.nullcontext()


def live_allowed(store: RunStore, max_work: float = LIVE_MAX_WORK) -> bool:
    """Whether "auto" recomputes this run live (L·d³ ≤ ``max_work``, from its manifest)."""
    m = store.manifest()
    return float(m.get("n_layers", 0)) * float(m.get("d_model", 0)) ** 3 <= max_work


def _check_surrogate(surrogate: str) -> str:
    if surrogate not in SURROGATES:
        raise ResdynError(f"surrogate must be one of {', '.join(SURROGATES)}, got {surrogate!r}")
    return surrogate


def _sigma_of(t: np.ndarray, layer: int, c: float, beta: float) -> np.ndarray:
    """Singular values of J_l(c, β): those of (β − 1)I + Λ + cN (unitary invariance), float64, descending."""
    return sl.svdvals(spectral.dosed_schur_factor(t[layer], c, beta - 1.0), check_finite=False).astype(np.float64)


def _stamp(store: RunStore) -> tuple:
    return tuple(os.stat(store.array_path(n)).st_mtime_ns for n in (*SCHUR_NAMES, "jacobians"))


@functools.lru_cache(maxsize=64)
def _layer_factor(path: str, stamp: tuple, surrogate: str, layer: int):
    """One layer's factors of a surrogate other than the stored order, for its singular values:
    the ascending Schur factor T' (d, d) complex128, or the ``surrogates.PolarLayer``. ~0.2–0.4 s
    at d = 576, cached per run and layer."""
    store = RunStore(path)
    if surrogate == "ascending":
        q, t = store.read_array("schur_Q")[layer], store.read_array("schur_T")[layer]
        return spectral.reorder_schur(q, t, np.arange(t.shape[0])[::-1], fast=True)[1]
    return surrogates.polar_layer(store.read_array("jacobians")[layer])


def _layer_matrix(store: RunStore, surrogate: str, layer: int, c: float, beta: float, t=None) -> np.ndarray:
    """A (d, d) matrix with the singular values of J_l(c, β) under ``surrogate`` (J_l(c) itself up
    to unitary factors): the dosed Schur factor, or S^c K S^{−c} + (β − 1)I for the polar dose.
    At c = 1 every surrogate is J̄_l itself, so the stored factor serves."""
    if surrogate == "descending" or c == 1.0:
        t = store.read_array("schur_T") if t is None else t
        return spectral.dosed_schur_factor(t[layer], c, beta - 1.0)
    f = _layer_factor(str(store.path), _stamp(store), surrogate, int(layer))
    if surrogate == "ascending":
        return spectral.dosed_schur_factor(f, c, beta - 1.0)
    return surrogates.PolarFamily([f]).in_basis(0, c, beta - 1.0)


def layer_sigma(store: RunStore, layer: int, c: float, beta: float = 1.0, surrogate: str = "descending") -> np.ndarray:
    """(d,) float64 singular values of J_l(c, β) of one layer (one d×d SVD; ~0.1 s at d = 576) under
    ``surrogate`` (the ascending and polar factors of the layer are computed once and cached)."""
    with live_threads():
        m = _layer_matrix(store, _check_surrogate(surrogate), int(layer), _check_c(c), _check_beta(beta))
        return sl.svdvals(m, check_finite=False).astype(np.float64)


def layer_eigenvalues(store: RunStore, layer: int, beta: float = 1.0) -> np.ndarray:
    """(d,) complex128 eigenvalues of J_l(c, β) = λ(J̄_l) + β − 1, the same for every c and surrogate."""
    t = store.read_array("schur_T")
    return np.diag(t[int(layer)]).astype(np.complex128) + (_check_beta(beta) - 1.0)


@dataclass(frozen=True)
class DoseResult:
    """The readouts of one dose (c, β) for one run."""

    run_id: str
    c: float
    beta: float
    erank: float
    log10_fro: float
    henrici: float
    sigma: dict[int, np.ndarray] = field(repr=False)
    """layer -> (d,) float64 singular values of J_l(c, β), descending (the layers asked for)."""
    path: str
    """"live" (exact at c) or "interpolated" (from the stored dose grid)."""
    seconds: float
    surrogate: str = "descending"
    """the normal surrogate of the dose (``SURROGATES``)."""


def _check_c(c: float) -> float:
    c = float(c)
    if not C_MIN <= c <= C_MAX:
        raise ResdynError(f"dose c = {c:g} is outside [{C_MIN:g}, {C_MAX:g}]")
    return c


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not B_MIN <= beta <= B_MAX:
        raise ResdynError(f"skip weight β = {beta:g} is outside [{B_MIN:g}, {B_MAX:g}]")
    return beta


# Threads of one LiveDose build. One: the build usually runs in the background while the page that
# started it keeps serving, and on the shared 2-core machine a two-thread build slowed the moves
# made meanwhile from ~0.6 s to 2–5 s (benchmarks/surgery_page.py).
BUILD_THREADS = 1


def _build_map(fn, items):
    """``[fn(x) for x in items]`` on ``BUILD_THREADS`` threads (numpy's LAPACK calls release the GIL)."""
    if BUILD_THREADS <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=BUILD_THREADS) as pool:
        return list(pool.map(fn, items))


def _descending_layer(job):
    q, t, j = job
    a, b = spectral.dose_layer(q, t, j)
    return a.astype(np.complex64), b.astype(np.complex64)


class LiveDose:
    """Everything about one run's dose under one surrogate that depends on neither c nor β.

    descending: A_l = QΛQ*, B_l = J̄_l − A_l from the stored factors (~1.3 s at L = 30, d = 576 on
    one core); ascending: the same after reversing the order (``surrogates.ascending_layer``,
    ~7 s); polar: ``surrogates.PolarFamily`` from jacobians.npy (~10 s). Raises ResdynError when a
    layer fails the polar conditioning rule.
    """

    def __init__(self, store: RunStore, surrogate: str = "descending"):
        if not has_schur(store):
            raise ResdynError(f"run {store.run_id} has no Schur factors; compute its 'schur' stage first")
        self.run_id = store.run_id
        self.surrogate = _check_surrogate(surrogate)
        self.store = store
        jac = store.read_array("jacobians")
        q = store.read_array("schur_Q")
        self.t = store.read_array("schur_T")  # (L, d, d) complex64, memory-mapped
        self.n_layers, self.d, _ = self.t.shape
        with live_threads():
            if surrogate == "descending":
                self.family = spectral.family_from_layers(
                    _build_map(_descending_layer, [(q[l], self.t[l], jac[l]) for l in range(self.n_layers)]),
                    self.n_layers, self.d)
            elif surrogate == "ascending":
                a = np.stack([x for x, _ in _build_map(
                    surrogates.ascending_layer, [(q[l], self.t[l]) for l in range(self.n_layers)])])
                self.family = spectral.DoseFamily(a, (np.asarray(jac) - a).astype(np.complex64))
            else:
                self.family = surrogates.polar_family(jac, _build_map)
                bad = np.flatnonzero(~self.family.ok)
                if len(bad):
                    raise ResdynError(
                        f"run {store.run_id}: the polar surrogate is undefined at layer(s) "
                        f"{', '.join(map(str, bad))} (eigenvector matrix cond(V) up to {self.family.cond.max():.2g}, "
                        f"limit {surrogates.POLAR_COND_MAX:.1g}: J̄ is nearly defective there)")

    def _sigma(self, layer: int, c: float, beta: float) -> np.ndarray:
        if self.surrogate == "descending":
            m = spectral.dosed_schur_factor(self.t[layer], c, beta - 1.0)
        elif self.surrogate == "polar":
            m = self.family.in_basis(layer, c, beta - 1.0)
        else:
            m = self.family.layer(layer, c)
            m.flat[:: self.d + 1] += np.complex64(beta - 1.0)
        return sl.svdvals(m, check_finite=False).astype(np.float64)

    def evaluate(self, c: float, layers=None, beta: float = 1.0) -> DoseResult:
        """Exact readouts at (c, β); ``layers`` (default all) get their singular values."""
        c, beta = _check_c(c), _check_beta(beta)
        t0 = time.perf_counter()
        layers = range(self.n_layers) if layers is None else layers
        # The layers' SVDs do not depend on the product: run them beside it (numpy frees the GIL).
        with live_threads(), ThreadPoolExecutor(max_workers=2) as pool:
            futures = {int(l): pool.submit(self._sigma, int(l), c, beta) for l in layers}
            st = spectral.family_stats(self.family, c, beta)
            sigma = {l: f.result() for l, f in futures.items()}
        return DoseResult(self.run_id, c, beta, st.erank, st.log10_fro, st.henrici, sigma, "live",
                          time.perf_counter() - t0, self.surrogate)


# Live runs being built or built, keyed by (run path, file stamps, surrogate), oldest first. A build
# runs on the pool, so a page can start it without waiting (``live_dose(..., wait=False)``).
_LIVE: dict[tuple, Future] = {}
_LIVE_LOCK = threading.Lock()
_LIVE_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resdyn-live-dose")  # one build at a time


def live_dose(store: RunStore, surrogate: str = "descending", wait: bool = True) -> LiveDose | None:
    """The cached ``LiveDose`` of a run under ``surrogate`` (rebuilt when its files change).

    With ``wait=False`` it returns None while the build is still running (and starts it if needed),
    so a page can prefetch. Memory: about 2·L·d² complex64 values per entry (160 MB at L = 30,
    d = 576); at most ``LIVE_CACHE`` entries. A failed build raises its error on every call.
    """
    if not has_schur(store):
        raise ResdynError(f"run {store.run_id} has no Schur factors; compute its 'schur' stage first")
    key = (str(store.path), _stamp(store), _check_surrogate(surrogate))
    with _LIVE_LOCK:
        fut = _LIVE.pop(key, None)
        if fut is None:
            fut = _LIVE_POOL.submit(LiveDose, RunStore(store.path), surrogate)
        _LIVE[key] = fut  # now the newest
        for old in [k for k, f in _LIVE.items() if f.done() and k != key][: max(0, len(_LIVE) - LIVE_CACHE)]:
            del _LIVE[old]
    if not wait and not fut.done():
        return None
    return fut.result()


def _interp(c: float, cs: np.ndarray, values: np.ndarray, metric: str) -> float:
    """``metric`` at c from its values on the grid ``cs``: erank linearly in log (it changes by
    factors over the grid), the others linearly."""
    if metric == "erank":
        return float(np.exp(np.interp(c, cs, np.log(values))))
    return float(np.interp(c, cs, values))


def has_surrogates(df: pd.DataFrame) -> bool:
    """Whether a ``schur_dose`` table holds the ascending and polar doses (runs since the surrogates)."""
    return bool(df["construction"].isin(["dose_ascending", "dose_polar"]).any())


def stored_surrogates(df: pd.DataFrame) -> list[str]:
    """The surrogates whose dose curve the table stores (["descending"] for older runs)."""
    have = set(df["construction"])
    return [s for s in SURROGATES if surrogates.DOSE_CONSTRUCTION[s] in have]


def _curve(df: pd.DataFrame, construction: str, beta: float | None = None) -> pd.DataFrame:
    """Mode-J rows of one construction (and β), sorted by c; old tables have no beta column (β = 1)."""
    rows = df[(df["mode"] == "J") & (df["construction"] == construction)]
    if beta is not None:
        b = rows["beta"] if "beta" in rows else pd.Series(1.0, index=rows.index)
        rows = rows[np.isclose(b.to_numpy(float), beta)]
    return rows.sort_values("c")


def stored_betas(df: pd.DataFrame) -> list[float]:
    """The skip weights β the table stores a skip-dose curve for ([1.0] for tables without skip rows)."""
    rows = df[df["construction"] == "skip"]
    return sorted({1.0, *rows["beta"].astype(float)}) if "beta" in rows else [1.0]


def grid_values(store: RunStore, c: float, beta: float = 1.0, surrogate: str = "descending",
                table: pd.DataFrame | None = None) -> tuple[float, float, float]:
    """(erank, log10_fro, henrici) at (c, β) interpolated from ``schur_dose.parquet`` (or ``table``).

    In c along the stored curves ("dose" at β = 1, "skip" at the other stored β; the surrogate's
    own dose construction for "ascending" and "polar", stored at β = 1 only), then linearly in β
    between the two stored curves around it. Raises ResdynError for β ≠ 1 on runs without skip
    rows (computed before the skip dose: ``--redo schur`` adds them) or for another surrogate, and
    for a surrogate the table lacks (runs from before the surrogates).
    """
    c, beta = _check_c(c), _check_beta(beta)
    _check_surrogate(surrogate)
    if table is None:
        if not store.has_table("schur_dose"):
            raise ResdynError(f"run {store.run_id} has no schur_dose table; compute its 'schur' stage first")
        table = store.read_table("schur_dose")
    df = table
    if surrogate != "descending":
        rows = _curve(df, surrogates.DOSE_CONSTRUCTION[surrogate])
        if rows.empty:
            raise ResdynError(f"run {store.run_id} stores no {surrogate} dose; recompute it with `--redo schur`")
        if beta != 1.0:
            raise ResdynError(f"the stored grid has the {surrogate} dose at β = 1 only")
        cs = rows["c"].to_numpy(float)
        return tuple(_interp(c, cs, rows[m].to_numpy(float), m) for m in METRICS)
    betas = stored_betas(df)
    if beta not in betas and len(betas) < 2:
        raise ResdynError(f"run {store.run_id} stores no skip-dose rows (β ≠ 1); recompute it with "
                          "`--redo schur` to add them")
    hi = min(len(betas) - 1, int(np.searchsorted(betas, beta)))
    lo = max(0, hi - 1) if betas[hi] != beta else hi
    out = []
    for b in (betas[lo], betas[hi]):
        rows = _curve(df, "dose") if b == 1.0 else _curve(df, "skip", b)
        if rows.empty:
            raise ResdynError(f"run {store.run_id}: schur_dose has no dose rows at β = {b:g}")
        cs = rows["c"].to_numpy(float)
        out.append([_interp(c, cs, rows[m].to_numpy(float), m) for m in METRICS])
    w = 0.0 if hi == lo else (beta - betas[lo]) / (betas[hi] - betas[lo])
    return tuple(float((1 - w) * a + w * b) for a, b in zip(*out))


def grid_answers(df: pd.DataFrame, beta: float = 1.0, surrogate: str = "descending") -> bool:
    """Whether ``grid_values`` can interpolate the table at skip weight β under ``surrogate``: the
    surrogate's curve is stored and, for β ≠ 1, skip curves around β (descending order only)."""
    if surrogate not in stored_surrogates(df):
        return False
    if beta == 1.0:
        return True
    return surrogate == "descending" and len(stored_betas(df)) >= 2


def stored_at(df: pd.DataFrame, c: float, beta: float = 1.0, surrogate: str = "descending") -> bool:
    """Whether the table stores the dose of ``surrogate`` at exactly (c, β), so that its readouts
    there need no recomputation (the page then reads them and only prefetches the live path)."""
    cons = surrogates.DOSE_CONSTRUCTION[_check_surrogate(surrogate)]
    if beta != 1.0:
        if surrogate != "descending":
            return False
        rows = _curve(df, "skip", beta)
    else:
        rows = _curve(df, cons)
    return bool(np.isclose(rows["c"].to_numpy(float), c, rtol=0, atol=1e-12).any())


def order_band(df: pd.DataFrame, metric: str = "erank") -> pd.DataFrame | None:
    """The ordering band of METHODS §6 per stored c: columns c, dose (the canonical order's value),
    lo, hi (min and max of ``metric`` over the ``order_draw`` rows). None when the table has no
    order draws (runs computed before the canonical order).

    In every eigenvalue order the dose at c = 1 is J̄ itself, so the band has zero width there by
    algebra: tables written since the surrogates store no order draws at c = 1, and the band's
    row at c = 1 is the dose's own value (lo = hi = dose), so interpolation across c = 1 works."""
    draws = df[(df["mode"] == "J") & (df["construction"] == "order_draw")]
    if draws.empty:
        return None
    g = draws.groupby("c")[metric]
    dose = _curve(df, "dose").set_index("c")[metric]
    out = pd.DataFrame({"lo": g.min(), "hi": g.max()})
    if 1.0 not in out.index and 1.0 in dose.index:
        out.loc[1.0] = [dose.loc[1.0], dose.loc[1.0]]
    out.index.name = "c"
    out["dose"] = dose.reindex(out.index)
    return out.reset_index().sort_values("c").reset_index(drop=True)


def band_at(df: pd.DataFrame, c: float) -> dict[str, tuple[float, float]] | None:
    """metric -> (lo, hi) of the ordering band at dose c, interpolated between the stored doses as
    ``grid_values`` does (None when the table has no order draws)."""
    c = _check_c(c)
    out = {}
    for m in METRICS:
        band = order_band(df, m)
        if band is None:
            return None
        cs = band["c"].to_numpy(float)
        out[m] = (_interp(c, cs, band["lo"].to_numpy(float), m), _interp(c, cs, band["hi"].to_numpy(float), m))
    return out


def dose_response(store: RunStore, c: float, layers=None, path: str = "auto",
                  max_work: float = LIVE_MAX_WORK, beta: float = 1.0, surrogate: str = "descending",
                  table: pd.DataFrame | None = None) -> DoseResult:
    """Readouts of the Schur dose c ∈ [0, 2] at skip weight β ∈ [0, 1] for one run (the sliders' callback).

    Args:
        store: the run (needs the "schur" stage).
        c: dose; 0 = normal at the trained spectrum, 1 = the model, 2 = doubled non-normal part.
        layers: layers whose J_l(c, β) singular values are returned (default: all; the page asks
            for the selected layer only, one d×d SVD each).
        path: "live", "interpolated", or "auto" (live while L·d³ ≤ ``max_work``).
        beta: weight of the skip connection, J_l(c, β) = βI + R_l(c); 1 = the model.
        surrogate: the normal surrogate of the dose (``SURROGATES``; resdyn.core.surrogates).
        table: the run's ``schur_dose`` table, if the caller has it (interpolated path).
    """
    if path not in PATHS:
        raise ResdynError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    c, beta = _check_c(c), _check_beta(beta)
    _check_surrogate(surrogate)
    if path == "auto":
        path = "live" if live_allowed(store, max_work) else "interpolated"
    if path == "live":
        return live_dose(store, surrogate).evaluate(c, layers, beta)
    t0 = time.perf_counter()
    er, lf, he = grid_values(store, c, beta, surrogate, table)
    sigma: dict[int, np.ndarray] = {}
    if layers is not None and store.has_array("schur_T"):
        t = store.read_array("schur_T")
        if t.shape[1] <= SIGMA_MAX_D:
            with live_threads():
                sigma = {int(l): sl.svdvals(_layer_matrix(store, surrogate, int(l), c, beta, t),
                                            check_finite=False).astype(np.float64) for l in layers}
    return DoseResult(store.run_id, c, beta, er, lf, he, sigma, "interpolated", time.perf_counter() - t0, surrogate)
