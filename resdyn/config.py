"""The one source of run settings: CLI flags, manifest keys and the README table come from here.

``RunConfig`` is frozen. ``resdyn.compute`` builds its argparse parser from the field metadata,
and every field with ``manifest=True`` is written verbatim into ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from resdyn import stages as _registry
from resdyn.errors import UsageError

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
DEFAULT_RUNS_DIR = Path("data/runs")
# Settings added after runs were first written: what a manifest without the key meant.
LEGACY_DEFAULTS = {"position": "last"}


def _opt(default, help: str, *, choices=None, manifest: bool = True, flag: bool = True, type=None):
    return field(
        default=default,
        metadata={"help": help, "choices": choices, "manifest": manifest, "flag": flag, "type": type},
    )


def default_runs_dir() -> Path:
    """``$RESDYN_RUNS_DIR`` when set, else ``data/runs`` (relative to the working directory)."""
    env = os.environ.get("RESDYN_RUNS_DIR")
    return Path(env) if env else DEFAULT_RUNS_DIR


def model_slug(model: str) -> str:
    """The part of a default run id that names the model.

    A local directory gives its own name (``/data/ckpt/step1000`` -> ``step1000``); a hub id keeps
    its organisation, joined by ``--`` (``allenai/OLMo-2-1124-7B`` -> ``allenai--OLMo-2-1124-7B``),
    so that two organisations' models of the same name get different runs; a built-in name stays.
    Characters a run id cannot hold become ``_``.
    """
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model:
        base = path.name
    else:
        base = "--".join(part for part in model.split("/") if part)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".") or "model"


def seed_run_id(run_id: str, seed: int) -> str:
    """The id of seed ``seed`` of the runs named ``run_id``: ``run_id`` itself for seed 0 (so the
    runs computed before seeds were named keep their ids), else ``{run_id}-seed{seed}``. Both a
    derived id (``RunConfig.default_run_id``) and an explicit ``--run-id`` with ``--seeds`` are
    named so."""
    return run_id if seed == 0 else f"{run_id}-seed{seed}"


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe single path component, else raise a one-line error."""
    if not run_id or not RUN_ID_PATTERN.match(run_id) or run_id in {".", ".."}:
        raise UsageError(
            f"invalid run id {run_id!r}: use only letters, digits, '_', '.' and '-' (no path separators)"
        )
    return run_id


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run. Defaults reproduce the offline demo."""

    model: str = _opt("smollm2-135m", "hub id, local save_pretrained directory, or built-in offline name "
                      "(smollm2-135m, gemma3-270m, minilm-l6)")
    revision: str | None = _opt(None, "hub revision, e.g. an OLMo step checkpoint branch")
    init: str = _opt("pretrained", "'random' re-initialises the weights with the model's own _init_weights "
                     "(the architectural null model, 'step 0')", choices=("pretrained", "random"))
    corpus: str = _opt("wiki-sample", "wiki-sample (offline, gensim's Wikipedia test file), wikitext-2, "
                       "or a path to a .txt (one passage per line) or .jsonl file")
    samples: int = _opt(128, "number of passages N, the first N in corpus order", manifest=False)
    mode: str = _opt("isolated", "Jacobian mode: 'isolated' (one-token block, the paper's) or "
                     "'in-context' (last token, rest of the sequence held fixed)",
                     choices=("isolated", "in-context"))
    position: str = _opt("last", "which token of each passage is analysed: 'last' (the paper's) or 'random' (a "
                         "seeded position with at least 16 tokens before it; passages of 16 tokens or fewer use "
                         "the last); chosen positions are stored in passages.parquet", choices=("last", "random"))
    dtype: str = _opt("float32", "compute precision of activations and Jacobians",
                      choices=("float32", "float64"))
    device: str = _opt("auto", "torch device: auto (cuda when present), cpu, cuda, cuda:1, ...",
                       manifest=False)
    seed: int = _opt(0, "seed for --init random, controls and permutations")
    k: int | None = _opt(None, "rank of the truncated SVD for alignment; default min(64, d // 4)")
    cumulative_rank: int | None = _opt(None, "cumulative stage: rank K kept at every step of the products P_l "
                                       "(METHODS §5); default none = the exact product (K = d); 512 replicates "
                                       "the paper's truncation, which biases erank low unless erank << K")
    dose_grid: str = _opt("full", "schur stage: 'full' = the paper's dose grid with controls A and B, the random-order "
                          "band and the skip dose; 'claims' = only what the Claims table reads (each normal "
                          "surrogate's dose and Control A at c = 0 and 1), for random-init seeds that only join "
                          "an ensemble (a quarter of the stage's cost)", choices=("full", "claims"))
    batch_size: int = _opt(8, "samples per Jacobian batch (bounds memory; results do not depend on it)",
                           manifest=False)
    communities: str = _opt("cpm", "community methods for the topology stage",
                            choices=("cpm", "infomap", "modularity1", "modularity2", "all"))
    trust_remote_code: bool = _opt(False, "allow a hub model's own code to run (opt-in; read it first)",
                                   manifest=False)
    stages: str | None = _opt(None, "comma-separated stages to compute (default: all); 'claims' names the "
                              "stages the Claims table reads (" + ", ".join(_registry.CLAIM_STAGES) + "), what an "
                              "extra random-init seed needs", manifest=False)
    runs_dir: Path = _opt(None, "directory holding runs (default $RESDYN_RUNS_DIR or data/runs)",
                          manifest=False, type=Path)
    run_id: str | None = _opt(None, "run name, [A-Za-z0-9_.-]+ (default derived from model, init, mode, position "
                              "and seed: smollm2-135m-random, smollm2-135m-random-seed1)", manifest=False)
    coupling_samples: int = _opt(4, "block_coupling: in-context Jacobians for the first S passages only "
                                 "(each costs about L x d backward passes); also the prompts of the trajectory PCA")
    coupling_window: int = _opt(0, "block_coupling: 0 = the last token's own trajectory (t1 = t2 = last); w >= 2 "
                                "adds token-wise coupling over all t1 <= t2 among the last w tokens (cost ~ w^2)")
    coupling_tokens: int = _opt(32, "block_coupling: each prompt is the first P tokens of its passage (0 = the "
                                "whole passage); exact for causal models, and the Jacobian cost grows with P")
    executor: str = _opt("local", "where the work runs: 'local' (this process) or 'ray' (a Ray cluster; "
                         "results equal the local executor's)", choices=("local", "ray"), manifest=False)
    address: str | None = _opt(None, "Ray cluster address for --executor ray, e.g. 'auto' or "
                               "'ray://head:10001' (default: start a Ray instance on this machine)",
                               manifest=False)
    workers: int | None = _opt(None, "Ray workers for per-layer work (default: one per GPU of the cluster, "
                               "else one per CPU)", manifest=False)

    def __post_init__(self):
        if self.runs_dir is None:
            object.__setattr__(self, "runs_dir", default_runs_dir())
        if self.seed < 0:
            raise UsageError(f"--seed must be 0 or more, got {self.seed}")
        if self.run_id is None:
            object.__setattr__(self, "run_id", self.default_run_id())
        validate_run_id(self.run_id)
        if self.samples < 1:
            raise UsageError(f"--samples must be at least 1, got {self.samples}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.k is not None and self.k < 1:
            raise UsageError(f"--k must be at least 1, got {self.k}")
        if self.cumulative_rank is not None and self.cumulative_rank < 1:
            raise UsageError(f"--cumulative-rank must be at least 1 (or left out for the exact product), "
                              f"got {self.cumulative_rank}")
        if self.coupling_samples < 1:
            raise UsageError(f"--coupling-samples must be at least 1, got {self.coupling_samples}")
        if self.coupling_window < 0:
            raise UsageError(f"--coupling-window must be 0 (last token only) or more, got {self.coupling_window}")
        if self.coupling_tokens < 0:
            raise UsageError(f"--coupling-tokens must be 0 (whole passage) or more, got {self.coupling_tokens}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")

    def default_run_id(self, with_revision: bool = False) -> str:
        """The run id these settings get when ``--run-id`` is not given: the model
        (``model_slug``), the revision when ``with_revision`` (a sweep's revisions are cells of
        their own), then ``-random``, ``-{mode}`` unless isolated, ``-random-position`` unless
        the last token, and ``-seed{S}`` unless the seed is 0 (``seed_run_id``), in that order.
        ``resdyn run`` leaves the revision out (a rerun at another revision is refused rather
        than given a new name), ``resdyn sweep`` puts it in; both name everything else alike."""
        rid = model_slug(self.model.rstrip("/") or self.model)
        if with_revision and self.revision:
            rid += "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.revision)
        if self.init == "random":
            rid += "-random"
        if self.mode != "isolated":
            rid += f"-{self.mode}"
        if self.position != "last":
            rid += f"-{self.position}-position"
        return seed_run_id(rid, self.seed)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run_id

    def manifest_fields(self) -> dict:
        """The settings recorded in manifest.json (``n_samples`` is the count actually used)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("manifest")}

    def new_manifest(self, *, architecture: str, model_type: str, snapshots: str, n_layers: int, d_model: int,
                     versions: dict, **extra) -> dict:
        """The manifest of a new run of these settings, before any stage: the pipeline's and the
        synthetic test runs' (``resdyn.testing.synthetic``) one constructor. ``extra`` keys are
        added as given (a synthetic run records its generator)."""
        import time

        from resdyn import stages

        return {
            **self.manifest_fields(),
            "run_id": self.run_id,
            "architecture": architecture,
            "model_type": model_type,
            "snapshots": snapshots,
            "n_layers": int(n_layers),
            "d_model": int(d_model),
            "n_samples": self.samples,
            "k": resolve_k(self.k, d_model),
            "cumulative_rank": resolve_cumulative_rank(self.cumulative_rank, d_model),
            "status": "partial",
            "stages_all": stages.names(),
            "stages_done": [],
            "timings": {},
            "versions": versions,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }


FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "model and passages": ("model", "revision", "init", "corpus", "samples", "position", "trust_remote_code"),
    "measurement": ("mode", "dtype", "seed", "dose_grid", "k", "cumulative_rank", "communities", "coupling_samples",
                    "coupling_window", "coupling_tokens"),
    "run store and stages": ("run_id", "runs_dir", "stages"),
    "where it runs": ("device", "batch_size", "executor", "address", "workers"),
}
"""The sections of `resdyn run --help`: every RunConfig field in exactly one (a test checks)."""


def resolve_k(k: int | None, d: int) -> int:
    """Rank for self/forward alignment (METHODS §4): min(64, d // 4) unless given; must be < d."""
    if k is None:
        return max(1, min(64, d // 4))
    if k >= d:
        raise UsageError(f"k = {k} must be smaller than d_model = {d}")
    return k


def resolve_cumulative_rank(rank: int | None, d: int) -> int:
    """Rank kept by the cumulative products (METHODS §5): d (exact) unless given; 1 ≤ rank ≤ d."""
    if rank is None:
        return d
    if not 1 <= rank <= d:
        raise UsageError(f"--cumulative-rank {rank} must be between 1 and d_model = {d} "
                          f"(leave it out for the exact product)")
    return int(rank)
