"""Synthetic runs: a complete run store with the foundation's data contract, built without a model.

Used by the tests of every layer (tables, figures, pages) and by the dashboard latency benchmark.
numpy/scipy only, no torch.

How the numbers are made, and why they are self-consistent:

- Mean Jacobians J̄_l = Q T_l Qᵀ with one Haar-random orthogonal Q (d, d) shared by all layers
  and a block-diagonal T_l = diag(A_l, B_l, t_l):
    * A_l (s, s), s = 2k: I + R_top + ε E. R_top = c W_out M W_inᵀ has rank k, with W_in turned
      away from W_out by an angle φ_l (trained-like: large φ early = a non-normal "rotator",
      smaller φ late = more aligned), M with complex spectrum; E is a dense Gaussian perturbation.
    * B_l: (d − s) // 2 real 2×2 blocks ρ·rotation(θ) plus a shear ν (complex pairs, non-normal).
    * t_l: one 1×1 block when d − s is odd.
  ``init="random"`` makes every piece near the identity (eigenvalues cluster near Re = 1, the
  architectural null model of METHODS §3).
- Per-sample Jacobians J_i = Q (T_l + Δ_i) Qᵀ with Σ_i Δ_i = 0, so their mean is exactly J̄_l.
  They are never stored (neither does the real pipeline store them); ``samples.parquet`` holds
  their σ_max, σ_min, κ, ‖J‖_F and PR from ``linalg.sample_stats_from_gram`` and
  ``sample_profiles.parquet`` their per-layer medians (``resdyn.core.sample_stats``, what the
  "sample_stats" stage writes).
- ``layers.parquet`` / ``eigenvalues.parquet`` come from ``linalg.operator_table`` on the stored
  float32 Jacobians (exactly what the "spectra" stage does) when d ≤ ``EXACT_MAX_D``. Above that
  (the d = 4096 latency benchmark) dense eigensolves and SVDs would take hours on a CPU, so the
  same linalg functions are applied to the blocks instead: the
  spectrum of J̄ is the union of the blocks' spectra, and because the top-k singular values all
  live in A_l (checked at construction), self/forward alignment of J̄ equal those of A_l (they are
  invariant under the shared orthogonal similarity Q). ``tests/core/test_synthetic.py`` checks
  that both paths give the same tables.
- Activations are NOT J̄ applied to a state (no real run satisfies h_{l+1} = J̄_l h_l either: J̄
  is a mean of linearisations). They carry planted, slowly drifting signed communities so the
  topology stages have something to find: unit u at snapshot s loads positively on the latent
  factor of its community; pairs of communities are anti-correlated. The planted labels are
  stored as ``planted_communities.npy`` (2L, d) int32. Norms grow with depth, as in real models.

Large arrays are written layer by layer / snapshot by snapshot into memory-mapped ``.npy`` files
under a temporary name and renamed into place (the store's atomic-write rule).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from scipy.linalg import expm

from resdyn import __version__
from resdyn.config import RunConfig, resolve_cumulative_rank, resolve_k, validate_run_id
from resdyn.core import linalg, nulls
from resdyn.core import sample_stats
from resdyn.core import samples as snapshot_stats
from resdyn import stages
from resdyn.core.store import RunStore, _atomic_write

# The stages a synthetic run writes (the real ones' files, from the registry, in their order):
# what the Runs, Spectrum and Operator-type pages read. A status="partial" run stops after the
# mean Jacobians (no spectra, no per-sample statistics).
FOUNDATION = tuple(n for n in stages.names()
                   if n in {*stages.upstream("spectra"), *stages.upstream("sample_stats")})
PARTIAL_STAGES = tuple(stages.upstream("jacobians"))
# Up to this width the tables come from linalg.operator_table on the dense Jacobians.
EXACT_MAX_D = 64
SNAPSHOTS = "2l = block input (pre-attention), 2l+1 = attention-updated residual (pre-MLP); synthetic"


@dataclass(frozen=True)
class _Blocks:
    """Block-diagonal T = diag(a, b_1..b_m, t) in the basis of Q (float64)."""

    a: np.ndarray  # (s, s) leading dense block
    b: np.ndarray  # (m, 2, 2) 2×2 blocks
    t: np.ndarray  # (0,) or (1,) trailing 1×1 block

    def minus_identity(self) -> "_Blocks":
        return _Blocks(self.a - np.eye(len(self.a)), self.b - np.eye(2), self.t - 1.0)

    def eigenvalues(self) -> np.ndarray:
        """(d,) complex128, the union of the blocks' spectra (the spectrum of Q T Qᵀ)."""
        return np.concatenate([np.linalg.eigvals(self.a), np.linalg.eigvals(self.b).ravel(),
                               self.t.astype(np.complex128)])

    def singular_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Singular values of a (descending) and of all other blocks."""
        sa = np.linalg.svd(self.a, compute_uv=False)
        sb = np.concatenate([np.linalg.svd(self.b, compute_uv=False).ravel(), np.abs(self.t)])
        return sa, sb


def _haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n) float64 Haar-distributed orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _random_orthogonal(rng: np.random.Generator, n: int, block: int = 256) -> np.ndarray:
    """(n, n) float64 dense orthogonal matrix.

    Haar up to 2·block; above, two block-diagonal layers of Haar blocks with a random column
    permutation between them: still orthogonal and dense, but drawn in O(n·block²) + one product
    instead of an O(n³) QR (a 4096² QR takes minutes on a small CPU).
    """
    if n <= 2 * block:
        return _haar_orthogonal(rng, n)

    def block_diagonal() -> np.ndarray:
        out = np.zeros((n, n))
        for start in range(0, n, block):
            stop = min(start + block, n)
            out[start:stop, start:stop] = _haar_orthogonal(rng, stop - start)
        return out

    return block_diagonal()[:, rng.permutation(n)] @ block_diagonal()


def _dense(q: np.ndarray, blocks: _Blocks, dtype=np.float64) -> np.ndarray:
    """Q T Qᵀ as a dense (d, d) matrix, without forming T (O(d²) + one d³ product in ``dtype``)."""
    s, m = len(blocks.a), len(blocks.b)
    qt = np.empty_like(q)
    qt[:, :s] = q[:, :s] @ blocks.a
    qb = q[:, s:s + 2 * m].reshape(len(q), m, 2)
    qt[:, s:s + 2 * m] = np.einsum("dmi,mij->dmj", qb, blocks.b).reshape(len(q), 2 * m)
    qt[:, s + 2 * m:] = q[:, s + 2 * m:] * blocks.t
    return qt.astype(dtype, copy=False) @ q.T.astype(dtype, copy=False)


def _mean_blocks(rng: np.random.Generator, d: int, k: int, depth: float, init: str,
                 prev_out: np.ndarray | None = None) -> tuple[_Blocks, np.ndarray]:
    """T_l of one layer at relative depth ``depth`` ∈ [0, 1], and its write subspace W_out (s, k).

    Trained-like layers read partly where the previous layer wrote (``prev_out``), which gives
    forward alignment above chance; random-init layers draw their subspaces independently.
    """
    s = 2 * k
    m = (d - s) // 2
    trained = init != "random"
    # Rank-k part: reads along W_in, writes along W_out = cos φ W_in + sin φ W_perp.
    c = 3.0 if trained else 0.15 + 0.05 * depth
    cos_phi = 0.08 + 0.55 * depth if trained else 1.0
    psi = 1.0 if trained else 0.05
    o = _haar_orthogonal(rng, s)
    w_in = o[:, :k]
    if trained and prev_out is not None:
        w_in, _ = np.linalg.qr(np.cos(0.6) * prev_out + np.sin(0.6) * w_in)
    # W_perp: k directions orthogonal to W_in (project the rest of o off W_in, re-orthonormalise).
    rest = o[:, k:2 * k] - w_in @ (w_in.T @ o[:, k:2 * k])
    w_perp, _ = np.linalg.qr(rest)
    w_out = cos_phi * w_in + np.sqrt(1.0 - cos_phi**2) * w_perp
    p = _haar_orthogonal(rng, k)
    g = rng.standard_normal((k, k))
    rot = expm(psi * (g - g.T) / np.sqrt(2 * k))  # ψ = 0: M symmetric PSD; ψ > 0: complex spectrum
    mm = p @ np.diag(rng.uniform(1.0, 1.6, k)) @ rot.T @ p.T
    eps = 0.05 if trained else 0.01
    a = np.eye(s) + c * w_out @ mm @ w_in.T + eps * rng.standard_normal((s, s)) / np.sqrt(s)
    # 2×2 blocks: ρ e^{±iθ} rotations with a shear ν (non-normal unless ν = 0).
    if trained:
        rho = rng.uniform(0.75, 1.0 + 0.08 * depth, m)
        theta = rng.uniform(0.05, 0.6, m) * rng.choice([-1.0, 1.0], m)
        nu = rng.uniform(0.0, 0.3, m)
    else:
        rho = rng.uniform(0.985, 1.015, m)
        theta = rng.uniform(0.0, 0.02, m) * rng.choice([-1.0, 1.0], m)
        nu = rng.uniform(0.0, 0.01, m)
    b = np.empty((m, 2, 2))
    b[:, 0, 0] = b[:, 1, 1] = rho * np.cos(theta)
    b[:, 0, 1] = rho * np.sin(theta) + np.sign(theta) * nu
    b[:, 1, 0] = -rho * np.sin(theta)
    t = rng.uniform(0.9, 1.0, (d - s) % 2) if trained else rng.uniform(0.99, 1.01, (d - s) % 2)
    return _Blocks(a, b, t), w_out


def _operator(rng_q: np.random.Generator, rng_layers: np.random.Generator, n_layers: int, d: int, k: int,
              init: str) -> tuple[np.ndarray, list[_Blocks]]:
    """Q (d, d) and the blocks T_l of every layer: J̄_l = Q T_l Qᵀ."""
    q = _random_orthogonal(rng_q, d)
    layer_rngs = rng_layers.spawn(n_layers)
    blocks, w_out = [], None
    for l in range(n_layers):
        for _attempt in range(20):  # redraw in the (rare) case the singular-value gap is missing
            bl, w = _mean_blocks(layer_rngs[l], d, k, l / max(n_layers - 1, 1), init, w_out)
            if _check_gap(bl, k):
                break
        else:
            raise RuntimeError(f"synthetic layer {l}: no singular-value gap after 20 draws (d={d}, k={k})")
        blocks.append(bl)
        w_out = w
    return q, blocks


def operator_blocks(store: RunStore) -> tuple[np.ndarray, list[_Blocks]]:
    """Q (d, d) float64 and the per-layer blocks of a synthetic run, regenerated from its manifest
    (the same draws as ``make_synthetic_run``): J̄_l = Q diag(a, b_1 … b_m, t) Qᵀ."""
    m = store.manifest()
    if m.get("architecture") != "synthetic":
        raise ValueError(f"run {store.run_id} is not a synthetic run")
    rng_q, rng_layers, _, _ = np.random.default_rng(int(m["seed"])).spawn(4)
    return _operator(rng_q, rng_layers, int(m["n_layers"]), int(m["d_model"]), int(m["k"]), m["init"])


def _check_gap(blocks: _Blocks, k: int) -> bool:
    """True when J's and R's top-k singular values all lie in block ``a`` and are separated."""
    for bl in (blocks, blocks.minus_identity()):
        sa, sb = bl.singular_values()
        rest = sb.max(initial=0.0)
        if not (sa[k - 1] > 1.02 * max(rest, sa[k] if k < len(sa) else 0.0)):
            return False
    return True


def _sample_deviations(rng: np.random.Generator, n: int, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """(n, *shape) Gaussian deviations with exactly zero mean over the n samples."""
    x = scale * rng.standard_normal((n, *shape))
    return x - x.mean(axis=0, keepdims=True)


def _sample_stats_blocks(blocks: _Blocks, da: np.ndarray, db: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """(N, 5) σ_max, σ_min, κ, ‖J‖_F, PR of J_i = Q (T + Δ_i) Qᵀ from the blocks' Gram matrices.

    A block-diagonal Gram matrix has the union of the blocks' eigenvalues, so σ_max/σ_min are the
    extremes over blocks, Σσ² = Σ‖block‖_F², Σσ⁴ = Σ‖G_block‖_F² (= fro⁴ / PR per block). The
    millions of 2×2 blocks use the closed form (σ_max² + σ_min² = ‖B‖_F², σ_max σ_min = |det B|)
    because a batched eigensolve of that many tiny matrices would dominate the run time.
    """
    a = blocks.a + da
    sa = linalg.sample_stats_from_gram(np.einsum("nji,njk->nik", a, a))
    parts_max, parts_min = [sa["sigma_max"]], [sa["sigma_min"]]
    fro2 = sa["fro"] ** 2
    g2 = fro2**2 / sa["pr"]
    if len(blocks.b):
        b = blocks.b + db  # (N, m, 2, 2)
        f2 = np.sum(b * b, axis=(-2, -1))
        det = np.abs(b[..., 0, 0] * b[..., 1, 1] - b[..., 0, 1] * b[..., 1, 0])
        bmax = np.sqrt(0.5 * (f2 + np.sqrt(np.maximum(f2**2 - 4.0 * det**2, 0.0))))
        bmin = np.divide(det, bmax, out=np.zeros_like(det), where=bmax > 0)  # no cancellation
        parts_max.append(bmax.max(1))
        parts_min.append(bmin.min(1))
        fro2 = fro2 + f2.sum(1)
        g2 = g2 + (f2**2 - 2.0 * det**2).sum(1)  # σ_max⁴ + σ_min⁴
    if len(blocks.t):
        tv = np.abs(blocks.t + dt)[:, 0]
        parts_max.append(tv)
        parts_min.append(tv)
        fro2, g2 = fro2 + tv**2, g2 + tv**4
    smax, smin = np.max(parts_max, axis=0), np.min(parts_min, axis=0)
    with np.errstate(divide="ignore"):
        kappa = np.where(smin > 0, smax / np.where(smin > 0, smin, 1.0), np.inf)
    return np.column_stack([smax, smin, kappa, np.sqrt(fro2), fro2**2 / g2])


def _sample_stats_dense(q: np.ndarray, blocks: _Blocks, da: np.ndarray, db: np.ndarray, dt: np.ndarray,
                        chunk: int = 64) -> np.ndarray:
    """Same as ``_sample_stats_blocks`` but from the dense per-sample Gram matrices (small d)."""
    out = []
    for start in range(0, len(da), chunk):
        jac = np.stack([_dense(q, _Blocks(blocks.a + da[i], blocks.b + db[i], blocks.t + dt[i]))
                        for i in range(start, min(start + chunk, len(da)))])
        st = linalg.sample_stats_from_gram(np.einsum("nji,njk->nik", jac, jac))
        out.append(np.column_stack([st[c] for c in ("sigma_max", "sigma_min", "kappa", "fro", "pr")]))
    return np.concatenate(out)


def _operator_table_blocks(layers: list[_Blocks], dense_norms: list[tuple[float, float]], k: int,
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``linalg.operator_table`` for J̄_l = Q T_l Qᵀ computed from the blocks (see module docstring).

    ``dense_norms[l]`` = (‖J̄_l‖_F, ‖J̄_l − I‖_F) of the stored matrices.
    """
    n_layers = len(layers)
    rows, eig_frames = [], []
    for op in ("J", "R"):
        mats = layers if op == "J" else [bl.minus_identity() for bl in layers]
        for l, bl in enumerate(mats):
            lam = bl.eigenvalues()
            lam = lam[np.lexsort((lam.imag, lam.real))]  # the order operator_table uses
            d = len(lam)
            eig_frames.append(pd.DataFrame({
                "layer": np.full(d, l, dtype=np.int32), "operator": op, "idx": np.arange(d, dtype=np.int32),
                "re": lam.real, "im": lam.imag,
            }))
            fro_j, fro_r = dense_norms[l]
            fro = fro_j if op == "J" else fro_r
            rows.append({
                "layer": l, "operator": op,
                "self_alignment": linalg.self_alignment(bl.a, k),
                "forward_alignment": (linalg.forward_alignment(bl.a, mats[l + 1].a, k)
                                      if l + 1 < n_layers else np.nan),
                # henrici(a, λ) only needs ‖a‖_F and λ: a 1×1 stand-in with the same norm is exact.
                "henrici": linalg.henrici(np.array([[fro]]), lam),
                **linalg.spectrum_stats(lam),
                "residual_norm_ratio": fro_r / fro_j,
            })
    return pd.DataFrame(rows), pd.concat(eig_frames, ignore_index=True)


