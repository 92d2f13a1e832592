"""The papers' claims, each judged on one run by one rule against a random-init ensemble and a null.

A claim is a named statistic of a run with a direction (``Claim``): "the complex-pair fraction
of J̄_l is high", "erank(P_0) is low". Every claim is judged by the same rule (``judge``,
METHODS §12), from four numbers:

- the run's value v and its sampling noise σ_v (split halves of the passages, a bootstrap over
  passages or prompts, or the spread of seeded draws: ``Claim.noise_method`` says which);
- the random-init ensemble: the same statistic on every random-init run that matches the run on
  each key that defines the analysis (``ANALYSIS_KEYS``, ``find_ensemble``), n ≥ 2 seeds (3 by
  default), with mean m and standard deviation s;
- the null, where the claim has one: the value a structureless reference gives (a matched
  random matrix, "no change", the BH discoveries of tests with no effect).

The verdict, in this order:

1. ``not computed``: the run, or fewer than two ensemble members, lack the stage behind it (or
   the run would hold but its noise is not estimated: no finding without it);
2. ``indistinguishable from the null`` / ``below the null``: v is not beyond the null in the
   claimed direction at the 5 % level (two-sided, noise and null spread combined), or it is
   significantly on the other side;
3. ``holds``: v lies beyond the ensemble's 95 % prediction interval
   m ± t_{0.975, n−1} · s · √(1 + 1/n) in the claimed direction, by more than σ_v;
4. ``also at init``: otherwise, when the claim has a null and the ensemble mean lies beyond it in
   the claimed direction too: the run shows the effect, the random-init runs show it as well, and
   the run is not beyond them, so training did not make it;
5. ``fails``: otherwise.

Three claims add a step. The dose claims (5, 6) are judged once per normal surrogate (METHODS §6:
descending and ascending Schur order, polar); when the surrogates disagree on the sign of the
effect the verdict is ``surrogate-dependent`` with the three values, and when they agree it is the
weakest of the three verdicts. Mode R (7) is ``tautological``. A claim read layer by layer that
holds only through layers whose input snapshot is a degenerate sample (METHODS §1) becomes
``degenerate sample`` (the rule is applied again without those layers, to the run and the
ensemble alike).

``evaluate(run, ensemble)`` is a pure function of ``RunTables`` (``resdyn.core.headlines``); the
Claims page, ``resdyn claims``, ``Run.claims`` and the HTML report all call it through
``claims_table``. Claims are paraphrased from the residual-stream paper (arXiv 2605.14258) and the
block-coupling paper (arXiv 2407.07810); the paper column quotes numbers only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from resdyn.core import noise as noise_mod
from resdyn.core import nulls, samples, surrogates
from resdyn.core.headlines import DEFAULT_METHOD, RunTables, coupling_method, erank_p0
from resdyn.core.regimes import REGIMES, paper_split, regime_means
from resdyn.errors import ResdynError, UsageError

HOLDS = "holds"
FAILS = "fails"
AT_INIT = "also at init"
BELOW = "below the null"
NULL = "indistinguishable from the null"
SURROGATE = "surrogate-dependent"
TAUTOLOGICAL = "tautological"
DEGENERATE = "degenerate sample"
NOT_COMPUTED = "not computed"

VERDICTS = {
    HOLDS: ("Beyond the random-init ensemble's 95 % prediction interval in the claimed direction, by more "
            "than the run's sampling noise, and different from the null."),
    FAILS: "Not beyond the random-init ensemble, and the ensemble does not show the effect either.",
    AT_INIT: ("The effect is there, but the random-init ensemble shows it as strongly: it comes from the "
              "architecture (or the data), not from training."),
    BELOW: "Significantly on the wrong side of the null: the run shows less of it than a structureless reference.",
    NULL: "Within the noise of what a structureless reference gives: no evidence for the claim.",
    SURROGATE: ("The normal surrogates of the dose (descending order, ascending order, polar) disagree on the "
                "sign of the effect, so the result depends on an arbitrary choice."),
    TAUTOLOGICAL: "True by construction, whatever the model: it cannot support the claim.",
    DEGENERATE: (f"Holds only through layers whose input states are a degenerate sample "
                 f"({samples.DEGENERATE_RULE}, METHODS §1); without those layers it does not."),
    NOT_COMPUTED: "The run, or its random-init ensemble, lacks what this claim needs; the note says what.",
}
# Material icons (shipped with Streamlit, no emoji font needed) for the page's verdict column.
ICONS = {HOLDS: ":material/check_circle:", FAILS: ":material/cancel:", AT_INIT: ":material/history:",
         BELOW: ":material/south:", NULL: ":material/radio_button_unchecked:", SURROGATE: ":material/call_split:",
         TAUTOLOGICAL: ":material/sync:", DEGENERATE: ":material/warning:", NOT_COMPUTED: ":material/hourglass_empty:"}
# Weakest first: the verdict of several surrogates that agree in sign is the weakest of theirs.
STRENGTH = (BELOW, NULL, FAILS, AT_INIT, HOLDS)

COLUMNS = ["claim", "quantity", "paper", "run", "twin", "null", "verdict", "note", "noise_method",
           "value", "noise", "twin_mean", "twin_sd", "twin_n", "null_value"]
"""Text columns for people (run, twin, null: formatted; None where absent), then the numbers
behind them for programs (NaN where absent)."""

ALPHA = 0.05
MIN_SEEDS = 2
"""Fewest ensemble members a verdict needs (the prediction interval needs a spread); 3 by default."""
DEFAULT_SEEDS = 3

ANALYSIS_KEYS = ("model", "revision", "mode", "position", "corpus", "n_samples", "dtype", "k", "cumulative_rank",
                 "communities", "coupling_samples", "coupling_window", "coupling_tokens", "d_model", "n_layers")
"""Manifest keys that define an analysis: a twin must match the run on every one (METHODS §12)."""
_KEY_DEFAULTS = {"position": "last", "revision": None}


# -- the rule -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Null:
    """What a structureless reference gives: a value with its spread (sd of the reference's
    statistic), or for counts of tests a tail probability ``sf(v)`` = P(count ≥ v)."""

    value: float
    sd: float = 0.0
    text: str = ""
    sf: Callable[[float], float] | None = None


@dataclass(frozen=True)
class Judgement:
    verdict: str
    reason: str


def prediction_half_width(sd: float, n: int, alpha: float = ALPHA) -> float:
    """Half-width t_{1−α/2, n−1} · sd · √(1 + 1/n) of the (1 − α) prediction interval of one more
    draw from an ensemble of n (≥ 2) with standard deviation ``sd`` (METHODS §12)."""
    return float(stats.t.ppf(1 - alpha / 2, n - 1) * sd * np.sqrt(1 + 1 / n))


def prediction_interval(values: Sequence[float], alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean, sd, half-width) of the (1 − α) prediction interval of one more draw from the
    ensemble ``values`` (``prediction_half_width``). Needs n ≥ 2."""
    v = np.asarray(values, float)
    m, s = float(v.mean()), float(v.std(ddof=1))
    return m, s, prediction_half_width(s, len(v), alpha)


