"""How many samples a run really has: distinct states, rank and participation ratio per snapshot.

Every analysis reads one token's residual state per passage (METHODS §1). Passages cut at
sentence ends mostly end in the same token, so an early snapshot (snapshot 0 is that token's
embedding) holds only a handful of distinct states and spans a cloud of a few dimensions. This
module measures that, torch-free, for the ``activations`` stage (which stores the table as
``snapshots.parquet``) and for the dashboard (which computes it on read for older runs):

- ``n_distinct``: states that differ by more than ``DISTINCT_RTOL`` × the largest state norm of
  the snapshot (rows closer than that are one state; chains of close rows merge);
- ``rank``: numerical rank of the centred (N, d) sample matrix, singular values above
  s_max · max(N, d) · ε_float32 (the states are stored in float32, so that is their precision);
- ``participation_ratio``: (Σλ)² / Σλ² of the eigenvalues λ of the sample *correlation* matrix
  (units z-scored over the samples, constant units dropped), the number of equally strong
  directions that would give the same spread (1 … rank). The correlation matrix, not the
  covariance (METHODS §1): one unit with 50× the spread of the others drives a covariance PR to
  ≈ 1.5 however rich the sample is, and the topology analysis (§7) reads correlations anyway.
  ``pr_basis`` says which matrix a stored row used: "correlation" here; a table written before
  the column existed used the covariance and ``run_snapshot_table`` recomputes it on read.

N samples bound the rank of any covariance or correlation matrix by N − 1, so a d × d
correlation graph (METHODS §7) of N < d samples is built from an (N − 1)-dimensional cloud.

A snapshot is *degenerate* (``DEGENERATE_RULE``) when its distinct states are fewer than
``DEGENERATE_DISTINCT_FRACTION`` × N or its participation ratio is below ``DEGENERATE_PR``.
Layer l reads snapshot 2l (its input states), so J̄_l of a degenerate snapshot is in effect a
mean over a few tokens.

``--position random`` (``choose_positions``) is the alternative to the last token.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

DISTINCT_RTOL = 1e-6
"""Two states are one when ‖x_i − x_j‖ ≤ DISTINCT_RTOL · max_k ‖x_k‖ (float32 storage rounds at ~6e-8)."""
RANK_EPS = float(np.finfo(np.float32).eps)
"""Machine epsilon of the stored states: the rank tolerance is s_max · max(N, d) · RANK_EPS."""
DEGENERATE_DISTINCT_FRACTION = 0.10
DEGENERATE_PR = 3.0
DEGENERATE_RULE = (f"distinct states < {DEGENERATE_DISTINCT_FRACTION:.0%} of N, or participation ratio "
                   f"< {DEGENERATE_PR:g} (of the correlation matrix)")
MIN_CONTEXT = 16
"""--position random picks a token with at least this many tokens before it (index ≥ 16)."""
POSITIONS = ("last", "random")
COLUMNS = ("snapshot", "n_distinct", "rank", "participation_ratio", "pr_basis")
PR_BASIS = "correlation"
"""``pr_basis`` of the tables written now; older tables (no column) hold a covariance PR."""
# Compute-on-read budget for runs without snapshots.parquet: about min(N,d)²·max(N,d) flops per
# snapshot. The demo (N = 128, d = 576, 61 snapshots) needs 6e8; 4e10 is a few seconds.
ON_READ_MAX_FLOPS = 4e10


# -- one snapshot -----------------------------------------------------------------------------------

def distinct_states(x: np.ndarray, rtol: float = DISTINCT_RTOL) -> int:
    """Number of distinct rows of x (N, d), any float dtype: rows within rtol · max row norm of
    each other (Euclidean, transitively) count once. 0 for N = 0."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return 0
    u = np.unique(x, axis=0)  # exact duplicates first (identical tokens at snapshot 0)
    sq = np.einsum("ij,ij->i", u, u)
    tol2 = (rtol * np.sqrt(sq.max())) ** 2
    if len(u) == 1 or tol2 == 0.0:
        return len(u)
    rows, cols = [], []
    step = max(1, int(2**24 // len(u)))  # bounded (chunk, n) blocks of the Gram matrix
    for a in range(0, len(u), step):
        # ‖a − b‖² = ‖a‖² + ‖b‖² − 2a·b in float64: its rounding error (~1e-15 · max‖x‖²) is far below tol².
        d2 = sq[a:a + step, None] + sq[None, :] - 2.0 * (u[a:a + step] @ u.T)
        i, j = np.nonzero(d2 <= tol2)
        keep = i + a < j
        rows.append(i[keep] + a)
        cols.append(j[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    if not len(r):
        return len(u)
    graph = coo_array((np.ones(len(r)), (r, c)), shape=(len(u), len(u)))
    return int(connected_components(graph, directed=False)[0])


def covariance_spectrum(x: np.ndarray) -> np.ndarray:
    """Singular values (min(N, d),) float64, descending, of the centred sample matrix of x (N, d).

    From the eigenvalues of the smaller Gram matrix in float64; the covariance eigenvalues are
    s² / (N − 1). Their absolute error (~1e-8 · s_max) is far below the rank tolerance.
    """
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0, keepdims=True)
    g = xc @ xc.T if xc.shape[0] <= xc.shape[1] else xc.T @ xc
    ev = np.linalg.eigvalsh(g)[::-1].clip(min=0.0)
    return np.sqrt(ev)


def numerical_rank(s: np.ndarray, shape: tuple[int, int]) -> int:
    """Singular values s above s_max · max(N, d) · ε_float32 (0 for an all-zero matrix)."""
    if not len(s) or s[0] == 0.0:
        return 0
    return int((s > s[0] * max(shape) * RANK_EPS).sum())


def correlation_participation_ratio(x: np.ndarray) -> float:
    """Participation ratio (Σλ)² / Σλ² of the eigenvalues λ of the correlation matrix of x (N, d).

    Units are z-scored over the N samples (ddof = 0); a unit whose spread is at the float32
    rounding level of its values (sd ≤ max|x_i| · ε_float32, e.g. exactly constant) is dropped, so
    d' units remain. Then Σλ = tr C = d' and Σλ² = ‖C‖_F² = ‖Z Zᵀ‖_F² / N² with Z (N, d') the
    z-scores: the N × N Gram matrix suffices. 1 … min(N − 1, d'); 0 when no unit varies.
    """
    z = np.asarray(x, dtype=np.float64)
    z = z - z.mean(axis=0, keepdims=True)
    sd = np.sqrt((z**2).mean(axis=0))
    live = sd > RANK_EPS * np.abs(np.asarray(x, dtype=np.float64)).max(axis=0, initial=0.0)
    if not live.any() or len(z) < 2:
        return 0.0
    z = z[:, live] / sd[live]
    g = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z
    sq = float((g**2).sum()) / len(z) ** 2
    return float(live.sum()) ** 2 / sq if sq > 0 else 0.0


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """(Σλ)² / Σλ² of non-negative eigenvalues λ: r for r equal ones and zeros elsewhere; 0 when all
    are 0 (a cloud of one point spans no direction)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    s2 = float((lam**2).sum())
    return float(lam.sum() ** 2 / s2) if s2 > 0 else 0.0


def _one_thread():
    # The factorisations here are of N×N matrices (N ~ 100s): one BLAS thread is fastest, and on a
    # shared CPU a threaded 576×127 QR was measured 100× slower (1.5 s against 0.01 s).
    return threadpool_limits(limits=1, user_api="blas")


def snapshot_stats(x: np.ndarray) -> dict:
    """{n_distinct, rank, participation_ratio, pr_basis} of one snapshot's states x (N, d): the rank
    of the centred samples and the participation ratio of their correlation matrix."""
    with _one_thread():
        return _snapshot_stats(x)


def _snapshot_stats(x: np.ndarray) -> dict:
    s = covariance_spectrum(x)
    return {"n_distinct": distinct_states(x), "rank": numerical_rank(s, np.shape(x)),
            "participation_ratio": correlation_participation_ratio(x), "pr_basis": PR_BASIS}


def snapshot_table(acts: np.ndarray, final: np.ndarray | None = None) -> pd.DataFrame:
    """``snapshots.parquet``: one row per snapshot of acts (N, 2L, d) (memory-mapped is fine: one
    snapshot is read at a time), plus snapshot 2L for the final state (N, d) when given — the same
    numbering as the communities stage. Columns ``COLUMNS``: int32, int32, int32, float64, string."""
    n_snap = acts.shape[1]
    rows = []
    for s in range(n_snap + (final is not None)):
        x = np.asarray(final if s == n_snap else acts[:, s, :])
        rows.append({"snapshot": s, **snapshot_stats(x)})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"snapshot": np.int32, "n_distinct": np.int32, "rank": np.int32,
                      "participation_ratio": np.float64, "pr_basis": str})


# -- the run's summary and the degeneracy rule ------------------------------------------------------

def is_degenerate(table: pd.DataFrame, n: int) -> pd.Series:
    """Boolean per row of a snapshot table: ``DEGENERATE_RULE`` with N = n samples."""
    return ((table["n_distinct"].astype(float) < DEGENERATE_DISTINCT_FRACTION * n)
            | (table["participation_ratio"].astype(float) < DEGENERATE_PR))


def degenerate_snapshots(table: pd.DataFrame | None, n: int) -> list[int]:
    """Snapshots of ``table`` that are degenerate, in order ([] without a table)."""
    if table is None or not len(table):
        return []
    return sorted(int(s) for s in table.loc[is_degenerate(table, n), "snapshot"])


def degenerate_layers(table: pd.DataFrame | None, n: int, n_layers: int) -> list[int]:
    """Layers l whose input snapshot 2l is degenerate: J̄_l is a mean over a degenerate sample."""
    return sorted({s // 2 for s in degenerate_snapshots(table, n) if s % 2 == 0 and s < 2 * n_layers})


def summary_values(table: pd.DataFrame, n: int, tokens: np.ndarray | None) -> dict[str, float]:
    """The ``samples.*`` rows of summary.parquet: N, distinct tokens at the analysed position (NaN
    without token ids), the smallest participation ratio and distinct count over snapshots, and
    how many snapshots are degenerate."""
    return {
        "samples.n": float(n),
        "samples.distinct_last_tokens": float(len(np.unique(tokens))) if tokens is not None else np.nan,
        "samples.min_participation_ratio": float(table["participation_ratio"].min()),
        "samples.min_distinct": float(table["n_distinct"].min()),
        "samples.degenerate_snapshots": float(len(degenerate_snapshots(table, n))),
    }


def describe_snapshot(row, n: int, d: int) -> str:
    """One phrase for a snapshot's row: 'k of N distinct, rank r of d, PR p'."""
    return (f"{int(row['n_distinct'])} of {n} distinct states, rank {int(row['rank'])} "
            f"(≤ N − 1 = {n - 1}, d = {d}), participation ratio {float(row['participation_ratio']):.2g}")


# -- --position random ------------------------------------------------------------------------------

def choose_positions(n_tokens: np.ndarray, position: str = "last", seed: int = 0) -> np.ndarray:
    """The analysed token of each passage: (N,) int64 indices into its tokens.

    ``last``: n_tokens − 1 (the paper's). ``random``: uniform over [MIN_CONTEXT, n_tokens − 1]
    from a generator seeded by (seed, a fixed stream number), one draw per passage in corpus
    order, so a rerun (and any N' ≤ N prefix) gets the same positions; a passage of at most
    MIN_CONTEXT tokens uses its last token (``short_passages`` counts them).
    """
    t = np.asarray(n_tokens, dtype=np.int64)
    last = t - 1
    if position == "last":
        return last
    if position != "random":
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    u = np.random.default_rng([int(seed), 0x706F73]).random(len(t))  # stream 'pos'
    span = np.maximum(t - MIN_CONTEXT, 0)  # choices MIN_CONTEXT .. t − 1
    pick = MIN_CONTEXT + np.minimum((u * span).astype(np.int64), np.maximum(span - 1, 0))
    return np.where(t > MIN_CONTEXT, pick, last)


def short_passages(n_tokens: np.ndarray) -> int:
    """Passages too short for --position random (≤ MIN_CONTEXT tokens): they use the last token."""
    return int((np.asarray(n_tokens) <= MIN_CONTEXT).sum())


# -- a null for the communities: the sample itself, rotated (METHODS §7) ----------------------------

def rotation_null(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The snapshot's z-scored sample in random axes: (N, d) float64, every varying unit z-scored.

    x (N, d): the snapshot's states. Z (N, d') holds the units that vary (``standardize``'s rule,
    ddof = 0), each z-scored over the samples; with Z = U S Vᵀ (r = rank singular values) the null
    is U S Qᵀ, Q (d', r) the first r columns of a Haar-random orthogonal matrix (the Q of a QR of a
    d' × r Gaussian, signs fixed), z-scored again. Constant units stay 0 (no edges, as in the data).

    Why this and not a Gaussian with the covariance spectrum: the graph is built on correlations,
    and a few heavy units dominate a covariance spectrum (5 units of 30× the variance give a
    Gaussian null of correlation PR 5.7 against the data's 89), and a fresh Gaussian draw adds a
    second round of sampling noise (PR 89 → 53 with equal variances). The rotation keeps the
    samples' own Gram matrix Z Zᵀ = U S² Uᵀ, hence the correlation spectrum up to the second
    z-scoring, and removes only the alignment of the cloud with the units: whatever communities it
    yields, a cloud of this shape yields without any unit-level structure.
    """
    return rotation_nulls(x, rng, 1)[0]


def rotation_nulls(x: np.ndarray, rng: np.random.Generator, n_draws: int) -> list[np.ndarray]:
    """``n_draws`` independent ``rotation_null`` draws of x (N, d), sharing one SVD: a list of
    (N, d) float64. The first equals ``rotation_null(x, rng)`` with the same generator state."""
    from resdyn.core.correlation import standardize

    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    outs = []
    with _one_thread():
        zu = standardize(x).astype(np.float64)  # (d, N); constant units are 0
        live = np.flatnonzero(np.abs(zu).max(axis=1) > 0)
        if not len(live):
            return [np.zeros((n, d)) for _ in range(n_draws)]
        u, s, _ = np.linalg.svd(zu[live].T, full_matrices=False)  # (N, m), (m,)
        r = max(1, numerical_rank(s, (n, len(live))))
        us = u[:, :r] * s[:r]
        for _ in range(n_draws):
            q, tri = np.linalg.qr(rng.standard_normal((len(live), r)))
            q *= np.sign(np.diag(tri))  # Haar: fix QR's sign freedom
            out = np.zeros((n, d))
            out[:, live] = standardize(us @ q.T).T  # column means stay 0 (U ⟂ 1 for s > 0)
            outs.append(out)
    return outs


# -- reading a run ---------------------------------------------------------------------------------

def run_snapshot_table(store, compute: bool = True) -> tuple[pd.DataFrame | None, str]:
    """A run's snapshot table and where it came from: ("stored") snapshots.parquet; ("computed")
    from activations.npy (and final_state.npy) for runs that predate the table, when that costs at
    most ``ON_READ_MAX_FLOPS``; (None, why) otherwise.

    A stored table without ``pr_basis`` (written before the participation ratio moved to the
    correlation matrix) gets its ``participation_ratio`` recomputed from the activations
    ("stored, PR recomputed"; an N × N Gram product per snapshot), or keeps its covariance values
    with ``pr_basis`` = "covariance" when the activations are gone.
    """
    if store.has_table("snapshots"):
        table = store.read_table("snapshots")
        if "pr_basis" in table.columns:
            return table, "stored"
        if not compute or not store.has_array("activations"):
            return table.assign(pr_basis="covariance"), "stored"
        acts = store.read_array("activations")
        final = store.read_array("final_state") if store.has_array("final_state") else None
        with _one_thread():
            pr = [correlation_participation_ratio(np.asarray(final if s == acts.shape[1] else acts[:, s, :]))
                  for s in table["snapshot"].astype(int)]
        return table.assign(participation_ratio=np.asarray(pr, dtype=np.float64),
                            pr_basis=PR_BASIS), "stored, PR recomputed"
    if not compute or not store.has_array("activations"):
        return None, "no activations"
    acts = store.read_array("activations")
    n, n_snap, d = acts.shape
    if min(n, d) ** 2 * max(n, d) * (n_snap + 1) > ON_READ_MAX_FLOPS:
        return None, "too large to compute on read"
    final = store.read_array("final_state") if store.has_array("final_state") else None
    return snapshot_table(acts, final), "computed"


def passage_tokens(store) -> np.ndarray | None:
    """Token ids at the analysed positions (passages.parquet's ``token``), None for older runs."""
    if not store.has_table("passages"):
        return None
    p = store.read_table("passages")
    return p["token"].to_numpy() if "token" in p.columns else None
