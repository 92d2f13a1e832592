"""Reading runs from Python: ``resdyn.open``, ``resdyn.runs`` and ``resdyn.sql`` (no torch).

Everything here reads what the run store holds (``resdyn.core.store``) through the same functions
the CLI and the dashboard use (``resdyn.core.queries``, ``resdyn.core.verify``); nothing is copied
into memory that a query does not ask for. ``resdyn.analyze`` (``resdyn.compute.analyze``) writes
runs from a loaded model and returns the same ``Run``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from resdyn import stages as registry
from resdyn.config import default_runs_dir
from resdyn.core import queries
from resdyn.core.store import MANIFEST, RunStore
from resdyn.errors import ResdynError


def resolve_runs_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """The runs directory as the CLI resolves it: ``runs_dir``, else ``$RESDYN_RUNS_DIR``, else
    ``./data/runs``. Must exist: a one-line ResdynError names the directory otherwise."""
    root = Path(runs_dir).expanduser() if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        source = ("runs_dir" if runs_dir is not None else
                  "$RESDYN_RUNS_DIR" if os.environ.get("RESDYN_RUNS_DIR") else "the default ./data/runs")
        raise ResdynError(f"runs directory {root} ({source}) does not exist; pass runs_dir= or set "
                          "RESDYN_RUNS_DIR")
    return root


class Run:
    """One run of the store, read-only: its manifest, tables (Parquet) and arrays (.npy).

    Get one with ``resdyn.open(run_id)`` or from ``resdyn.analyze(...)``. Every property reads the
    disk afresh, so a ``Run`` of a run still being computed shows its progress.

    Attributes:
        run_id: the run's name (its directory's name).
        path: the run directory, ``runs_dir / run_id``.
    """

    def __init__(self, store: RunStore):
        self._store = store

    @property
    def run_id(self) -> str:
        return self._store.run_id

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def store(self) -> RunStore:
        """The underlying ``resdyn.core.store.RunStore`` (what the pipeline writes through)."""
        return self._store

    @property
    def manifest(self) -> dict:
        """``manifest.json``: settings, model facts (n_layers, d_model, architecture), status,
        stages_done, timings, versions; ``origin`` for runs written by ``resdyn.analyze``."""
        return self._store.manifest()

    @property
    def status(self) -> str:
        """"complete", "partial" (stages missing: ``missing_stages``) or "corrupt" (a damaged or
        missing file: ``problems`` names each with the command that repairs it)."""
        return "corrupt" if self.problems else str(self.manifest.get("status"))

    @property
    def problems(self) -> list[str]:
        """One line per damaged or missing file of a finished stage (``resdyn verify``), or []."""
        from resdyn.core.verify import check_run

        return [p.line() for p in check_run(self._store)]

    @property
    def missing_stages(self) -> list[str]:
        """Stages not computed yet, in computation order (``resdyn.stages.missing``)."""
        return registry.missing(self.manifest)

    @property
    def tables(self) -> list[str]:
        """Names of the tables present (``Run.table``, views of ``Run.sql``), sorted."""
        return list(queries.run_tables(self._store))

    @property
    def arrays(self) -> list[str]:
        """Names of the arrays present (``Run.array``), sorted."""
        return sorted(p.stem for p in self.path.glob("*.npy") if not p.name.startswith("."))

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Table ``name`` (e.g. "layers": one row per layer and operator), all rows, as written.

        The README's data-contract tables give every table's columns. ``columns`` reads only
        those. A table the run lacks raises ResdynError naming the stage that writes it.
        """
        if not self._store.has_table(name):
            raise ResdynError(self._absent("table", name, ".parquet"))
        return self._store.read_table(name, columns=columns)

    def array(self, name: str) -> np.ndarray:
        """Array ``name`` memory-mapped read-only (nothing is read until indexed): e.g.
        "jacobians" (L, d, d) float32 mean Jacobians, "activations" (N, 2L, d) float32."""
        if not self._store.has_array(name):
            raise ResdynError(self._absent("array", name, ".npy"))
        return self._store.read_array(name, mmap=True)

    def sql(self, query: str) -> pd.DataFrame:
        """Run DuckDB SQL where each of the run's tables is a view of its name, e.g.
        ``run.sql("select layer, henrici from layers where operator = 'J' order by layer")``."""
        return queries.sql_over_runs(query, [self._store], run_id_column=False)

    def claims(self, twin: str | Sequence[str] | None = None) -> pd.DataFrame:
        """The papers' claims judged on this run (``resdyn claims``; README, Verdicts): one row per
        claim with columns ``resdyn.core.claims.COLUMNS`` (claim, verdict, run ± noise, twin
        ensemble mean ± sd, null, note, and the numbers behind them).

        ``twin``: run id(s) in the same runs directory to judge against (any init; each must match
        on every analysis key); default the random-init runs that match (``find_ensemble``).
        ``df.attrs["ensemble"]`` holds the ids used.
        """
        from resdyn.core.claims import claims_table

        twins = [twin] if isinstance(twin, str) else (list(twin) if twin is not None else None)
        res = claims_table(self.path.parent, self.run_id, twins)
        table = res.table
        table.attrs["ensemble"] = res.ensemble
        return table

    def _absent(self, kind: str, name: str, suffix: str) -> str:
        writers = registry.writers(name + suffix)
        have = self.tables if kind == "table" else self.arrays
        if writers:
            return (f"run {self.run_id} has no {kind} {name!r} yet: stage {writers[0]} writes it; compute it with "
                    f"`resdyn run --run-id {self.run_id} --runs-dir {self.path.parent} --stages {writers[0]}` "
                    f"(or resdyn.analyze(..., stages=...))")
        return f"run {self.run_id} has no {kind} {name!r}; its {kind}s: {', '.join(have) or 'none'}"

    def __repr__(self) -> str:
        try:
            m = self.manifest
        except ResdynError:
            return f"<resdyn.Run {self.run_id!r} (unreadable manifest) in {self.path.parent}>"
        facts = ", ".join(f"{k}={m[v]}" for k, v in (("L", "n_layers"), ("d", "d_model"), ("N", "n_samples"))
                          if m.get(v) is not None)
        return f"<resdyn.Run {self.run_id!r} {m.get('status')}: {m.get('model')} ({facts}) in {self.path.parent}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and other.path.resolve() == self.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())