def null_side(value: float, noise: float, null: Null, direction: int, alpha: float = ALPHA) -> int:
    """+1 when ``value`` lies beyond ``null`` in ``direction`` at level α (two-sided), −1 when it
    lies significantly on the other side, 0 when it is within the noise of the null."""
    if null.sf is not None:  # a count of tests under the complete null: one-sided tail, p ≤ α
        return 1 if null.sf(value) <= alpha * (1 + 1e-9) and value > null.value else 0
    se = float(np.hypot(noise if np.isfinite(noise) else 0.0, null.sd))
    diff = direction * (value - null.value)
    if se == 0.0:
        return int(np.sign(diff))
    z = diff / se
    crit = stats.norm.ppf(1 - alpha / 2)
    return 1 if z > crit else (-1 if z < -crit else 0)


def judge(value: float | None, noise: float | None, ensemble: Sequence[float], null: Null | None,
          direction: int) -> Judgement:
    """The one rule of every claim (module docstring). ``noise``: σ of ``value`` (NaN or None:
    unknown: taken as 0 for the null and for "fails", but a run whose noise is unknown never
    "holds": it gets "not computed" and the stage to compute); ``ensemble``: the statistic on each
    matched random-init run (NaN members dropped)."""
    if value is None or not np.isfinite(value):
        return Judgement(NOT_COMPUTED, "no value")
    known = noise is not None and np.isfinite(noise)
    sigma = float(noise) if known else 0.0
    noise_txt = f"noise {sigma:.2g}" if known else "noise not estimated"
    if null is not None:
        side = null_side(value, sigma, null, direction)
        if side < 0:
            return Judgement(BELOW, "significantly on the wrong side of the null")
        if side == 0:
            return Judgement(NULL, "within the noise of the null")
    ens = np.asarray([e for e in ensemble if e is not None and np.isfinite(e)], float)
    if len(ens) < MIN_SEEDS:
        return Judgement(NOT_COMPUTED, f"the ensemble has {len(ens)} seed(s) with this statistic; a verdict "
                                       f"needs ≥ {MIN_SEEDS} ({DEFAULT_SEEDS} by default)")
    m, s, half = prediction_interval(ens)
    edge = m + direction * half
    beyond = direction * (value - edge)
    if beyond > sigma:
        if not known:  # "by more than its noise" cannot be checked: no finding without it
            return Judgement(NOT_COMPUTED, f"beyond the ensemble's 95 % interval by {beyond:.3g}, but the run's "
                                           "sampling noise is not estimated: compute its `noise` stage")
        return Judgement(HOLDS, f"beyond the ensemble's 95 % interval by {beyond:.3g} ({noise_txt})")
    if null is not None and direction * (m - null.value) > 0:
        return Judgement(AT_INIT, "the random-init ensemble shows the effect as strongly "
                                  f"(ensemble {m:.3g} ± {s:.2g}, run {value:.3g})")
    where = "inside" if abs(value - m) <= half else "on the far side of"
    return Judgement(FAILS, f"{where} the ensemble's 95 % interval (margin {beyond:+.3g}, {noise_txt})")


