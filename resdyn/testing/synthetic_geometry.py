"""The "schur" and "pseudospectra" stages of a synthetic run, computed block by block.

A synthetic run's mean Jacobians are J̄_l = Q T_l Qᵀ with one orthogonal Q and a block-diagonal
T_l = diag(a, b_1 … b_m, t) (``resdyn.testing.synthetic``). A Schur form of each block, a = Z_a S_a Z_a*
and b_j = U_j S_j U_j*, gives a complex Schur form of J̄_l with block-diagonal upper-triangular S_l
and unitary Q·diag(Z_a, U_1 … U_m, 1). Everything the two stages store is unitarily invariant, so
it follows from the blocks: singular values and eigenvalues of a block-diagonal matrix are the
union of the blocks', σ_min(zI − S) is the smallest over blocks, the numerical range is the convex
hull of the blocks' ranges, and products of block-diagonal matrices stay block-diagonal.

Why: at d = 4096 the real stages need LAPACK Schur forms, d×d products per dose and pseudospectra
on 4096² triangular matrices (hours on a small CPU). The dashboard latency benchmark needs a run of
that size with the stages' real tables and arrays; this writes them in about two minutes.

What differs from the real stages. The Schur form is a valid one but not in the canonical order
(descending |λ| across all blocks would mix the blocks): its eigenvalues run block by block, so
the dose J(c) = Q(Λ + cN)Q* of c ≠ 1 is a different (equally legitimate) construction, and the
manifest's ``schur_order`` says so; at c = 1 everything equals J̄. The dose table holds
constructions "dose", "order_draw" and "skip" (controls A and B draw dense random matrices, which
have no block form). Its order draws permute the eigenvalues only within blocks (a random order of
the 2k-block by ``spectral.random_order_layer``, each 2×2 block's pair swapped or not), the orders
that keep the block form. The block of size 2k and the pseudospectra of a use the real stage's
functions.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.linalg as sl
from numpy.lib.format import open_memmap

from resdyn.core import spectral
from resdyn.core.spectral import NR_ANGLES, PSEUDO_DOSES, PSEUDO_GRID, PSEUDO_PAD
from resdyn.core.store import RunStore, _atomic_write
from resdyn.testing.synthetic import operator_blocks



# The manifest's schur_order for a synthetic run (the real stage writes spectral.SCHUR_ORDER).
SYNTHETIC_SCHUR_ORDER = "block by block (synthetic run, not the canonical order)"


def _schur_2x2(b: np.ndarray, swap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Complex Schur forms of m real 2×2 blocks b (m, 2, 2): U (m, 2, 2) unitary, S (m, 2, 2) upper
    triangular, b = U S U*. U's first column is a unit eigenvector: numpy's first one, or its
    second where ``swap`` (m,) bool is set (the other order of the pair on S's diagonal)."""
    _, v = np.linalg.eig(b.astype(np.complex128))
    k = np.zeros(len(b), np.int64) if swap is None else np.asarray(swap, np.int64)
    v0, v1 = v[np.arange(len(b)), 0, k], v[np.arange(len(b)), 1, k]
    u = np.empty((len(b), 2, 2), np.complex128)
    u[:, 0, 0], u[:, 1, 0], u[:, 0, 1], u[:, 1, 1] = v0, v1, -np.conj(v1), np.conj(v0)
    s = np.einsum("mji,mjk,mkl->mil", u.conj(), b, u)
    s[:, 1, 0] = 0.0
    return u, s


