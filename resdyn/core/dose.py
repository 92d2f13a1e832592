"""The live Schur dose behind the dashboard's slider (METHODS §6). numpy/scipy only, no torch.

Given a run with the "schur" stage done and any dose c ∈ [0, 2], ``dose_response`` returns
erank(P_{0:L−1}(c)), log10 ‖P_{0:L−1}(c)‖_F, Henrici δ(P_{0:L−1}(c)) and the singular values of
the chosen layers' J_l(c), for mode "J" (J(c) = Q(Λ + cN)Q*) or "R" (J(c) = I + Q_R(Λ_R + cN_R)Q_R*).

Two paths, and the result says which one ran:

- "live": exact recomputation from the stored Schur factors. Everything that does not depend
  on c is done once per run and mode and cached (``LiveDose``): J_l(c) = A_l + c B_l with
  A_l = QΛQ* (+ I) and B_l = J̄_l − A_l, both complex64. A call is then L − 1 complex64 d×d
  products, one SVD of the product and one small eigensolve (see ``spectral.product_stats``).
  Measured by ``benchmarks/dose_slider.py``.
- "interpolated": linear interpolation of the precomputed grid in ``schur_dose.parquet``
  (erank interpolated in log space) for runs where L·d³ makes the live path too slow
  (``LIVE_MAX_WORK``); per-layer singular values are still exact for d ≤ ``SIGMA_MAX_D``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sl
from threadpoolctl import threadpool_limits

from resdyn.core import spectral
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError

C_MIN, C_MAX = 0.0, 2.0
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


def schur_names(mode: str) -> tuple[str, str]:
    """Array names of the stored Schur factors (Q, T) of mode "J" or "R"."""
    if mode not in spectral.MODES:
        raise ResdynError(f"dose mode must be 'J' or 'R', got {mode!r}")
    return ("schur_Q", "schur_T") if mode == "J" else ("schur_R_Q", "schur_R_T")


def has_schur(store: RunStore, mode: str = "J") -> bool:
    return all(store.has_array(n) for n in schur_names(mode))


def live_threads():
    """Context capping BLAS threads at ``LIVE_BLAS_THREADS`` (no cap when None)."""
    if LIVE_BLAS_THREADS:
        return threadpool_limits(limits=LIVE_BLAS_THREADS, user_api="blas")
    return contextlib.nullcontext()


def _shift(mode: str) -> float:
    return 1.0 if mode == "R" else 0.0


def _sigma_of(t: np.ndarray, layer: int, c: float, shift: float) -> np.ndarray:
    """Singular values of J_l(c): those of shift·I + Λ + cN (unitary invariance), float64, descending."""
    return sl.svdvals(spectral.dosed_schur_factor(t[layer], c, shift), check_finite=False).astype(np.float64)


def layer_sigma(store: RunStore, layer: int, c: float, mode: str = "J") -> np.ndarray:
    """(d,) float64 singular values of J_l(c) of one layer (one d×d SVD; ~0.1 s at d = 576)."""
    with live_threads():
        return _sigma_of(store.read_array(schur_names(mode)[1]), int(layer), _check_c(c), _shift(mode))


def layer_eigenvalues(store: RunStore, layer: int, mode: str = "J") -> np.ndarray:
    """(d,) complex128 eigenvalues of J_l(c), the same for every c (by construction of the dose)."""
    t = store.read_array(schur_names(mode)[1])
    return np.diag(t[int(layer)]).astype(np.complex128) + _shift(mode)


@dataclass(frozen=True)
class DoseResult:
    """The readouts of one dose c for one run and mode."""

    run_id: str
    mode: str
    c: float
    erank: float
    log10_fro: float
    henrici: float
    sigma: dict[int, np.ndarray] = field(repr=False)
    """layer -> (d,) float64 singular values of J_l(c), descending (the layers asked for)."""
    path: str
    """"live" (exact at c) or "interpolated" (from the stored dose grid)."""
    seconds: float


def _check_c(c: float) -> float:
    c = float(c)
    if not C_MIN <= c <= C_MAX:
        raise ResdynError(f"dose c = {c:g} is outside [{C_MIN:g}, {C_MAX:g}]")
    return c


class LiveDose:
    """Everything about one run's dose that does not depend on c, for repeated evaluation."""

    def __init__(self, store: RunStore, mode: str = "J"):
        qn, tn = schur_names(mode)
        if not has_schur(store, mode):
            raise ResdynError(f"run {store.run_id} has no Schur factors; compute its 'schur' stage first")
        self.run_id = store.run_id
        self.mode = mode
        self.shift = _shift(mode)
        jac = store.read_array("jacobians")
        q = store.read_array(qn)
        self.t = store.read_array(tn)  # (L, d, d) complex64, memory-mapped
        self.n_layers, self.d, _ = self.t.shape
        with live_threads():
            self.family = spectral.family_from_layers(
                (spectral.dose_layer(q[l], self.t[l], jac[l], self.shift) for l in range(self.n_layers)),
                self.n_layers, self.d)

    def evaluate(self, c: float, layers=None) -> DoseResult:
        """Exact readouts at dose c; ``layers`` (default all) get their singular values."""
        c = _check_c(c)
        t0 = time.perf_counter()
        layers = range(self.n_layers) if layers is None else layers
        # The layers' SVDs do not depend on the product: run them beside it (numpy frees the GIL).
        with live_threads(), ThreadPoolExecutor(max_workers=2) as pool:
            futures = {int(l): pool.submit(_sigma_of, self.t, int(l), c, self.shift) for l in layers}
            st = spectral.family_stats(self.family, c)
            sigma = {l: f.result() for l, f in futures.items()}
        return DoseResult(self.run_id, self.mode, c, st.erank, st.log10_fro, st.henrici, sigma, "live",
                          time.perf_counter() - t0)


