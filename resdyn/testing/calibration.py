"""Calibration of the nulls on planted data: false-positive rate and power at α = 0.05 (METHODS §12).

Every test that a verdict reads is run here on two kinds of seeded planted data: structureless
replicates, where the test must reject at most α of the time (we require ≤ 0.08 over ≥ 200
replicates: 0.05 plus about two binomial standard errors), and replicates with a planted effect,
where it must reject at least 80 % of the time. The checks are the stage's own functions, unchanged;
only the sizes are small (and the relabelling counts smaller where noted: the rule p ≤ α is the same).

``CHECKS`` is a list of (name, function) entries; each function takes
``(n_rep: int, seed: int, large: bool)`` and returns a ``Calibration``. tests/core/test_calibration.py
runs them small; benchmarks/calibration.py runs them large and prints the table. Adding a test
(the claim rule's rows, for example) is adding one entry.

numpy/scipy (and leidenalg for the community null) only.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from resdyn.core import nulls
from resdyn.core import topology_coupling as tc

ALPHA = 0.05
MAX_FPR = 0.08
MIN_POWER = 0.80


@dataclass
class Calibration:
    """One row of the calibration table."""

    name: str
    replicates: int
    """structureless replicates behind ``fpr``"""
    fpr: float
    """rejection rate at α = 0.05 on structureless data"""
    power: float
    """rejection rate at α = 0.05 on the planted effect"""
    effect: str
    """the planted effect, in words"""
    power_replicates: int = 0
    seconds: float = float("nan")


# -- community null (METHODS §7) ----------------------------------------------------------------------

def _heavy_independent(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n samples of d independent units, 5 of them with 30× the variance (the audit's case)."""
    x = rng.standard_normal((n, d))
    x[:, :5] *= np.sqrt(30.0)
    return x


def _factor_blocks(rng: np.random.Generator, n: int, d: int, n_blocks: int, noise: float) -> np.ndarray:
    """n samples of d units in n_blocks groups, each group loading on one latent factor plus noise."""
    f = rng.standard_normal((n, n_blocks))
    return f[:, rng.permutation(np.arange(d) % n_blocks)] + noise * rng.standard_normal((n, d))


COMMUNITY_NOISE = 1.5


