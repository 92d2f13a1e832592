"""Depth regimes (early / mid / late) and the headline numbers of a run.

Two ways to cut L layers into three regimes, both given as breakpoints (b1, b2) with
early = [0, b1), mid = [b1, b2), late = [b2, L):

- ``paper_split``: the fixed split of the residual-stream paper's Table 2 — layers 5 and 20 for
  32-layer models (early 0–4, mid 5–19, late 20–31), 8 and 28 for Gemma's 42 layers; any other
  depth gets the 32-layer split scaled to it (b = round(5 L / 32), round(20 L / 32)).
- ``changepoint_split``: data-driven. The exact least-squares fit of a piecewise-constant
  profile with three segments (two change points) to a per-layer profile, by default the
  self-alignment of J̄_l (the operator-type measure, METHODS §4). Every admissible (b1, b2) is
  scored from prefix sums, O(L²) — exact and instant for any real depth.

``regime_table`` gives the regime means of the quantities the paper summarises this way
(Figures 2 and 3, Table 2); ``regime_summary`` both splits of one run with their tables, as the
Runs page and the HTML report show them; ``self_alignment_table`` is Table 2 itself for several runs. The
headline numbers of a run's card are in ``resdyn.core.headlines``. numpy/pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


REGIMES = ("early", "mid", "late")
# Table 2 of the residual-stream paper: breakpoints by model depth.
PAPER_BREAKS = {32: (5, 20), 42: (8, 28)}


@dataclass(frozen=True)
class Split:
    """Three depth regimes of ``n_layers`` blocks: early [0, b1), mid [b1, b2), late [b2, L)."""

    method: str  # "paper" or "changepoint"
    breaks: tuple[int, int]
    n_layers: int

    def ranges(self) -> dict[str, range]:
        b1, b2 = self.breaks
        return {"early": range(0, b1), "mid": range(b1, b2), "late": range(b2, self.n_layers)}

    def labels(self) -> dict[str, str]:
        """Regime name -> "early (0–4)" (inclusive layer range)."""
        out = {}
        for name, r in self.ranges().items():
            span = f"{r.start}" if len(r) == 1 else f"{r.start}–{r.stop - 1}"
            out[name] = f"{name} ({span})"
        return out

    def regime_of(self) -> np.ndarray:
        """(L,) regime name of every layer (object array)."""
        out = np.empty(self.n_layers, dtype=object)
        for name, r in self.ranges().items():
            out[list(r)] = name
        return out

    def describe(self) -> str:
        b1, b2 = self.breaks
        how = "the paper's fixed split" if self.method == "paper" else "change points of the profile"
        return f"{how}: breaks at layers {b1} and {b2}"


def _check_depth(n_layers: int) -> None:
    if n_layers < 3:
        raise ValueError(f"three regimes need at least 3 layers, got {n_layers}")


def paper_split(n_layers: int) -> Split:
    """The fixed early/mid/late split of the paper's Table 2, scaled to ``n_layers`` (≥ 3)."""
    _check_depth(n_layers)
    if n_layers in PAPER_BREAKS:
        return Split("paper", PAPER_BREAKS[n_layers], n_layers)
    # Round half up (Python's round() is banker's rounding: 2.5 -> 2).
    b1 = int(np.floor(5 * n_layers / 32 + 0.5))
    b2 = int(np.floor(20 * n_layers / 32 + 0.5))
    b1 = min(max(b1, 1), n_layers - 2)
    b2 = min(max(b2, b1 + 1), n_layers - 1)
    return Split("paper", (b1, b2), n_layers)


