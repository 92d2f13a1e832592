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
  ``graph_edges``, the Gaussian null with each snapshot's covariance spectrum →
  ``community_null``, and above d = 512 the dashboard's overview images ``corr_blocks`` (.npy and
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
from resdyn.core.correlation import HEATMAP_MAX, correlation, overview_blocks, standardize
from resdyn.core.samples import gaussian_null
from resdyn.compute.stages import stages_in
# The §8 statistics live in resdyn.core (no torch, shared with the dashboard); re-exported here.
from resdyn.core.topology_coupling import (FDR_ALPHA, N_NULL_PARTITIONS, N_PERM_BOUNDARY,  # noqa: F401
                                           N_PERM_RATE, NULLS, OPERATORS, TAIL, Z_ABOVE, bh_fdr,
                                           boundary_test, column_norms, mesoscale_null, mesoscale_operator,
                                           mesoscale_rows, mesoscale_test, participation_tails,
                                           permutation_spearman, variance_captured)
from resdyn.errors import ResdynError

# -- parameters (METHODS §7–8; the paper's values) ------------------------------------------------
TOP_K = 20                 # edges kept per unit by |corr|
CPM_GAMMA = 0.001          # CPM resolution on the positive subgraph
CPM_GAMMA_NEG = 0.0        # CPM resolution on the negative subgraph
METHODS = ("cpm", "infomap", "modularity1", "modularity2")


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


def cpm_quality(n: int, i, j, w, labels, gamma: float = CPM_GAMMA, gamma_neg: float = CPM_GAMMA_NEG) -> float:
    """Signed CPM quality of the partition ``labels`` (n,) of the graph (i, j, w), per unit of edge
    weight: (Q_CPM(positive subgraph, γ) − Q_CPM(negative subgraph |w|, γ_neg)) / (2Σ|w|), with
    leidenalg's Q_CPM = Σ_c Σ_{i≠j in c} (A_ij − γ) (each edge counted from both ends): the
    multiplex objective of ``signed_cpm`` (METHODS §7.3), scaled so that graphs of different total
    weight compare; 1 when every edge is positive and inside a community at γ = 0. NaN for a graph
    without edges."""
    total = float(np.abs(np.asarray(w, dtype=np.float64)).sum())
    if total == 0.0:
        return float("nan")
    g_pos, g_neg = _signed_layers(n, i, j, w)
    memb = [int(x) for x in labels]
    q = la.CPMVertexPartition(g_pos, initial_membership=memb, weights="weight", resolution_parameter=gamma).quality()
    if g_neg.ecount():
        q -= la.CPMVertexPartition(g_neg, initial_membership=memb, weights="weight",
                                   resolution_parameter=gamma_neg).quality()
    return float(q) / (2.0 * total)


NULL_STREAM = 0x6E756C  # 'nul': the seed stream of the Gaussian null's draws


def _snapshot_job(job) -> dict:
    """One snapshot's graph and partitions, and its Gaussian null: job = (snapshot, X (N, d) or
    None, saved, methods, d, seed), where ``saved`` holds what an earlier checkpoint already has
    (the graph i, j, w, some ``lab_<method>``, ``null_lab_<method>``). Returns the completed dict.
    Pure, so it may run on a Ray worker.

    The null (``resdyn.core.samples.gaussian_null``): N Gaussian samples with the covariance
    spectrum of this snapshot and random axes, drawn from (seed, snapshot, NULL_STREAM), put
    through the same top-k graph and the same methods: how many communities a structureless cloud
    of this dimensionality yields."""
    snap, x, saved, methods, d, seed = job
    out = dict(saved) if saved is not None else {}
    if "i" not in out:
        out["i"], out["j"], out["w"] = top_k_graph(correlation(x))
    for m in methods:
        if f"lab_{m}" not in out:
            out[f"lab_{m}"] = detect(m, d, out["i"], out["j"], out["w"], seed=seed)
    if not all(f"null_lab_{m}" in out for m in methods):
        if "null_i" not in out:
            xn = gaussian_null(x, np.random.default_rng([int(seed), int(snap), NULL_STREAM]))
            out["null_i"], out["null_j"], out["null_w"] = top_k_graph(correlation(xn))
        for m in methods:
            if f"null_lab_{m}" not in out:
                out[f"null_lab_{m}"] = detect(m, d, out["null_i"], out["null_j"], out["null_w"], seed=seed)
    return out


