"""The papers' qualitative claims, checked on one run against its random-init twin and a null.

``evaluate(run, twin)`` is a pure function of two ``RunTables`` (``resdyn.core.headlines``): one
row per claim with the quantity measured, the paper's figure, this run's value, the twin's
value, the null baseline and a verdict from ``VERDICTS``. A run that lacks the stage behind a
claim gets "not computed" and the stage to run, never an exception. The Claims page and the
HTML report only render the table.

Degenerate samples (METHODS §1, ``resdyn.core.samples``): a claim read layer by layer (1, 3, 8,
9) that holds only through layers whose input snapshot is degenerate gets ``DEGENERATE``; the
whole-stack claims (4, 5) name such layers in their note, since P_0 cannot be formed without them.

The claims are paraphrased from the residual-stream paper (arXiv 2605.14258) and the block
coupling paper (arXiv 2407.07810); the paper column quotes numbers only. Thresholds are stated
beside each check; METHODS sections are cited where a quantity is defined.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from resdyn.core import nulls, samples
from resdyn.core.headlines import (DEFAULT_METHOD, RunTables, complex_fraction, erank_p0, fdr_counts,
                                   coupling_method)
from resdyn.core.regimes import REGIMES, paper_split, profile, regime_means

HOLDS = "holds"
FAILS = "fails"
NULL = "indistinguishable from the null"
TAUTOLOGICAL = "tautological"
CONFOUNDED = "confounded by the skip"
NOT_COMPUTED = "not computed"
DEGENERATE = "degenerate sample"

# One sentence per verdict, for the page's legend (and the report's).
VERDICTS = {
    HOLDS: ("The run shows the effect, beyond the null baseline (and the random-init twin where the "
            "claim is about training)."),
    FAILS: "The run shows no such effect, or the opposite, or its random-init twin shows it as strongly.",
    NULL: ("The value is what a structureless reference already gives (or lies inside the noise band), "
           "so it is no evidence for the claim."),
    TAUTOLOGICAL: "The comparison is true by construction, whatever the model, so it cannot support the claim.",
    CONFOUNDED: ("The only null the run has is rewarded by the identity (skip) inside J, so a positive "
                 "result could come from the skip alone."),
    NOT_COMPUTED: "The run (or its random-init twin) lacks the stage this claim needs; the note says which.",
    DEGENERATE: (f"The claim holds only through layers whose input states are a degenerate sample "
                 f"({samples.DEGENERATE_RULE}, METHODS §1); without those layers it does not hold."),
}
# Icons for the page's verdict column (Streamlit shows them as text).
ICONS = {HOLDS: "✅", FAILS: "❌", NULL: "⚪", TAUTOLOGICAL: "🔁", CONFOUNDED: "⚠️", NOT_COMPUTED: "⏳",
         DEGENERATE: "🔻"}
COLUMNS = ["claim", "quantity", "paper", "run", "twin", "null", "verdict", "note"]

NEAR_ONE = 0.1  # |Re λ − 1| below this counts as "near Re = 1" (claim 2)
CLUSTER_FRACTION = 0.5  # the init twin clusters when at least this fraction of its eigenvalues is near Re = 1
GRADIENT_MIN = 0.1  # late − early self-alignment needed to call the depth gradient real (claim 3)
Z_ABOVE = 1.96  # a layer's mesoscale z above this beats its null (one-sided, ≈ 2.5 %)


def _fmt(x, spec: str = ".3g") -> str | None:
    return None if x is None or not np.isfinite(x) else format(x, spec)


def _row(claim: str, quantity: str, paper: str, run=None, twin=None, null=None,
         verdict: str = NOT_COMPUTED, note: str = "") -> dict:
    return {"claim": claim, "quantity": quantity, "paper": paper, "run": run, "twin": twin, "null": null,
            "verdict": verdict, "note": note}


def _no_twin_note(run: RunTables) -> str:
    if run.manifest.get("init") == "random":
        return "this run is itself random-init (the null of this comparison): open its trained twin"
    return "needs a random-init twin of this model (`--init random`, same model)"


def _degenerate_note(layers: list[int]) -> str:
    shown = ", ".join(map(str, layers[:8])) + (" …" if len(layers) > 8 else "")
    return f"layer(s) {shown} read a degenerate sample ({samples.DEGENERATE_RULE})"


def _recheck(row: dict, bad: list[int], holds_without: bool | None) -> dict:
    """The degenerate-sample rule on a finished claim row: a "holds" that does not survive
    dropping the ``bad`` layers (``holds_without`` False) becomes DEGENERATE; either way the note
    names them. ``holds_without`` None: the claim cannot be recomputed without them (note only)."""
    if not bad:
        return row
    row = dict(row)
    if row["verdict"] == HOLDS and holds_without is False:
        row["verdict"] = DEGENERATE
        row["note"] = f"holds only with {_degenerate_note(bad)}; without them it does not. {row['note']}"
    elif holds_without is None:
        row["note"] = f"{row['note']}; the product includes {_degenerate_note(bad)}"
    elif row["verdict"] == HOLDS:
        row["note"] = f"{row['note']}; still holds without the {_degenerate_note(bad)}"
    else:
        row["note"] = f"{row['note']}; {_degenerate_note(bad)}"
    return row


# -- 1. complex-pair fraction ---------------------------------------------------------------------

def complex_pairs(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 1: most eigenvalues of J̄_l come in complex pairs (METHODS §3)."""
    claim = "most eigenvalues are complex pairs (rotation)"
    q, paper = "complex-pair fraction of J̄_l, mean over layers", "≈98 %"
    cf = complex_fraction(run)
    if cf is None:
        return _row(claim, q, paper, note="needs the `spectra` stage")
    d = run.d
    null, sd = nulls.ginibre_complex_fraction(d), nulls.ginibre_complex_fraction_sd(d)
    tw = complex_fraction(twin) if twin is not None else None
    twin_txt = f"; the random-init twin has {tw:.1%}" if tw is not None else ""
    if cf > null + 2 * sd:
        verdict, note = HOLDS, f"{(cf - null) / sd:.1f} Ginibre sd above the real-Ginibre value{twin_txt}"
    else:
        where = "below" if cf < null - 2 * sd else "within 2 sd of"
        verdict = NULL
        note = (f"{where} the complex fraction of a random real {d}×{d} matrix "
                f"({null:.1%} ± {sd:.1%}){twin_txt}")
    row = _row(claim, q, paper, f"{cf:.1%}", None if tw is None else f"{tw:.1%}",
               f"{null:.1%} (real Ginibre)", verdict, note)
    bad = run.degenerate_layers()
    if not bad:
        return row
    j = run.layers[(run.layers["operator"] == "J") & ~run.layers["layer"].isin(bad)]
    rest = float(j["frac_complex"].mean()) if len(j) else np.nan
    return _recheck(row, bad, bool(np.isfinite(rest) and rest > null + 2 * sd))


