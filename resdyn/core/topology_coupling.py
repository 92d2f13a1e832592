"""The statistics of the topology ↔ dynamics coupling (METHODS §8), numpy/scipy only.

The ``topology_coupling`` stage (``resdyn.compute.stages.topology_coupling``) and the Topology ↔ dynamics page
share these functions; the tests run them without torch, Leiden or a run store.

- Mesoscale test: the variance of an operator captured by the community basis, z-scored against
  size-matched random partitions. Two nulls and two operators, four tests per layer:

  * null "independent" (the paper's): the input and the output partition are each shuffled by its
    own random permutation of the units. Adjacent snapshots share most communities, and that
    overlap puts the identity inside J (the skip connection) on the diagonal blocks of K, which
    the shuffle destroys: J = I + R with no community structure in R scores z ≈ 40 against it.
  * null "joint": one random permutation of the units relabels both partitions. It keeps the
    overlap between them (the table of (output community, input community) counts over units), so
    the identity captures exactly as much under the null as observed.
  * operator "J" (J̄_l) or "R" (R_l = J̄_l − I, the block's own computation without the skip).

  Only the joint null on R can support a claim that the Jacobian couples communities.

  Every relabelling is drawn within ten strata of unit norm (row plus column norm of R,
  ``norm_strata``), and singleton communities only trade labels with singletons: heavy units that
  form singleton communities pushed the unstratified joint/R z to ≈ 49 on structureless data.
  The test is the empirical p over N_NULL_PARTITIONS = 1,000 draws with Benjamini–Hochberg across
  a run's layers at α = 0.05 (the stage's ``bh_significant``); z is kept for display. Calibrated
  on planted data in ``resdyn.testing.calibration``.
- Boundary-node test: amplification (column norm) of the top against the bottom participation
  tails, each exactly ⌊0.1 n⌋ units, ties broken by a seeded random order.
- Benjamini–Hochberg FDR over layers and permutation Spearman for the rate-level tests (run on R:
  on J the identity made them reject 27 % of structureless cases at α = 0.05).

Shapes: J is (d, d) float (output × input), labels are (d,) ints 0..m−1 with every label used.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import stats

TAIL = 0.10                # top / bottom participation tails of the boundary-node test
N_NULL_PARTITIONS = 1000   # size-matched relabellings of the mesoscale test (per null): empirical p ≥ 1/1001
N_STRATA = 10              # unit-norm strata within which the mesoscale null relabels units
N_PERM_BOUNDARY = 5000     # permutations of the boundary-node test
N_PERM_RATE = 10000        # permutations of the rate-level tests
FDR_ALPHA = 0.05
NULLS = ("independent", "joint")
OPERATORS = ("J", "R")
Z_ABOVE = 3.0              # the dotted guide line of the z figures (display only: the test is BH on p_empirical)
# A null whose spread is below this fraction of its mean is degenerate (e.g. J = I against the
# joint null, where every draw captures the same variance up to rounding): z is then NaN.
NULL_STD_RTOL = 1e-9


# -- mesoscale operator --------------------------------------------------------------------------
def _one_hot(labels: np.ndarray, m: int | None = None) -> sp.csr_array:
    labels = np.asarray(labels)
    m = int(labels.max()) + 1 if m is None else m
    return sp.csr_array((np.ones(len(labels)), (np.arange(len(labels)), labels)), shape=(len(labels), m))


def _block_sums(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray) -> np.ndarray:
    """S[a, b] = Σ_{i∈a (out), j∈b (in)} J_ij via sparse one-hot products, O(d²). (m_out, m_in)."""
    m_out, m_in = _one_hot(lab_out), _one_hot(lab_in)
    rows = m_out.T @ jac                    # (m_out, d)
    return (m_in.T @ rows.T).T              # (m_out, m_in)


def _overlap(lab_out: np.ndarray, lab_in: np.ndarray, m_out: int, m_in: int) -> np.ndarray:
    """N[a, b] = #{units i: out(i) = a, in(i) = b}: the block sums of the identity. (m_out, m_in) float64."""
    return np.bincount(lab_out * m_in + lab_in, minlength=m_out * m_in).reshape(m_out, m_in).astype(np.float64)


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


