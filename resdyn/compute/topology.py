"""Activation-correlation graphs, signed Leiden communities and their coupling to the Jacobian.

METHODS §7 (topology) and §8 (topology ↔ dynamics). Pure numpy/scipy/igraph/leidenalg/infomap:
no torch, so every function here also runs in the dashboard process.

Snapshots. ``activations.npy`` is (N, 2L, d): snapshot 2l is the pre-attention state h_l of block
l and 2l+1 its pre-MLP state. When ``final_state.npy`` (N, d) exists, it is partitioned too and
stored as snapshot 2L ("final"), the state after the last block.

Which partition pairs with which Jacobian. The mean block Jacobian J̄_l = ∂h_{l+1}/∂h_l maps the
pre-attention state of block l to the pre-attention state of block l+1, so

- the input partition of layer l (C_in, the participation of the boundary-node test) is that of
  snapshot 2l;
- the output partition (C_out) is that of snapshot 2l+2; for the last layer it is the final state
  (snapshot 2L), or, when a run has no ``final_state.npy``, the pre-MLP snapshot 2L−1 of the last
  block (the closest state we have; recorded in ``mesoscale.parquet`` as ``snapshot_out``).

Column i of J̄_l is the response to a perturbation of input unit i, so the amplification of unit i
(its column norm) belongs with the input snapshot 2l. Pre-MLP snapshots get no column norm (NaN).

Stages (``STAGES``):

- ``communities``: graphs, partitions, participation → ``units``, ``communities``, ``nmi``,
  ``graph_edges``, and above d = 512 the dashboard's overview images ``corr_blocks`` (.npy and
  .parquet); per-snapshot checkpoints in ``.partial/communities`` make it resumable.
- ``topology_coupling``: mesoscale test, boundary-node test, rate-level tests → ``mesoscale``,
  ``coupling`` and ``topology.*`` rows of ``summary.parquet`` (name, value).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import igraph as ig
import leidenalg as la
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from resdyn.compute import executors
from resdyn.compute.geometry import update_summary  # the run's shared table of named scalars
from resdyn.core.correlation import HEATMAP_MAX, correlation, overview_blocks, standardize
from resdyn.compute.stages import stages_in
from resdyn.errors import ResdynError

# -- parameters (METHODS §7–8; the paper's values) ------------------------------------------------
TOP_K = 20                 # edges kept per unit by |corr|
CPM_GAMMA = 0.001          # CPM resolution on the positive subgraph
CPM_GAMMA_NEG = 0.0        # CPM resolution on the negative subgraph
METHODS = ("cpm", "infomap", "modularity1", "modularity2")
TAIL = 0.10                # top / bottom participation tails of the boundary-node test
N_NULL_PARTITIONS = 100    # size-matched random partitions of the mesoscale test
N_PERM_BOUNDARY = 5000     # permutations of the boundary-node test
N_PERM_RATE = 10000        # permutations of the rate-level tests
FDR_ALPHA = 0.05


def methods_for(choice: str) -> list[str]:
    """The community methods that ``--communities`` selects (``all`` → every method)."""
    if choice == "all":
        return list(METHODS)
    if choice not in METHODS:
        raise ResdynError(f"unknown --communities {choice!r}; choose one of {', '.join(METHODS)} or all")
    return [choice]


# -- graphs (METHODS §7.1–2) ----------------------------------------------------------------------
def top_k_graph(corr: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse signed graph keeping each unit's top-k edges by |corr| (METHODS §7.2).

    corr: (d, d) correlation. Each unit keeps its k largest |corr_ij|, j ≠ i (k is capped at
    d − 1). The directed choices are symmetrised: an edge is kept if either end chose it, with
    the signed weight of larger |w| (the two are equal for a symmetric matrix up to rounding).
    No self-loops; zero-weight edges (constant units) are dropped.
    Returns (i, j, w): (E,) int32, (E,) int32 with i < j, sorted by (i, j), and (E,) float32.
    """
    d = corr.shape[0]
    k = min(k, d - 1)
    if k < 1:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    a = np.abs(corr)
    np.fill_diagonal(a, -1.0)  # never choose a self-loop
    nbr = np.argpartition(a, d - k, axis=1)[:, d - k:]  # (d, k) column indices of the k largest
    del a
    rows = np.repeat(np.arange(d, dtype=np.int64), k)
    cols = nbr.ravel().astype(np.int64)
    w = corr[rows, cols].astype(np.float32)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    key = lo * d + hi
    # Sort by pair, then by descending |w|: the first row of each pair carries the larger |w|.
    order = np.lexsort((-np.abs(w), key))
    _, first = np.unique(key[order], return_index=True)
    keep = order[first]
    keep = keep[(w[keep] != 0) & np.isfinite(w[keep])]
    return lo[keep].astype(np.int32), hi[keep].astype(np.int32), w[keep]


