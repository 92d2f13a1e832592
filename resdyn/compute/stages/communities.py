"""Stage "communities" (METHODS §7): the top-k correlation graph of every snapshot, its signed
Leiden (or Infomap) communities and participation coefficients, NMI between snapshots, and a
null: each snapshot's z-scored sample in random axes (``resdyn.core.samples.rotation_null``).

Writes ``units``, ``communities``, ``nmi``, ``graph_edges``, ``community_null`` and, above
d = 512, the dashboard's overview images ``corr_blocks`` (.npy and .parquet); per-snapshot
checkpoints in ``.partial/communities`` make it resumable. The math is ``resdyn.core.communities``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from resdyn.compute import executors
from resdyn.compute.stages import stages_in
from resdyn.core.communities import (TOP_K, cpm_quality, detect, methods_for, nmi_matrix, participation,
                                     snapshot_sources, top_k_graph)
from resdyn.core.correlation import HEATMAP_MAX, correlation, overview_blocks, standardize
from resdyn.core.samples import correlation_participation_ratio, rotation_null
from resdyn.core.topology_coupling import column_norms


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


NULL_STREAM = 0x6E756C  # 'nul': the seed stream of the null's draws
NULL_KIND = "rotation"
"""community_null.parquet's ``null_kind``; tables without the column hold the older Gaussian null
(N Gaussian draws with the snapshot's covariance spectrum), which is not a null for a correlation
graph (METHODS §7)."""
NULL_VERSION = 2  # in the checkpoint stamp: checkpoints of the Gaussian null (version 1) are stale


def _snapshot_job(job) -> dict:
    """One snapshot's graph and partitions, and its null: job = (snapshot, X (N, d) or None, saved,
    methods, d, seed), where ``saved`` holds what an earlier checkpoint already has (the graph
    i, j, w, some ``lab_<method>``, ``null_lab_<method>``, the correlation participation ratios
    ``pr`` and ``null_pr``). Returns the completed dict. Pure, so it may run on a Ray worker.

    The null (``resdyn.core.samples.rotation_null``): the snapshot's z-scored sample rotated by a
    Haar-random orthogonal matrix drawn from (seed, snapshot, NULL_STREAM) and z-scored again, put
    through the same top-k graph and the same methods with the same seed: what the cloud's shape
    alone yields once its alignment with the units is gone (METHODS §7)."""
    snap, x, saved, methods, d, seed = job
    out = dict(saved) if saved is not None else {}
    if "i" not in out:
        out["i"], out["j"], out["w"] = top_k_graph(correlation(x))
    if "pr" not in out:
        out["pr"] = np.float64(correlation_participation_ratio(x))
    for m in methods:
        if f"lab_{m}" not in out:
            out[f"lab_{m}"] = detect(m, d, out["i"], out["j"], out["w"], seed=seed)
    if not all(f"null_lab_{m}" in out for m in methods):
        if "null_i" not in out:
            xn = rotation_null(x, np.random.default_rng([int(seed), int(snap), NULL_STREAM]))
            out["null_i"], out["null_j"], out["null_w"] = top_k_graph(correlation(xn))
            out["null_pr"] = np.float64(correlation_participation_ratio(xn))
        for m in methods:
            if f"null_lab_{m}" not in out:
                out[f"null_lab_{m}"] = detect(m, d, out["null_i"], out["null_j"], out["null_w"], seed=seed)
    return out


def _needs_states(saved: dict | None, methods: list[str]) -> bool:
    """Whether a snapshot's job must read its states: no graph yet, or a null still to draw."""
    return saved is None or "i" not in saved or "pr" not in saved or (
        "null_i" not in saved and not all(f"null_lab_{m}" in saved for m in methods))


def null_rows(snapshot: int, saved: dict, methods: list[str], d: int) -> list[dict]:
    """community_null.parquet rows of one snapshot: per method the community count, the count
    with ≥ 2 units and (CPM only) the quality of the real partition and of the null's, with the
    correlation participation ratios of the sample and of its null (the same on every method's
    row; the rotation keeps the correlation spectrum up to the second z-scoring, which raises a
    strongly structured cloud's PR somewhat: by 15–30 % on the planted synthetic run)."""
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
            "null_kind": NULL_KIND,
            "participation_ratio": float(saved.get("pr", np.nan)),
            "null_participation_ratio": float(saved.get("null_pr", np.nan)),
        })
    return rows


def run(ctx) -> None:
    """Stage ``communities``: for every snapshot, the top-k graph, the partitions of the selected
    methods and the participation coefficients; then NMI between all snapshot pairs.

    Writes graph_edges (snapshot, i, j, weight), units (snapshot, method, unit, community,
    participation, column_norm), communities (snapshot, method, community, size),
    nmi (method, snapshot_a, snapshot_b, nmi; both orders and the diagonal) and community_null
    (snapshot, method, n_communities, n_multi, quality, null_n_communities, null_n_multi,
    null_quality, null_kind = "rotation", participation_ratio, null_participation_ratio: the null of
    ``_snapshot_job``; quality is ``cpm_quality``, NaN for the other methods; the participation
    ratios are of the correlation matrices of the sample and of the null).
    """
    store, cfg = ctx.store, ctx.cfg
    methods = methods_for(cfg.communities)
    n_layers, n_snap, has_final = snapshot_sources(store)
    acts = store.read_array("activations")
    final = store.read_array("final_state") if has_final else None
    jacs = store.read_array("jacobians")
    d = acts.shape[2]
    part_dir = store.partial_dir("communities")
    # Checkpoints are only valid for the activations, seed and k they were computed with.
    src = [store.array_path("activations")] + ([store.array_path("final_state")] if has_final else [])
    stamp = np.array([[p.stat().st_mtime_ns, p.stat().st_size] for p in src] + [[cfg.seed, TOP_K],
                                                                                 [NULL_VERSION, 0]],
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


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