# -- measured statistics ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measure:
    """One statistic of one run: value, its noise (σ, NaN unknown) and how to print values."""

    value: float | None
    noise: float = float("nan")
    fmt: str = ".3g"
    detail: str = ""

    def text(self, x: float | None = None) -> str | None:
        x = self.value if x is None else x
        return None if x is None or not np.isfinite(x) else format(x, self.fmt)


@dataclass(frozen=True)
class Claim:
    """A claim: its statistic (``measure(run, drop) -> Measure | None``, ``drop`` layers left out),
    direction (+1: the effect is a higher value), null (``null(run, drop)``) and what it needs."""

    key: str
    claim: str
    quantity: str
    paper: str
    direction: int
    stage: str
    noise_method: str
    measure: Callable[[RunTables, tuple[int, ...]], Measure | None]
    null: Callable[[RunTables, tuple[int, ...]], Null | None] | None = None
    layerwise: bool = False
    """Read layer by layer, so the degenerate-sample rule applies (layers can be left out)."""


def _j_layers(t: RunTables, drop: tuple[int, ...]) -> pd.DataFrame | None:
    if t.layers is None or not len(t.layers):
        return None
    j = t.layers[t.layers["operator"] == "J"].sort_values("layer")
    return j[~j["layer"].isin(drop)]


def _half_noise(full: float, half: float | None) -> float:
    return abs(half - full) if half is not None and np.isfinite(half) else float("nan")


def _half_layer_mean(t: RunTables, statistic: str, drop: tuple[int, ...], layers=None) -> float | None:
    vals = noise_mod.layer_values(t.noise, statistic)
    if vals is None:
        return None
    vals = vals[~vals.index.isin(drop)]
    if layers is not None:
        vals = vals[vals.index.isin(layers)]
    return float(vals.mean()) if len(vals) else None


def m_complex(t: RunTables, drop=()) -> Measure | None:
    j = _j_layers(t, drop)
    if j is None or not len(j):
        return None
    v = float(j["frac_complex"].mean())
    return Measure(v, _half_noise(v, _half_layer_mean(t, "frac_complex", drop)), ".1%")


def n_complex(t: RunTables, drop=()) -> Null | None:
    """The complex fraction of random real matrices with each layer's symmetric balance τ (the real
    elliptic law; Ginibre where τ is unknown), averaged over the same layers."""
    j = _j_layers(t, drop)
    if j is None or not len(j) or not t.d:
        return None
    if "tau" in j.columns and np.isfinite(j["tau"].astype(float)).all():
        test = nulls.complex_fraction_test(j["frac_complex"].to_numpy(float), j["tau"].to_numpy(float), t.d)
        m, sd, what = test["null"], test["se"], "real elliptic law at each layer's τ"
    else:  # the spread of a mean over L independent matrices, as complex_fraction_test takes it
        m = float(nulls.ginibre_complex_fraction(t.d))
        sd = float(nulls.ginibre_complex_fraction_sd(t.d)) / np.sqrt(len(j))
        what = "real Ginibre (τ not stored: `--redo spectra`)"
    return Null(m, sd, f"{m:.1%} ± {sd:.1%} ({what})")


def _dist_one(t: RunTables, drop) -> pd.Series | None:
    """Median |λ − 1| of each layer ≥ 1 (layer 0 reads the embedding, as in the paper)."""
    if t.eigenvalues is None or not len(t.eigenvalues):
        return None
    e = t.eigenvalues
    e = e[~e["layer"].isin(drop)]
    if e["layer"].max() >= 1:
        e = e[e["layer"] >= 1]
    if not len(e):
        return None
    dist = np.hypot(e["re"].to_numpy(float) - 1.0, e["im"].to_numpy(float))
    return pd.Series(dist).groupby(e["layer"].to_numpy()).median()


def m_dist_one(t: RunTables, drop=()) -> Measure | None:
    per = _dist_one(t, drop)
    if per is None:
        return None
    v = float(per.mean())
    near = float(np.mean(np.abs(t.eigenvalues["re"].to_numpy(float) - 1.0) < 0.1))
    return Measure(v, _half_noise(v, _half_layer_mean(t, "dist_one", drop, layers=per.index)), ".3g",
                   f"{near:.0%} of eigenvalues with |Re λ − 1| < 0.1")