# -- community detection (METHODS §7.3) -----------------------------------------------------------
def canonical_labels(membership) -> np.ndarray:
    """Relabel communities 0..m−1 by decreasing size, ties by their smallest unit. (d,) int32."""
    m = np.asarray(membership)
    _, inv, counts = np.unique(m, return_inverse=True, return_counts=True)
    first = np.full(len(counts), len(m))
    np.minimum.at(first, inv, np.arange(len(m)))
    rank = np.lexsort((first, -counts))  # old label ids in new order
    new = np.empty(len(counts), np.int32)
    new[rank] = np.arange(len(counts), dtype=np.int32)
    return new[inv.ravel()]


def _signed_layers(n: int, i, j, w) -> tuple[ig.Graph, ig.Graph]:
    """Positive and negative subgraphs on the same n vertices; the negative one carries |w|."""
    w = np.asarray(w, dtype=np.float64)
    pos, neg = w > 0, w < 0
    edges = np.column_stack((i, j))
    g_pos = ig.Graph(n=n, edges=edges[pos], edge_attrs={"weight": w[pos]})
    g_neg = ig.Graph(n=n, edges=edges[neg], edge_attrs={"weight": -w[neg]})
    return g_pos, g_neg


def _optimise_multiplex(parts: list, seed: int) -> None:
    opt = la.Optimiser()
    opt.set_rng_seed(int(seed))
    # n_iterations=-1 iterates until no move improves the joint quality (a stable partition).
    opt.optimise_partition_multiplex(parts, layer_weights=[1, -1][: len(parts)], n_iterations=-1)


def signed_cpm(n: int, i, j, w, seed: int = 0, gamma: float = CPM_GAMMA,
               gamma_neg: float = CPM_GAMMA_NEG) -> np.ndarray:
    """Signed Leiden CPM (Traag et al. 2011/2019; METHODS §7.3).

    The positive subgraph (resolution ``gamma``) and the negative subgraph (|w|, resolution
    ``gamma_neg``) are optimised jointly by leidenalg's multiplex optimiser with layer weights
    [1, −1]: positive edges are rewarded inside communities, negative edges penalised.
    ``seed`` fixes leidenalg's RNG, so a rerun gives the same partition.
    i, j, w: (E,) edge list from :func:`top_k_graph`. Returns (n,) int32 canonical labels.
    """
    g_pos, g_neg = _signed_layers(n, i, j, w)
    parts = [la.CPMVertexPartition(g_pos, weights="weight", resolution_parameter=gamma)]
    if g_neg.ecount():
        parts.append(la.CPMVertexPartition(g_neg, weights="weight", resolution_parameter=gamma_neg))
    _optimise_multiplex(parts, seed)
    return canonical_labels(parts[0].membership)


def signed_modularity(n: int, i, j, w, seed: int = 0, gamma: float = 1.0) -> np.ndarray:
    """Signed Leiden modularity (Gómez et al. 2009 / Traag & Bruggeman 2009) at resolution γ.

    Configuration-model modularity (``RBConfigurationVertexPartition``) on the positive and on the
    negative (|w|) subgraph, combined by the multiplex optimiser with layer weights [1, −1].
    Returns (n,) int32 canonical labels.
    """
    g_pos, g_neg = _signed_layers(n, i, j, w)
    parts = [la.RBConfigurationVertexPartition(g_pos, weights="weight", resolution_parameter=gamma)]
    if g_neg.ecount():  # an empty layer would divide by its zero total weight
        parts.append(la.RBConfigurationVertexPartition(g_neg, weights="weight", resolution_parameter=gamma))
    _optimise_multiplex(parts, seed)
    return canonical_labels(parts[0].membership)


