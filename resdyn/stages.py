"""The one registry of stages, importable without torch.

A stage is the unit of work of a run: it reads what earlier stages wrote to the run store and
writes its own files. Everything that names a stage reads this table: the pipeline (which
attaches the compute functions, ``resdyn.compute.stages``), the CLI's ``--stages``/``--redo``
help, ``verify``, the dashboard's banners, ``demo`` and ``report``.

``outputs`` are the files a finished stage always leaves; ``optional`` the ones it writes only for
some runs (``corr_blocks`` above 512 units); ``shared`` the files several stages add rows to
(``summary.parquet``: named scalars). The order of ``STAGES`` is a valid computation order, and
the order in which ``run`` computes them: every stage comes after the stages it reads, and
``sample_stats`` (which reads only the activations) comes after ``spectra``, so that a run's
spectra land before the slower per-sample statistics.

One stage does work for a later one: when ``trajectories`` is planned, the ``activations``
forward pass also builds its tables (every token at every depth) and leaves them under
``.partial/trajectories/`` until that stage, which otherwise runs the same forward pass again
(``resdyn.compute.trajectory_tables``).
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
              "resdyn.compute.stages.activations:run", needs_model=True, shared=SUMMARY),
    StageSpec("jacobians", ("activations",), ("jacobians.npy",),
              "the mean J̄_l of every sample's exact block Jacobian, accumulated in float64 (METHODS §2), "
              "and the same mean over a seeded random half of the passages (for the noise stage)",
              "resdyn.compute.stages.jacobians:run", needs_model=True, optional=("jacobians_half.npy",)),
    StageSpec("spectra", ("jacobians",), ("layers.parquet", "eigenvalues.parquet"),
              "eigenvalues, alignment, Henrici and expansion profiles of J̄ and R (METHODS §3–4)",
              "resdyn.compute.stages.spectra:run"),
    StageSpec("sample_stats", ("activations",), ("samples.parquet", "sample_profiles.parquet"),
              "σ_max, σ_min, κ, ‖J‖_F and PR of every sample's block Jacobian (taken again), and their "
              "per-layer medians and quartiles (METHODS §2)",
              "resdyn.compute.stages.sample_stats:run", needs_model=True),
    StageSpec("cumulative", ("jacobians", "spectra"), ("cumulative.parquet", "cumulative_spectra.parquet"),
              "effective rank and norm of the cumulative products P_l (METHODS §5)",
              "resdyn.compute.stages.cumulative:run", shared=SUMMARY),
    StageSpec("schur", ("jacobians",),
              ("schur_Q.npy", "schur_T.npy", "schur_dose.parquet"),
              "complex Schur forms in canonical eigenvalue order and the dose grid in three normal "
              "surrogates (descending and ascending order, polar) with a control A each, control B, "
              "random-order band, skip dose (METHODS §6)",
              "resdyn.compute.stages.schur:run", shared=SUMMARY),
    StageSpec("noise", ("jacobians",), ("noise.parquet",),
              "the claims' statistics of J̄ (complex fraction, |λ − 1|, self-alignment, erank(P_0), the dose "
              "at c = 0 and 1 for each normal surrogate) on the half-sample mean: their split-half noise "
              "(METHODS §12)",
              "resdyn.compute.stages.noise:run"),
    StageSpec("pseudospectra", ("schur",),
              ("pseudospectra.parquet", "numerical_range.parquet", "transient_growth.parquet",
               "layer_sigma.parquet"),
              "ε-pseudospectra, numerical ranges, singular values at the stored doses and transient "
              "growth (METHODS §11)",
              "resdyn.compute.stages.pseudospectra:run", shared=SUMMARY),
    StageSpec("communities", ("activations", "jacobians"),
              ("units.parquet", "communities.parquet", "nmi.parquet", "graph_edges.parquet",
               "community_null.parquet"),
              "top-k correlation graphs and signed Leiden communities of every snapshot, and a null: "
              "the same sample rotated into random axes (METHODS §7)",
              "resdyn.compute.stages.communities:run",
              optional=("corr_blocks.npy", "corr_blocks.parquet")),
    StageSpec("topology_coupling", ("communities", "spectra"), ("mesoscale.parquet", "coupling.parquet"),
              "mesoscale, boundary-node and rate-level topology ↔ Jacobian tests (METHODS §8)",
              "resdyn.compute.stages.topology_coupling:run", shared=SUMMARY),
    StageSpec("block_coupling", ("activations",), ("block_coupling.parquet", "block_coupling_A.npy"),
              "in-context residual Jacobians of a sample subset and their depth/token-wise coupling "
              "(METHODS §9)",
              "resdyn.compute.stages.block_coupling:run", needs_model=True, shared=SUMMARY),
    StageSpec("trajectories", ("activations",),
              ("trajectories.parquet", "trajectory_pca.parquet", "trajectory_windows.parquet"),
              "line-shape score, expodistance, norms and 2-D PCA of every token's trajectory (METHODS §9)",
              "resdyn.compute.stages.trajectories:run", needs_model=True, shared=SUMMARY),
)

BY_NAME = {s.name: s for s in STAGES}

CLAIM_STAGES: tuple[str, ...] = ("activations", "jacobians", "spectra", "cumulative", "schur", "communities",
                                 "topology_coupling", "block_coupling", "trajectories")
"""The stages whose outputs the Claims table reads (``resdyn.core.claims``), in computation order,
and every stage they read (the set is closed under ``needs``: a test checks). Computing only these
(``resdyn run --stages claims``) is what an extra random-init seed needs to join the twin
ensemble a claim is judged against; the demo's seeds 1 and 2 do so. Not here: ``sample_stats``
(κ and PR profiles, not a claim), ``pseudospectra`` (drawn, never judged), the two slowest
stages after ``schur``, and ``noise`` (the split-half noise of the run being judged: an ensemble
member's own noise is never read). A stage the Claims table starts to read is added here and nowhere else."""

GROUPS: dict[str, tuple[str, ...]] = {"claims": CLAIM_STAGES}
"""Names that ``--stages`` accepts for a set of stages (``expand``)."""


def names() -> list[str]:
    """Stage names in computation order."""
    return [s.name for s in STAGES]


def get(name: str) -> StageSpec:
    return BY_NAME[name]


def writers(filename: str) -> list[str]:
    """The stages that write ``filename`` (several for a shared file), in computation order."""
    return [s.name for s in STAGES if filename in s.files]


def upstream(name: str) -> list[str]:
    """``name`` and every stage it reads from, transitively, in computation order: what must be
    computed before ``name``'s outputs exist (``upstream("spectra")`` is the first views' work)."""
    out = {name}
    for s in reversed(STAGES):  # needs come earlier in STAGES, so one backward pass suffices
        if s.name in out:
            out.update(s.needs)
    return [n for n in names() if n in out]


def dependents(stage_names: set[str] | list[str]) -> list[str]:
    """``stage_names`` plus every stage that reads their outputs, transitively, in order."""
    out = set(stage_names)
    for s in STAGES:  # in dependency order, so one pass suffices
        if out & set(s.needs):
            out.add(s.name)
    return [n for n in names() if n in out]


def expand(spec: str | None) -> list[str] | None:
    """The stages a ``--stages`` value names, in computation order: comma-separated stage names
    and ``GROUPS`` names (``claims``: ``CLAIM_STAGES``), mixed freely. None (every stage) for None
    or an empty value; a one-line ``UsageError`` naming what is unknown."""
    if not spec:
        return None
    wanted = set()
    unknown = []
    for part in (p.strip() for p in spec.split(",")):
        if part in GROUPS:
            wanted.update(GROUPS[part])
        elif part in BY_NAME:
            wanted.add(part)
        elif part:
            unknown.append(part)
    if unknown:
        from resdyn.errors import UsageError

        raise UsageError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(names())}; "
                         f"or a group of them: {', '.join(GROUPS)}")
    if not wanted:
        from resdyn.errors import UsageError

        raise UsageError(f"--stages {spec!r} names no stage; stages: {', '.join(names())}")
    return [n for n in names() if n in wanted]


def missing(manifest: dict) -> list[str]:
    """Stages a run has not finished: its planned ``stages_all`` (all stages when not recorded,
    as for runs that predate the key) minus ``stages_done``. Only names of real stages."""
    planned = manifest.get("stages_all") or names()
    done = set(manifest.get("stages_done") or ())
    return [n for n in planned if n in BY_NAME and n not in done]


def markdown_table() -> str:
    """The README's stage table, generated from ``STAGES`` (``tests/test_readme_stages.py`` holds
    the README to it; regenerate with ``python -m resdyn.stages``)."""
    def files(names):
        return ", ".join(f"`{n}`" for n in names)

    lines = ["| stage | reads (stages) | writes | code |", "|---|---|---|---|"]
    for s in STAGES:
        writes = files(s.outputs)
        if s.optional:
            writes += f"; sometimes {files(s.optional)}"
        if s.shared:
            writes += f"; rows of {files(s.shared)}"
        module = s.function.split(":")[0].replace(".", "/") + ".py"
        needs = ", ".join(s.needs) or "the model"
        if s.needs_model and s.needs:
            needs += " + the model"
        lines.append(f"| `{s.name}` | {needs} | {writes} | `{module}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())

