"""Activation-correlation graphs and their communities (METHODS §7): the top-k signed graph, three
community methods (signed CPM and modularity by Leiden, Infomap on |w|), participation, NMI and
the signed CPM quality. numpy/scipy/igraph/leidenalg/infomap only: no torch, so the stages, the
dashboard and the tests share it. The §8 statistics are ``resdyn.core.topology_coupling``.

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
"""

from __future__ import annotations

import igraph as ig
import leidenalg as la
import numpy as np
import scipy.sparse as sp

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


# -- snapshots ------------------------------------------------------------------------------------
def out_snapshot(layer: int, n_layers: int, has_final: bool) -> int:
    """The snapshot whose partition is C_out of layer ``layer`` (see the module docstring)."""
    if layer < n_layers - 1 or has_final:
        return 2 * layer + 2
    return 2 * layer + 1


def snapshot_sources(store) -> tuple[int, int, bool]:
    """(L, number of partitioned snapshots, has_final) of the run in ``store`` (a RunStore)."""
    m = store.manifest()
    n_layers = int(m["n_layers"])
    has_final = store.has_array("final_state")
    return n_layers, 2 * n_layers + int(has_final), has_final


# -- the community null as a test (METHODS §7) ------------------------------------------------------
N_NULL_COMMUNITY = 19  # rotations of the test: the smallest p is 1/20 = α


def community_null_test(x: np.ndarray, n_null: int = N_NULL_COMMUNITY, seed: int = 0,
                        rng: np.random.Generator | None = None, k: int = TOP_K) -> dict:
    """Is the signed CPM quality of a snapshot's communities above that of its rotations?

    x (N, d): the snapshot's states. The data and ``n_null`` draws of
    ``resdyn.core.samples.rotation_nulls`` (the z-scored sample in Haar-random axes) each go
    through the same top-k graph and the same signed Leiden CPM with the same ``seed``; the
    one-sided empirical p is (1 + #{null quality ≥ data quality}) / (1 + n_null). The communities
    stage stores one such draw per snapshot (community_null.parquet); this is the same
    construction repeated, for the calibration (tests/core/test_calibration.py) and for a caller
    that wants a p.

    Returns quality (float), null_quality ((n_null,) float64), p_empirical, participation_ratio
    (of the data's correlation matrix) and null_participation_ratio (mean over the draws).
    """
    from resdyn.core.correlation import correlation
    from resdyn.core.samples import correlation_participation_ratio, rotation_nulls

    rng = np.random.default_rng() if rng is None else rng
    d = np.shape(x)[1]

    def score(y):
        i, j, w = top_k_graph(correlation(y), k)
        return cpm_quality(d, i, j, w, signed_cpm(d, i, j, w, seed))

    q = score(x)
    draws = rotation_nulls(x, rng, n_null)
    nq = np.array([score(y) for y in draws], dtype=np.float64)
    p = float((1 + np.sum(nq >= q)) / (1 + n_null)) if np.isfinite(q) else np.nan
    return {"quality": q, "null_quality": nq, "p_empirical": p,
            "participation_ratio": correlation_participation_ratio(x),
            "null_participation_ratio": float(np.mean([correlation_participation_ratio(y) for y in draws]))}