def _write_npy_chunked(store: RunStore, name: str, shape: tuple[int, ...], fill) -> None:
    """Create ``NAME.npy`` (float32) as a memmap under a temporary name, ``fill(arr)``, rename."""
    def write(tmp: Path) -> None:
        arr = open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        fill(arr)
        arr.flush()
        del arr

    _atomic_write(store.array_path(name), write)


def _activations(rng: np.random.Generator, n: int, n_snap: int, d: int, n_comm: int,
                 ) -> tuple[list[np.ndarray], Callable[[], Iterator[np.ndarray]]]:
    """Planted-community states: (labels (d,) int per snapshot, a generator of (N, d) float32 per snapshot)."""
    base = rng.permutation(np.arange(d) % n_comm)
    labels = [base]
    for _ in range(n_snap - 1):  # ~3 % of units change community at each boundary
        lab = labels[-1].copy()
        moved = rng.random(d) < 0.03
        lab[moved] = rng.integers(0, n_comm, int(moved.sum()))
        labels.append(lab)
    loading = rng.uniform(0.5, 1.5, d)
    mu = rng.standard_normal(d)
    mu[rng.choice(d, max(1, d // 512), replace=False)] *= 20.0  # a few "massive activation" units

    def states():
        f = rng.standard_normal((n, n_comm))
        for s in range(n_snap):
            f = 0.8 * f + 0.6 * rng.standard_normal((n, n_comm))  # AR(1): adjacent snapshots alike
            g = f.copy()
            pairs = 2 * (n_comm // 2)  # community 2j+1 anti-correlates with 2j (negative edges)
            g[:, 1:pairs:2] = -0.6 * f[:, 0:pairs:2] + 0.8 * f[:, 1:pairs:2]
            scale = np.exp(0.04 * s)  # residual norms grow with depth
            x = g[:, labels[s]] * loading + 0.7 * rng.standard_normal((n, d)) + 0.5 * mu
            yield (scale * x).astype(np.float32)

    return labels, states


def make_synthetic_run(runs_dir, run_id: str, *, n_layers: int = 4, d: int = 32, n_samples: int = 16,
                       seed: int = 0, init: str = "pretrained", status: str = "complete",
                       exact: bool | None = None) -> RunStore:
    """Write a synthetic run ``runs_dir/run_id`` with the full foundation data contract.

    Args:
        runs_dir: directory of runs (created if missing).
        run_id: run name, ``[A-Za-z0-9_.-]+``. An existing run of that id is overwritten.
        n_layers: L blocks. d: residual width (≥ 8). n_samples: N.
        seed: every array is a deterministic function of (seed, sizes, init).
        init: "pretrained" (trained-like: complex, non-normal, depth-varying operator type) or
            "random" (near-identity, eigenvalues clustered near Re = 1).
        status: "complete", or "partial" (stages activations and jacobians only: no layers,
            eigenvalues, samples or sample_profiles table, for testing partial-run handling).
        exact: tables from dense ``linalg.operator_table`` (True) or from the blocks (False);
            default True when d ≤ EXACT_MAX_D. Both give the same numbers.

    Files: manifest.json, activations.npy (N, 2L, d) f32, final_state.npy (N, d) f32,
    jacobians.npy (L, d, d) f32, layers.parquet, eigenvalues.parquet, samples.parquet,
    sample_profiles.parquet, passages.parquet, snapshots.parquet, summary.parquet (the samples.* rows),
    planted_communities.npy (2L, d) int32.
    Measured on a busy 2-core CPU with OPENBLAS_NUM_THREADS=1 (faster there than the default
    threading): L=4, d=32, N=16 in 0.3 s; L=2, d=4096, N=1000 in 27 s (about 9 s per layer, so
    L=32 takes about 5 minutes and writes 3 GB). Also: ``python -m resdyn.testing.synthetic --help``.
    """
    validate_run_id(run_id)
    if init not in ("pretrained", "random"):
        raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
    if status not in ("complete", "partial"):
        raise ValueError(f"status must be 'complete' or 'partial', got {status!r}")
    if d < 8 or n_layers < 1 or n_samples < 2:
        raise ValueError("need d ≥ 8, n_layers ≥ 1 and n_samples ≥ 2")
    exact = d <= EXACT_MAX_D if exact is None else exact
    k = resolve_k(None, d)
    cfg = RunConfig(model="synthetic", init=init, corpus="synthetic", samples=n_samples, seed=seed,
                    runs_dir=Path(runs_dir), run_id=run_id)
    store = RunStore(cfg.run_dir)
    store.path.mkdir(parents=True, exist_ok=True)
    for stale in stages.get("spectra").outputs + stages.get("sample_stats").outputs:
        (store.path / stale).unlink(missing_ok=True)  # an overwritten complete run must not leave tables behind
    n_comm = max(2, min(80, d // 8))
    manifest = cfg.new_manifest(
        architecture="synthetic", model_type="synthetic", snapshots=SNAPSHOTS, n_layers=n_layers, d_model=d,
        versions={"python": platform.python_version(), "torch": None, "transformers": None,
                  "numpy": np.__version__, "resdyn": __version__},
        synthetic={"n_communities": n_comm, "exact_tables": exact, "generator": "resdyn.testing.synthetic"})
    store.write_manifest(manifest)
    rng_q, rng_layers, rng_samples, rng_acts = np.random.default_rng(seed).spawn(4)
    timings: dict[str, float] = {}

    # -- stage "activations" ----------------------------------------------------------------
    t0 = time.perf_counter()
    labels, states = _activations(rng_acts, n_samples, 2 * n_layers + 1, d, n_comm)
    gen = states()

    def fill_acts(arr):
        for s in range(2 * n_layers):
            arr[:, s, :] = next(gen)

    _write_npy_chunked(store, "activations", (n_samples, 2 * n_layers, d), fill_acts)
    store.write_array("final_state", next(gen))
    store.write_array("planted_communities", np.stack(labels[:2 * n_layers]).astype(np.int32))
    n_tokens = (20 + np.arange(n_samples) % 50).astype(np.int32)
    tokens = (np.arange(n_samples) % 7).astype(np.int64)  # seven distinct "last tokens"
    store.write_table("passages", pd.DataFrame({
        "sample": np.arange(n_samples, dtype=np.int32),
        "n_tokens": n_tokens,
        "position": n_tokens - 1,
        "token": tokens,
        "token_text": [f"t{t}" for t in tokens],
        "text": [f"Synthetic passage {i}." for i in range(n_samples)],
    }))
    # What the activations stage measures (resdyn.core.samples), from the stored float32 states.
    snap = snapshot_stats.snapshot_table(store.read_array("activations"), store.read_array("final_state"))
    store.write_table("snapshots", snap)
    store.update_summary(snapshot_stats.summary_values(snap, n_samples, tokens))
    timings["activations"] = time.perf_counter() - t0

    # -- stage "jacobians" ------------------------------------------------------------------
    t0 = time.perf_counter()
    q, blocks = _operator(rng_q, rng_layers, n_layers, d, k, init)
    norms: list[tuple[float, float]] = []
    eta = 0.15 if init != "random" else 0.02  # per-sample spread around the mean Jacobian
    stats = np.empty((n_layers, n_samples, 5))
    sample_rngs = rng_samples.spawn(n_layers)
    t_stats = 0.0  # the statistics are the "sample_stats" stage's work; the loop shares the blocks

    def fill_jac(arr):
        nonlocal t_stats
        eye = np.eye(d)
        for l, bl in enumerate(blocks):
            # Wide runs: a float32 product (what is stored anyway) halves the dominant d³ cost.
            arr[l] = _dense(q, bl, np.float64 if exact else np.float32)
            j32 = arr[l].astype(np.float64)
            norms.append((float(np.linalg.norm(j32)), float(np.linalg.norm(j32 - eye))))
            r = sample_rngs[l]
            da = _sample_deviations(r, n_samples, bl.a.shape, eta / np.sqrt(len(bl.a)))
            db = _sample_deviations(r, n_samples, bl.b.shape, eta)
            dt = _sample_deviations(r, n_samples, bl.t.shape, eta)
            t1 = time.perf_counter()
            stats[l] = (_sample_stats_dense(q, bl, da, db, dt) if exact
                        else _sample_stats_blocks(bl, da, db, dt))
            t_stats += time.perf_counter() - t1

    _write_npy_chunked(store, "jacobians", (n_layers, d, d), fill_jac)
    timings["jacobians"] = time.perf_counter() - t0 - t_stats

    # -- stage "spectra" (what resdyn/compute/stages/spectra.py does) ------------------------------
    if status == "complete":
        t0 = time.perf_counter()
        if exact:
            layers_df, eig_df = linalg.operator_table(store.read_array("jacobians", mmap=False), k)
        else:
            layers_df, eig_df = _operator_table_blocks(blocks, norms, k)
        layers_df = nulls.with_frac_complex_null(layers_df, d)
        layers_df = nulls.elliptic_columns(layers_df, nulls.residual_taus(store.read_array("jacobians")), d)
        store.write_table("layers", layers_df)
        store.write_table("eigenvalues", eig_df)
        timings["spectra"] = time.perf_counter() - t0

        # -- stage "sample_stats" (what resdyn/compute/stages/sample_stats.py writes) ---------------
        t0 = time.perf_counter()
        samples = sample_stats.samples_table(stats)
        store.write_table("samples", samples)
        store.write_table("sample_profiles", sample_stats.layer_profiles(samples))
        timings["sample_stats"] = t_stats + time.perf_counter() - t0

    done = list(FOUNDATION) if status == "complete" else list(PARTIAL_STAGES)
    manifest.update(status=status, stages_done=done,
                    timings={s: round(timings[s], 3) for s in done})
    store.write_manifest(manifest)
    return store


def main(argv: list[str] | None = None) -> int:
    """``python -m resdyn.testing.synthetic RUNS_DIR RUN_ID [--layers L --d D --samples N ...]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m resdyn.testing.synthetic",
                                description="Write a synthetic run with the full data contract (no model needed).")
    p.add_argument("runs_dir")
    p.add_argument("run_id")
    p.add_argument("--layers", type=int, default=4, help="L blocks (default 4)")
    p.add_argument("--d", type=int, default=32, help="residual width (default 32)")
    p.add_argument("--samples", type=int, default=16, help="N samples (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=("pretrained", "random"), default="pretrained")
    p.add_argument("--status", choices=("complete", "partial"), default="complete")
    ns = p.parse_args(argv)
    t0 = time.perf_counter()
    store = make_synthetic_run(ns.runs_dir, ns.run_id, n_layers=ns.layers, d=ns.d, n_samples=ns.samples,
                               seed=ns.seed, init=ns.init, status=ns.status)
    print(f"wrote {store.path} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
