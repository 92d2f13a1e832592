"""Stage "spectra": eigenvalues and operator type of every mean Jacobian and R = J − I (METHODS §3–4).

Reads only ``jacobians.npy``, so it follows the mean Jacobians at once (the per-sample statistics
are the ``sample_stats`` stage's). Writes ``layers.parquet`` (one row per layer and operator) and
``eigenvalues.parquet``. layers.parquet carries the complex-pair fraction's nulls: real Ginibre
(``frac_complex_null``) and the real elliptic law at the layer's τ of R (``tau``,
``frac_complex_null_elliptic``, ``frac_complex_null_elliptic_sd``). numpy only: the math lives in
``resdyn.core.linalg`` and ``resdyn.core.nulls`` so the dashboard and tests share it.
"""

from __future__ import annotations

from resdyn.compute.stages import stages_in
from resdyn.core.linalg import operator_table
from resdyn.core.nulls import elliptic_columns, residual_taus, with_frac_complex_null


def run(ctx) -> None:
    store = ctx.store
    jac = store.read_array("jacobians", mmap=False)
    layers, eigs = operator_table(jac, ctx.k)
    # METHODS §3: the complex-pair fraction a real Ginibre matrix of this width would have.
    layers = with_frac_complex_null(layers, jac.shape[1])
    # METHODS §12: the same fraction for a real elliptic matrix with each layer's τ of R = J̄ − I.
    layers = elliptic_columns(layers, residual_taus(jac), jac.shape[1])
    store.write_table("layers", layers)
    store.write_table("eigenvalues", eigs)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