def _regime_values(t: RunTables, values: pd.Series) -> dict[str, float] | None:
    if t.n_layers < 3:
        return None
    sa = np.full(t.n_layers, np.nan)
    sa[values.index.to_numpy(int)] = values.to_numpy(float)
    r = regime_means(sa, paper_split(t.n_layers))
    return r if all(np.isfinite(r[k]) for k in REGIMES) else None


def m_gradient(t: RunTables, drop=()) -> Measure | None:
    j = _j_layers(t, drop)
    if j is None or t.n_layers < 3:
        return None
    r = _regime_values(t, j.set_index("layer")["self_alignment"])
    if r is None:
        return None
    v = r["late"] - r["early"]
    half = noise_mod.layer_values(t.noise, "self_alignment")
    rh = _regime_values(t, half[~half.index.isin(drop)]) if half is not None else None
    noise = abs((rh["late"] - rh["early"]) - v) if rh is not None else float("nan")
    return Measure(v, noise, ".2f", "early / mid / late " + " / ".join(f"{r[k]:.2f}" for k in REGIMES))


def m_funnel(t: RunTables, drop=()) -> Measure | None:
    v = erank_p0(t)
    if v is None:
        return None
    kc = t.cumulative_rank()
    detail = f"truncated at K_cum = {kc} < d = {t.d}, which biases erank low" if kc is not None and kc < t.d else ""
    return Measure(v, _half_noise(v, noise_mod.scalar(t.noise, "erank_p0")), ".3g", detail)


# -- the dose (per surrogate) ------------------------------------------------------------------------

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


def dose_curve(t: RunTables | None, surrogate: str) -> pd.Series | None:
    """erank(P_0(c)) of one normal surrogate (``noise.SURROGATES``), indexed by c, or None."""
    rows = _dose_rows(t, noise_mod.SURROGATE_CONSTRUCTION[surrogate])
    return None if rows is None else _curve(rows)


def m_dose(surrogate: str):
    def measure(t: RunTables, drop=()) -> Measure | None:
        curve = dose_curve(t, surrogate)
        if curve is None or 0.0 not in curve.index or 1.0 not in curve.index:
            return None
        v = float(curve.loc[0.0] / curve.loc[1.0])
        half = noise_mod.dose_values(t.noise, surrogate)
        noise = abs(half[0] / half[1] - v) if half is not None else float("nan")
        d = np.diff(curve.to_numpy(float))
        shape = "monotone falling" if (d < 0).all() else "monotone rising" if (d > 0).all() else "not monotone"
        return Measure(v, noise, ".3g", f"{curve.loc[0.0]:.3g} → {curve.loc[1.0]:.3g}, {shape}")
    return measure


CONTROL_A = surrogates.CONTROL_CONSTRUCTION
"""The Control A construction of each surrogate: that surrogate's normal part plus Gaussian mass."""


def m_control_a(surrogate: str):
    """Reversal of the dose by Control A: −sign(Δ dose) · Δ control / erank(c = 0), Δ from c = 0
    to c = 1; > 0 when the control moves the other way. Noise: the spread of the control's draws."""
    def measure(t: RunTables, drop=()) -> Measure | None:
        curve, rows = dose_curve(t, surrogate), _dose_rows(t, CONTROL_A[surrogate])
        if curve is None or rows is None or 0.0 not in curve.index or 1.0 not in curve.index:
            return None
        at1 = rows.loc[np.isclose(rows["c"].astype(float), 1.0), "erank"].to_numpy(float)
        if not len(at1):
            return None
        e0, e1 = float(curve.loc[0.0]), float(curve.loc[1.0])
        sign = np.sign(e1 - e0) or 1.0
        v = float(-sign * (at1.mean() - e0) / e0)
        noise = float(at1.std(ddof=1) / np.sqrt(len(at1)) / e0) if len(at1) > 1 else float("nan")
        return Measure(v, noise, "+.3g", f"dose {e0:.3g} → {e1:.3g}, control A → {at1.mean():.3g}")
    return measure


NO_CHANGE = Null(1.0, 0.0, "1 (no change)")
ZERO = Null(0.0, 0.0, "0 (no change)")


# -- topology ↔ dynamics -------------------------------------------------------------------------------

def _bh_null(n: int) -> Null:
    dist = nulls.bh_null_distribution(n)
    tail = np.cumsum(dist[::-1])[::-1]  # tail[r] = P(R ≥ r)
    return Null(float(np.sum(np.arange(n + 1) * dist)), 0.0,
                f"{nulls.bh_null_discoveries(n):.2f} expected of {n} (BH, no effect)",
                sf=lambda v: float(tail[min(int(np.ceil(v)), n)]) if v >= 0 else 1.0)


