"""Tables of the "block_coupling" stage (METHODS §9): long rows of miscoupling values, their
mean over samples and the run's summary scalars. numpy/pandas only; the matrices and the
miscoupling itself are ``resdyn.core.trajectory``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORE_K = 30
"""K of the run's single coupling score (the largest valid K when d ≤ 30)."""
KINDS = ("depth", "self", "fixed_input", "fixed_output")
COLUMNS = ("kind", "K", "layer_a", "layer_b", "token_a", "token_b", "token_fixed", "sample", "aggregate", "n",
           "miscoupling")


def coupling_rows(kind: str, ks, m: np.ndarray, layer_a, layer_b, token_a, token_b, token_fixed,
                  sample: int) -> pd.DataFrame:
    """Long rows from a miscoupling array m (nK, ...) and index arrays broadcast to m.shape[1:]."""
    shape = m.shape[1:]
    cols = {name: np.broadcast_to(np.asarray(v), shape) for name, v in
            (("layer_a", layer_a), ("layer_b", layer_b), ("token_a", token_a), ("token_b", token_b),
             ("token_fixed", token_fixed))}
    frames = []
    for i, k in enumerate(ks):
        ok = np.isfinite(m[i])
        frames.append(pd.DataFrame({
            "kind": kind, "K": np.int32(k),
            **{c: v[ok].astype(np.float64) if c == "token_fixed" else v[ok].astype(np.int32) for c, v in cols.items()},
            "sample": np.int32(sample), "aggregate": False, "n": np.int32(1), "miscoupling": m[i][ok],
        }))
    return pd.concat(frames, ignore_index=True)


def aggregate_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-sample rows plus their mean over samples (aggregate = True, sample = −1, n = count)."""
    keys = ["kind", "K", "layer_a", "layer_b", "token_a", "token_b", "token_fixed"]
    per = rows[~rows["aggregate"]]
    agg = (per.groupby(keys, dropna=False, sort=False)["miscoupling"]
           .agg(["mean", "count"]).reset_index()
           .rename(columns={"mean": "miscoupling", "count": "n"}))
    agg["sample"], agg["aggregate"] = np.int32(-1), True
    out = pd.concat([agg, per], ignore_index=True)[list(COLUMNS)]
    out["token_fixed"] = out["token_fixed"].astype("Int32")
    for c in ("K", "layer_a", "layer_b", "token_a", "token_b", "sample", "n"):
        out[c] = out[c].astype(np.int32)
    return out


def per_sample_miscoupling(rows: pd.DataFrame, k: int) -> pd.Series:
    """Mean depth-wise miscoupling over layer pairs l ≠ l' of each sample (prompt) at K = ``k``,
    indexed by sample (empty when the table has none): what the coupling score averages, and what
    the claims' bootstrap over prompts resamples."""
    per = rows[(rows["kind"] == "depth") & ~rows["aggregate"] & (rows["layer_a"] != rows["layer_b"])
               & (rows["K"] == k)]
    return per.groupby("sample")["miscoupling"].mean()


def coupling_summary(rows: pd.DataFrame, ks: list[int]) -> dict[str, float]:
    """Mean depth-wise miscoupling over layer pairs l ≠ l' (then over samples) per K, and the
    run's coupling score 1 − mean m̃ at ``SCORE_K`` (the paper ranks models by it)."""
    per = rows[(rows["kind"] == "depth") & ~rows["aggregate"] & (rows["layer_a"] != rows["layer_b"])]
    out = {}
    for k in ks:
        by_sample = per_sample_miscoupling(rows, k)
        out[f"block_coupling.mean_miscoupling.K{k}"] = float(by_sample.mean()) if len(by_sample) else np.nan
    score_k = SCORE_K if SCORE_K in ks else max(ks)
    out["block_coupling.score_K"] = float(score_k)
    out["block_coupling.coupling_score"] = 1.0 - out[f"block_coupling.mean_miscoupling.K{score_k}"]
    out["block_coupling.n_samples"] = float(per["sample"].nunique())
    return out