@functools.lru_cache(maxsize=4)
def _cached_live(path: str, mode: str, stamp: tuple) -> LiveDose:
    return LiveDose(RunStore(path), mode)


def live_dose(store: RunStore, mode: str = "J") -> LiveDose:
    """The cached ``LiveDose`` of a run (rebuilt when its Schur files change).

    Memory: 2·L·d² complex64 values per entry (160 MB at L = 30, d = 576); at most 4 entries.
    """
    qn, tn = schur_names(mode)
    if not has_schur(store, mode):
        raise ResdynError(f"run {store.run_id} has no Schur factors; compute its 'schur' stage first")
    stamp = tuple(os.stat(store.array_path(n)).st_mtime_ns for n in (qn, tn, "jacobians"))
    return _cached_live(str(store.path), mode, stamp)


def grid_values(store: RunStore, c: float, mode: str = "J") -> tuple[float, float, float]:
    """(erank, log10_fro, henrici) at c interpolated from ``schur_dose.parquet`` (construction "dose").

    erank is interpolated linearly in log(erank) (it changes by factors over the grid), the
    other two linearly in c.
    """
    c = _check_c(c)
    if not store.has_table("schur_dose"):
        raise ResdynError(f"run {store.run_id} has no schur_dose table; compute its 'schur' stage first")
    df = store.read_table("schur_dose")
    df = df[(df["mode"] == mode) & (df["construction"] == "dose")].sort_values("c")
    if df.empty:
        raise ResdynError(f"run {store.run_id}: schur_dose has no rows for mode {mode}")
    cs = df["c"].to_numpy(float)
    er = float(np.exp(np.interp(c, cs, np.log(df["erank"].to_numpy(float)))))
    lf = float(np.interp(c, cs, df["log10_fro"].to_numpy(float)))
    he = float(np.interp(c, cs, df["henrici"].to_numpy(float)))
    return er, lf, he


def dose_response(store: RunStore, c: float, mode: str = "J", layers=None, path: str = "auto",
                  max_work: float = LIVE_MAX_WORK) -> DoseResult:
    """Readouts of the Schur dose c ∈ [0, 2] for one run (the dashboard slider's callback).

    Args:
        store: the run (needs the "schur" stage).
        c: dose; 0 = normal at the trained spectrum, 1 = the model, 2 = doubled non-normal part.
        mode: "J" or "R".
        layers: layers whose J_l(c) singular values are returned (default: all; the page asks
            for the selected layer only, one d×d SVD each).
        path: "live", "interpolated", or "auto" (live while L·d³ ≤ ``max_work``).
    """
    if path not in PATHS:
        raise ResdynError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    c = _check_c(c)
    m = store.manifest()
    work = float(m.get("n_layers", 0)) * float(m.get("d_model", 0)) ** 3
    if path == "auto":
        path = "live" if work <= max_work else "interpolated"
    if path == "live":
        return live_dose(store, mode).evaluate(c, layers)
    t0 = time.perf_counter()
    er, lf, he = grid_values(store, c, mode)
    sigma: dict[int, np.ndarray] = {}
    tn = schur_names(mode)[1]
    if layers is not None and store.has_array(tn):
        t = store.read_array(tn)
        if t.shape[1] <= SIGMA_MAX_D:
            with live_threads():
                sigma = {int(l): _sigma_of(t, int(l), c, _shift(mode)) for l in layers}
    return DoseResult(store.run_id, mode, c, er, lf, he, sigma, "interpolated", time.perf_counter() - t0)