def _boundary(t: RunTables, drop) -> pd.DataFrame | None:
    method = coupling_method(t, DEFAULT_METHOD)
    if method is None:
        return None
    c = t.coupling[(t.coupling["method"] == method) & ~t.coupling["layer"].isin(drop)]
    return c if len(c) else None


def m_boundary(t: RunTables, drop=()) -> Measure | None:
    c = _boundary(t, drop)
    if c is None:
        return None
    sig = c["fdr_significant"].astype(bool)
    return Measure(float(sig.sum()), 0.0, ".0f",
                   f"of {len(c)} layers; {int((sig & (c['cohens_d'] > 0)).sum())} with d > 0, "
                   f"{int((sig & (c['cohens_d'] < 0)).sum())} with d < 0")


def n_boundary(t: RunTables, drop=()) -> Null | None:
    c = _boundary(t, drop)
    return None if c is None else _bh_null(len(c))


def _mesoscale(t: RunTables, drop) -> tuple[pd.DataFrame | None, str]:
    """The mesoscale rows a claim may read — the joint null on R, one method, BH over layers
    (older tables get BH on read) — and a note; (None, why) when the table cannot support it."""
    from resdyn.core import topology_coupling as tc

    if t.mesoscale is None or not len(t.mesoscale):
        return None, "needs the `topology_coupling` stage"
    legacy = tc.is_legacy_mesoscale(t.mesoscale)
    m = tc.with_bh_columns(t.mesoscale)
    if "method" in m.columns:
        methods = list(dict.fromkeys(m["method"]))
        m = m[m["method"] == (DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0])]
    rows = m[(m["null"] == "joint") & (m["operator"] == "R")]
    if not len(rows):
        return None, ("the run's mesoscale table has only the independent null, which the identity in J "
                      "rewards (METHODS §8): `--redo topology_coupling`")
    return rows[~rows["layer"].isin(drop)], tc.LEGACY_MESOSCALE_NOTE if legacy else ""


def m_mesoscale(t: RunTables, drop=()) -> Measure | None:
    rows, why = _mesoscale(t, drop)
    if rows is None:
        return Measure(None, detail=why) if t.mesoscale is not None else None
    count = int(rows["bh_significant"].astype(bool).sum())
    detail = f"of {len(rows)} layers (joint null on R, norm-stratified, BH α = 0.05)" + (f"; {why}" if why else "")
    return Measure(float(count), 0.0, ".0f", detail)


def n_mesoscale(t: RunTables, drop=()) -> Null | None:
    rows, _ = _mesoscale(t, drop)
    return None if rows is None else _bh_null(len(rows))


# -- the block-coupling paper ------------------------------------------------------------------------

def _summary(t: RunTables, name: str) -> float | None:
    v = t.summary.get(name)
    return float(v) if v is not None and np.isfinite(v) else None


def m_coupling(t: RunTables, drop=()) -> Measure | None:
    v = _summary(t, "block_coupling.coupling_score")
    if v is None:
        return None
    per = t.coupling_per_sample
    noise = float("nan")
    if per is not None and len(per) > 1:
        noise = noise_mod.bootstrap_sd(1.0 - per.to_numpy(float), None, np.mean)
    return Measure(v, noise, ".3g")


def m_lss(t: RunTables, drop=()) -> Measure | None:
    v = _summary(t, "trajectories.lss_median")
    if v is None:
        return None
    noise = float("nan")
    if t.lss is not None and len(t.lss):
        noise = noise_mod.bootstrap_sd(t.lss["lss"].to_numpy(float), t.lss["sample"].to_numpy(), np.median)
    return Measure(v, noise, ".3g")


def n_lss(t: RunTables, drop=()) -> Null | None:
    n = t.n_layers
    return Null(nulls.lss_random_walk(n), 0.0, f"√L = {nulls.lss_random_walk(n):.3g} (random directions)") if n else None


# -- the claims ----------------------------------------------------------------------------------------

HALF = f"{noise_mod.METHOD} of the passages"
BOOT_PASSAGES = "bootstrap over passages (1,000)"
BOOT_PROMPTS = "bootstrap over the coupling prompts (1,000)"
TESTS = "none: a count of tests, each with its own permutation p"
DRAWS = "spread of the 4 seeded Gaussian draws"

