"""Stage "trajectories" (METHODS §9, the second paper): the shape of every token's trajectory.

For every token of every sample it takes the trajectory x⁰..x^L (block inputs plus the last
block's output): ``trajectories.parquet`` (sample, token, position, layer, norm, alpha, lss_window,
ed_window, lss, ed) with LSS / ED over the whole depth and over sliding windows of 11 states
(centred at ``layer``), and ``trajectory_pca.parquet`` (sample, fit, token, position, layer, pc1,
pc2, var1, var2): each coupling prompt's trajectories projected on the 2-D PCA of its last-layer
states (``fit`` "all": every token, the paper's; "skip_first": fitted and drawn without the first
token, whose outsized norm can take the whole first axis), and ``trajectory_windows.parquet``
(scope, metric, layer, q25, median, q75, n): the per-layer quartiles the dashboard draws
(``trajectory.window_quantiles``). Summary rows ``trajectories.*``: median LSS and ED.

The per-token tables come from the activations stage's forward pass when it left them
(``resdyn.compute.trajectory_tables``); otherwise this stage runs the passages once itself.
"""

from __future__ import annotations

import numpy as np

from resdyn.compute import trajectory_tables as tt
from resdyn.compute.blocks import traced_batches
from resdyn.compute.models import tokenize
from resdyn.compute.stages import stages_in
from resdyn.core import trajectory as tj
from resdyn.errors import ResdynError


def forward_tables(ctx, bundle) -> tuple:
    """(rows, pca) from a forward pass of every passage, in the activations stage's batches."""
    builder = tt.TableBuilder(*tt.settings(ctx.cfg, bundle.n_layers))
    for idx, chunk, trace in traced_batches(bundle, tokenize(bundle, ctx.texts()), ctx.progress, desc="trajectories"):
        builder.add(idx, chunk, trace)
        if not builder.finite:
            raise ResdynError("hidden states contain NaN or Inf; rerun with --dtype float64")
    return builder.tables()


def run(ctx) -> None:
    n_layers = ctx.store.read_array("activations").shape[1] // 2  # (N, 2L, d)
    n_pca, width = tt.settings(ctx.cfg, n_layers)
    tables = tt.load(ctx.store, n_pca, width)  # the model is loaded only when they are missing
    table, pca = tables if tables is not None else forward_tables(ctx, ctx.model())
    if not np.isfinite(table["norm"]).all():
        raise ResdynError("hidden states contain NaN or Inf; rerun with --dtype float64")
    ctx.store.write_table("trajectories", table)
    ctx.store.write_table("trajectory_windows", tj.window_quantiles(table))
    ctx.store.write_table("trajectory_pca", pca)
    ctx.store.update_summary(tj.trajectory_summary(table, width))
    ctx.store.clear_partial(tt.STAGE)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
