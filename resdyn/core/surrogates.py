"""The three normal surrogates of the Schur dose (METHODS §6, "Normal surrogates"). numpy/scipy only.

A dose replaces every mean Jacobian J̄_l by a normal matrix with its spectrum at c = 0 and by J̄_l
itself at c = 1. Which normal matrix is a choice, and the dose's readouts depend on it:

- ``descending`` (the stored canonical Schur order, ``spectral.SCHUR_ORDER``): a "right flag".
  For every k, span(q_1..q_k) is the right invariant subspace of the k largest |λ|, so q_1 is the
  dominant right eigenvector. J(c) = Q(Λ + cN)Q*, construction ``dose``.
- ``ascending`` (``ASCENDING_ORDER``, the canonical permutation reversed exactly): a "left flag".
  span(q'_{d−k+1}..q'_d) is the orthogonal complement of the right invariant subspace of the d − k
  smallest |λ|, that is the left invariant subspace of the k largest, so q'_d is the dominant left
  eigenvector. J(c) = Q'(Λ' + cN')Q'*, construction ``dose_ascending``.
- ``polar`` (order- and phase-free): J̄ = VΛV⁻¹ with unit-norm eigenvector columns and the polar
  decomposition V = UH (U unitary, H Hermitian positive definite). The surrogate is UΛU* and the
  polar dose J(c) = U H^c Λ H^{−c} U*: normal at c = 0, J̄ at c = 1. Permuting the eigenvalues
  (V → VP) or rephasing the eigenvectors (V → VD) leaves it unchanged, since U → UP (UD) and
  H → PᵀHP (D*HD) commute through Λ. Construction ``dose_polar``. It is not affine in c.

Every Schur normal part lies at the same Frobenius distance ‖N‖_F from J̄, so distance cannot pick
an order; a dose claim is a finding only where the three agree.

How the polar dose is computed (``polar_layer``). With the SVD V = W S Zᴴ, U = WZᴴ and H = ZSZᴴ,
so H^c = Z S^c Zᴴ and J(c) = W (S^c K S^{−c}) Wᴴ with K = Zᴴ Λ Z: one eigendecomposition and
one SVD per layer serve every c, and a dose is the d² elementwise scaling K_ij (s_i / s_j)^c.
For a real J̄ the eigenvectors of a conjugate pair (v, v̄) are replaced by √2(Re v, Im v), which is
(v, v̄) times a unitary 2×2 block that commutes with the pair's eigenvalues: the polar factors are
then real, and so are the surrogate and the dose for every c, exactly (chains in float32 rather
than complex64: four times fewer flops). In a chain, P(c) = Π_l W_l M_l(c) W_lᴴ is multiplied as
W_{L−1} [M_{L−1}(c) G_{L−1} ··· G_1 M_0(c)] W_0ᴴ with G_l = W_lᴴ W_{l−1} precomputed: two d×d
products per layer.

Conditioning (``POLAR_COND_MAX``). H^{−c} multiplies by up to cond(V)^c = (s_max / s_min)^c, 1e8²
at the grid's c = 2 for cond(V) = 1e8, the end of float64; near a defective J̄ (no eigenvector
basis) the eigenvectors themselves are inaccurate. A layer whose cond(V) exceeds POLAR_COND_MAX,
or whose factors reproduce J̄ at c = 1 only beyond POLAR_RTOL, is rejected: the run's polar
constructions are then NaN (not approximated), and cond(V) and the reconstruction error of every
layer are reported (summary rows ``schur.polar.*``). Measured on SmolLM2-135M: cond(V) 455–6,600,
reconstruction error ≤ 5e-14.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg as sl
from scipy.linalg import lapack

from resdyn.core import spectral
from resdyn.errors import ResdynError, UsageError

SURROGATES = ("descending", "ascending", "polar")
# schur_dose.parquet constructions of each surrogate's dose and Control A.
DOSE_CONSTRUCTION = {"descending": "dose", "ascending": "dose_ascending", "polar": "dose_polar"}
CONTROL_CONSTRUCTION = {"descending": "control_a", "ascending": "control_a_ascending", "polar": "control_a_polar"}
SURROGATE_LABELS = {"descending": "descending |λ| (right flag)", "ascending": "ascending |λ| (left flag)",
                    "polar": "polar (order- and phase-free)"}
ASCENDING_ORDER = "ascending |λ|, then descending arg λ (the canonical order reversed)"
# Doses of the ascending and polar Control A in the stage (c = 0 is the surrogate's own row, copied);
# descending Control A keeps the whole grid.
CONTROL_CS = (0.0, 1.0)
# 1/√eps(float64): H^{−c} at c = 2 multiplies by cond(V)² ≤ 1/eps.
POLAR_COND_MAX = float(np.finfo(np.float64).eps) ** -0.5
# Relative Frobenius error of the float64 polar factors at c = 1 (W S K S⁻¹ Wᴴ against J̄).
POLAR_RTOL = 1e-6
# (construction, c) -> the construction whose row (draw 0) it equals by algebra, so it is copied:
# Control A adds 0·M at c = 0; in any eigenvalue order the Schur dose at c = 1 is A + (J̄ − A) = J̄.
COPIES = {**{(con, 0.0): DOSE_CONSTRUCTION[s] for s, con in CONTROL_CONSTRUCTION.items()},
          ("dose_ascending", 1.0): "dose", ("order_draw", 1.0): "dose"}
# Rows not stored at all (their value is another row's by algebra, and the reader knows it):
# the ordering band at c = 1 (zero width).
OMITTED = {("order_draw", 1.0)}


# ------------------------------------------------------------------------------------------------
# Polar factors
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolarLayer:
    """One layer's polar factors (module docstring): J(c) = W (S^c K S^{−c}) Wᴴ."""

    w: np.ndarray
    """(d, d) float32 (real J̄) or complex64: left singular vectors of V, the unitary basis."""
    k: np.ndarray
    """(d, d) like ``w``: K = Zᴴ Λ Z, the surrogate U Λ U* written in that basis."""
    log_s: np.ndarray
    """(d,) float64: log singular values of V (those of H)."""
    cond: float
    """cond(V) = s_max / s_min (inf when V is singular)."""
    error: float
    """‖W S K S⁻¹ Wᴴ − J̄‖_F / ‖J̄‖_F of the float64 factors (NaN when cond(V) is infinite)."""
    mass: float
    """‖J̄ − U Λ U*‖_F, the norm of what the surrogate removes (Control A's ‖M‖ at c = 1)."""

    @property
    def ok(self) -> bool:
        """Whether the factors pass the conditioning rule (cond(V) ≤ POLAR_COND_MAX, error ≤ POLAR_RTOL)."""
        return bool(self.cond <= POLAR_COND_MAX and self.error <= POLAR_RTOL)