def default_min_size(n_layers: int) -> int:
    """Smallest regime the change-point search allows: a tenth of the depth, at least one layer."""
    return max(1, n_layers // 10)


def segment_costs(profile: np.ndarray, min_size: int = 1) -> np.ndarray:
    """(L+1, L+1) float64 residual sum of squares of the three-segment fit for every (b1, b2).

    Entry [b1, b2] is Σ over the segments [0, b1), [b1, b2), [b2, L) of Σ (y − segment mean)²;
    +inf where a segment would be shorter than ``min_size``. NaN layers are left out of the sums
    (a segment of only NaNs costs 0). ``profile``: (L,) any real dtype.
    """
    y = np.asarray(profile, dtype=np.float64)
    n = len(y)
    ok = np.isfinite(y)
    yz = np.where(ok, y, 0.0)
    s1 = np.concatenate([[0.0], np.cumsum(yz)])
    s2 = np.concatenate([[0.0], np.cumsum(yz * yz)])
    cnt = np.concatenate([[0.0], np.cumsum(ok.astype(np.float64))])

    def cost(i, j):  # RSS of y[i:j] about its mean, vectorised over index arrays
        m = cnt[j] - cnt[i]
        s = s1[j] - s1[i]
        return (s2[j] - s2[i]) - np.divide(s * s, m, out=np.zeros_like(s), where=m > 0)

    b1, b2 = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    total = cost(np.zeros_like(b1), b1) + cost(b1, b2) + cost(b2, np.full_like(b2, n))
    valid = (b1 >= min_size) & (b2 - b1 >= min_size) & (n - b2 >= min_size)
    return np.where(valid, np.maximum(total, 0.0), np.inf)


def changepoint_split(profile: np.ndarray, min_size: int | None = None) -> Split:
    """Data-driven split: the two change points of the least-squares piecewise-constant fit.

    ``profile``: (L,) per-layer values (e.g. self-alignment of J̄_l). Each regime has at least
    ``min_size`` layers (default ``default_min_size(L)``). Ties go to the earliest (b1, b2).
    """
    n = len(profile)
    _check_depth(n)
    min_size = default_min_size(n) if min_size is None else int(min_size)
    if 3 * min_size > n:
        raise ValueError(f"{n} layers cannot hold three regimes of at least {min_size} layers")
    costs = segment_costs(profile, min_size)
    b1, b2 = np.unravel_index(int(np.argmin(costs)), costs.shape)  # first minimum in row-major order
    return Split("changepoint", (int(b1), int(b2)), n)


def regime_means(values: np.ndarray, split: Split, log: bool = False) -> dict[str, float]:
    """Mean of ``values`` (L,) over each regime, NaNs ignored; ``log``: geometric mean instead."""
    v = np.asarray(values, dtype=np.float64)
    out = {}
    for name, r in split.ranges().items():
        seg = v[list(r)]
        seg = seg[np.isfinite(seg)]
        if log:
            seg = seg[seg > 0]
            out[name] = float(np.exp(np.mean(np.log(seg)))) if len(seg) else np.nan
        else:
            out[name] = float(np.mean(seg)) if len(seg) else np.nan
    return out


# (label, operator, column of layers.parquet, geometric mean?) — the regime summaries of the
# paper's Figures 2d–f and 3d–g; κ spans decades, so its regimes are geometric means.
QUANTITIES = (
    ("self-alignment of J̄", "J", "self_alignment", False),
    ("self-alignment of R = J̄ − I", "R", "self_alignment", False),
    ("residual norm ratio ‖R‖_F / ‖J̄‖_F", "J", "residual_norm_ratio", False),
    ("Henrici δ of J̄", "J", "henrici", False),
    ("κ, median over samples (geometric mean)", "J", "kappa_median", True),
    ("fraction expanding |λ| > 1", "J", "frac_expanding", False),
    ("mean |λ|", "J", "mean_abs_eig", False),
    ("complex-pair fraction", "J", "frac_complex", False),
)


def profile(lay: pd.DataFrame, column: str, operator: str, n_layers: int) -> np.ndarray:
    """(L,) float64 ``column`` of ``layers.parquet`` rows for one operator, NaN where missing."""
    out = np.full(n_layers, np.nan)
    rows = lay[lay["operator"] == operator] if "operator" in lay else lay
    if column not in rows:
        return out
    idx = rows["layer"].to_numpy(int)
    keep = (idx >= 0) & (idx < n_layers)
    out[idx[keep]] = rows[column].to_numpy(np.float64)[keep]
    return out


def regime_table(lay: pd.DataFrame, split: Split, extra: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Regime means of every quantity: columns quantity, early, mid, late (one row per quantity).

    ``lay``: layers.parquet (both operators). ``extra``: more (L,) profiles by label, e.g. the
    effective rank of P_l from cumulative.parquet (geometric means when the label has "erank").
    """
    rows = []
    for label, op, col, log in QUANTITIES:
        v = profile(lay, col, op, split.n_layers)
        if np.isfinite(v).any():
            rows.append({"quantity": label, **regime_means(v, split, log=log)})
    for label, v in (extra or {}).items():
        rows.append({"quantity": label, **regime_means(v, split, log="erank" in label)})
    return pd.DataFrame(rows, columns=["quantity", *REGIMES])


def self_alignment_table(layer_tables: dict[str, pd.DataFrame], method: str = "paper") -> pd.DataFrame:
    """The paper's Table 2 for several runs: mean self-alignment of J̄_l by regime.

    ``layer_tables``: run id -> layers.parquet. ``method``: "paper" (fixed split) or
    "changepoint" (each run's own change points of its self-alignment profile).
    Columns: run, n_layers, split ("5, 20"), early, mid, late, min_layer, min_value.
    Runs with fewer than 3 layers are left out.
    """
    rows = []
    for run_id, lay in layer_tables.items():
        j = lay[lay["operator"] == "J"]
        if j.empty:
            continue
        n = int(j["layer"].max()) + 1
        if n < 3:
            continue
        sa = profile(lay, "self_alignment", "J", n)
        split = paper_split(n) if method == "paper" else changepoint_split(sa)
        lo = int(np.nanargmin(sa))
        rows.append({"run": run_id, "n_layers": n, "split": f"{split.breaks[0]}, {split.breaks[1]}",
                     **regime_means(sa, split), "min_layer": lo, "min_value": float(sa[lo])})
    return pd.DataFrame(rows, columns=["run", "n_layers", "split", *REGIMES, "min_layer", "min_value"])


ERANK_LABEL = "erank(P_l) (geometric mean)"


@dataclass(frozen=True)
class RegimeSummary:
    """The depth regimes of one run, as the Runs page and the HTML report show them."""

    profile: np.ndarray
    """(L,) float64 self-alignment of J̄_l, NaN where the run lacks a layer: the profile split."""
    splits: tuple[Split, Split]
    """The paper's fixed split, then the change-point split of ``profile``."""
    tables: tuple[pd.DataFrame, pd.DataFrame]
    """``regime_table`` of each split (same order), regime columns renamed to ``Split.labels()``."""


def regime_summary(lay: pd.DataFrame, n_layers: int, cumulative: pd.DataFrame | None = None) -> RegimeSummary | None:
    """Both splits of a run and the regime means under each; None below 3 layers (no three regimes).

    ``lay``: layers.parquet (both operators). ``cumulative``: cumulative.parquet or None; when given
    its effective rank joins the tables as one more row (geometric means, METHODS §5).
    """
    if n_layers < 3:
        return None
    sa = profile(lay, "self_alignment", "J", n_layers)
    splits = (paper_split(n_layers), changepoint_split(sa))
    extra = {}
    if cumulative is not None:
        e = np.full(n_layers, np.nan)
        e[cumulative["layer"].to_numpy(int)] = cumulative["erank"].to_numpy(float)
        extra[ERANK_LABEL] = e
    tables = tuple(regime_table(lay, s, extra).rename(columns=s.labels()) for s in splits)
    return RegimeSummary(sa, splits, tables)


def profile_regimes(profiles: dict[str, pd.DataFrame], n_layers: dict[str, int], log: bool = False) -> pd.DataFrame:
    """One row per run of a per-layer profile: run, L, min, max and, for runs of at least 3 layers,
    the regime means under the paper's split scaled to the run's depth (geometric with ``log``).

    ``profiles``: run id -> (layer, value) frame; ``n_layers``: run id -> L. Columns: run, L, min,
    max, early, mid, late (NaN regimes for runs below 3 layers).
    """
    rows = []
    for r, df in profiles.items():
        n = n_layers[r]
        v = np.full(n, np.nan)
        v[df["layer"].to_numpy(int)] = df["value"].to_numpy(float)
        row = {"run": r, "L": n, "min": np.nanmin(v), "max": np.nanmax(v)}
        if n >= 3:
            row.update(regime_means(v, paper_split(n), log=log))
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "L", "min", "max", *REGIMES])