def open_run(run: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> Run:
    """The run ``run`` (an id in ``runs_dir``, or the path of a run directory) as a ``Run``.

    ``runs_dir`` resolves like the CLI's ``--runs-dir``. A missing directory or run raises a
    one-line ResdynError naming the directory it looked in (and the runs that are there).
    """
    from resdyn.config import validate_run_id

    path = Path(run).expanduser()
    if isinstance(run, os.PathLike) or os.sep in str(run):  # a run directory itself
        if not (path / MANIFEST).is_file():
            raise ResdynError(f"no run at {path} (no {MANIFEST} there)")
        return Run(RunStore(path))
    root = resolve_runs_dir(runs_dir)
    validate_run_id(str(run))
    store = RunStore(root / str(run))
    if not store.exists():
        there = [s.run_id for s in _stores(root)]
        raise ResdynError(f"no run {str(run)!r} in {root}; runs there: {', '.join(there) or 'none'}")
    return Run(store)


def runs(runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run of the runs directory, sorted by run_id: run_id, status ("complete",
    "partial" or "corrupt" when a file is damaged), model, revision, init, architecture, mode,
    n_layers, d_model, n_samples, stages_done and missing_stages ("a,b"), seconds (compute time),
    created. Also what ``resdyn list --json`` prints."""
    return queries.runs(resolve_runs_dir(runs_dir), check=True)


def sql(query: str, runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Run DuckDB SQL across every run: each table name is a view over all runs that have the
    table, with a first column ``run_id``; ``runs`` is the view of ``resdyn.runs()``. E.g.

        resdyn.sql("select run_id, layer, henrici from layers where operator = 'J'")

    Runs from older resdyn versions that lack a column give NULL there. A damaged file is left out
    with a warning naming it and its repair.
    """
    root = resolve_runs_dir(runs_dir)
    overview = queries.runs(root)
    return queries.sql_over_runs(query, _stores(root), run_id_column=True, extra={"runs": overview})


def _stores(root: Path) -> list[RunStore]:
    from resdyn.core.store import list_runs

    return list_runs(root)