def community_null(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """``communities.community_null_test`` (signed CPM quality against 19 rotations of the z-scored
    sample, p = (1 + #{null ≥ data})/20): independent units with 5 heavy ones against block-
    correlated units."""
    from resdyn.core.communities import community_null_test

    n, d = (128, 48) if large else (64, 24)
    rng = np.random.default_rng([seed, 1])
    fp = sum(community_null_test(_heavy_independent(rng, n, d), rng=rng)["p_empirical"] <= ALPHA
             for _ in range(n_rep))
    n_pow = max(n_rep // 4, 50)
    hits = sum(community_null_test(_factor_blocks(rng, n, d, 4, COMMUNITY_NOISE), rng=rng)["p_empirical"] <= ALPHA
               for _ in range(n_pow))
    return Calibration("community null (CPM quality vs rotations)", n_rep, fp / n_rep, hits / n_pow,
                       f"4 factor blocks, noise sd {COMMUNITY_NOISE:g} (N = {n}, d = {d})", n_pow)


# -- mesoscale test (METHODS §8) ------------------------------------------------------------------------

def _partitions(rng: np.random.Generator, d: int, m: int, singletons: np.ndarray | None = None):
    """(lab_out, lab_in): input communities of about equal size, the output partition the same with
    10 % of the units moved (adjacent snapshots share most communities); ``singletons`` units are
    communities of their own on both sides."""
    lab_in = rng.permutation(np.arange(d) % m)
    lab_out = lab_in.copy()
    move = rng.choice(d, d // 10, replace=False)
    lab_out[move] = rng.integers(0, m, len(move))
    if singletons is not None:
        for k, u in enumerate(singletons):
            lab_in[u] = lab_out[u] = m + k
    return _canonical(lab_out), _canonical(lab_in)


def _canonical(lab: np.ndarray) -> np.ndarray:
    return np.unique(lab, return_inverse=True)[1].astype(np.int64)


def _mesoscale_p(jac, lab_out, lab_in, rng, n_null: int, n_strata: int = tc.N_STRATA) -> float:
    return tc.mesoscale_null(jac, lab_out, lab_in, null="joint", n_null=n_null, rng=rng,
                             n_strata=n_strata)["R"]["p_empirical"]


def _mesoscale(n_rep: int, seed: int, large: bool, heavy: bool,
               n_strata: int = tc.N_STRATA) -> tuple[float, float, int, int, int]:
    """(FPR, power, power replicates, d, relabellings) of the joint/R test, optionally with heavy
    singleton units."""
    d, m = (128, 8) if large else (60, 6)
    n_null = tc.N_NULL_PARTITIONS if large else 199  # p ≥ 1/200 < α: the same rule, fewer draws
    rng = np.random.default_rng([seed, 2, int(heavy)])
    fp = 0
    for _ in range(n_rep):
        heavy_units = rng.choice(d, 3, replace=False) if heavy else None
        lab_out, lab_in = _partitions(rng, d, m, heavy_units)
        r = rng.standard_normal((d, d)) / np.sqrt(d)
        if heavy:
            # Heavy units with rows and columns 30x the rest, each a singleton community: no
            # coupling between the communities, yet the unstratified null scored z ≈ 49 here.
            r[heavy_units, :] *= 30.0
            r[:, heavy_units] *= 30.0
        fp += _mesoscale_p(np.eye(d) + r, lab_out, lab_in, rng, n_null, n_strata) <= ALPHA
    n_pow = max(n_rep // 4, 50)
    hits = 0
    for _ in range(n_pow):
        heavy_units = rng.choice(d, 3, replace=False) if heavy else None
        lab_out, lab_in = _partitions(rng, d, m, heavy_units)
        blocks = rng.standard_normal((lab_out.max() + 1, lab_in.max() + 1))
        r = rng.standard_normal((d, d)) / np.sqrt(d) + 0.06 * blocks[np.ix_(lab_out, lab_in)]
        if heavy:
            r[heavy_units, :] *= 30.0
            r[:, heavy_units] *= 30.0
        hits += _mesoscale_p(np.eye(d) + r, lab_out, lab_in, rng, n_null, n_strata) <= ALPHA
    return fp / n_rep, hits / n_pow, n_pow, d, n_null


def mesoscale(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """Joint null on R (stratified relabelling, empirical p): J = I + R with i.i.d. R and partitions
    that share 90 % of their units, against R with a planted block-constant part."""
    fpr, power, n_pow, d, n_null = _mesoscale(n_rep, seed, large, heavy=False)
    return Calibration(f"mesoscale, joint null on R ({n_null} relabellings)", n_rep, fpr, power,
                       f"block-constant R, 0.06 × N(0,1) per block (d = {d})", n_pow)


def mesoscale_heavy(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """The same with 3 heavy units (rows and columns 30×) that are singleton communities."""
    fpr, power, n_pow, d, n_null = _mesoscale(n_rep, seed, large, heavy=True)
    return Calibration(f"mesoscale, heavy singletons, joint/R ({n_null} relabellings)", n_rep, fpr, power,
                       f"as above, plus 3 singleton units with 30x rows and columns (d = {d})", n_pow)


def mesoscale_heavy_unstratified(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """The heavy-singleton case against the unstratified relabelling of earlier versions (for the
    record: this one is NOT calibrated; not part of the test suite's assertions)."""
    fpr, power, n_pow, d, n_null = _mesoscale(n_rep, seed, large, heavy=True, n_strata=1)
    return Calibration(f"(old) unstratified, heavy singletons ({n_null} relabellings)", n_rep, fpr, power,
                       f"as above (d = {d})", n_pow)


# -- boundary-node test + BH (METHODS §8) --------------------------------------------------------------

BOUNDARY_LAYERS = 4


def _boundary_family(rng: np.random.Generator, d: int, shift: float) -> np.ndarray:
    """Permutation p of BOUNDARY_LAYERS layers: participation uniform, column norms lognormal and,
    with ``shift``, raised by shift · (participation rank / d) (boundary units amplified more)."""
    ps = []
    for _ in range(BOUNDARY_LAYERS):
        part = rng.random(d)
        norms = np.exp(0.3 * rng.standard_normal(d))
        norms *= 1.0 + shift * np.argsort(np.argsort(part)) / d
        ps.append(tc.boundary_test(part, norms, rng=rng, seed=int(rng.integers(2**31)))["p_perm"])
    return np.asarray(ps)


@functools.lru_cache(maxsize=4)
def _boundary(n_rep: int, seed: int, large: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(null p (n_rep, BOUNDARY_LAYERS), planted p (n_rep // 4, BOUNDARY_LAYERS), d): both boundary
    rows read the same draws."""
    d = 200 if large else 64
    rng = np.random.default_rng([seed, 3])
    null_p = np.array([_boundary_family(rng, d, 0.0) for _ in range(n_rep)])
    n_pow = max(n_rep // 4, 13)
    planted_p = np.array([_boundary_family(rng, d, 1.2 if not large else 0.8) for _ in range(n_pow)])
    return null_p, planted_p, d


def boundary(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """``boundary_test`` per layer (two-sided permutation p) and Benjamini–Hochberg over a family of
    BOUNDARY_LAYERS layers: the FPR counts families where BH rejects any layer (all null), the
    power the share of planted layers BH rejects."""
    null_p, planted_p, d = _boundary(n_rep, seed, large)
    any_rej = np.mean([tc.bh_fdr(p)[1].any() for p in null_p])
    found = np.mean([tc.bh_fdr(p)[1].mean() for p in planted_p])
    shift = 0.8 if large else 1.2
    return Calibration(f"boundary nodes + BH over {BOUNDARY_LAYERS} layers (any layer)", len(null_p), float(any_rej),
                       float(found), f"norms × (1 + {shift:g} · participation rank / d) (d = {d})",
                       planted_p.size)


def boundary_per_layer(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """``boundary_test`` alone, per layer: p ≤ α."""
    null_p, planted_p, d = _boundary(n_rep, seed, large)
    shift = 0.8 if large else 1.2
    return Calibration("boundary nodes, one layer", null_p.size, float(np.mean(null_p <= ALPHA)),
                       float(np.mean(planted_p <= ALPHA)),
                       f"norms × (1 + {shift:g} · participation rank / d) (d = {d})", planted_p.size)


# -- complex fraction against the elliptic null (METHODS §12) ------------------------------------------

CF_LAYERS = 4


def _real_fraction(a: np.ndarray) -> float:
    return nulls.real_eigenvalue_count(a) / len(a)


def _mixed_blocks(rng: np.random.Generator, d: int, tau_a: float, tau_b: float) -> np.ndarray:
    """A block-diagonal matrix of two elliptic halves: τ of the whole is about their mean, but the
    nearly symmetric half contributes far more real eigenvalues than a matrix of that mean τ has."""
    h = d // 2
    out = np.zeros((d, d))
    out[:h, :h] = nulls.elliptic_matrix(h, tau_a, rng)
    out[h:, h:] = nulls.elliptic_matrix(d - h, tau_b, rng)
    return out


def complex_fraction(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """``nulls.complex_fraction_test`` (below the null, one-sided at α) on the mean over CF_LAYERS
    layers: layers drawn from the elliptic law at random τ ∈ [−0.3, 0.8], against layers that are
    block-diagonal mixtures of a nearly symmetric and a nearly antisymmetric half."""
    from threadpoolctl import threadpool_limits

    d = 256 if large else 128
    rng = np.random.default_rng([seed, 4])

    def run(make) -> bool:
        mats = [make() for _ in range(CF_LAYERS)]
        frac = np.array([1.0 - _real_fraction(a) for a in mats])
        taus = np.array([nulls.operator_tau(a) for a in mats])
        return nulls.complex_fraction_test(frac, taus, d)["p_below"] <= ALPHA

    with threadpool_limits(limits=1, user_api="blas"):
        fp = sum(run(lambda: nulls.elliptic_matrix(d, float(rng.uniform(-0.3, 0.8)), rng)) for _ in range(n_rep))
        n_pow = max(n_rep // 4, 50)
        hits = sum(run(lambda: _mixed_blocks(rng, d, 0.95, -0.5)) for _ in range(n_pow))
    return Calibration(f"complex fraction below the elliptic null (mean of {CF_LAYERS} layers)", n_rep,
                       fp / n_rep, hits / n_pow, f"blocks at τ = 0.95 and −0.5 (d = {d})", n_pow)


# -- the claim rule itself (METHODS §12, resdyn.core.claims.judge) --------------------------------------

def _claim_rule(n_rep: int, seed: int, shift: float, n_seeds: int = 3) -> float:
    """Share of "holds" when a statistic of one run is judged against ``n_seeds`` random-init seeds.

    Each run's value is μ + a seed effect (sd 1) + sampling noise (sd 0.5); the judged run's noise
    is estimated as |θ_A − θ| from a simulated split half (θ_A − θ has the sampling sd), and its
    value is shifted by ``shift`` seed sds. Half the replicates claim "higher" (a null at μ − 3), half
    "lower" (no null), so both branches of the rule are exercised."""
    from resdyn.core import claims

    rng = np.random.default_rng([seed, 12])
    holds = 0
    for r in range(n_rep):
        ens = rng.standard_normal(n_seeds) + 0.5 * rng.standard_normal(n_seeds)
        sampling = 0.5 * rng.standard_normal()
        value = rng.standard_normal() + sampling
        noise_est = abs(0.5 * rng.standard_normal())
        if r % 2:
            v = claims.judge(value + shift, noise_est, ens, claims.Null(-3.0, 0.0), +1).verdict
        else:
            v = claims.judge(value - shift, noise_est, ens, None, -1).verdict
        holds += v == claims.HOLDS
    return holds / n_rep


def claim_rule(n_rep: int, seed: int = 0, large: bool = False) -> Calibration:
    """The claim rule: a run drawn like its 3 seeds must not "hold"; a run 10 seed-sds away must."""
    t0 = time.perf_counter()
    n = n_rep * (5 if large else 1)
    fpr = _claim_rule(n, seed, 0.0)
    power = _claim_rule(n, seed + 1, 10.0)
    return Calibration("claim_rule", n, fpr, power, "the run 10 seed-sds beyond its 3 seeds (σ_noise = 0.5)", n,
                       time.perf_counter() - t0)


CHECKS = [
    ("community_null", community_null),
    ("mesoscale", mesoscale),
    ("mesoscale_heavy", mesoscale_heavy),
    ("boundary", boundary),
    ("boundary_per_layer", boundary_per_layer),
    ("complex_fraction", complex_fraction),
    ("claim_rule", claim_rule),
]
"""(name, function) of every calibrated test; the benchmark adds the record-only rows of ``EXTRA``."""
EXTRA = [("mesoscale_heavy_unstratified", mesoscale_heavy_unstratified)]


def run_checks(checks, n_rep: int, seed: int = 0, large: bool = False) -> pd.DataFrame:
    """The calibration table of ``checks`` ((name, function) pairs): one row per check with test,
    replicates, fpr, power, power_replicates, effect and seconds."""
    rows = []
    for _, fn in checks:
        t0 = time.perf_counter()
        res = fn(n_rep, seed, large)
        res.seconds = time.perf_counter() - t0
        rows.append({"test": res.name, "replicates": res.replicates, "fpr": res.fpr, "power": res.power,
                     "power_replicates": res.power_replicates, "effect": res.effect, "seconds": res.seconds})
    return pd.DataFrame(rows)