def norm_strata(op: np.ndarray, n_strata: int = N_STRATA) -> np.ndarray:
    """(d,) int stratum of each unit: units ranked by ‖op_{i,:}‖² + ‖op_{:,i}‖² (row plus column,
    ties by index) and cut into ``n_strata`` groups of equal size (sizes differ by at most one).

    Row and column together, because a unit enters the mesoscale operator twice: its row through
    the output partition and its column through the input partition. A heavy unit (large row or
    column of R, often a singleton community of its own) dominates the block sums it sits in; a
    relabelling that sends it into an arbitrary community moves a large mass at random, which
    makes the null's spread tiny against the observed value. Relabelling within norm strata keeps
    the heavy units among themselves, on both sides (METHODS §8).
    """
    op = np.asarray(op, dtype=np.float64)
    w = (op**2).sum(axis=1) + (op**2).sum(axis=0)
    d = len(w)
    n_strata = max(1, min(int(n_strata), d))
    rank = np.empty(d, np.int64)
    rank[np.argsort(w, kind="stable")] = np.arange(d)
    return (rank * n_strata) // d


def _stratified_permutations(strata: np.ndarray | None, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) int64: n random permutations of range(d) that map every unit to a unit of its own
    stratum (``strata`` (d,) ints; None: unrestricted)."""
    keys = rng.random((n, d))
    if strata is not None:
        keys += np.asarray(strata, dtype=np.float64)  # keys of stratum s lie in [s, s + 1)
    order = np.argsort(keys, axis=1)  # the b-th draw's units, stratum by stratum, shuffled within
    if strata is None:
        return order
    base = np.argsort(strata, kind="stable")  # the same slots in index order
    perm = np.empty_like(order)
    perm[:, base] = order  # slot base[k] receives a random unit of the same stratum
    return perm


def _singletons(lab: np.ndarray) -> np.ndarray:
    """(d,) bool: the units that are a community of their own in the partition ``lab``."""
    return np.bincount(lab)[lab] == 1


def _shared_draws(lab_out: np.ndarray, lab_in: np.ndarray, which: tuple[str, ...], n: int,
                  rng: np.random.Generator, strata: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` null draws of every null in ``which``: the input labels li (n, d), shared, and the
    output labels {null: lo (n, d)}.

    One permutation π per draw relabels the input side for both nulls; "joint" relabels the output
    side by the same π, "independent" by its own permutation σ. (Sharing li lets both nulls share
    the expensive half of the block sums; each null's draws are still independent draws from it.)

    With ``strata`` (the norm strata, ``norm_strata``) a unit's label moves only to a unit of the
    same stratum that is also a singleton (or not) on the same side(s): π within (stratum,
    singleton out, singleton in) classes, σ within (stratum, singleton out). Heavy units tend to
    be singleton communities, and a relabelling that puts such a unit into a large community (or a
    light unit into a singleton) changes the captured variance for a reason that has nothing to do
    with coupling. Singletons then keep their units, and every other label is exchanged among the
    units of its norm stratum.
    """
    d = len(lab_out)
    for null in which:
        if null not in NULLS:
            raise ValueError(f"unknown null {null!r}; expected one of {NULLS}")
    s_out = s_joint = None
    if strata is not None:
        single_out, single_in = _singletons(lab_out), _singletons(lab_in)
        s_out = 2 * strata + single_out
        s_joint = 4 * strata + 2 * single_out + single_in
    perm = _stratified_permutations(s_joint, n, d, rng)
    los = {null: lab_out[perm] if null == "joint" else lab_out[_stratified_permutations(s_out, n, d, rng)]
           for null in which}
    return lab_in[perm], los