CLAIMS: tuple[Claim, ...] = (
    Claim("complex_pairs", "most eigenvalues are complex pairs (rotation)",
          "complex-pair fraction of J̄_l, mean over layers", "≈98 %", +1, "spectra", HALF, m_complex, n_complex,
          layerwise=True),
    Claim("init_cluster", "training moves the eigenvalues off Re = 1, where they cluster at init",
          "median |λ − 1| of J̄_l, mean over layers ≥ 1", "tight cluster near 1 at step 0 (OLMo)", +1, "spectra",
          HALF, m_dist_one, None, layerwise=True),
    Claim("depth_regimes", "self-alignment rises with depth (early rotators, late near-symmetric)",
          "late − early regime mean of self-alignment of J̄ (paper's split)",
          "0.43 → 0.86 (OLMo trained); 0.64 → 0.98 at step 0", +1, "spectra", HALF, m_gradient,
          lambda t, drop=(): ZERO, layerwise=True),
    Claim("funnel", "training narrows the funnel", "erank(P_0), the effective rank of the whole stack",
          "≈326 at step 0 → ≈42 trained (OLMo); 6.7 (Llama)", -1, "cumulative", HALF, m_funnel, None),
    Claim("dose_response", "removing the non-normal part widens the funnel",
          "erank(P_0(c = 0)) / erank(P_0(c = 1)) for each normal surrogate", "ratio 5.7–6.6 (6.4 Llama)", +1,
          "schur", HALF, m_dose("polar"), lambda t, drop=(): NO_CHANGE),
    Claim("control_a", "random non-normal mass (Control A) reverses the dose response",
          "−sign(Δ dose) · Δ Control A / erank(c = 0), c = 0 → 1, for each surrogate",
          "erank rises with c instead of falling (Llama, OLMo)", +1, "schur", DRAWS, m_control_a("polar"),
          lambda t, drop=(): ZERO),
    Claim("mode_r", "mode R (dose on R = J − I) matches mode J, so the skip does not make the funnel",
          "largest relative gap |erank_R − erank_J| / erank_J over the dose grid", "nearly identical ratios",
          0, "schur", "—", lambda t, drop=(): None),
    Claim("boundary_layers", "boundary units are coupled to the Jacobian at many layers",
          "layers with an FDR-significant boundary-node effect (BH, α = 0.05)",
          "0 → 14 → 24 of 32 over training (OLMo); 16 of 32 (Llama)", +1, "topology_coupling", TESTS, m_boundary,
          n_boundary, layerwise=True),
    Claim("mesoscale", "communities capture more Jacobian variance than random partitions",
          "layers whose community basis beats norm-stratified relabellings (joint null on R, BH α = 0.05)",
          "32 of 32, already at step 0 (median z 19.2)", +1, "topology_coupling", TESTS, m_mesoscale, n_mesoscale,
          layerwise=True),
    Claim("coupling_score", "training raises block coupling", "coupling score 1 − mean m̃ over layer pairs",
          "rises over Pythia checkpoints", +1, "block_coupling", BOOT_PROMPTS, m_coupling, None),
    Claim("line_shape", "trained trajectories are straighter", "median line-shape score of the token trajectories",
          "4.25 trained vs 6.54 at init", -1, "trajectories", BOOT_PASSAGES, m_lss, n_lss),
)
BY_KEY = {c.key: c for c in CLAIMS}
PER_SURROGATE = {"dose_response": m_dose, "control_a": m_control_a}


def _row(c: Claim, **kw) -> dict:
    row = {"claim": c.claim, "quantity": c.quantity, "paper": c.paper, "run": None, "twin": None, "null": None,
           "verdict": NOT_COMPUTED, "note": "", "noise_method": c.noise_method, "value": np.nan, "noise": np.nan,
           "twin_mean": np.nan, "twin_sd": np.nan, "twin_n": 0, "null_value": np.nan}
    row.update(kw)
    return row


def _pm(m: Measure, x: float, s: float) -> str:
    """"value ± spread" in the measure's format (a percentage's spread in points); a count of tests,
    whose noise is none (0), alone."""
    if not np.isfinite(s) or (s == 0 and m.fmt == ".0f"):
        return m.text(x)
    spread = f"{100 * s:.2g}%" if m.fmt.endswith("%") else format(s, ".2g")
    return f"{m.text(x)} ± {spread}"


def _ensemble_text(m: Measure, values: list[float]) -> tuple[str | None, float, float, int]:
    """(text, mean, sd, n) of the ensemble's finite values."""
    ens = [v for v in values if v is not None and np.isfinite(v)]
    if not ens:
        return None, np.nan, np.nan, 0
    mean = float(np.mean(ens))
    sd = float(np.std(ens, ddof=1)) if len(ens) > 1 else np.nan
    return f"{_pm(m, mean, sd)} (n = {len(ens)})", mean, sd, len(ens)


def _numbers(own: Measure, ens_values: list[float], null: Null | None) -> dict:
    """The row's run, twin and null columns, text and numbers."""
    twin, mean, sd, n = _ensemble_text(own, ens_values)
    return dict(run=_pm(own, own.value, own.noise), twin=twin, null=null.text if null else None, value=own.value,
                noise=own.noise, twin_mean=mean, twin_sd=sd, twin_n=n, null_value=null.value if null else np.nan)