def infomap_abs(n: int, i, j, w, seed: int = 0) -> np.ndarray:
    """Two-level InfoMap on the undirected |corr| graph (the paper's Table 1 baseline).

    Returns (n,) int32 canonical labels; a vertex without edges is its own module.
    """
    from infomap import Infomap, Options

    # Options is infomap ≥ 2.15's warning-free carrier; Infomap seeds must be positive.
    im = Infomap(options=Options(two_level=True, silent=True, flow_model="undirected", seed=int(seed) + 1,
                                 num_trials=1))
    im.add_nodes(range(n))
    if len(w):
        im.add_links(np.column_stack((i, j, np.abs(w))).astype(np.float64))
    modules = im.run().modules()
    raw = np.array([modules.get(v, -1 - v) for v in range(n)])
    return canonical_labels(raw)


def detect(method: str, n: int, i, j, w, seed: int = 0) -> np.ndarray:
    """Partition with one of :data:`METHODS`. Returns (n,) int32 canonical labels."""
    if method == "cpm":
        return signed_cpm(n, i, j, w, seed)
    if method == "infomap":
        return infomap_abs(n, i, j, w, seed)
    if method == "modularity1":
        return signed_modularity(n, i, j, w, seed, gamma=1.0)
    if method == "modularity2":
        return signed_modularity(n, i, j, w, seed, gamma=2.0)
    raise ResdynError(f"unknown community method {method!r}; choose one of {', '.join(METHODS)}")