def _null_label_draws(lab_out: np.ndarray, lab_in: np.ndarray, null: str, n: int,
                      rng: np.random.Generator, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) output and input labels of ``n`` draws of one null (``_shared_draws``)."""
    li, los = _shared_draws(lab_out, lab_in, (null,), n, rng, strata)
    return los[null], li


def _input_sums(jac_t: np.ndarray, li: np.ndarray, m_in: int) -> np.ndarray:
    """(B·m_in, d) float64: row b·m_in + c holds Σ_{j: li_b(j) = c} J_{:, j} for B labellings li (B, d).

    The one-hot of every draw's input labels, stacked into a sparse (B·m_in, d) matrix, times
    jac_t = Jᵀ (C-contiguous): one C call for the batch, B·d² additions, the unavoidable cost.
    """
    b, d = li.shape
    rows = (np.arange(b)[:, None] * m_in + li).ravel()
    y = sp.csr_array((np.ones(b * d), (rows, np.tile(np.arange(d), b))), shape=(b * m_in, d))
    return y @ jac_t


def _output_sums(w: np.ndarray, lo: np.ndarray, m_out: int, m_in: int) -> np.ndarray:
    """(B, m_out, m_in) block sums from ``_input_sums`` w and output labels lo (B, d): one weighted
    ``bincount`` (B·d·m_in additions)."""
    b = len(lo)
    idx = ((np.arange(b)[:, None, None] * m_out + lo[:, None, :]) * m_in + np.arange(m_in)[None, :, None])
    return np.bincount(idx.ravel(), weights=w.ravel(), minlength=b * m_out * m_in).reshape(b, m_out, m_in)


def _batched_block_sums(jac_t: np.ndarray, lo: np.ndarray, li: np.ndarray, m_out: int, m_in: int) -> np.ndarray:
    """Block sums of J under B labellings at once: jac_t = Jᵀ (d, d) C-contiguous, lo (B, d),
    li (B, d) -> (B, m_out, m_in) float64 (``_input_sums`` then ``_output_sums``). About 0.15 ms
    a draw at d = 576 on one core (0.3 ms on a loaded machine), against 1 ms for one draw at a
    time with Python between."""
    return _output_sums(_input_sums(jac_t, li, m_in), lo, m_out, m_in)


def _batched_overlap(lo: np.ndarray, li: np.ndarray, m_out: int, m_in: int) -> np.ndarray:
    """(B, m_out, m_in) overlap counts of B labellings (``_overlap`` for each row of lo, li)."""
    b = len(lo)
    idx = (np.arange(b)[:, None] * (m_out * m_in) + lo * m_in + li).ravel()
    return np.bincount(idx, minlength=b * m_out * m_in).reshape(b, m_out, m_in).astype(np.float64)


def _z_row(vc: float, sigma: float, null: np.ndarray) -> dict:
    """The test's statistics from the observed variance captured and the null draws (n_null,).

    p_empirical = (1 + #{null ≥ vc}) / (1 + n_null), a null draw within 1e-9 · |vc| of vc counting
    as ≥ (a draw that captures the same variance up to rounding, e.g. J = I under the joint null,
    is a tie, not a win).
    """
    n_null = len(null)
    mu = float(null.mean())
    sd = float(null.std(ddof=1)) if n_null > 1 else np.nan
    z = (vc - mu) / sd if np.isfinite(sd) and sd > NULL_STD_RTOL * abs(mu) else np.nan
    p = float((1 + np.sum(null >= vc - 1e-9 * abs(vc))) / (1 + n_null)) if np.isfinite(vc) else np.nan
    return {
        "variance_captured": vc, "sigma_max_K": sigma,
        "null_mean": mu, "null_std": sd,
        "null_q05": float(np.quantile(null, 0.05)), "null_q95": float(np.quantile(null, 0.95)),
        "z": z, "p_z": float(stats.norm.sf(z)) if np.isfinite(z) else np.nan,
        "p_empirical": p,
    }


def _mesoscale_nulls(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray, which: tuple[str, ...],
                     n_null: int, rng: np.random.Generator, n_strata: int) -> dict[str, dict[str, dict]]:
    """{null: {"J": stats, "R": stats}} for every null in ``which`` (``mesoscale_null``), the nulls
    sharing their input-side relabellings (``_shared_draws``) and so the batch's expensive half."""
    jac = np.asarray(jac, dtype=np.float64)
    lab_out, lab_in = np.asarray(lab_out, dtype=np.int64), np.asarray(lab_in, dtype=np.int64)
    d = jac.shape[0]
    m_out, m_in = int(lab_out.max()) + 1, int(lab_in.max()) + 1
    n_out = np.bincount(lab_out, minlength=m_out).astype(float)
    n_in = np.bincount(lab_in, minlength=m_in).astype(float)
    scale = np.outer(n_out, n_in)
    res = jac - np.eye(d)
    total_j = float((jac**2).sum())
    total_r = float((res**2).sum())
    strata = norm_strata(res, n_strata) if n_strata > 1 else None
    s_j = _block_sums(jac, lab_out, lab_in)
    s_r = s_j - _overlap(lab_out, lab_in, m_out, m_in)
    draws = {null: (np.empty(n_null), np.full(n_null, np.nan)) for null in which}
    batch = max(1, int(2**21 // (d * m_in)))  # (B·m_in, d) float64 and its int64 index: ≤ 32 MB
    jac_t = np.ascontiguousarray(jac.T)
    for a in range(0, n_null, batch):
        li, los = _shared_draws(lab_out, lab_in, which, min(batch, n_null - a), rng, strata)
        w = _input_sums(jac_t, li, m_in)
        for null, lo in los.items():
            s = _output_sums(w, lo, m_out, m_in)
            null_j, null_r = draws[null]
            null_j[a:a + len(lo)] = (s**2 / scale).sum(axis=(1, 2)) / total_j
            if total_r > 0:
                s_res = s - _batched_overlap(lo, li, m_out, m_in)
                null_r[a:a + len(lo)] = (s_res**2 / scale).sum(axis=(1, 2)) / total_r
    out = {}
    for null in which:
        out[null] = {}
        for name, s_obs, total, nul in (("J", s_j, total_j, draws[null][0]), ("R", s_r, total_r, draws[null][1])):
            k = s_obs / np.sqrt(scale)
            vc = float((k**2).sum() / total) if total > 0 else np.nan
            sigma = float(np.linalg.svd(k, compute_uv=False)[0]) if k.size else np.nan
            out[null][name] = _z_row(vc, sigma, nul) if total > 0 else _z_row(np.nan, sigma, np.full(n_null, np.nan))
    return out


def mesoscale_null(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray, null: str = "independent",
                   n_null: int = N_NULL_PARTITIONS, rng: np.random.Generator | None = None,
                   n_strata: int = N_STRATA) -> dict[str, dict]:
    """Variance captured by the community partitions against ``n_null`` size-matched random
    relabellings of one null, for J and for R = J − I (METHODS §8).

    Each null draw relabels the units (``null``: "independent" or "joint", see the module
    docstring) within strata of unit norm (``norm_strata`` of R, ``n_strata`` groups; singletons
    trade only with singletons, ``_shared_draws``; n_strata = 1: the unstratified relabelling
    of earlier versions) and scores both operators on the same draw: R's block sums are J's minus
    the overlap counts, S_R = S_J − N, so R costs nothing extra. The draws are made in batches
    (``_batched_block_sums``). One-sided z = (vc − mean)/sd (ddof = 1; NaN when the null has no
    spread) with its normal p, for display; the test is the empirical
    p = (1 + #{null ≥ vc}) / (1 + n_null).

    Returns {"J": stats, "R": stats}, each with variance_captured, sigma_max_K (largest singular
    value of K), null_mean, null_std, null_q05, null_q95, z, p_z, p_empirical. R's fields are NaN
    when R = 0.
    """
    rng = np.random.default_rng() if rng is None else rng
    return _mesoscale_nulls(jac, lab_out, lab_in, (null,), n_null, rng, n_strata)[null]


def mesoscale_test(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray,
                   n_null: int = N_NULL_PARTITIONS, rng: np.random.Generator | None = None,
                   null: str = "independent", operator: str = "J") -> dict:
    """One of the four mesoscale tests (``mesoscale_null(...)[operator]``); the paper's by default."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown operator {operator!r}; expected one of {OPERATORS}")
    return mesoscale_null(jac, lab_out, lab_in, null=null, n_null=n_null, rng=rng)[operator]


def mesoscale_rows(jac: np.ndarray, lab_out: np.ndarray, lab_in: np.ndarray, seed,
                   n_null: int = N_NULL_PARTITIONS) -> list[dict]:
    """All four tests, one dict per (null, operator) with those two keys added.

    ``seed``: anything ``np.random.default_rng`` takes. Both nulls draw from one generator and
    share their input-side relabellings (``_shared_draws``), which halves the cost.
    """
    res = _mesoscale_nulls(jac, lab_out, lab_in, NULLS, n_null, np.random.default_rng(list(np.atleast_1d(seed))),
                           N_STRATA)
    return [{"null": null, "operator": op, **res[null][op]} for null in NULLS for op in OPERATORS]


def with_null_columns(meso):
    """A ``mesoscale`` table (pandas DataFrame) with ``null`` and ``operator`` columns: tables from
    before the joint null held the paper's test only, so their rows become ('independent', 'J')."""
    if "null" in meso.columns and "operator" in meso.columns:
        return meso
    return meso.assign(null="independent", operator="J")


LEGACY_MESOSCALE_NOTE = ("this run's mesoscale table predates the stratified null (100 unstratified relabellings, "
                         "no BH column): BH is applied to its p on read; `--redo topology_coupling` recomputes it")


def is_legacy_mesoscale(meso) -> bool:
    """Whether a ``mesoscale`` table predates ``bh_significant`` (and the stratified 1,000-draw null)."""
    return "bh_significant" not in meso.columns


def with_bh_columns(meso):
    """A ``mesoscale`` table (with ``with_null_columns``) that has ``q_bh`` and ``bh_significant``:
    older tables get them on read, BH over the layers of each (method, null, operator) on their
    ``p_empirical`` (α = FDR_ALPHA), the rule the stage applies now."""
    meso = with_null_columns(meso)
    if not is_legacy_mesoscale(meso):
        return meso
    out = meso.copy()
    out["q_bh"] = np.nan
    out["bh_significant"] = False
    if "p_empirical" in out.columns and len(out):
        keys = [c for c in ("method", "null", "operator") if c in out.columns]
        for _, g in out.groupby(keys, sort=False):
            q, sig = bh_fdr(g["p_empirical"].to_numpy(float))
            out.loc[g.index, "q_bh"] = q
            out.loc[g.index, "bh_significant"] = sig
    out["bh_significant"] = out["bh_significant"].astype(bool)
    return out


def claim_rows(meso):
    """The rows that can support a coupling claim: the joint null on R; ('independent', 'J') for a
    table from before the joint null (the caller should say that it is confounded by the skip)."""
    meso = with_null_columns(meso)
    joint_r = meso[(meso["null"] == "joint") & (meso["operator"] == "R")]
    return joint_r if len(joint_r) else meso[(meso["null"] == "independent") & (meso["operator"] == "J")]


# -- boundary-node test ---------------------------------------------------------------------------
def column_norms(jac: np.ndarray) -> np.ndarray:
    """‖J_{:,i}‖₂ for every input unit i: how strongly J amplifies a perturbation of unit i. (d,) float64."""
    return np.linalg.norm(np.asarray(jac, dtype=np.float64), axis=0)


def participation_tails(part: np.ndarray, tail: float = TAIL, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Masks (d,) bool of the top and bottom participation tails, each exactly ⌊tail · n⌋ units.

    n counts the units with finite participation (NaN is in neither tail). Units are ranked by
    participation; ties are broken by one random order of all d units drawn from ``seed`` (the
    run's seed), so the tails are reproducible and never hold more than their share. A unit's
    place in the tie-break depends on its index, not on the other units' values.
    """
    part = np.asarray(part, dtype=np.float64)
    ok = np.isfinite(part)
    top, bottom = np.zeros(len(part), bool), np.zeros(len(part), bool)
    n_tail = int(np.floor(tail * ok.sum() + 1e-9))
    if n_tail == 0:
        return top, bottom
    tiebreak = np.random.default_rng(seed).permutation(len(part))
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((tiebreak[idx], part[idx]))]  # ascending participation, ties by the draw
    bottom[order[:n_tail]] = True
    top[order[-n_tail:]] = True
    return top, bottom


def boundary_test(part: np.ndarray, norms: np.ndarray, tail: float = TAIL,
                  n_perm: int = N_PERM_BOUNDARY, rng: np.random.Generator | None = None, seed=0) -> dict:
    """Are boundary units (high participation) amplified differently from core units?

    part, norms: (d,) participation and column norms of the same units; ``seed`` breaks ties in
    the tails (``participation_tails``).
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
    top, bottom = participation_tails(np.where(ok, part, np.nan), tail, seed=seed)
    out = {"cohens_d": np.nan, "p_perm": np.nan, "n_top": int(top.sum()), "n_bottom": int(bottom.sum()),
           "spearman_rho": np.nan, "spearman_p": np.nan}
    if ok.sum() >= 3 and np.ptp(part[ok]) > 0 and np.ptp(norms[ok]) > 0:
        res = stats.spearmanr(part[ok], norms[ok])
        out.update(spearman_rho=float(res.statistic), spearman_p=float(res.pvalue))
    if not top.any() or not bottom.any() or (top & bottom).any() or ok.sum() < 2 or np.ptp(part[ok]) == 0:
        return out  # no tails, or all participation tied: there is no boundary/core contrast
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


# -- multiple testing and rate-level tests ----------------------------------------------------------
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
