"""Stage "trajectories" (METHODS §9, the second paper): the shape of every token's trajectory.

It runs every sample once and, for every token, takes the trajectory x⁰..x^L (block
inputs plus the last block's output): ``trajectories.parquet`` (sample, token, position, layer,
norm, alpha, lss_window, ed_window, lss, ed) with LSS / ED over the whole depth and over sliding
windows of 11 states (centred at ``layer``), and ``trajectory_pca.parquet`` (sample, fit, token,
position, layer, pc1, pc2, var1, var2): each coupling prompt's trajectories projected on the 2-D
PCA of its last-layer states (``fit`` "all": every token, the paper's; "skip_first": fitted and
drawn without the first token, whose outsized norm can take the whole first axis), and
``trajectory_windows.parquet`` (scope, metric, layer, q25, median, q75, n): the per-layer quartiles
the dashboard draws (``trajectory.window_quantiles``). Summary rows ``trajectories.*``: median LSS
and ED.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from resdyn.compute.blocks import traced_forward
from resdyn.compute.models import length_batches, pad_batch, tokenize
from resdyn.compute.stages import stages_in
from resdyn.core import trajectory as tj
from resdyn.errors import ResdynError


def run(ctx) -> None:
    n_pca = int(ctx.cfg.coupling_samples)  # RunConfig checked it (≥ 1)
    bundle = ctx.model()
    seqs = tokenize(bundle, ctx.texts())
    width = min(tj.WINDOW, bundle.n_layers + 1)
    tok = bundle.tokenizer
    pad = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
    rows, pcas = {}, {}
    for idx in ctx.progress(length_batches(seqs), desc="trajectories", unit="batch"):
        chunk = [seqs[i] for i in idx]
        ids, mask = pad_batch(chunk, pad)
        trace = traced_forward(bundle, ids, mask.to(bundle.device))
        # (B, T, L + 1, d): block inputs x⁰..x^{L−1} and the last block's output x^L.
        states = torch.stack(list(trace.inputs) + [trace.final], dim=2).double().cpu().numpy()
        for b, (i, s) in enumerate(zip(idx, chunk)):
            traj = states[b, :len(s)]  # right padding: the real tokens are the first len(s)
            rows[i] = tj.trajectory_rows(traj, i, width)
            if i < n_pca:
                pcas[i] = tj.pca_rows(traj, i)
    rows = [rows[i] for i in sorted(rows)]  # tables in passage order, whatever the batches were
    pcas = [pcas[i] for i in sorted(pcas)]
    table = pd.concat(rows, ignore_index=True)
    if not np.isfinite(table["norm"]).all():
        raise ResdynError("hidden states contain NaN or Inf; rerun with --dtype float64")
    ctx.store.write_table("trajectories", table)
    ctx.store.write_table("trajectory_windows", tj.window_quantiles(table))
    ctx.store.write_table("trajectory_pca", pd.concat(pcas, ignore_index=True))
    ctx.store.update_summary(tj.trajectory_summary(table, width))


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