# -- participation and NMI (METHODS §7.4–5) -------------------------------------------------------
def participation(labels: np.ndarray, i, j, w) -> np.ndarray:
    """Participation coefficient p_i = 1 − Σ_c (k_ic / k_i)², k_ic = Σ|w| from i into community c.

    labels: (n,) community of every unit; (i, j, w) the undirected edge list (each edge counts for
    both ends). 0 for a unit whose edges all stay in one community, 1 − 1/m for one spread evenly
    over m communities. NaN for a unit without edges. Returns (n,) float64.
    """
    labels = np.asarray(labels)
    n, m = len(labels), int(labels.max()) + 1 if len(labels) else 0
    aw = np.abs(np.asarray(w, dtype=np.float64))
    src = np.concatenate((i, j)).astype(np.int64)
    dst = np.concatenate((j, i)).astype(np.int64)
    kic = sp.csr_array((np.concatenate((aw, aw)), (src, labels[dst])), shape=(n, m))
    kic.sum_duplicates()  # k_ic must be a sum over all edges into c before squaring
    ki = np.asarray(kic.sum(axis=1)).ravel()
    sq = kic.copy()
    sq.data **= 2
    s2 = np.asarray(sq.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 1.0 - s2 / ki**2
    p[ki == 0] = np.nan
    return np.clip(p, 0.0, 1.0)


def nmi(a, b) -> float:
    """Normalised mutual information 2I(a;b)/(H(a)+H(b)) of two partitions (igraph; 1 if both trivial)."""
    return float(ig.compare_communities(list(map(int, a)), list(map(int, b)), method="nmi"))


def nmi_matrix(partitions: list[np.ndarray]) -> np.ndarray:
    """(S, S) float64 symmetric NMI between every pair of S partitions of the same units."""
    s = len(partitions)
    out = np.eye(s)
    for x in range(s):
        for y in range(x + 1, s):
            out[x, y] = out[y, x] = nmi(partitions[x], partitions[y])
    return out


# -- mesoscale operator (METHODS §8) ---------------------------------------------------------------
def _one_hot(labels: np.ndarray, m: int | None = None) -> sp.csr_array:
    labels = np.asarray(labels)
    m = int(labels.max()) + 1 if m is None else m
    return sp.csr_array((np.ones(len(labels)), (np.arange(len(labels)), labels)), shape=(len(labels), m))


def _block_sums(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray) -> np.ndarray:
    """S[a, b] = Σ_{i∈a (out), j∈b (in)} J_ij via sparse one-hot products, O(d²). (m_out, m_in)."""
    m_out, m_in = _one_hot(lab_out), _one_hot(lab_in)
    rows = m_out.T @ jac                    # (m_out, d)
    return (m_in.T @ rows.T).T              # (m_out, m_in)


def mesoscale_operator(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray) -> np.ndarray:
    """K = C_outᵀ J C_in, C's column c being 1/√n_c on the members of community c (METHODS §8).

    jac: (d, d) Jacobian (output × input); lab_out / lab_in: (d,) labels 0..m−1, every label used.
    Returns (m_out, m_in) float64.
    """
    s = _block_sums(np.asarray(jac, dtype=np.float64), lab_out, lab_in)
    n_out = np.bincount(lab_out, minlength=s.shape[0])
    n_in = np.bincount(lab_in, minlength=s.shape[1])
    return s / np.sqrt(np.outer(n_out, n_in))


def variance_captured(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray) -> float:
    """‖C_out K C_inᵀ‖_F² / ‖J‖_F² = ‖K‖_F² / ‖J‖_F² (C has orthonormal columns). 1 iff J is
    constant on every (out-community, in-community) block."""
    jac = np.asarray(jac, dtype=np.float64)
    k = mesoscale_operator(jac, lab_out, lab_in)
    return float((k**2).sum() / (jac**2).sum())


def mesoscale_test(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray,
                   n_null: int = N_NULL_PARTITIONS, rng: np.random.Generator | None = None) -> dict:
    """Variance captured by the community partitions against size-matched random partitions.

    A null partition keeps the community sizes and assigns units at random (a random permutation
    of the labels), independently on the input and output side. One-sided z = (vc − mean)/sd
    (ddof = 1) with its normal p, and the empirical p = (1 + #{null ≥ vc}) / (1 + n_null).
    Returns variance_captured, sigma_max_K (largest singular value of K), null_mean, null_std,
    null_q05, null_q95, z, p_z, p_empirical.
    """
    rng = np.random.default_rng() if rng is None else rng
    jac = np.asarray(jac, dtype=np.float64)
    lab_out, lab_in = np.asarray(lab_out), np.asarray(lab_in)
    total = float((jac**2).sum())
    k = mesoscale_operator(jac, lab_out, lab_in)
    vc = float((k**2).sum() / total) if total > 0 else np.nan
    sigma = float(np.linalg.svd(k, compute_uv=False)[0]) if k.size else np.nan
    n_out = np.bincount(lab_out).astype(float)
    n_in = np.bincount(lab_in).astype(float)
    scale = np.outer(n_out, n_in)
    null = np.empty(n_null)
    for r in range(n_null):
        s = _block_sums(jac, rng.permutation(lab_out), rng.permutation(lab_in))
        null[r] = (s**2 / scale).sum() / total
    mu, sd = float(null.mean()), float(null.std(ddof=1)) if n_null > 1 else np.nan
    z = (vc - mu) / sd if sd > 0 else np.nan
    return {
        "variance_captured": vc, "sigma_max_K": sigma,
        "null_mean": mu, "null_std": sd,
        "null_q05": float(np.quantile(null, 0.05)), "null_q95": float(np.quantile(null, 0.95)),
        "z": z, "p_z": float(stats.norm.sf(z)) if np.isfinite(z) else np.nan,
        "p_empirical": float((1 + np.sum(null >= vc)) / (1 + n_null)),
    }


# -- boundary-node test (METHODS §8) ---------------------------------------------------------------
def column_norms(jac: np.ndarray) -> np.ndarray:
    """‖J_{:,i}‖₂ for every input unit i: how strongly J amplifies a perturbation of unit i. (d,) float64."""
    return np.linalg.norm(np.asarray(jac, dtype=np.float64), axis=0)


def participation_tails(part: np.ndarray, tail: float = TAIL) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the top and bottom ``tail`` fraction of participation.

    Thresholds are the (1 − tail) and tail quantiles (numpy's linear rule); ties at a threshold
    are all included, so no unit is picked by an arbitrary tie-break. NaN participation is in
    neither tail.
    """
    part = np.asarray(part, dtype=np.float64)
    ok = np.isfinite(part)
    if not ok.any():
        return ok, ok
    lo, hi = np.quantile(part[ok], [tail, 1.0 - tail])
    return ok & (part >= hi), ok & (part <= lo)


def boundary_test(part: np.ndarray, norms: np.ndarray, tail: float = TAIL,
                  n_perm: int = N_PERM_BOUNDARY, rng: np.random.Generator | None = None) -> dict:
    """Are boundary units (high participation) amplified differently from core units?

    part, norms: (d,) participation and column norms of the same units.
    Cohen's d = (mean norm of the top tail − mean of the bottom tail) / std(all norms, ddof = 1)
    (METHODS §8; the paper's fixed denominator). The p-value is a two-sided permutation test of
    the difference of means: the pooled top and bottom units are re-split at random into groups of
    the same sizes (``scipy.stats.permutation_test``, vectorised; exact when there are fewer
    splits than ``n_perm``). Spearman ρ (and its p) is over all units with finite values.
    Returns cohens_d, p_perm, n_top, n_bottom, spearman_rho, spearman_p.
    """
    part = np.asarray(part, dtype=np.float64)
    norms = np.asarray(norms, dtype=np.float64)
    ok = np.isfinite(part) & np.isfinite(norms)
    top, bottom = participation_tails(np.where(ok, part, np.nan), tail)
    out = {"cohens_d": np.nan, "p_perm": np.nan, "n_top": int(top.sum()), "n_bottom": int(bottom.sum()),
           "spearman_rho": np.nan, "spearman_p": np.nan}
    if ok.sum() >= 3 and np.ptp(part[ok]) > 0 and np.ptp(norms[ok]) > 0:
        res = stats.spearmanr(part[ok], norms[ok])
        out.update(spearman_rho=float(res.statistic), spearman_p=float(res.pvalue))
    if not top.any() or not bottom.any() or (top & bottom).any() or ok.sum() < 2:
        return out  # all participation tied: the tails coincide and there is nothing to compare
    sd = float(norms[ok].std(ddof=1))
    diff = float(norms[top].mean() - norms[bottom].mean())
    out["cohens_d"] = diff / sd if sd > 0 else np.nan
    if sd > 0:
        res = stats.permutation_test(
            (norms[top], norms[bottom]),
            lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
            permutation_type="independent", vectorized=True, n_resamples=n_perm,
            alternative="two-sided", rng=rng,
        )
        out["p_perm"] = float(res.pvalue)
    return out


def bh_fdr(p: np.ndarray, alpha: float = FDR_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg adjusted p-values (``scipy.stats.false_discovery_control``) and the mask
    q ≤ alpha. NaN p-values are left out of the family and come back NaN / False."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q, np.isfinite(q) & (q <= alpha)


def permutation_spearman(x, y, n_perm: int = N_PERM_RATE,
                         rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Spearman ρ of x and y with a two-sided permutation p (pairings shuffled ``n_perm`` times).

    ρ is Pearson's r of the ranks, so the test is ``scipy.stats.pearsonr`` on ranks with a
    ``PermutationMethod``. Pairs with a NaN are dropped; fewer than 3 pairs give (NaN, NaN).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan
    res = stats.pearsonr(stats.rankdata(x), stats.rankdata(y),
                         method=stats.PermutationMethod(n_resamples=n_perm, rng=rng))
    return float(res.statistic), float(res.pvalue)


# -- stages ------------------------------------------------------------------------------------------
def _snapshot_sources(store) -> tuple[int, int, bool]:
    """(L, number of partitioned snapshots, has_final)."""
    m = store.manifest()
    n_layers = int(m["n_layers"])
    has_final = store.has_array("final_state")
    return n_layers, 2 * n_layers + int(has_final), has_final


def out_snapshot(layer: int, n_layers: int, has_final: bool) -> int:
    """The snapshot whose partition is C_out of layer ``layer`` (see the module docstring)."""
    if layer < n_layers - 1 or has_final:
        return 2 * layer + 2
    return 2 * layer + 1


def _atomic_savez(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_npz(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged checkpoint is recomputed


def _snapshot_job(job) -> dict:
    """One snapshot's graph and partitions: job = (snapshot, X (N, d) or None, saved, methods,
    d, seed), where ``saved`` holds what an earlier checkpoint already has (the graph i, j, w
    and some ``lab_<method>``). Returns the completed dict. Pure, so it may run on a Ray worker."""
    _, x, saved, methods, d, seed = job
    out = dict(saved) if saved is not None else {}
    if "i" not in out:
        out["i"], out["j"], out["w"] = top_k_graph(correlation(x))
    for m in methods:
        if f"lab_{m}" not in out:
            out[f"lab_{m}"] = detect(m, d, out["i"], out["j"], out["w"], seed=seed)
    return out


def compute_communities(ctx) -> None:
    """Stage ``communities``: for every snapshot, the top-k graph, the partitions of the selected
    methods and the participation coefficients; then NMI between all snapshot pairs.

    Writes graph_edges (snapshot, i, j, weight), units (snapshot, method, unit, community,
    participation, column_norm), communities (snapshot, method, community, size) and
    nmi (method, snapshot_a, snapshot_b, nmi; both orders and the diagonal).
    """
    store, cfg = ctx.store, ctx.cfg
    methods = methods_for(cfg.communities)
    n_layers, n_snap, has_final = _snapshot_sources(store)
    acts = store.read_array("activations")
    final = store.read_array("final_state") if has_final else None
    jacs = store.read_array("jacobians")
    d = acts.shape[2]
    part_dir = store.partial_dir("communities")
    # Checkpoints are only valid for the activations, seed and k they were computed with.
    src = [store.array_path("activations")] + ([store.array_path("final_state")] if has_final else [])
    stamp = np.array([[p.stat().st_mtime_ns, p.stat().st_size] for p in src] + [[cfg.seed, TOP_K]],
                     dtype=np.int64)

    # Pass 1: the snapshots whose checkpoint is missing, stale or short of a method, through the
    # run's executor (one at a time locally, a cluster's worth at once on Ray); each result is
    # checkpointed as it arrives.
    saved_all: dict[int, dict] = {}
    pending = []
    for s in range(n_snap):
        ck = part_dir / f"snap{s:04d}.npz"
        saved = _load_npz(ck) if ck.is_file() else None
        if saved is not None and np.array_equal(saved.get("stamp"), stamp):
            saved_all[s] = saved
            if all(f"lab_{m}" in saved for m in methods):
                continue
        pending.append(s)
    # A generator, so one chunk of snapshots' activations is in memory at a time.
    jobs = ((s, None if s in saved_all else np.asarray(final if s == 2 * n_layers else acts[:, s, :]),
             saved_all.get(s), methods, d, cfg.seed) for s in pending)
    bar = ctx.progress(None, desc="communities", total=n_snap, unit="snapshot")
    bar.update(n_snap - len(pending))
    for k, saved in executors.parallel_chunks(_snapshot_job, jobs):
        s = pending[k]
        saved["stamp"] = stamp
        _atomic_savez(part_dir / f"snap{s:04d}.npz", **saved)
        saved_all[s] = saved
        bar.update(1)
    bar.close()

    # Pass 2: the tables, in snapshot order.
    edges, units, comms = [], [], []
    labels = {m: [] for m in methods}
    for s in range(n_snap):
        saved = saved_all[s]
        i, j, w = saved["i"], saved["j"], saved["w"]
        edges.append(pd.DataFrame({"snapshot": np.int32(s), "i": i, "j": j, "weight": w}))
        if s % 2 == 0 and s < 2 * n_layers:
            cn = column_norms(jacs[s // 2])
        else:
            cn = np.full(d, np.nan)
        for m in methods:
            lab = saved[f"lab_{m}"]
            labels[m].append(lab)
            units.append(pd.DataFrame({
                "snapshot": np.int32(s), "method": m, "unit": np.arange(d, dtype=np.int32),
                "community": lab.astype(np.int32), "participation": participation(lab, i, j, w),
                "column_norm": cn,
            }))
            sizes = np.bincount(lab)
            comms.append(pd.DataFrame({"snapshot": np.int32(s), "method": m,
                                       "community": np.arange(len(sizes), dtype=np.int32),
                                       "size": sizes.astype(np.int32)}))
    nmi_rows = []
    for m in methods:
        mat = nmi_matrix(labels[m])
        a, b = np.meshgrid(np.arange(n_snap), np.arange(n_snap), indexing="ij")
        nmi_rows.append(pd.DataFrame({"method": m, "snapshot_a": a.ravel().astype(np.int32),
                                      "snapshot_b": b.ravel().astype(np.int32), "nmi": mat.ravel()}))
    store.write_table("graph_edges", pd.concat(edges, ignore_index=True))
    store.write_table("units", pd.concat(units, ignore_index=True))
    store.write_table("communities", pd.concat(comms, ignore_index=True))
    store.write_table("nmi", pd.concat(nmi_rows, ignore_index=True))
    _write_overview_blocks(store, acts, final, labels, methods)
    store.clear_partial("communities")


def _write_overview_blocks(store, acts, final, labels: dict[str, list[np.ndarray]], methods: list[str]) -> None:
    """corr_blocks.npy (S, 1 + M, m, m) float16 and corr_blocks.parquet (panel, order, f): the
    Communities page's overview panels (block means of C in unit order, then in each method's
    community order) for runs wider than HEATMAP_MAX, so that a page render reads two small
    images instead of z-scoring a whole snapshot. Narrower runs get neither file (and any old ones
    are removed): the page draws C itself there."""
    d = acts.shape[2]
    n_snap = len(labels[methods[0]])
    names = ("corr_blocks.parquet", "corr_blocks.npy")
    if d <= HEATMAP_MAX:
        for name in names:
            (store.path / name).unlink(missing_ok=True)
        return
    out, f = None, 1
    for s in range(n_snap):
        x = final if s == acts.shape[1] else acts[:, s, :]
        panels, f = overview_blocks(standardize(np.asarray(x)), [labels[m][s] for m in methods])
        if out is None:
            out = np.empty((n_snap, *panels.shape), np.float16)
        out[s] = panels
    store.write_array("corr_blocks", out)
    store.write_table("corr_blocks", pd.DataFrame({"panel": np.arange(1 + len(methods), dtype=np.int32),
                                                   "order": ["unit", *methods], "f": np.int32(f)}))


def _self_alignment(store, n_layers: int) -> np.ndarray:
    """(L,) self-alignment of J̄_l from layers.parquet, NaN where the spectra stage has not run."""
    out = np.full(n_layers, np.nan)
    if store.has_table("layers"):
        lay = store.read_table("layers", columns=["layer", "operator", "self_alignment"])
        lay = lay[lay["operator"] == "J"]
        idx = lay["layer"].to_numpy(int)
        keep = (idx >= 0) & (idx < n_layers)
        out[idx[keep]] = lay["self_alignment"].to_numpy(float)[keep]
    return out


def compute_coupling(ctx) -> None:
    """Stage ``topology_coupling``: per layer and method, the mesoscale test, the boundary-node
    test and the rate-level tests (METHODS §8).

    mesoscale.parquet: layer, method, snapshot_in, snapshot_out, n_comm_in, n_comm_out,
    variance_captured, sigma_max_K, null_mean, null_std, null_q05, null_q95, z, p_z, p_empirical,
    and for l < L−1 the rate-level inputs disruption = 1 − NMI(snapshot 2l, snapshot 2l+2),
    d_sigma_max = |σ_max(K_{l+1}) − σ_max(K_l)|, d_variance_captured = |vc_{l+1} − vc_l|.
    coupling.parquet: layer, method, snapshot, cohens_d, p_perm, q_bh, fdr_significant, n_top,
    n_bottom, spearman_rho, spearman_p, self_alignment.
    summary.parquet gains topology.<method>.* rows (Spearman of self-alignment vs d, FDR counts,
    rate-level ρ and p, layers above the mesoscale null).
    """
    store, cfg = ctx.store, ctx.cfg
    n_layers, n_snap, has_final = _snapshot_sources(store)
    units = store.read_table("units", columns=["snapshot", "method", "unit", "community", "participation"])
    jacs = store.read_array("jacobians")
    sa = _self_alignment(store, n_layers)
    present = [m for m in METHODS if m in set(units["method"])]
    if not present:
        raise ResdynError(f"run {store.run_id} has no community partitions; run the communities stage first")

    meso_rows, coup_rows, summary = [], [], {}
    tasks = [(mi, m, layer) for mi, m in enumerate(present) for layer in range(n_layers)]
    by_key = {k: g.sort_values("unit") for k, g in units.groupby(["method", "snapshot"])}
    for mi, m, layer in ctx.progress(tasks, desc="coupling", total=len(tasks), unit="layer"):
        rng = np.random.default_rng([cfg.seed, mi, layer])
        s_in, s_out = 2 * layer, out_snapshot(layer, n_layers, has_final)
        u_in, u_out = by_key[(m, s_in)], by_key[(m, s_out)]
        lab_in = u_in["community"].to_numpy(np.int64)
        lab_out = u_out["community"].to_numpy(np.int64)
        jac = np.asarray(jacs[layer], dtype=np.float64)
        meso = mesoscale_test(jac, lab_out, lab_in, rng=rng)
        meso_rows.append({"layer": layer, "method": m, "snapshot_in": s_in, "snapshot_out": s_out,
                          "n_comm_in": int(lab_in.max()) + 1, "n_comm_out": int(lab_out.max()) + 1,
                          **meso, "disruption": np.nan})
        bt = boundary_test(u_in["participation"].to_numpy(float), column_norms(jac), rng=rng)
        coup_rows.append({"layer": layer, "method": m, "snapshot": s_in, **bt,
                          "self_alignment": sa[layer]})

    meso = pd.DataFrame(meso_rows)
    coup = pd.DataFrame(coup_rows)
    meso["d_sigma_max"] = np.nan
    meso["d_variance_captured"] = np.nan
    coup["q_bh"] = np.nan
    coup["fdr_significant"] = False
    for mi, m in enumerate(present):
        mm = meso["method"] == m
        rows = meso.index[mm]
        vc = meso.loc[rows, "variance_captured"].to_numpy()
        sig = meso.loc[rows, "sigma_max_K"].to_numpy()
        disr = np.full(n_layers, np.nan)
        for layer in range(n_layers - 1):
            disr[layer] = 1.0 - nmi(by_key[(m, 2 * layer)]["community"], by_key[(m, 2 * layer + 2)]["community"])
        d_sig, d_vc = np.full(n_layers, np.nan), np.full(n_layers, np.nan)
        d_sig[:-1], d_vc[:-1] = np.abs(np.diff(sig)), np.abs(np.diff(vc))
        meso.loc[rows, "disruption"] = disr
        meso.loc[rows, "d_sigma_max"] = d_sig
        meso.loc[rows, "d_variance_captured"] = d_vc

        cm = coup["method"] == m
        q, s = bh_fdr(coup.loc[cm, "p_perm"].to_numpy())  # FDR over the layers of this run
        coup.loc[cm, "q_bh"] = q
        coup.loc[cm, "fdr_significant"] = s
        dvals = coup.loc[cm, "cohens_d"].to_numpy(float)
        rho_sa, p_sa = np.nan, np.nan
        okk = np.isfinite(sa) & np.isfinite(dvals)
        if okk.sum() >= 3 and np.ptp(sa[okk]) > 0 and np.ptp(dvals[okk]) > 0:
            r = stats.spearmanr(sa[okk], dvals[okk])
            rho_sa, p_sa = float(r.statistic), float(r.pvalue)
        rng = np.random.default_rng([cfg.seed, mi, 10**6])
        r1, p1 = permutation_spearman(disr[:-1], d_sig[:-1], rng=rng)
        r2, p2 = permutation_spearman(disr[:-1], d_vc[:-1], rng=rng)
        pre = f"topology.{m}."
        summary.update({
            pre + "selfalign_vs_d.rho": rho_sa, pre + "selfalign_vs_d.p": p_sa,
            pre + "fdr_sig_pos": int((s & (dvals > 0)).sum()), pre + "fdr_sig_neg": int((s & (dvals < 0)).sum()),
            pre + "n_layers": n_layers,
            pre + "median_d": float(np.nanmedian(dvals)) if np.isfinite(dvals).any() else np.nan,
            pre + "mean_d": float(np.nanmean(dvals)) if np.isfinite(dvals).any() else np.nan,
            pre + "rate.dsigma.rho": r1, pre + "rate.dsigma.p": p1,
            pre + "rate.dvar.rho": r2, pre + "rate.dvar.p": p2,
            pre + "mesoscale.above_null": int((meso.loc[rows, "z"] > 1.96).sum()),
        })
    coup["fdr_significant"] = coup["fdr_significant"].astype(bool)
    coup = coup[["layer", "method", "snapshot", "cohens_d", "p_perm", "q_bh", "fdr_significant", "n_top",
                 "n_bottom", "spearman_rho", "spearman_p", "self_alignment"]]
    store.write_table("mesoscale", meso)
    store.write_table("coupling", coup)
    update_summary(store, summary)


STAGES = stages_in(__name__)  # the records live in resdyn/stages.py
