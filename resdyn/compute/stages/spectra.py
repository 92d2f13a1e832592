"""Stage "spectra": eigenvalues and operator type of every mean Jacobian and R = J − I (METHODS §3–4).

Reads only ``jacobians.npy``, so it follows the mean Jacobians at once (the per-sample statistics
are the ``sample_stats`` stage's). Writes ``layers.parquet`` (one row per layer and operator) and
``eigenvalues.parquet``. numpy only: the math lives in ``resdyn.core.linalg`` so the dashboard and
tests share it.
"""

from __future__ import annotations

from resdyn.compute.stages import stages_in
from resdyn.core.linalg import operator_table
from resdyn.core.nulls import with_frac_complex_null


def run(ctx) -> None:
    store = ctx.store
    jac = store.read_array("jacobians", mmap=False)
    layers, eigs = operator_table(jac, ctx.k)
    # METHODS §3: the complex-pair fraction a real Ginibre matrix of this width would have.
    layers = with_frac_complex_null(layers, jac.shape[1])
    store.write_table("layers", layers)
    store.write_table("eigenvalues", eigs)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
