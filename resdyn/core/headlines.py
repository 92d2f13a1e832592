"""The headline numbers of a run, each beside its random-init twin and its null baseline.

One implementation for the Runs page's cards, the HTML report and the Claims page:

- ``RunTables``: the small tables of a run that the headlines and claims read (layers, cumulative,
  coupling, mesoscale, schur_dose, the summary scalars, optionally the J̄ eigenvalues), ``None``
  for a table the run lacks.
- ``find_twin``: the random-init run of the same model and shape (the paper's "step 0" null).
- ``headlines``: the cards — complex-pair fraction (null: real Ginibre, METHODS §3),
  erank(P_0) (ceiling d, METHODS §5), self-alignment range (k/d, METHODS §4), FDR-significant
  layers (the BH count under the complete null, METHODS §8), and how many samples the run really
  has: distinct last tokens of N and the smallest participation ratio (METHODS §1).

numpy/pandas only (no Streamlit).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resdyn.core import block_coupling, nulls, sample_stats, samples
from resdyn.core.store import RunStore, list_runs
from resdyn.core.verify import check_run
from resdyn.errors import ResdynError

# The boundary-node test's community method shown by default (the paper's signed Leiden CPM).
DEFAULT_METHOD = "cpm"
# Tables of a run that are read whole (all small: O(L) to O(L·grid) rows).
SMALL_TABLES = ("layers", "cumulative", "coupling", "mesoscale", "schur_dose")


@dataclass
class RunTables:
    """What the headlines and claims of one run read; a table the run lacks is None."""

    run_id: str
    manifest: dict
    layers: pd.DataFrame | None = None
    """layers.parquet, both operators, with frac_complex_null and the elliptic null's tau,
    frac_complex_null_elliptic and frac_complex_null_elliptic_sd (added on read for older runs) and the
    per-sample profiles once the sample_stats stage has written them (``sample_stats.with_profiles``)."""
    cumulative: pd.DataFrame | None = None
    coupling: pd.DataFrame | None = None
    mesoscale: pd.DataFrame | None = None
    schur_dose: pd.DataFrame | None = None
    summary: dict[str, float] = field(default_factory=dict)
    """summary.parquet as name -> value."""
    eigenvalues: pd.DataFrame | None = None
    """J̄ eigenvalues only: columns layer, re, im (loaded on request: L·d rows)."""
    snapshots: pd.DataFrame | None = None
    """snapshots.parquet (snapshot, n_distinct, rank, participation_ratio), computed on read from
    activations.npy for older runs (``resdyn.core.samples.run_snapshot_table``)."""
    noise: pd.DataFrame | None = None
    """noise.parquet: the claims' statistics on the half-sample mean Jacobians (``resdyn.core.noise``);
    loaded with ``claims=True``."""
    lss: pd.DataFrame | None = None
    """Whole-depth line-shape score of every token trajectory: columns sample, lss (trajectories.parquet
    at layer 0); loaded with ``claims=True``."""
    coupling_per_sample: pd.Series | None = None
    """Mean depth-wise miscoupling at the score's K of each coupling prompt (block_coupling.parquet),
    indexed by sample; loaded with ``claims=True``."""
    distinct_tokens: int | None = None
    """Distinct token ids at the analysed position (summary ``samples.distinct_last_tokens``, else
    passages.parquet's ``token``); None for runs from before token ids were stored."""

    @property
    def n_samples(self) -> int:
        return int(self.manifest.get("n_samples") or 0)

    def degenerate_snapshots(self) -> list[int]:
        """Snapshots under ``samples.DEGENERATE_RULE`` ([] without a snapshot table)."""
        return samples.degenerate_snapshots(self.snapshots, self.n_samples)

    def degenerate_layers(self) -> list[int]:
        """Layers whose input snapshot 2l is degenerate."""
        return samples.degenerate_layers(self.snapshots, self.n_samples, self.n_layers)

    @property
    def n_layers(self) -> int:
        return int(self.manifest.get("n_layers") or 0)

    @property
    def d(self) -> int:
        return int(self.manifest.get("d_model") or 0)

    @property
    def k(self) -> int:
        return nulls.run_k(self.manifest)

    def cumulative_rank(self) -> int | None:
        """K_cum of the cumulative products: the summary's ``cumulative.k`` (what the stage used),
        else the manifest's ``cumulative_rank``, else None (no cumulative stage)."""
        for v in (self.summary.get("cumulative.k"), self.manifest.get("cumulative_rank")):
            if v is not None and np.isfinite(float(v)):
                return int(v)
        return None

    @classmethod
    def from_store(cls, store: RunStore, eigenvalues: bool = False, claims: bool = False) -> "RunTables":
        """Read a run's small tables (and with ``eigenvalues`` the J̄ rows of eigenvalues.parquet;
        with ``claims`` what the claims' noise estimates read: ``noise``, ``lss``,
        ``coupling_per_sample``)."""
        m = store.manifest()
        tabs = {name: store.read_table(name) if store.has_table(name) else None for name in SMALL_TABLES}
        if tabs["layers"] is not None:
            if m.get("d_model"):
                tabs["layers"] = nulls.with_frac_complex_null(tabs["layers"], int(m["d_model"]))
                # METHODS §12's matched null; τ from jacobians.npy for runs from before the columns.
                jacs = store.read_array("jacobians") if store.has_array("jacobians") else None
                tabs["layers"] = nulls.with_elliptic_null(tabs["layers"], int(m["d_model"]), jacs)
            tabs["layers"] = sample_stats.with_profiles(store, tabs["layers"])
        summary = {}
        if store.has_table("summary"):
            s = store.read_table("summary")
            summary = dict(zip(s["name"].astype(str), s["value"].astype(float)))
        eig = None
        if eigenvalues and store.has_table("eigenvalues"):
            eig = pd.read_parquet(store.table_path("eigenvalues"), columns=["layer", "re", "im"],
                                  filters=[("operator", "==", "J")])
        snaps, _ = samples.run_snapshot_table(store)
        distinct = summary.get("samples.distinct_last_tokens")
        if distinct is None or not np.isfinite(distinct):
            tokens = samples.passage_tokens(store)
            distinct = len(np.unique(tokens)) if tokens is not None else None
        extra = _claims_tables(store, summary) if claims else {}
        return cls(run_id=store.run_id, manifest=m, summary=summary, eigenvalues=eig, snapshots=snaps,
                   distinct_tokens=None if distinct is None else int(distinct), **tabs, **extra)


def _claims_tables(store: RunStore, summary: dict) -> dict:
    """The per-passage and half-sample tables behind the claims' noise (absent ones left out)."""
    out = {}
    if store.has_table("noise"):
        out["noise"] = store.read_table("noise")
    if store.has_table("trajectories"):
        out["lss"] = pd.read_parquet(store.table_path("trajectories"), columns=["sample", "lss"],
                                     filters=[("layer", "==", 0)])
    if store.has_table("block_coupling"):
        k = summary.get("block_coupling.score_K")
        rows = pd.read_parquet(store.table_path("block_coupling"),
                               columns=["kind", "K", "layer_a", "layer_b", "sample", "aggregate", "miscoupling"])
        per = block_coupling.per_sample_miscoupling(
            rows, int(k) if k is not None and np.isfinite(k) else block_coupling.SCORE_K)
        if len(per):
            out["coupling_per_sample"] = per
    return out


def find_twin(run_id: str, root: str | os.PathLike) -> str | None:
    """The random-init twin of a run: same ``model``, d and L, ``init`` = "random"; None if none.

    A run that is itself random-init has no twin. Among several candidates the complete ones
    come first, then those with the same N, then the lowest seed (seed 0, as the demo's
    ``smollm2-135m-random``, when there is one: the other seeds form the Claims page's ensemble,
    not the twin the other pages draw), then the run id in order.
    """
    root = Path(root)
    try:
        m = RunStore(root / run_id).manifest()
    except (ResdynError, OSError):
        return None
    if m.get("init") == "random":
        return None
    key = (m.get("model"), m.get("d_model"), m.get("n_layers"))
    found = [(o.get("status") != "complete", o.get("n_samples") != m.get("n_samples"), int(o.get("seed") or 0),
              store.run_id)
             for store, o in random_init_runs(root, exclude=run_id)
             if (o.get("model"), o.get("d_model"), o.get("n_layers")) == key]
    return min(found)[-1] if found else None


def random_init_runs(root: str | os.PathLike, exclude: str | None = None) -> list[tuple[RunStore, dict]]:
    """(store, manifest) of every undamaged random-init run in ``root`` but ``exclude``: the
    candidates of a twin (``find_twin``) and of an ensemble (``claims.find_ensemble``); a damaged
    run is no baseline, and one whose manifest cannot be read is left out."""
    out = []
    for store in list_runs(Path(root)):
        if store.run_id == exclude:
            continue
        with contextlib.suppress(ResdynError, OSError):
            o = store.manifest()
            if o.get("init") == "random" and not check_run(store):
                out.append((store, o))
    return out


def _fmt_pct(x: float) -> str:
    return f"{x:.1%}"


@dataclass(frozen=True)
class Headline:
    """One number of a run's card. ``value`` is None when the stage behind it has not run; ``twin``
    is the random-init twin's value (None: no twin, or the twin lacks the stage); ``null`` the
    value with no learned structure and ``null_help`` what that null is."""

    label: str
    value: str | None
    stage: str  # the pipeline stage that writes the table behind it
    help: str = ""
    twin: str | None = None
    null: str | None = None
    null_help: str = ""


def complex_fraction(t: RunTables) -> float | None:
    """Mean over layers of J̄_l's complex-pair fraction, or None without layers.parquet."""
    if t.layers is None or not len(t.layers):
        return None
    return float(t.layers.loc[t.layers["operator"] == "J", "frac_complex"].mean())


def erank_p0(t: RunTables) -> float | None:
    """erank(P_0) (the whole stack), or None without cumulative.parquet."""
    if t.cumulative is None:
        return None
    row = t.cumulative[t.cumulative["layer"] == 0]
    return float(row["erank"].iloc[0]) if len(row) else None


def self_alignment_range(t: RunTables) -> tuple[float, float] | None:
    """(min, max) over layers of J̄_l's self-alignment, or None."""
    if t.layers is None or not len(t.layers):
        return None
    sa = t.layers.loc[t.layers["operator"] == "J", "self_alignment"]
    return float(sa.min()), float(sa.max())


def coupling_method(t: RunTables, method: str = DEFAULT_METHOD) -> str | None:
    """The community method whose boundary-node test is reported: ``method`` if present, else the first."""
    if t.coupling is None or not len(t.coupling):
        return None
    methods = list(dict.fromkeys(t.coupling["method"]))
    return method if method in methods else methods[0]


def fdr_counts(t: RunTables, method: str = DEFAULT_METHOD) -> tuple[int, int, int, int] | None:
    """(significant, tested layers, significant with d > 0, with d < 0) of the boundary-node test."""
    chosen = coupling_method(t, method)
    if chosen is None:
        return None
    c = t.coupling[t.coupling["method"] == chosen]
    sig = c["fdr_significant"].astype(bool)
    return (int(sig.sum()), len(c), int((sig & (c["cohens_d"] > 0)).sum()), int((sig & (c["cohens_d"] < 0)).sum()))


def smallest_pr(t: RunTables) -> tuple[float, int] | None:
    """(smallest participation ratio over snapshots, its snapshot), or None without the table."""
    if t.snapshots is None or not len(t.snapshots):
        return None
    row = t.snapshots.loc[t.snapshots["participation_ratio"].astype(float).idxmin()]
    return float(row["participation_ratio"]), int(row["snapshot"])


def sample_headlines(run: RunTables, twin: RunTables | None = None) -> list[Headline]:
    """How many samples the run really has (METHODS §1): distinct tokens at the analysed position
    out of N, and the smallest participation ratio of a snapshot's sample covariance."""
    n, position = run.n_samples, run.manifest.get("position", "last")
    where = "last tokens" if position == "last" else "tokens at the chosen positions"
    degen = run.degenerate_snapshots()
    shown = ", ".join(map(str, degen[:6])) + (" …" if len(degen) > 6 else "")
    out = [Headline(
        "distinct last tokens", None if run.distinct_tokens is None else f"{run.distinct_tokens} / {n}",
        "activations",
        (f"distinct token ids among the N = {n} {where} (--position {position}); snapshot 0 holds one "
         "state per distinct token, so it has at most this many distinct states"
         + ("" if run.distinct_tokens is not None or run.snapshots is None else
            "; this run predates stored token ids (recorded by newer runs' activations stage)")),
        twin=None if twin is None or twin.distinct_tokens is None else f"{twin.distinct_tokens} / {twin.n_samples}",
        null=f"{n}" if n else None, null_help="every sample a different token")]
    pr = smallest_pr(run)
    tw = smallest_pr(twin) if twin is not None else None
    out.append(Headline(
        "smallest participation ratio", None if pr is None else f"{pr[0]:.2g} (snapshot {pr[1]})", "activations",
        ("(Σλ)²/Σλ² of the centred sample covariance, smallest over snapshots: the number of equally "
         f"strong directions the samples span. Degenerate ({samples.DEGENERATE_RULE}): "
         + (f"snapshots {shown}" if degen else "none")),
        twin=None if tw is None else f"{tw[0]:.2g}", null=f"≤ N − 1 = {n - 1}" if n else None,
        null_help="N samples span at most N − 1 directions, whatever the width d"))
    return out


def headlines(run: RunTables, twin: RunTables | None = None, method: str = DEFAULT_METHOD) -> list[Headline]:
    """Complex-pair fraction, erank(P_0), self-alignment range and FDR-significant layers of ``run``,
    each with ``twin``'s value (its random-init twin, when given) and the null baseline, then the
    two sample headlines (``sample_headlines``)."""
    d, n_layers, k = run.d, run.n_layers, run.k
    out = []

    cf = complex_fraction(run)
    tw = complex_fraction(twin) if twin is not None else None
    null = nulls.ginibre_complex_fraction(d) if d else None
    out.append(Headline(
        "complex-pair fraction", None if cf is None else _fmt_pct(cf), "spectra",
        "eigenvalues of J̄_l with |Im λ| > 1e-6, mean over layers (METHODS §3)",
        twin=None if tw is None else _fmt_pct(tw), null=None if null is None else _fmt_pct(null),
        null_help=(f"a random real {d}×{d} matrix (real Ginibre) has {null:.1%} complex eigenvalues: "
                   "a fraction at or below it is no evidence of learned rotation") if null is not None else ""))

    e0 = erank_p0(run)
    tw = erank_p0(twin) if twin is not None else None
    kc = run.cumulative_rank()
    trunc = f"; truncated at K_cum = {kc} < d, so biased low (METHODS §5)" if kc is not None and kc < d else ""
    out.append(Headline(
        "erank(P_0)", None if e0 is None else f"{e0:.3g}", "cumulative",
        f"effective rank of the whole stack P_0 = J̄_{n_layers - 1}···J̄_0 (METHODS §5){trunc}",
        twin=None if tw is None else f"{tw:.3g}", null=f"≤ {d}" if d else None,
        null_help="the ceiling d: every direction survives equally (the identity map)"))

    sr = self_alignment_range(run)
    tw = self_alignment_range(twin) if twin is not None else None
    base = nulls.alignment_baseline(k, d) if d else None
    out.append(Headline(
        "self-alignment range", None if sr is None else f"{sr[0]:.2f}–{sr[1]:.2f}", "spectra",
        f"min – max over layers of ‖V_kᵀU_k‖_F²/k of J̄_l, k = {k} (METHODS §4)",
        twin=None if tw is None else f"{tw[0]:.2f}–{tw[1]:.2f}",
        null=None if base is None else f"k/d = {base:.3f}",
        null_help=("unrelated top-k subspaces; a normal matrix (a random orthogonal one) also sits at k/d, "
                   "so ≈ k/d does not mean non-normal: only Henrici δ measures that")))

    fc = fdr_counts(run, method)
    tw = fdr_counts(twin, method) if twin is not None else None
    n_tests = fc[1] if fc else n_layers
    bh = nulls.bh_null_discoveries(n_tests) if n_tests else None
    out.append(Headline(
        "FDR-significant layers", None if fc is None else f"{fc[0]} / {fc[1]}", "topology_coupling",
        (f"boundary-node test ({coupling_method(run, method)}), BH-FDR α = {nulls.FDR_ALPHA}: "
         f"{fc[2]} with d > 0, {fc[3]} with d < 0 (METHODS §8)") if fc else "",
        twin=None if tw is None else f"{tw[0]} / {tw[1]}", null=None if bh is None else f"{bh:.2f}",
        null_help=(f"expected BH discoveries among {n_tests} layers when none has an effect (any at all "
                   f"with probability α = {nulls.FDR_ALPHA}); uncorrected tests would give α·L = "
                   f"{nulls.FDR_ALPHA * n_tests:.1f}") if bh is not None else ""))
    return out + sample_headlines(run, twin)


def headline(store: RunStore, twin: bool = True, method: str = DEFAULT_METHOD) -> list[Headline]:
    """``headlines`` of a stored run, with its random-init twin from the same runs directory."""
    run = RunTables.from_store(store)
    twin_id = find_twin(store.run_id, store.path.parent) if twin else None
    tw = RunTables.from_store(RunStore(store.path.parent / twin_id)) if twin_id else None
    return headlines(run, tw, method)
