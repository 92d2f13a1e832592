"""The per-sample Jacobian statistics as tables: samples.parquet and its per-layer profiles (METHODS §2).

The ``sample_stats`` stage reduces every sample's block Jacobian J to σ_max, σ_min, κ = σ_max/σ_min,
‖J‖_F and PR = (Σσ²)²/Σσ⁴ (``resdyn.core.singular``), then each layer's N values to the profiles
the pages draw: the median and quartiles of κ and the medians of ‖J‖_F and PR
(``layer_profiles``, written as ``sample_profiles.parquet``). Before schema 3 the spectra stage
put these five columns into ``layers.parquet``; ``with_profiles`` gives every reader the layers
table with them joined on ``layer``, whichever way the run stores them. numpy/pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resdyn.core.singular import STAT_NAMES

TABLE = "sample_profiles"
"""The profiles' table (``sample_profiles.parquet``), written by the ``sample_stats`` stage."""
PROFILE_COLUMNS = ("kappa_median", "kappa_q25", "kappa_q75", "fro_median", "pr_median")
"""Per-layer columns of ``TABLE`` besides ``layer`` (in ``layers.parquet`` before schema 3)."""
LAYER_TABLES = ("layers", TABLE)
"""The tables a layers-with-profiles read depends on (a cache key of the pages covers both)."""


def samples_table(stats: np.ndarray) -> pd.DataFrame:
    """``samples.parquet`` from the statistics (L, N, 5) float64 in ``STAT_NAMES`` order: one row
    per (layer, sample), layer-major; columns layer, sample (int32), then ``STAT_NAMES``."""
    n_layers, n = stats.shape[:2]
    out = pd.DataFrame(stats.reshape(n_layers * n, len(STAT_NAMES)), columns=list(STAT_NAMES))
    out.insert(0, "sample", np.tile(np.arange(n, dtype=np.int32), n_layers))
    out.insert(0, "layer", np.repeat(np.arange(n_layers, dtype=np.int32), n))
    return out


def layer_profiles(samples: pd.DataFrame) -> pd.DataFrame:
    """Per layer, over its samples: layer, then ``PROFILE_COLUMNS`` (float64): the median and the
    25th/75th percentiles (linear interpolation) of κ, and the medians of ‖J‖_F and PR. An infinite
    κ (a singular sample Jacobian) counts as the largest value, so a median stays finite while
    fewer than half the samples are singular (a quantile that falls between two infinite values is
    NaN). One row per layer present, sorted by layer."""
    g = samples.groupby("layer", sort=True)
    return pd.DataFrame({
        "kappa_median": g["kappa"].median(),
        "kappa_q25": g["kappa"].quantile(0.25),
        "kappa_q75": g["kappa"].quantile(0.75),
        "fro_median": g["fro"].median(),
        "pr_median": g["pr"].median(),
    }).reset_index()


def join_profiles(layers: pd.DataFrame, profiles: pd.DataFrame | None) -> pd.DataFrame:
    """``layers`` (rows per layer and operator) with the per-layer ``profiles`` left-joined on
    ``layer``, the same values on both operators' rows, as the spectra stage wrote them before
    schema 3. ``profiles`` None leaves the table as it is (an older run's own columns, if it has
    them). Either way the profile columns come last, so old and new runs give the same frame; the
    rows keep their order."""
    if profiles is not None:
        keep = ["layer", *[c for c in PROFILE_COLUMNS if c in profiles]]
        layers = layers.drop(columns=[c for c in PROFILE_COLUMNS if c in layers])
        layers = layers.merge(profiles[keep], on="layer", how="left", sort=False)
    return layers[[c for c in layers.columns if c not in PROFILE_COLUMNS]
                  + [c for c in PROFILE_COLUMNS if c in layers.columns]]


def read_profiles(store) -> pd.DataFrame | None:
    """The run's ``sample_profiles.parquet``, or None when the ``sample_stats`` stage has not
    written it (not yet, or a run from before the stage, whose layers.parquet has the columns)."""
    return store.read_table(TABLE) if store.has_table(TABLE) else None


def with_profiles(store, layers: pd.DataFrame) -> pd.DataFrame:
    """``join_profiles(layers, read_profiles(store))``: what every reader of κ, ‖J‖_F and PR per
    layer uses (queries, headlines, report, pages)."""
    return join_profiles(layers, read_profiles(store))


def has_profiles(layers: pd.DataFrame) -> bool:
    """Whether a layers table (from ``with_profiles``) carries the κ profile."""
    return {"kappa_median", "kappa_q25", "kappa_q75"} <= set(layers.columns)
