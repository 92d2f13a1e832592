"""Stage "noise": the claims' statistics on the half-sample mean Jacobians (METHODS §12).

Reads ``jacobians_half.npy`` (L, d, d) float32, the mean Jacobians over the seeded random half of
the passages that the ``jacobians`` stage keeps, and writes ``noise.parquet`` (statistic,
surrogate, c, layer, value): every statistic of ``resdyn.core.noise.HALF_STATISTICS`` on that
half. The claims compare each with the same statistic of the whole sample: |θ_A − θ| is the
run's split-half noise (``resdyn.core.noise``). numpy/scipy only, one BLAS thread per layer job.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from resdyn.compute.stages import stages_in
from resdyn.core import noise
from resdyn.errors import ResdynError


def run(ctx) -> None:
    store = ctx.store
    if not store.array_path("jacobians_half").is_file():
        raise ResdynError(f"run {store.run_id} has no jacobians_half.npy (its jacobians stage predates the "
                          f"split-half noise): recompute with `resdyn run --run-id {store.run_id} --redo jacobians`")
    half = store.read_array("jacobians_half", mmap=False)
    with threadpool_limits(limits=1, user_api="blas"):
        table = noise.half_statistics(half, ctx.k)
    store.write_table("noise", table)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