def _needs_states(saved: dict | None, methods: list[str]) -> bool:
    """Whether a snapshot's job must read its states: no graph yet, or a null still to draw."""
    return saved is None or "i" not in saved or (
        "null_i" not in saved and not all(f"null_lab_{m}" in saved for m in methods))


def null_rows(snapshot: int, saved: dict, methods: list[str], d: int) -> list[dict]:
    """community_null.parquet rows of one snapshot: per method the community count, the count
    with ≥ 2 units and (CPM only) the quality of the real partition and of the null's."""
    rows = []
    for m in methods:
        real, null = saved[f"lab_{m}"], saved[f"null_lab_{m}"]
        sr, sn = np.bincount(real), np.bincount(null)
        cpm = m == "cpm"
        rows.append({
            "snapshot": np.int32(snapshot), "method": m,
            "n_communities": np.int32(len(sr)), "n_multi": np.int32((sr >= 2).sum()),
            "quality": cpm_quality(d, saved["i"], saved["j"], saved["w"], real) if cpm else np.nan,
            "null_n_communities": np.int32(len(sn)), "null_n_multi": np.int32((sn >= 2).sum()),
            "null_quality": (cpm_quality(d, saved["null_i"], saved["null_j"], saved["null_w"], null)
                             if cpm else np.nan),
        })
    return rows