class _Layer:
    """One layer's Schur blocks: a-block (Z_a, S_a), 2×2 blocks (U, S), trailing 1×1 t."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.s_a, self.z_a = sl.schur(blocks.a.astype(np.complex128), output="complex")
        self.u_b, self.s_b = _schur_2x2(blocks.b)
        self.t = blocks.t.astype(np.complex128)
        self.n_a, self.m = len(blocks.a), len(blocks.b)

    def reordered(self, rng: np.random.Generator) -> "_Layer":
        """The same layer in a random block-preserving eigenvalue order: the 2k-block's eigenvalues
        permuted at random, each 2×2 block's pair swapped with probability 1/2."""
        out = object.__new__(_Layer)
        out.__dict__.update(self.__dict__)
        out.z_a, out.s_a = spectral.random_order_layer(self.z_a, self.s_a, rng)
        out.u_b, out.s_b = _schur_2x2(self.blocks.b, rng.random(self.m) < 0.5)
        return out

    def dosed(self, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The blocks of Λ + cN (in the Schur basis) at dose c."""
        a = spectral.dosed_schur_factor(self.s_a, c)
        b = self.s_b.copy()
        b[:, 0, 1] *= c
        return a, b, self.t

    def in_q_basis(self, c: float, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The blocks of J(c) + shift·I written in Q's basis: Z_a S_a(c) Z_a* + shift·I, U S_b(c) U* + shift·I,
        t + shift (shift = β − 1: the skip dose βI + R(c))."""
        a, b, t = self.dosed(c)
        a = self.z_a @ a @ self.z_a.conj().T
        b = np.einsum("mij,mjk,mlk->mil", self.u_b, b, self.u_b.conj())
        if shift:
            a = a + shift * np.eye(len(a))
            b = b + shift * np.eye(2)
            t = t + shift
        return a, b, t


def _product_row(layers: list[_Layer], c: float, shift: float = 0.0) -> dict[str, float]:
    """erank, log10_fro, henrici of the product of the layers' J_l(c) + shift·I, block by block."""
    n_a, m = layers[0].n_a, layers[0].m
    pa, pb, pt = np.eye(n_a, dtype=np.complex128), np.tile(np.eye(2, dtype=np.complex128), (m, 1, 1)), 1.0
    for ly in layers:
        a, b, t = ly.in_q_basis(c, shift)
        pa, pb, pt = a @ pa, b @ pb, t * pt
    pt = np.atleast_1d(pt)[: len(layers[0].t)]
    sigma = _union_sigma(pa, pb, pt)
    fro2 = float(np.sum(sigma ** 2))
    lam2 = float(np.sum(np.abs(_union_eigs(pa, pb, pt)) ** 2))
    return {"erank": spectral.erank(sigma), "log10_fro": 0.5 * np.log10(fro2),
            "henrici": float(np.sqrt(max(fro2 - lam2, 0.0) / fro2))}


def _union_sigma(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Singular values of diag(a, b_1 … b_m, t), descending."""
    s = np.concatenate([sl.svdvals(a, check_finite=False), np.linalg.svd(b, compute_uv=False).ravel(), np.abs(t)])
    return np.sort(s)[::-1]


def _union_eigs(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([sl.eigvals(a, check_finite=False), np.linalg.eigvals(b).ravel(), t])


def _sigma_min_2x2(b: np.ndarray, z: np.ndarray) -> np.ndarray:
    """min over blocks of σ_min(z − b_j) for upper-triangular 2×2 blocks b (m, 2, 2), z (n,): (n,).
    σ_min = |det| / σ_max with σ_max² = (f + sqrt(f² − 4|det|²)) / 2, f = ‖·‖_F² (no cancellation)."""
    out = np.full(z.shape, np.inf)
    for lo in range(0, len(b), 256):  # (256, n) at a time
        bb = b[lo:lo + 256]
        d0 = z[None, :] - bb[:, 0, 0][:, None]
        d1 = z[None, :] - bb[:, 1, 1][:, None]
        off = np.abs(bb[:, 0, 1])[:, None] ** 2
        f = np.abs(d0) ** 2 + np.abs(d1) ** 2 + off
        det = np.abs(d0 * d1)
        smax = np.sqrt(0.5 * (f + np.sqrt(np.maximum(f * f - 4.0 * det * det, 0.0))))
        out = np.minimum(out, (det / np.where(smax > 0, smax, 1.0)).min(axis=0))
    return out


def _numerical_range(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Boundary points of W(diag(a, b_1 … b_m, t)) at ``NR_ANGLES`` angles (Johnson's method, as
    ``spectral.numerical_range``): per angle, the support point of the block that supports it."""
    rot = np.exp(1j * np.linspace(0.0, 2.0 * np.pi, NR_ANGLES, endpoint=False))
    cands = [spectral.numerical_range(a, NR_ANGLES, method="dense")]
    h = 0.5 * (rot[None, :, None, None] * b[:, None] + np.conj(rot)[None, :, None, None]
               * np.conj(np.swapaxes(b, 1, 2))[:, None])  # (m, A, 2, 2) Hermitian parts
    _, vec = np.linalg.eigh(h)
    v = vec[..., :, 1]  # top eigenvector, (m, A, 2)
    pts = np.einsum("mai,mij,maj->ma", v.conj(), b, v)  # (m, A)
    best = np.argmax((rot[None, :] * pts).real, axis=0)
    cands.append(pts[best, np.arange(NR_ANGLES)])
    if len(t):
        cands.append(np.full(NR_ANGLES, t[0]))
    cands = np.stack(cands)  # (blocks, A)
    return cands[np.argmax((rot[None, :] * cands).real, axis=0), np.arange(NR_ANGLES)]


def _write_complex(store: RunStore, name: str, shape: tuple[int, ...], fill) -> None:
    def write(tmp):
        arr = open_memmap(tmp, mode="w+", dtype=np.complex64, shape=shape)
        fill(arr)
        arr.flush()
        del arr

    _atomic_write(store.array_path(name), write)


def add_geometry_stages(store: RunStore, progress=spectral._no_progress) -> dict[str, float]:
    """Write the "schur" and "pseudospectra" stages' files of synthetic run ``store``, block by block.

    Files: schur_Q/T (L, d, d) complex64, schur_dose.parquet (constructions "dose", "order_draw"
    and "skip", mode J, with the real stage's columns),
    pseudospectra, numerical_range, layer_sigma and transient_growth .parquet, with the real
    stages' columns and grid sizes. Marks both stages done. Returns seconds per stage.
    Measured at L = 32, d = 4096 on the 2-core CPU: about 2 minutes, 4.3 GB per Q file (T files
    are sparse on disk: only their block diagonals are written).
    """
    q, blocks = operator_blocks(store)
    n_layers, d = len(blocks), len(q)
    t0 = time.perf_counter()
    layers = [_Layer(b) for b in progress(blocks, desc="block Schur forms", total=n_layers, unit="layer")]
    n_a = layers[0].n_a
    m = layers[0].m

    def fill_q(arr):
        for l, ly in enumerate(layers):
            ql = np.empty((d, d), np.complex128)
            ql[:, :n_a] = q[:, :n_a] @ ly.z_a
            qb = q[:, n_a:n_a + 2 * m].reshape(d, m, 2)
            ql[:, n_a:n_a + 2 * m] = np.einsum("dmi,mij->dmj", qb, ly.u_b).reshape(d, 2 * m)
            ql[:, n_a + 2 * m:] = q[:, n_a + 2 * m:]
            arr[l] = ql

    def fill_t(shift):
        def fill(arr):
            idx = n_a + 2 * np.arange(m)
            for l, ly in enumerate(layers):
                arr[l, :n_a, :n_a] = ly.s_a - shift * np.eye(n_a)
                arr[l, idx, idx] = ly.s_b[:, 0, 0] - shift
                arr[l, idx, idx + 1] = ly.s_b[:, 0, 1]
                arr[l, idx + 1, idx + 1] = ly.s_b[:, 1, 1] - shift
                if len(ly.t):
                    arr[l, d - 1, d - 1] = ly.t[0] - shift
        return fill

    _write_complex(store, "schur_Q", (n_layers, d, d), fill_q)
    _write_complex(store, "schur_T", (n_layers, d, d), fill_t(0.0))
    for stale in ("schur_R_Q", "schur_R_T"):  # written by older versions of this writer
        store.array_path(stale).unlink(missing_ok=True)
    store.update_manifest(schur_order=SYNTHETIC_SCHUR_ORDER)

    rows = []
    seed = int(store.manifest().get("seed", 0) or 0)
    for c in spectral.DOSE_GRID:
        for beta in spectral.SKIP_BETAS:
            st = _product_row(layers, c, beta - 1.0)
            if beta == 1.0:
                rows.append({"construction": "dose", "draw": 0, "c": float(c), "beta": 1.0, **st})
            rows.append({"construction": "skip", "draw": 0, "c": float(c), "beta": beta, **st})
    for draw in range(spectral.N_DRAWS):
        rng = np.random.default_rng([seed, 0, 2, draw])
        drawn = [ly.reordered(rng) for ly in layers]
        for c in spectral.DOSE_GRID:
            rows.append({"construction": "order_draw", "draw": draw, "c": float(c), "beta": 1.0,
                         **_product_row(drawn, c)})
    dose = pd.DataFrame(rows)
    dose.insert(0, "mode", "J")
    dose["draw"] = dose["draw"].astype(np.int32)
    store.write_table("schur_dose", dose)
    t_schur = time.perf_counter() - t0

    t0 = time.perf_counter()
    ps, nr, sv = [], [], []
    for l, ly in enumerate(progress(layers, desc="block pseudospectra", total=n_layers, unit="layer")):
        for c in PSEUDO_DOSES:
            a, b, t = ly.dosed(c)
            w = _numerical_range(a, b, t)
            nr.append(pd.DataFrame({"layer": np.int32(l), "c": float(c), "idx": np.arange(NR_ANGLES, dtype=np.int32),
                                    "x": w.real, "y": w.imag}))
            lam = np.concatenate([np.diag(a), b[:, 0, 0], b[:, 1, 1], t])  # triangular: the diagonals
            x, y = spectral.pseudospectrum_box(lam, w, PSEUDO_GRID, PSEUDO_PAD)
            z = (x[None, :] + 1j * y[:, None]).ravel()
            smin = np.minimum(spectral.sigma_min_grid(a, z), _sigma_min_2x2(b, z))
            if len(t):
                smin = np.minimum(smin, np.abs(z - t[0]))
            xx, yy = np.meshgrid(x, y)
            with np.errstate(divide="ignore"):
                ps.append(pd.DataFrame({"layer": np.int32(l), "c": float(c), "x": xx.ravel(), "y": yy.ravel(),
                                        "log10_sigma_min": np.log10(smin)}))
            sigma = _union_sigma(a, b, t)
            sv.append(pd.DataFrame({"layer": np.int32(l), "c": float(c),
                                    "i": np.arange(1, d + 1, dtype=np.int32), "sigma": sigma}))
    store.write_table("pseudospectra", pd.concat(ps, ignore_index=True))
    store.write_table("numerical_range", pd.concat(nr, ignore_index=True))
    store.write_table("layer_sigma", pd.concat(sv, ignore_index=True))
    # Transient growth: ‖J̄_{l+k−1} ··· J̄_l‖₂ is the largest block σ_max of the blockwise product.
    q_basis = [ly.in_q_basis(1.0) for ly in layers]
    tg = []
    for l in range(n_layers):
        pa, pb = np.eye(n_a, dtype=np.complex128), np.tile(np.eye(2, dtype=np.complex128), (m, 1, 1))
        pt = np.ones(len(layers[0].t), np.complex128)
        for k in range(1, n_layers - l + 1):
            a, b, t = q_basis[l + k - 1]
            pa, pb, pt = a @ pa, b @ pb, t * pt
            top = max(sl.svdvals(pa, check_finite=False)[0], np.linalg.svd(pb, compute_uv=False).max(),
                      np.abs(pt).max(initial=0.0))
            tg.append((l, k, np.log10(top)))
    store.write_table("transient_growth", pd.DataFrame({
        "layer": np.array([r[0] for r in tg], np.int32), "k": np.array([r[1] for r in tg], np.int32),
        "log10_norm": np.array([r[2] for r in tg])}))
    t_ps = time.perf_counter() - t0
    # The summary rows the real stages add (the block Schur forms are exact: no reconstruction error).
    by_c = dose[(dose["construction"] == "dose")].set_index("c")["erank"]
    store.update_summary({
        **{f"schur.erank.J.c{c:g}": float(by_c[c]) for c in (0.0, 1.0, 2.0)},
        "transient.log10_peak_P0": float(max(r[2] for r in tg if r[0] == 0)),
        "transient.peak_k_P0": float(max((r for r in tg if r[0] == 0), key=lambda r: r[2])[1]),
        "transient.log10_end_P0": float(next(r[2] for r in tg if r[0] == 0 and r[1] == n_layers)),
    })
    for name, secs, outputs in (
            ("schur", t_schur, ("schur_Q.npy", "schur_T.npy", "schur_dose.parquet")),
            ("pseudospectra", t_ps, ("pseudospectra.parquet", "numerical_range.parquet", "transient_growth.parquet",
                                     "layer_sigma.parquet"))):
        store.mark_stage_done(name, secs, [name], outputs=outputs)
    return {"schur": t_schur, "pseudospectra": t_ps}
