"""The one registry of stages, importable without torch.

A stage is the unit of work of a run: it reads what earlier stages wrote to the run store and
writes its own files. Everything that names a stage reads this table: the pipeline (which
attaches the compute functions, ``resdyn.compute.stages``), the CLI's ``--stages``/``--redo``
help, ``verify``, the dashboard's banners, ``demo`` and ``report``.

``outputs`` are the files a finished stage always leaves; ``optional`` the ones it writes only for
some runs (``corr_blocks`` above 512 units); ``shared`` the files several stages add rows to
(``summary.parquet``: named scalars). The order of ``STAGES`` is a valid computation order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, the stages it reads, the files it writes and where its code lives."""

    name: str
    needs: tuple[str, ...]
    outputs: tuple[str, ...]
    description: str
    function: str  # "module:function", a function of a RunContext (torch side)
    needs_model: bool = False
    optional: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the stage may write: outputs, optional and shared."""
        return self.outputs + self.optional + self.shared


SUMMARY = ("summary.parquet",)

STAGES: tuple[StageSpec, ...] = (
    StageSpec("activations", (), ("activations.npy", "final_state.npy", "passages.parquet", "snapshots.parquet"),
              "residual states of each passage's last (or --position random) token at every sub-layer "
              "boundary, and how many distinct states, rank and participation ratio each snapshot has",
              "resdyn.compute.activations:run", needs_model=True, shared=SUMMARY),
    StageSpec("jacobians", ("activations",), ("jacobians.npy", "samples.parquet"),
              "exact per-sample block Jacobians, their statistics and the float64 mean",
              "resdyn.compute.jacobians:run", needs_model=True),
    StageSpec("spectra", ("jacobians",), ("layers.parquet", "eigenvalues.parquet"),
              "eigenvalues, alignment, Henrici and κ profiles of J̄ and R",
              "resdyn.compute.spectra:run"),
    StageSpec("cumulative", ("jacobians", "spectra"), ("cumulative.parquet", "cumulative_spectra.parquet"),
              "effective rank and norm of the cumulative products P_l (METHODS §5)",
              "resdyn.compute.geometry:compute_cumulative", shared=SUMMARY),
    StageSpec("schur", ("jacobians",),
              ("schur_Q.npy", "schur_T.npy", "schur_dose.parquet"),
              "complex Schur forms in canonical eigenvalue order and the dose grid: dose, controls A and B, "
              "random-order band, skip dose (METHODS §6)",
              "resdyn.compute.geometry:compute_schur", shared=SUMMARY),
    StageSpec("pseudospectra", ("schur",),
              ("pseudospectra.parquet", "numerical_range.parquet", "transient_growth.parquet",
               "layer_sigma.parquet"),
              "ε-pseudospectra, numerical ranges, singular values at the stored doses and transient "
              "growth (METHODS §11)",
              "resdyn.compute.geometry:compute_pseudospectra", shared=SUMMARY),
    StageSpec("communities", ("activations", "jacobians"),
              ("units.parquet", "communities.parquet", "nmi.parquet", "graph_edges.parquet",
               "community_null.parquet"),
              "top-k correlation graphs and signed Leiden communities of every snapshot, and a Gaussian "
              "null with the same covariance spectrum (METHODS §7)",
              "resdyn.compute.topology:compute_communities",
              optional=("corr_blocks.npy", "corr_blocks.parquet")),
    StageSpec("topology_coupling", ("communities", "spectra"), ("mesoscale.parquet", "coupling.parquet"),
              "mesoscale, boundary-node and rate-level topology ↔ Jacobian tests (METHODS §8)",
              "resdyn.compute.topology:compute_coupling", shared=SUMMARY),
    StageSpec("block_coupling", ("activations",), ("block_coupling.parquet", "block_coupling_A.npy"),
              "in-context residual Jacobians of a sample subset and their depth/token-wise coupling "
              "(METHODS §9)",
              "resdyn.compute.coupling:compute_block_coupling", needs_model=True, shared=SUMMARY),
    StageSpec("trajectories", ("activations",),
              ("trajectories.parquet", "trajectory_pca.parquet", "trajectory_windows.parquet"),
              "line-shape score, expodistance, norms and 2-D PCA of every token's trajectory (METHODS §9)",
              "resdyn.compute.coupling:compute_trajectories", needs_model=True, shared=SUMMARY),
)

BY_NAME = {s.name: s for s in STAGES}


def names() -> list[str]:
    """Stage names in computation order."""
    return [s.name for s in STAGES]


def get(name: str) -> StageSpec:
    return BY_NAME[name]


def writers(filename: str) -> list[str]:
    """The stages that write ``filename`` (several for a shared file), in computation order."""
    return [s.name for s in STAGES if filename in s.files]


def dependents(stage_names: set[str] | list[str]) -> list[str]:
    """``stage_names`` plus every stage that reads their outputs, transitively, in order."""
    out = set(stage_names)
    for s in STAGES:  # in dependency order, so one pass suffices
        if out & set(s.needs):
            out.add(s.name)
    return [n for n in names() if n in out]


def missing(manifest: dict) -> list[str]:
    """Stages a run has not finished: its planned ``stages_all`` (all stages when not recorded,
    as for runs that predate the key) minus ``stages_done``. Only names of real stages."""
    planned = manifest.get("stages_all") or names()
    done = set(manifest.get("stages_done") or ())
    return [n for n in planned if n in BY_NAME and n not in done]