def _judge_claim(c: Claim, run: RunTables, ensemble: list[RunTables], measure, drop=()) -> tuple[
        Measure | None, list[float], Null | None, Judgement]:
    own = measure(run, drop)
    ens = [measure(t, drop) for t in ensemble]
    ens_values = [e.value for e in ens if e is not None and e.value is not None]
    null = c.null(run, drop) if c.null is not None else None
    if own is None or own.value is None:
        why = own.detail if own is not None and own.detail else f"needs the `{c.stage}` stage"
        return None, ens_values, null, Judgement(NOT_COMPUTED, why)
    j = judge(own.value, own.noise, ens_values, null, c.direction)
    if j.verdict == NOT_COMPUTED and sum(np.isfinite(v) for v in ens_values) < MIN_SEEDS:
        j = Judgement(NOT_COMPUTED, _missing_ensemble_note(c, run, ensemble, len(ens_values)))
    return own, ens_values, null, j


def _missing_ensemble_note(c: Claim, run: RunTables, ensemble: list[RunTables], got: int) -> str:
    how = (f"`resdyn run --model {run.manifest.get('model')} --init random --seeds 0,1,2 --stages claims` "
           "with this run's analysis settings")
    if not ensemble:
        return f"no random-init ensemble matches this run: compute one with {how}"
    if len(ensemble) < MIN_SEEDS:
        return (f"the ensemble has {len(ensemble)} seed; a verdict needs ≥ {MIN_SEEDS} ({DEFAULT_SEEDS} by "
                f"default): {how}")
    return (f"{got} of {len(ensemble)} ensemble runs have the `{c.stage}` stage; a verdict needs ≥ {MIN_SEEDS}: "
            f"compute it with `resdyn run --run-id RUN --stages {c.stage}` for each")


def _evaluate_one(c: Claim, run: RunTables, ensemble: list[RunTables]) -> dict:
    if c.key == "mode_r":
        return mode_r(c, run)
    if c.key in PER_SURROGATE:
        return _evaluate_surrogates(c, run, ensemble)
    own, ens_values, null, j = _judge_claim(c, run, ensemble, c.measure)
    if own is None:
        return _row(c, note=j.reason, null=null.text if null else None)
    note = j.reason
    if own.detail:
        note = f"{note}; {own.detail}"
    verdict = j.verdict
    if c.layerwise:
        bad = tuple(run.degenerate_layers())
        if bad:
            shown = ", ".join(map(str, bad[:8])) + (" …" if len(bad) > 8 else "")
            if verdict == HOLDS:
                _, _, _, j2 = _judge_claim(c, run, ensemble, c.measure, bad)
                if j2.verdict != HOLDS:
                    verdict = DEGENERATE
                    note = f"holds only with the degenerate layer(s) {shown}; without them: {j2.verdict}. {note}"
                else:
                    note = f"{note}; still holds without the degenerate layer(s) {shown}"
            else:
                note = f"{note}; layer(s) {shown} read a degenerate sample"
    return _row(c, verdict=verdict, note=note, **_numbers(own, ens_values, null))


def _evaluate_surrogates(c: Claim, run: RunTables, ensemble: list[RunTables]) -> dict:
    """Claims 5 and 6: judged per normal surrogate; a verdict only when all agree in sign."""
    parts = {}
    for s in noise_mod.SURROGATES:
        parts[s] = _judge_claim(c, run, ensemble, PER_SURROGATE[c.key](s))
    have = {s: p for s, p in parts.items() if p[0] is not None}
    null = c.null(run) if c.null else None
    if not have:
        return _row(c, note=f"needs the `{c.stage}` stage", null=null.text if null else None)
    missing = [s for s in noise_mod.SURROGATES if s not in have]
    values = "; ".join(f"{s} {_pm(p[0], p[0].value, p[0].noise)} ({p[3].verdict})" for s, p in have.items())
    head = "polar" if "polar" in have else next(iter(have))
    common = _numbers(have[head][0], have[head][1], null)
    common["run"] += f" ({head})"
    ens_txt = "; ".join(f"{s} {_ensemble_text(p[0], p[1])[0] or '—'}" for s, p in have.items())
    if missing:
        return _row(c, verdict=NOT_COMPUTED, note=(f"the run lacks the {', '.join(missing)} surrogate(s) "
                                                    f"(`--redo schur`); {values}"), **common)
    ref = null.value if null else 0.0
    signs = {s: int(np.sign(p[0].value - ref)) for s, p in have.items()}
    if len(set(signs.values())) > 1:
        return _row(c, verdict=SURROGATE, note=f"the surrogates disagree in sign: {values}; ensemble: {ens_txt}",
                    **common)
    verdicts = [p[3].verdict for p in have.values()]
    if NOT_COMPUTED in verdicts:
        verdict = NOT_COMPUTED
        note = next(p[3].reason for p in have.values() if p[3].verdict == NOT_COMPUTED) + f"; {values}"
    else:
        verdict = min(verdicts, key=STRENGTH.index)
        note = f"every surrogate agrees in sign: {values}; ensemble: {ens_txt}"
    return _row(c, verdict=verdict, note=note, **common)