def compute_communities(ctx) -> None:
    """Stage ``communities``: for every snapshot, the top-k graph, the partitions of the selected
    methods and the participation coefficients; then NMI between all snapshot pairs.

    Writes graph_edges (snapshot, i, j, weight), units (snapshot, method, unit, community,
    participation, column_norm), communities (snapshot, method, community, size),
    nmi (method, snapshot_a, snapshot_b, nmi; both orders and the diagonal) and community_null
    (snapshot, method, n_communities, n_multi, quality, null_n_communities, null_n_multi,
    null_quality: the Gaussian null of ``_snapshot_job``; quality is ``cpm_quality``, NaN for the
    other methods).
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
            if all(f"lab_{m}" in saved and f"null_lab_{m}" in saved for m in methods):
                continue
        pending.append(s)
    # A generator, so one chunk of snapshots' activations is in memory at a time.
    jobs = ((s, np.asarray(final if s == 2 * n_layers else acts[:, s, :])
             if _needs_states(saved_all.get(s), methods) else None,
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
    edges, units, comms, nulls = [], [], [], []
    labels = {m: [] for m in methods}
    for s in range(n_snap):
        saved = saved_all[s]
        i, j, w = saved["i"], saved["j"], saved["w"]
        nulls += null_rows(s, saved, methods, d)
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
    store.write_table("community_null", pd.DataFrame(nulls))
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
    """Stage ``topology_coupling``: per layer and method, the mesoscale tests, the boundary-node
    test and the rate-level tests (METHODS §8).

    mesoscale.parquet, one row per (layer, method, null, operator) with null 'independent' | 'joint'
    and operator 'J' | 'R' (``resdyn.core.topology_coupling``): layer, method, null, operator,
    snapshot_in, snapshot_out, n_comm_in, n_comm_out, variance_captured, sigma_max_K, null_mean,
    null_std, null_q05, null_q95, z, p_z, p_empirical, and for l < L−1 the rate-level inputs
    disruption = 1 − NMI(snapshot 2l, snapshot 2l+2), d_sigma_max = |σ_max(K_{l+1}) − σ_max(K_l)|,
    d_variance_captured = |vc_{l+1} − vc_l| (of that row's operator).
    coupling.parquet: layer, method, snapshot, cohens_d, p_perm, q_bh, fdr_significant, n_top,
    n_bottom, spearman_rho, spearman_p, self_alignment; the tails hold exactly ⌊0.1 d⌋ units, ties
    broken by the run's seed.
    summary.parquet gains topology.<method>.* rows (Spearman of self-alignment vs d, FDR counts,
    rate-level ρ and p on J, layers above each mesoscale null).
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
        s_in, s_out = 2 * layer, out_snapshot(layer, n_layers, has_final)
        u_in, u_out = by_key[(m, s_in)], by_key[(m, s_out)]
        lab_in = u_in["community"].to_numpy(np.int64)
        lab_out = u_out["community"].to_numpy(np.int64)
        jac = np.asarray(jacs[layer], dtype=np.float64)
        head = {"layer": layer, "method": m}
        info = {"snapshot_in": s_in, "snapshot_out": s_out,
                "n_comm_in": int(lab_in.max()) + 1, "n_comm_out": int(lab_out.max()) + 1}
        for row in mesoscale_rows(jac, lab_out, lab_in, seed=[cfg.seed, mi, layer, 1]):
            meso_rows.append({**head, "null": row.pop("null"), "operator": row.pop("operator"), **info, **row,
                              "disruption": np.nan})
        bt = boundary_test(u_in["participation"].to_numpy(float), column_norms(jac),
                           rng=np.random.default_rng([cfg.seed, mi, layer]), seed=cfg.seed)
        coup_rows.append({"layer": layer, "method": m, "snapshot": s_in, **bt,
                          "self_alignment": sa[layer]})

    meso = pd.DataFrame(meso_rows)
    coup = pd.DataFrame(coup_rows)
    meso["d_sigma_max"] = np.nan
    meso["d_variance_captured"] = np.nan
    coup["q_bh"] = np.nan
    coup["fdr_significant"] = False
    for mi, m in enumerate(present):
        disr = np.full(n_layers, np.nan)
        for layer in range(n_layers - 1):
            disr[layer] = 1.0 - nmi(by_key[(m, 2 * layer)]["community"], by_key[(m, 2 * layer + 2)]["community"])
        pre = f"topology.{m}."
        rate = {}
        for null in NULLS:
            for op in OPERATORS:
                # rows were appended layer by layer, so this index is in layer order
                rows = meso.index[(meso["method"] == m) & (meso["null"] == null) & (meso["operator"] == op)]
                vc = meso.loc[rows, "variance_captured"].to_numpy()
                sig = meso.loc[rows, "sigma_max_K"].to_numpy()
                d_sig, d_vc = np.full(n_layers, np.nan), np.full(n_layers, np.nan)
                d_sig[:-1], d_vc[:-1] = np.abs(np.diff(sig)), np.abs(np.diff(vc))
                meso.loc[rows, "disruption"] = disr
                meso.loc[rows, "d_sigma_max"] = d_sig
                meso.loc[rows, "d_variance_captured"] = d_vc
                rate[op] = (d_sig, d_vc)
                z = meso.loc[rows, "z"].to_numpy(float)
                summary[pre + f"mesoscale.{null}.{op}.above_z3"] = int((z > Z_ABOVE).sum())
                summary[pre + f"mesoscale.{null}.{op}.median_z"] = (float(np.nanmedian(z)) if np.isfinite(z).any()
                                                                     else np.nan)
                if (null, op) == ("independent", "J"):
                    # The name older readers know: the paper's test, counted at z > 1.96.
                    summary[pre + "mesoscale.above_null"] = int((z > 1.96).sum())

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
        d_sig, d_vc = rate["J"]  # METHODS §8's rate-level test is on K of J̄
        r1, p1 = permutation_spearman(disr[:-1], d_sig[:-1], rng=rng)
        r2, p2 = permutation_spearman(disr[:-1], d_vc[:-1], rng=rng)
        summary.update({
            pre + "selfalign_vs_d.rho": rho_sa, pre + "selfalign_vs_d.p": p_sa,
            pre + "fdr_sig_pos": int((s & (dvals > 0)).sum()), pre + "fdr_sig_neg": int((s & (dvals < 0)).sum()),
            pre + "n_layers": n_layers,
            pre + "median_d": float(np.nanmedian(dvals)) if np.isfinite(dvals).any() else np.nan,
            pre + "mean_d": float(np.nanmean(dvals)) if np.isfinite(dvals).any() else np.nan,
            pre + "rate.dsigma.rho": r1, pre + "rate.dsigma.p": p1,
            pre + "rate.dvar.rho": r2, pre + "rate.dvar.p": p2,
        })
    coup["fdr_significant"] = coup["fdr_significant"].astype(bool)
    coup = coup[["layer", "method", "snapshot", "cohens_d", "p_perm", "q_bh", "fdr_significant", "n_top",
                 "n_bottom", "spearman_rho", "spearman_p", "self_alignment"]]
    store.write_table("mesoscale", meso)
    store.write_table("coupling", coup)
    store.update_summary(summary)


STAGES = stages_in(__name__)  # the records live in resdyn/stages.py