# -- 2. init eigenvalues near Re = 1 --------------------------------------------------------------

def near_one_fraction(eig: pd.DataFrame | None) -> tuple[float, float] | None:
    """(fraction of J̄ eigenvalues with |Re λ − 1| < NEAR_ONE, median |λ − 1|) over layers ≥ 1
    (layer 0 reads the embedding and is left out, as in the paper), or None without eigenvalues."""
    if eig is None or not len(eig):
        return None
    rows = eig[eig["layer"] >= 1] if eig["layer"].max() >= 1 else eig
    re, im = rows["re"].to_numpy(float), rows["im"].to_numpy(float)
    return float(np.mean(np.abs(re - 1.0) < NEAR_ONE)), float(np.median(np.hypot(re - 1.0, im)))


def init_cluster(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 2: at random init the eigenvalues of J̄_l cluster near Re = 1 (METHODS §3)."""
    claim = "at init the eigenvalues cluster near Re = 1"
    q = f"share of J̄ eigenvalues with |Re λ − 1| < {NEAR_ONE} (layers ≥ 1)"
    paper = "tight cluster at step 0 (OLMo)"
    own = near_one_fraction(run.eigenvalues)
    is_init = run.manifest.get("init") == "random"
    init = own if is_init else (near_one_fraction(twin.eigenvalues) if twin is not None else None)
    run_txt = None if own is None else f"{own[0]:.0%} (median |λ − 1| {own[1]:.3g})"
    if own is None and not is_init:
        return _row(claim, q, paper, note="needs the `spectra` stage (eigenvalues.parquet)")
    if init is None:
        note = "needs the `spectra` stage (eigenvalues.parquet)" if is_init else (
            _no_twin_note(run) if twin is None else "the twin lacks the `spectra` stage")
        return _row(claim, q, paper, run_txt, note=note)
    twin_txt = None if is_init else f"{init[0]:.0%} (median |λ − 1| {init[1]:.3g})"
    if is_init:
        ok = init[0] >= CLUSTER_FRACTION
        note = f"this run is random-init: {init[0]:.0%} of its eigenvalues lie near Re = 1"
    else:
        ok = init[0] >= CLUSTER_FRACTION and init[0] > own[0]
        note = (f"twin {init[0]:.0%} vs trained {own[0]:.0%} near Re = 1 "
                f"(cluster: ≥ {CLUSTER_FRACTION:.0%} and above the trained run)")
    return _row(claim, q, paper, run_txt, twin_txt, "— (the twin is the reference)", HOLDS if ok else FAILS, note)


# -- 3. depth regimes of self-alignment ----------------------------------------------------------

def _regimes(t: RunTables | None, drop: list[int] = ()) -> dict[str, float] | None:
    if t is None or t.layers is None or t.n_layers < 3:
        return None
    sa = profile(t.layers, "self_alignment", "J", t.n_layers)
    sa[list(drop)] = np.nan  # a regime of only dropped layers has a NaN mean
    if not np.isfinite(sa).any():
        return None
    return regime_means(sa, paper_split(t.n_layers))


def depth_regimes(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 3: self-alignment rises with depth, rotator-like early to near-symmetric late (METHODS §4)."""
    claim = "self-alignment rises with depth (early rotators, late near-symmetric)"
    q = "self-alignment of J̄, regime means early / mid / late (paper's split)"
    paper = "0.43 / 0.65 / 0.86 (OLMo trained); 0.64 / 0.95 / 0.98 at step 0"
    r = _regimes(run)
    if r is None:
        need = "at least 3 layers" if run.layers is not None else "the `spectra` stage"
        return _row(claim, q, paper, note=f"needs {need}")
    tw = _regimes(twin)

    def txt(x):
        return " / ".join(f"{x[k]:.2f}" for k in REGIMES)

    base = nulls.alignment_baseline(run.k, run.d)
    rising = r["early"] < r["mid"] < r["late"] and r["late"] - r["early"] >= GRADIENT_MIN
    caveat = ("k/d is where unrelated subspaces sit, but a normal (e.g. orthogonal) matrix sits there too: "
              "low self-alignment alone does not mean non-normal (METHODS §4)")
    if rising:
        verdict, note = HOLDS, f"early < mid < late, late − early = {r['late'] - r['early']:.2f}; {caveat}"
    elif max(abs(v - base) for v in r.values()) < 0.05:
        verdict, note = NULL, f"every regime within 0.05 of k/d; {caveat}"
    else:
        verdict, note = FAILS, f"not early < mid < late by ≥ {GRADIENT_MIN}; {caveat}"
    row = _row(claim, q, paper, txt(r), None if tw is None else txt(tw), f"k/d = {base:.3f}", verdict, note)
    bad = run.degenerate_layers()
    if not bad:
        return row
    r2 = _regimes(run, bad)
    still = (r2 is not None and all(np.isfinite(v) for v in r2.values()) and r2["early"] < r2["mid"] < r2["late"]
             and r2["late"] - r2["early"] >= GRADIENT_MIN)
    return _recheck(row, bad, bool(still))


# -- 4. the funnel erank(P_0) ---------------------------------------------------------------------

def funnel(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 4: training lowers erank(P_0), the whole stack's effective rank (METHODS §5)."""
    claim, q = "training narrows the funnel", "erank(P_0), the effective rank of the whole stack"
    paper = "≈326 at step 0 → ≈42 trained (OLMo); 6.7 (Llama)"
    e0 = erank_p0(run)
    if e0 is None:
        return _row(claim, q, paper, null=f"≤ {run.d}", note="needs the `cumulative` stage")
    tw = erank_p0(twin) if twin is not None else None
    notes = []
    for who, t in (("this run", run), ("the twin", twin)):
        kc = t.cumulative_rank() if t is not None and t.cumulative is not None else None
        if kc is not None and kc < t.d:
            notes.append(f"{who}'s product was truncated at K_cum = {kc} < d = {t.d}, which biases erank low")
    if tw is None:
        notes.insert(0, _no_twin_note(run) if twin is None else "the twin lacks the `cumulative` stage")
        return _recheck(_row(claim, q, paper, f"{e0:.3g}", None, f"≤ {run.d}", NOT_COMPUTED, "; ".join(notes)),
                        run.degenerate_layers(), None)
    verdict = HOLDS if e0 < tw else FAILS
    notes.insert(0, f"trained / init = {e0 / tw:.2f}")
    row = _row(claim, q, paper, f"{e0:.3g}", f"{tw:.3g}", f"≤ {run.d} (ceiling)", verdict, "; ".join(notes))
    return _recheck(row, run.degenerate_layers(), None)


# -- 5–7. Schur dose surgery ------------------------------------------------------------------------

def _dose_rows(t: RunTables | None, construction: str, mode: str = "J") -> pd.DataFrame | None:
    """Rows of schur_dose for one construction and mode, β = 1 only when the table has ``beta``."""
    if t is None or t.schur_dose is None:
        return None
    s = t.schur_dose
    rows = s[(s["construction"] == construction) & (s["mode"] == mode)]
    if "beta" in s.columns:
        rows = rows[np.isclose(rows["beta"].astype(float), 1.0)]
    return rows if len(rows) else None


def _curve(rows: pd.DataFrame) -> pd.Series:
    """Mean erank over draws at each dose c (sorted by c)."""
    return rows.groupby("c")["erank"].mean().sort_index()


def dose_ratio(t: RunTables | None) -> float | None:
    rows = _dose_rows(t, "dose")
    if rows is None:
        return None
    curve = _curve(rows)
    if 0.0 not in curve.index or 1.0 not in curve.index:
        return None
    return float(curve.loc[0.0] / curve.loc[1.0])


def order_band(t: RunTables) -> float | None:
    """Width (max − min) of erank(P(c = 0)) over the seeded eigenvalue orders ('order_draw' rows,
    with the canonical order's value), or None when the run has no such rows (METHODS §6)."""
    rows = _dose_rows(t, "order_draw")
    if rows is None:
        return None
    vals = rows.loc[np.isclose(rows["c"].astype(float), 0.0), "erank"].to_numpy(float)
    canon = _dose_rows(t, "dose")
    if canon is not None:
        vals = np.concatenate([vals, canon.loc[np.isclose(canon["c"].astype(float), 0.0), "erank"].to_numpy(float)])
    vals = vals[np.isfinite(vals)]
    return float(np.ptp(vals)) if len(vals) else None


def dose_response(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 5: erank(P_0(c)) falls monotonically with the non-normal dose c (METHODS §6)."""
    claim = "removing the non-normal part widens the funnel, monotonically in the dose"
    q = "erank(P_0(c)), mode J: monotone in c, and erank(c = 0) / erank(c = 1)"
    paper = "ratio 5.7–6.6 (6.4 Llama), monotone; flat at step 0"
    rows = _dose_rows(run, "dose")
    if rows is None:
        return _row(claim, q, paper, note="needs the `schur` stage")
    curve = _curve(rows)
    e = curve.to_numpy(float)
    if 0.0 not in curve.index or 1.0 not in curve.index or not np.isfinite(e).all():
        return _row(claim, q, paper, note="the dose grid lacks c = 0 or c = 1, or holds NaN")
    ratio = float(curve.loc[0.0] / curve.loc[1.0])
    monotone = bool(np.all(np.diff(e) <= 1e-9 * np.abs(e).max()))
    effect = float(curve.loc[0.0] - curve.loc[1.0])
    band = order_band(run)
    tw = dose_ratio(twin)
    run_txt = f"ratio {ratio:.3g}, " + ("monotone" if monotone else "not monotone")
    null_txt = "ratio 1 (no dose effect)" + (f"; ordering band {band:.3g}" if band is not None else "")
    if not monotone or ratio <= 1.0:
        verdict = FAILS
        note = "erank does not fall steadily as c grows" if not monotone else "erank(c = 0) is not above erank(c = 1)"
    elif band is not None and effect <= band:
        verdict = NULL
        note = (f"the drop erank(0) − erank(1) = {effect:.3g} is within the spread over eigenvalue orders "
                f"at c = 0 ({band:.3g}): the canonical order's effect is not resolved")
    else:
        verdict = HOLDS
        note = (f"drop {effect:.3g} beyond the ordering band {band:.3g}" if band is not None else
                "no ordering band in this run (older schur stage: `--redo schur` adds it), so the effect "
                "is not checked against the eigenvalue-order noise")
    if tw is not None:
        note += f"; twin ratio {tw:.3g}"
    row = _row(claim, q, paper, run_txt, None if tw is None else f"ratio {tw:.3g}", null_txt, verdict, note)
    return _recheck(row, run.degenerate_layers(), None)


def control_a(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 6: replacing N by Gaussian noise of the same Frobenius mass raises erank (METHODS §6)."""
    claim = "random non-normal mass (Control A) reverses the dose response"
    q = "mean erank(P_0) over Control A draws: c = 1 vs c = 0"
    paper = "erank rises with c instead of falling (Llama, OLMo)"
    rows = _dose_rows(run, "control_a")
    base = _dose_rows(run, "dose")
    if rows is None or base is None:
        return _row(claim, q, paper, note="needs the `schur` stage with Control A")
    e0 = _curve(base).get(0.0)
    at1 = rows[np.isclose(rows["c"].astype(float), 1.0)]["erank"].to_numpy(float)
    if e0 is None or not len(at1):
        return _row(claim, q, paper, note="the dose grid lacks c = 0 or c = 1")
    mean1, sd1 = float(np.mean(at1)), float(np.std(at1, ddof=1)) if len(at1) > 1 else 0.0
    twin_rows = _dose_rows(twin, "control_a")
    twin_txt = None
    if twin_rows is not None and _dose_rows(twin, "dose") is not None:
        t0 = _curve(_dose_rows(twin, "dose")).get(0.0)
        t1 = twin_rows[np.isclose(twin_rows["c"].astype(float), 1.0)]["erank"].mean()
        if t0 is not None and np.isfinite(t1):
            twin_txt = f"{t0:.3g} → {t1:.3g}"
    if mean1 > e0 + sd1:
        verdict, note = HOLDS, f"rises by {mean1 - e0:.3g} (draw sd {sd1:.2g})"
    elif mean1 < e0 - sd1:
        verdict, note = FAILS, f"falls by {e0 - mean1:.3g} (draw sd {sd1:.2g}): Control A does not reverse"
    else:
        verdict, note = NULL, f"change {mean1 - e0:+.3g} within the draw sd {sd1:.2g}"
    return _row(claim, q, paper, f"{e0:.3g} → {mean1:.3g}", twin_txt, "no change", verdict, note)


def mode_r(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 7: mode R reproduces mode J, 'ruling out the skip' — always tautological (METHODS §6)."""
    claim = "mode R (dose on R = J − I) matches mode J, so the skip does not make the funnel"
    q = "largest relative gap |erank_R − erank_J| / erank_J over the dose grid"
    paper = "nearly identical ratios"
    why = ("R = Q(Λ − I + N)Q* shares J's Schur vectors and N, so I + R(c) = J(c) exactly in the same "
           "eigenvalue order: any gap is ordering noise, and the test cannot rule out the skip")
    j, r = _dose_rows(run, "dose", "J"), _dose_rows(run, "dose", "R")
    value = None
    if j is not None and r is not None:
        cj, cr = _curve(j), _curve(r)
        common = cj.index.intersection(cr.index)
        if len(common):
            value = f"{float(np.max(np.abs(cr[common] - cj[common]) / cj[common])):.2g}"
    elif j is not None:
        value = "no mode-R rows"
    skip = run.schur_dose[run.schur_dose["construction"] == "skip"] if (
        run.schur_dose is not None and "beta" in run.schur_dose.columns) else None
    if skip is not None and len(skip):
        at1 = skip[np.isclose(skip["c"].astype(float), 1.0)].groupby("beta")["erank"].mean()
        if len(at1):
            why += ("; the real skip test, erank(P_0) at c = 1 by β (J = βI + R): "
                    + ", ".join(f"β = {b:g}: {v:.3g}" for b, v in at1.items()))
    elif j is not None:
        why += "; no skip-dose rows (β) in this run: `--redo schur` adds them"
    return _row(claim, q, paper, value, None, "0 by construction", TAUTOLOGICAL, why)


# -- 8–9. topology ↔ dynamics ------------------------------------------------------------------------

def boundary_layers(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 8: boundary units are amplified or damped at FDR-significant layers, learned (METHODS §8)."""
    claim = "boundary units are coupled to the Jacobian at many layers, learned by training"
    q = "layers with an FDR-significant boundary-node effect (BH, α = 0.05)"
    paper = "0 → 14 → 24 of 32 over training (OLMo); 16 of 32 (Llama)"
    fc = fdr_counts(run)
    if fc is None:
        return _row(claim, q, paper, note="needs the `topology_coupling` stage")
    null = nulls.bh_null_discoveries(fc[1])
    tw = fdr_counts(twin) if twin is not None else None
    null_txt = f"{null:.2f} expected (α·L = {nulls.FDR_ALPHA * fc[1]:.1f} uncorrected)"
    method = coupling_method(run, DEFAULT_METHOD)
    if fc[0] == 0:
        verdict, note = NULL, "no layer passes the FDR threshold"
    elif tw is not None and tw[0] >= fc[0]:
        verdict, note = FAILS, f"the random-init twin has as many ({tw[0]}): not learned"
    else:
        verdict = HOLDS
        note = f"{fc[2]} with d > 0, {fc[3]} with d < 0"
        if tw is None:
            why = _no_twin_note(run) if twin is None else "the twin lacks the stage"
            note += f"; {why} to show it is learned"
    row = _row(claim, q, paper, f"{fc[0]} / {fc[1]} ({method})", None if tw is None else f"{tw[0]} / {tw[1]}",
               null_txt, verdict, note)
    bad = run.degenerate_layers()  # the test of layer l reads the participation of snapshot 2l
    if not bad:
        return row
    c = run.coupling[(run.coupling["method"] == method) & ~run.coupling["layer"].isin(bad)]
    return _recheck(row, bad, bool(c["fdr_significant"].astype(bool).sum() > (tw[0] if tw is not None else 0)))


def _mesoscale_pick(t: RunTables | None) -> tuple[pd.DataFrame, str] | None:
    """Mesoscale rows to judge: the joint (overlap-preserving) null on R when present, else on J;
    a run with only the independent null gives its rows with null 'independent'."""
    if t is None or t.mesoscale is None or not len(t.mesoscale):
        return None
    m = t.mesoscale
    if "method" in m.columns:
        methods = list(dict.fromkeys(m["method"]))
        m = m[m["method"] == (DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0])]
    if "null" not in m.columns:
        return m, "independent"
    for null, op in (("joint", "R"), ("joint", "J")):
        rows = m[(m["null"] == null) & ((m["operator"] == op) if "operator" in m.columns else True)]
        if len(rows):
            return rows, f"joint, {op}"
    rows = m[m["null"] == "independent"]
    if "operator" in m.columns and (rows["operator"] == "J").any():
        rows = rows[rows["operator"] == "J"]
    return (rows, "independent") if len(rows) else None


def mesoscale(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 9: the community basis captures more Jacobian variance than random partitions (METHODS §8)."""
    claim = "communities capture more Jacobian variance than random partitions"
    q = f"layers with mesoscale z > {Z_ABOVE} against size-matched random partitions"
    paper = "32 of 32, already at step 0 (median z 19.2)"
    pick = _mesoscale_pick(run)
    if pick is None:
        return _row(claim, q, paper, note="needs the `topology_coupling` stage")
    rows, which = pick
    n, above = len(rows), int((rows["z"].astype(float) > Z_ABOVE).sum())
    expected = float(stats.binom.ppf(0.95, n, stats.norm.sf(Z_ABOVE)))
    tp = _mesoscale_pick(twin)
    twin_txt = None
    if tp is not None and tp[1] == which:
        twin_txt = f"{int((tp[0]['z'].astype(float) > Z_ABOVE).sum())} / {len(tp[0])}"
    null_txt = f"≤ {expected:.0f} by chance (95 %)"
    if which == "independent":
        verdict = CONFOUNDED
        note = ("only the independent null: shuffling input and output partitions apart breaks their overlap, "
                "which the identity in J rewards (J = I + structureless R scores z ≈ 40, METHODS §8); "
                "`--redo topology_coupling` adds the joint null")
    elif above > expected:
        verdict, note = HOLDS, f"against the overlap-preserving null ({which})"
    else:
        verdict, note = NULL, f"no more layers above the overlap-preserving null ({which}) than chance"
    row = _row(claim, q, paper, f"{above} / {n} ({which})", twin_txt, null_txt, verdict, note)
    # Layer l pairs the partitions of its input and output snapshots: either may be degenerate.
    degen = set(run.degenerate_snapshots())
    if not degen or "snapshot_in" not in rows.columns:
        return row
    ok = ~(rows["snapshot_in"].isin(degen) | rows["snapshot_out"].isin(degen))
    bad = sorted(int(x) for x in rows.loc[~ok, "layer"].unique())
    clean = rows[ok]
    if not bad:
        return row
    exp2 = float(stats.binom.ppf(0.95, len(clean), stats.norm.sf(Z_ABOVE))) if len(clean) else np.inf
    return _recheck(row, bad, bool(len(clean) and (clean["z"].astype(float) > Z_ABOVE).sum() > exp2))


# -- 10–11. the block-coupling paper ------------------------------------------------------------------

def _summary(t: RunTables | None, name: str) -> float | None:
    if t is None:
        return None
    v = t.summary.get(name)
    return float(v) if v is not None and np.isfinite(v) else None


def _trained_vs_init(run: RunTables, twin: RunTables | None, name: str, *, claim: str, q: str, paper: str,
                     stage: str, higher: bool, null: str | None) -> dict:
    v = _summary(run, name)
    if v is None:
        return _row(claim, q, paper, null=null, note=f"needs the `{stage}` stage")
    tw = _summary(twin, name)
    if tw is None:
        note = _no_twin_note(run) if twin is None else f"the twin lacks the `{stage}` stage"
        return _row(claim, q, paper, f"{v:.3g}", None, null, NOT_COMPUTED, note)
    ok = v > tw if higher else v < tw
    return _row(claim, q, paper, f"{v:.3g}", f"{tw:.3g}", null, HOLDS if ok else FAILS,
                f"trained {'above' if v > tw else 'below'} init by {abs(v - tw):.3g}")


def coupling_score(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 10: training couples the blocks' top singular directions (METHODS §9)."""
    return _trained_vs_init(
        run, twin, "block_coupling.coupling_score", claim="training raises block coupling",
        q="coupling score 1 − mean m̃ over layer pairs (depth-wise)", paper="rises over Pythia checkpoints",
        stage="block_coupling", higher=True, null=None)


def line_shape(run: RunTables, twin: RunTables | None) -> dict:
    """Claim 11: trained trajectories are straighter (lower LSS) than at init (METHODS §9)."""
    n = run.n_layers
    return _trained_vs_init(
        run, twin, "trajectories.lss_median", claim="trained trajectories are straighter",
        q="median line-shape score of the token trajectories", paper="4.25 trained vs 6.54 at init",
        stage="trajectories", higher=False,
        null=f"√L = {nulls.lss_random_walk(n):.3g} (random directions)" if n else None)


CLAIMS: tuple[Callable[[RunTables, RunTables | None], dict], ...] = (
    complex_pairs, init_cluster, depth_regimes, funnel, dose_response, control_a, mode_r,
    boundary_layers, mesoscale, coupling_score, line_shape,
)


def evaluate(run: RunTables, twin: RunTables | None = None) -> pd.DataFrame:
    """One row per claim (``CLAIMS`` order), columns ``COLUMNS``: formatted text, None where a value
    is absent. ``twin``: the random-init twin's tables (``headlines.find_twin``) or None."""
    return pd.DataFrame([check(run, twin) for check in CLAIMS], columns=COLUMNS)