def _eigenbasis(j: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(V, Λ) with J V = V Λ, unit-norm eigenvector columns: V (d, d) and Λ (d, d), real for a real J.

    Real J: LAPACK dgeev; a conjugate pair λ = a ± ib (b > 0) with unit eigenvector v gives the
    columns √2 Re v, √2 Im v and the block [[a, b], [−b, a]] of Λ (J Re v = a Re v − b Im v,
    J Im v = b Re v + a Im v). Complex J: ``scipy.linalg.eig``, Λ diagonal. ``eig``: a real J's
    (λ (d,), V (d, d)) from ``numpy.linalg.eig`` when the caller has them (numpy's dgeev lays them
    out as LAPACK does: the eigenvalue with Im > 0 first in each pair, V's columns Re v ± i Im v),
    so the decomposition is not taken twice.
    """
    if np.iscomplexobj(j):
        lam, v = sl.eig(j, check_finite=False)
        return v / np.linalg.norm(v, axis=0), np.diag(lam)
    if eig is not None:
        lam_c, v_c = eig
        wr, wi = lam_c.real.copy(), lam_c.imag.copy()
        v = v_c.real.copy()
        pos = np.flatnonzero(wi > 0)
        v[:, pos + 1] = v_c[:, pos].imag
    else:
        wr, wi, _, v, info = lapack.dgeev(j, compute_vl=0, compute_vr=1)
        if info != 0:
            raise ResdynError(f"LAPACK dgeev did not converge (info = {info})")
    lam = np.diag(wr)
    first = np.flatnonzero(wi > 0)  # dgeev puts the eigenvalue with Im > 0 first in each pair
    v = np.array(v, np.float64)
    v[:, first] *= np.sqrt(2.0)
    v[:, first + 1] *= np.sqrt(2.0)
    lam[first, first + 1] = wi[first]
    lam[first + 1, first] = -wi[first]
    return v, lam


def polar_layer(j: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> PolarLayer:
    """The polar factors of one mean Jacobian ``j`` (d, d) (float64 inside; stored 32-bit).

    A pure function of its argument (the stage maps it over layers on the run's executor). Raises
    ResdynError for non-finite entries. ``eig``: a real ``j``'s ``numpy.linalg.eig`` output, when
    the caller has it (``_eigenbasis``).
    """
    j = np.asarray(j)
    if not np.isfinite(j).all():
        raise ResdynError("matrix has non-finite entries; cannot take its eigenvectors")
    j = j.astype(np.complex128 if np.iscomplexobj(j) else np.float64)
    v, lam = _eigenbasis(j, eig)
    w, s, zh = sl.svd(v, check_finite=False)
    k = (zh @ lam) @ zh.conj().T  # Zᴴ Λ Z
    dtype = np.complex64 if np.iscomplexobj(j) else np.float32
    norm = max(float(np.linalg.norm(j)), np.finfo(float).tiny)
    normal = (w @ k) @ w.conj().T
    mass = float(np.linalg.norm(j - normal))
    cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    if np.isfinite(cond):
        rec = (w @ (k * (s[:, None] / s[None, :]))) @ w.conj().T
        error = float(np.linalg.norm(rec - j) / norm)
    else:
        error = float("nan")
    with np.errstate(divide="ignore"):
        log_s = np.log(s)
    return PolarLayer(w.astype(dtype), k.astype(dtype), log_s, cond, error, mass)


class PolarFamily:
    """Per-layer polar doses J_l(c) = W_l (S_l^c K_l S_l^{−c}) W_lᴴ of a stack (not affine in c).

    Implements the family protocol of ``spectral.chain_product`` (``n_layers``, ``layer(l, c)``)
    and a ``segment`` that multiplies in the layers' own bases (module docstring). Memory:
    3·L·d² 32-bit values (W, K and G), 120 MB at L = 30, d = 576 for a real stack.
    """

    def __init__(self, layers: list[PolarLayer]):
        if not layers:
            raise ResdynError("a polar family needs at least one layer")
        self.w = np.stack([p.w for p in layers])
        self.k = np.stack([p.k for p in layers])
        self.log_s = np.stack([p.log_s for p in layers])  # (L, d) float64
        self.cond = np.array([p.cond for p in layers])  # (L,)
        self.error = np.array([p.error for p in layers])  # (L,)
        self.mass = np.array([p.mass for p in layers])  # (L,)
        self.ok = np.array([p.ok for p in layers])  # (L,) bool
        # G_l = W_lᴴ W_{l−1} for l ≥ 1 (G_0 unused): the basis change between consecutive layers.
        self.g = np.empty_like(self.w)
        self.g[0] = np.eye(self.w.shape[1], dtype=self.w.dtype)
        for l in range(1, len(layers)):
            self.g[l] = self.w[l].conj().T @ self.w[l - 1]

    @property
    def n_layers(self) -> int:
        return self.w.shape[0]

    def in_basis(self, l: int, c: float, shift: float = 0.0) -> np.ndarray:
        """S^c K S^{−c} + shift·I (d, d): J_l(c) + shift·I in the basis W_l (the same singular values
        and eigenvalues: W_l is unitary)."""
        x = self.log_s[l] * float(c)
        x = x - x.mean()  # the scaling is a similarity: any common factor cancels
        e = np.exp(x)
        m = self.k[l] * e[:, None].astype(self.k.real.dtype)
        m *= (1.0 / e)[None, :].astype(self.k.real.dtype)
        if shift:
            m.flat[:: m.shape[0] + 1] += m.dtype.type(shift)
        return m

    def layer(self, l: int, c: float) -> np.ndarray:
        """J_l(c) (d, d), float32 for a real stack (complex64 otherwise)."""
        return (self.w[l] @ self.in_basis(l, c)) @ self.w[l].conj().T

    def normal_parts(self) -> np.ndarray:
        """(L, d, d) U_l Λ_l U_l* (J_l(0)), the surrogate of every layer, 32-bit."""
        return np.stack([self.layer(l, 0.0) for l in range(self.n_layers)])

    def segment(self, c: float, start: int, stop: int, shift: float = 0.0) -> tuple[np.ndarray, float]:
        """(J_{stop−1}(c) + shift·I) ··· (J_start(c) + shift·I) as (P̂, log10 scale), max-normalised
        per step (``spectral.chain_product``'s contract)."""
        steps = ((lambda p, l=l: self.in_basis(l, c, shift) @ (self.g[l] @ p)) for l in range(start + 1, stop))
        p, scale = spectral.normalised_product(self.in_basis(start, c, shift), steps)
        return (self.w[stop - 1] @ p) @ self.w[start].conj().T, scale


def polar_family(jac: np.ndarray, map_fn: Callable = None) -> PolarFamily:
    """``PolarFamily`` of a stack ``jac`` (L, d, d), the layers through ``map_fn`` (default: in turn)."""
    map_fn = map_fn or (lambda fn, items: [fn(x) for x in items])
    return PolarFamily(map_fn(polar_layer, [np.asarray(jac[l]) for l in range(len(jac))]))


# ------------------------------------------------------------------------------------------------
# Ascending order
# ------------------------------------------------------------------------------------------------

def ascending_order(lam: np.ndarray) -> np.ndarray:
    """The permutation p (d,) with ``lam[p]`` in ``ASCENDING_ORDER``: ``spectral.canonical_order`` reversed."""
    return spectral.canonical_order(lam)[::-1].copy()


def ascending_layer(job: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
    """(A, ‖N'‖_F) of one layer in the ascending order, from its canonical Schur factors job = (Q, T).

    The stored diagonal is in the canonical order, so the ascending one is the reversed positions;
    ``spectral.reorder_schur``'s fast route (only the normal part A = Q'ΛQ'* is used, which no phase
    of the Schur vectors changes). A (d, d) complex64. A pure function of its job.
    """
    q, t = job
    d = np.shape(t)[0]
    qa, ta = spectral.reorder_schur(q, t, np.arange(d)[::-1], fast=True)
    return spectral.normal_part(qa, ta).astype(np.complex64), float(np.linalg.norm(np.triu(ta, 1)))


# ------------------------------------------------------------------------------------------------
# The surrogates' dose and Control A families, and their rows
# ------------------------------------------------------------------------------------------------

def _map(fn, items):
    return [fn(x) for x in items]


def control_noise(seed: int, draw: int, n_layers: int, d: int) -> Iterator[np.ndarray]:
    """The (d, d) float64 standard Gaussians of Control A draw ``draw``, layer by layer: the stream
    ``spectral.control_a_layer`` draws from (generator (seed, 0, 0, draw), one matrix per layer), so
    every surrogate's Control A adds the same directions."""
    rng = np.random.default_rng([seed, 0, 0, draw])
    for _ in range(n_layers):
        yield rng.standard_normal((d, d))


def control_family(a: np.ndarray, mass: np.ndarray, seed: int, draw: int) -> spectral.DoseFamily:
    """Control A (METHODS §6) of a surrogate: J_l(c) = A_l + c M_l, M_l Gaussian with ‖M_l‖_F = mass_l.

    a (L, d, d) the surrogate's normal parts (complex64, or float32 when real), mass (L,) the norm
    of what it removes: ‖N‖_F for a Schur order, ‖J̄ − UΛU*‖_F for the polar surrogate.
    """
    n_layers, d, _ = a.shape
    b = np.empty_like(a)
    for l, g in enumerate(control_noise(seed, draw, n_layers, d)):
        b[l] = g * (mass[l] / np.linalg.norm(g))
    return spectral.DoseFamily(a, b)


@dataclass(frozen=True)
class FamilyJob:
    """One construction's family and the doses it is evaluated at (``family`` None: NaN rows)."""

    construction: str
    draw: int
    family: object
    cs: tuple[float, ...]


def surrogate_jobs(q: np.ndarray, t: np.ndarray, jac: np.ndarray, seed: int, *, cs=spectral.DOSE_GRID,
                   control_cs=CONTROL_CS, draws: int = spectral.N_DRAWS, map_fn: Callable = _map,
                   info: dict | None = None) -> Iterator[FamilyJob]:
    """The families of the three surrogates' doses (at ``cs``) and Controls A (``draws`` draws each):
    descending at ``cs`` for both, ascending and polar Control A at ``control_cs``.

    q, t (L, d, d) the canonical Schur factors (as stored, complex64), jac (L, d, d) J̄. Lazy: each
    surrogate's per-layer factors are computed (through ``map_fn``) when its first family is asked
    for. ``info``, when given, receives "polar" (the ``PolarFamily``) once it is built.
    """
    n_layers, d, _ = np.shape(t)
    fam = spectral.family_from_layers(
        (spectral.dose_layer(q[l], t[l], jac[l]) for l in range(n_layers)), n_layers, d)
    yield FamilyJob("dose", 0, fam, tuple(cs))
    asc = map_fn(ascending_layer, [(np.asarray(q[l]), np.asarray(t[l])) for l in range(n_layers)])
    a_asc = np.stack([a for a, _ in asc])
    m_asc = np.array([m for _, m in asc])
    del asc
    yield FamilyJob("dose_ascending", 0, spectral.DoseFamily(a_asc, (np.asarray(jac) - a_asc).astype(np.complex64)),
                    tuple(cs))
    polar = polar_family(jac, map_fn)
    if info is not None:
        info["polar"] = polar
    ok = bool(polar.ok.all())
    yield FamilyJob("dose_polar", 0, polar if ok else None, tuple(cs))
    a_desc = fam.a
    m_desc = np.array([np.linalg.norm(np.triu(np.asarray(t[l], np.complex128), 1)) for l in range(n_layers)])
    a_pol = polar.normal_parts() if ok else None
    for draw in range(draws):
        yield FamilyJob("control_a", draw, control_family(a_desc, m_desc, seed, draw), tuple(cs))
    for draw in range(draws):
        yield FamilyJob("control_a_ascending", draw, control_family(a_asc, m_asc, seed, draw), tuple(control_cs))
    for draw in range(draws):
        yield FamilyJob("control_a_polar", draw,
                        control_family(a_pol, polar.mass, seed, draw) if ok else None, tuple(control_cs))


def one_ahead(items: Iterable):
    """Yield the items of ``items``, building the next one in a background thread while the caller
    works on the current one.

    Building a family (Schur reorders, eigendecompositions, Haar draws) is mostly single-threaded;
    the statistics (chain products on two threads, an SVD, eigenvalues) mostly run outside the GIL,
    so the two overlap on two cores. The items come in their order, so results do not change; the
    thread runs in a copy of this context (it sees the run's executor).
    """
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        it = iter(items)
        nxt = pool.submit(ctx.run, next, it, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(ctx.run, next, it, None)
            yield item


NAN_STATS = spectral.ProductStats(float("nan"), float("nan"), float("nan"), 0)


def evaluate_jobs(jobs: Iterable[FamilyJob], on_stats: Callable | None = None) -> list[dict]:
    """Rows (construction, draw, c, erank, log10_fro, henrici) of every job at its doses.

    Rows in ``COPIES`` take their source's stats (draw 0, computed earlier in ``jobs``); rows in
    ``OMITTED`` are not written; a job without a family gives NaN rows. ``on_stats(job, c, stats)``
    is called after each computed or copied value (the stage adds the skip dose there).
    """
    rows, done = [], {}
    for job in jobs:
        for c in job.cs:
            key = (job.construction, float(c))
            if key in OMITTED:
                continue
            if key in COPIES:
                src = (COPIES[key], float(c))
                if src not in done:
                    raise ResdynError(f"{job.construction} at c = {c:g} copies {COPIES[key]}, "
                                      "which was not computed first")
                s = done[src]
            elif job.family is None:
                s = NAN_STATS
            else:
                s = spectral.family_stats(job.family, c)
            if job.draw == 0:
                done.setdefault(key, s)
            rows.append({"construction": job.construction, "draw": int(job.draw), "c": float(c),
                         "erank": s.erank, "log10_fro": s.log10_fro, "henrici": s.henrici})
            if on_stats is not None:
                on_stats(job, float(c), s)
    return rows


def surrogate_doses(jac: np.ndarray, cs=(0.0, 1.0), seed: int = 0, control_draws: int = spectral.N_DRAWS,
                    ) -> pd.DataFrame:
    """Each surrogate's dose and Control A readouts of a stack of mean Jacobians, from scratch.

    For the lead's noise estimate on split halves of the passages: the same families and copies as
    the schur stage (its Schur factors are taken here, in the canonical order and stored as the
    stage stores them, complex64), at the doses ``cs`` (Control A too).

    Args:
        jac: (L, d, d) real mean Jacobians J̄_l.
        cs: doses in [0, 2].
        seed: seed of the Control A draws (the run's seed gives the stage's draws).
        control_draws: Control A draws per surrogate.

    Returns a DataFrame with rows (construction ∈ {dose, dose_ascending, dose_polar, control_a,
    control_a_ascending, control_a_polar}, draw, c, erank, log10_fro, henrici) of
    P_{0:L−1}(c). Polar rows are NaN when a layer fails the conditioning rule (``POLAR_COND_MAX``).
    Cost at L = 30, d = 576 on one core: about 45 s for cs = (0, 1) and 4 draws (measured on
    SmolLM2-135M, trained and random-init).
    """
    jac = np.asarray(jac)
    if jac.ndim != 3 or jac.shape[1] != jac.shape[2] or len(jac) == 0:
        raise UsageError(f"surrogate_doses needs jacobians of shape (L, d, d), got {jac.shape}")
    cs = tuple(float(c) for c in cs)
    if any(not 0.0 <= c <= 2.0 for c in cs):
        raise UsageError(f"doses must lie in [0, 2], got {cs}")
    n_layers, d, _ = jac.shape
    q = np.empty((n_layers, d, d), np.complex64)
    t = np.empty((n_layers, d, d), np.complex64)
    for l in range(n_layers):
        q[l], t[l], _ = schur_layer_stored(jac[l])
    need = sorted(set(cs) | ({0.0} if control_draws else set()) | ({1.0} if 1.0 in cs else set()))
    jobs = surrogate_jobs(q, t, jac, seed, cs=tuple(need), control_cs=cs, draws=control_draws)
    rows = evaluate_jobs(one_ahead(jobs))
    df = pd.DataFrame(rows, columns=["construction", "draw", "c", "erank", "log10_fro", "henrici"])
    df = df[df["c"].isin(cs)].reset_index(drop=True)
    df["draw"] = df["draw"].astype(np.int32)
    return df


def schur_layer_stored(jac: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One layer's complex Schur factors in the canonical order as the schur stage stores them:
    J̄_l (d, d) -> Q, T (d, d) complex64 and ‖Q T Q* − J̄_l‖_F / ‖J̄_l‖_F. A pure function."""
    j = np.asarray(jac, np.float64)
    q, t = spectral.schur_canonical(j)
    q, t = q.astype(np.complex64), t.astype(np.complex64)
    return q, t, spectral.schur_error(q, t, j)