def mode_r(c: Claim, run: RunTables) -> dict:
    """Claim 7: mode R reproduces mode J — tautological in the same eigenvalue order (METHODS §6)."""
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
    return _row(c, run=value, null="0 by construction", verdict=TAUTOLOGICAL, note=why)


def evaluate(run: RunTables, ensemble: Sequence[RunTables] | RunTables | None = ()) -> pd.DataFrame:
    """One row per claim (``CLAIMS`` order), columns ``COLUMNS``. ``ensemble``: the random-init
    runs the run is judged against (``find_ensemble``), a single run, or none."""
    if ensemble is None:
        ensemble = []
    elif isinstance(ensemble, RunTables):
        ensemble = [ensemble]
    ensemble = list(ensemble)
    return pd.DataFrame([_evaluate_one(c, run, ensemble) for c in CLAIMS], columns=COLUMNS)


# -- which runs form the ensemble -------------------------------------------------------------------------

def analysis_key(manifest: dict, key: str):
    v = manifest.get(key, _KEY_DEFAULTS.get(key))
    return _KEY_DEFAULTS.get(key) if v is None and key in _KEY_DEFAULTS else v


def key_mismatch(run: dict, other: dict) -> str | None:
    """The first analysis key (``ANALYSIS_KEYS``) on which two manifests differ, as
    "key: run value vs other value", or None when they define the same analysis."""
    for key in ANALYSIS_KEYS:
        a, b = analysis_key(run, key), analysis_key(other, key)
        if a != b:
            return f"{key}: {a!r} vs {b!r}"
    return None


def find_ensemble(run_id: str, root: str | os.PathLike) -> list[str]:
    """The random-init runs in ``root`` that match ``run_id`` on every analysis key, by seed then
    id, leaving out the run itself and damaged runs. For a random-init run these are its sibling
    seeds: judged against them, it is the null-against-null check."""
    from resdyn.core.headlines import random_init_runs
    from resdyn.core.store import RunStore

    m = RunStore(Path(root) / run_id).manifest()
    found = [(int(o.get("seed") or 0), store.run_id) for store, o in random_init_runs(root, exclude=run_id)
             if key_mismatch(m, o) is None]
    return [rid for _, rid in sorted(found)]


@dataclass
class ClaimsResult:
    """A claims table with the ids it was judged on."""

    run_id: str
    ensemble: list[str]
    table: pd.DataFrame
    degenerate: list[int] = field(default_factory=list)
    explicit: bool = False


def claims_table(root: str | os.PathLike, run_id: str, twins: Sequence[str] | None = None) -> ClaimsResult:
    """The claims of ``run_id`` in ``root``: against the explicit ``twins`` (any init; each must
    match on every analysis key, else a UsageError names the key), or the automatic ensemble."""
    from resdyn.config import validate_run_id
    from resdyn.core.store import RunStore

    root = Path(root)
    for rid in (run_id, *(twins or ())):
        validate_run_id(rid)
    store = RunStore(root / run_id)
    if not store.exists():
        raise ResdynError(f"no run {run_id!r} in {root}")
    m = store.manifest()
    if twins:
        for tid in twins:
            other = RunStore(root / tid)
            if not other.exists():
                raise ResdynError(f"no run {tid!r} in {root} (given as --twin)")
            if tid == run_id:
                raise UsageError(f"--twin {tid}: a run cannot be its own twin")
            why = key_mismatch(m, other.manifest())
            if why is not None:
                raise UsageError(f"twin {tid} differs from {run_id} on analysis key {why}")
        ids = list(dict.fromkeys(twins))
    else:
        ids = find_ensemble(run_id, root)
    return judge_runs(root, run_id, ids, explicit=bool(twins))


def judge_runs(root: str | os.PathLike, run_id: str, ensemble: Sequence[str], explicit: bool = False) -> ClaimsResult:
    """``evaluate`` on stored runs: ``run_id`` against the runs ``ensemble`` (ids in ``root``,
    already found or checked: ``claims_table`` does that)."""
    from resdyn.core.store import RunStore

    root = Path(root)
    run = RunTables.from_store(RunStore(root / run_id), eigenvalues=True, claims=True)
    ens = [RunTables.from_store(RunStore(root / t), eigenvalues=True, claims=True) for t in ensemble]
    return ClaimsResult(run_id, list(ensemble), evaluate(run, ens), run.degenerate_snapshots(), explicit=explicit)
