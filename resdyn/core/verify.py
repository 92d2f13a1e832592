"""Cheap integrity checks of a run: what ``verify``, ``list`` and the dashboard's guard run.

For every stage the manifest records as done, each file the stage writes (``resdyn.stages``) must
be there and readable:

- Parquet: the footer and schema parse (a truncated or overwritten file fails here), the
  column chunks the footer points to lie inside the file, and, for a run at the current
  ``SCHEMA_VERSION``, the columns' dtypes and the resdyn metadata match ``resdyn.core.schema``
  (columns added since an older stage wrote the file may be absent);
- ``.npy``: a pickle-free header whose shape and dtype account for the file's size exactly, and
  the shape the manifest implies (activations (N, 2L, d), Jacobians (L, d, d), ...);
- ``manifest.json``: valid JSON that this resdyn can read.

No data page is decoded, so a check reads a few kilobytes per file and takes milliseconds per
run. Every problem names the file and the ``--redo`` that rewrites it.

A run written by an older resdyn (a lower ``schema_version``: int64 ``layer``, no metadata) is not
damaged: it is read as it is, and ``upgrade_note`` names the command that brings it up to date.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from resdyn import stages as registry
from resdyn.core import schema
from resdyn.core.store import MANIFEST, PROGRESS, RunStore, migrate_manifest, npy_ok
from resdyn.errors import ResdynError

# The shape an array must have, from the manifest (None: any size along that axis).
_SHAPES = {
    "activations.npy": lambda m: (m.get("n_samples"), 2 * m["n_layers"], m["d_model"]),
    "final_state.npy": lambda m: (m.get("n_samples"), m["d_model"]),
    "jacobians.npy": lambda m: (m["n_layers"], m["d_model"], m["d_model"]),
    "schur_Q.npy": lambda m: (m["n_layers"], m["d_model"], m["d_model"]),
    "schur_T.npy": lambda m: (m["n_layers"], m["d_model"], m["d_model"]),
    "block_coupling_A.npy": lambda m: (m["n_layers"], m["n_layers"], None, None),
}


@dataclass(frozen=True)
class Problem:
    """One damaged or missing file of a run."""

    run_id: str
    file: str  # name inside the run directory, e.g. "layers.parquet"
    reason: str  # what is wrong, a short phrase
    redo: tuple[str, ...]  # the stages whose recomputation rewrites it (empty: not repairable by --redo)
    runs_dir: Path

    @property
    def path(self) -> Path:
        return self.runs_dir / self.run_id / self.file

    def repair(self) -> str:
        """The command that rewrites the file, or what to do instead."""
        if not self.redo:
            return (f"move the run directory {shlex.quote(str(self.path.parent))} aside and compute the "
                    "run again (its settings were in this file)")
        return (f"python -m resdyn.compute run --run-id {self.run_id} --runs-dir "
                f"{shlex.quote(str(self.runs_dir))} --redo {','.join(self.redo)}")

    def line(self) -> str:
        """One line for a person: run, file, what is wrong, and the command that repairs it."""
        return f"{self.run_id}: {self.file}: {self.reason}; repair: {self.repair()}"


def _parquet_problem(path: Path, manifest: dict) -> str | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        arrow_schema = meta.schema.to_arrow_schema()
        size = path.stat().st_size
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for c in range(group.num_columns):
                col = group.column(c)
                start = col.dictionary_page_offset or col.data_page_offset
                if start is None or start < 0 or start + col.total_compressed_size > size:
                    return "column data lies outside the file (damaged)"
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        first = str(exc).splitlines()[0].split(". ")[0] if str(exc) else type(exc).__name__
        return f"not a readable Parquet file ({first})"
    if manifest.get("schema_version") == schema.SCHEMA_VERSION and path.stem in schema.TABLES:
        wrong = schema.mismatches(path.stem, arrow_schema, allow_missing=True)
        if wrong:
            return f"does not match schema {schema.SCHEMA_VERSION} ({'; '.join(wrong)})"
    return None


def _npy_problem(path: Path, manifest: dict) -> str | None:
    import numpy as np

    if not npy_ok(path):
        return "truncated or not a .npy file (header and size disagree)"
    want = _SHAPES.get(path.name)
    if want is None:
        return None
    try:
        expected = want(manifest)
    except (KeyError, TypeError):  # a manifest without the facts: nothing to compare with
        return None
    shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        shown = tuple("*" if e is None else e for e in expected)
        return f"shape {shape} where the manifest implies {shown}"
    return None


def file_problem(path: Path, manifest: dict) -> str | None:
    """What is wrong with one run file, or None when it passes the cheap checks."""
    if not path.is_file():
        return "missing"
    if path.suffix == ".parquet":
        return _parquet_problem(path, manifest)
    if path.suffix == ".npy":
        return _npy_problem(path, manifest)
    return None


def read_manifest(store: RunStore) -> tuple[dict | None, str | None]:
    """(manifest, None) or (None, what is wrong with manifest.json)."""
    p = store.path / MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(m, dict):
            return None, "not a JSON object"
        return migrate_manifest(m, p), None
    except FileNotFoundError:
        return None, "missing"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({getattr(exc, 'msg', exc)})"
    except ResdynError as exc:
        return None, str(exc)


def check_run(store: RunStore) -> list[Problem]:
    """Every problem of one run, in stage order (an empty list for a healthy run)."""
    runs_dir = store.path.parent
    m, why = read_manifest(store)
    if m is None:
        return [Problem(store.run_id, MANIFEST, why, (), runs_dir)]
    done = [n for n in m.get("stages_done") or () if n in registry.BY_NAME]
    recorded = m.get("files") or {}
    problems: dict[str, Problem] = {}
    for name in done:
        spec = registry.get(name)
        # The files this stage wrote when it finished (mark_stage_done records them): an output a
        # newer resdyn added to the stage is absent from an older run, and that is not damage; the
        # pages read such runs without it (e.g. snapshots.parquet is computed on read).
        wrote = {f for f, stage in recorded.items() if stage == name}
        for file in spec.outputs + spec.shared + tuple(f for f in spec.optional if (store.path / f).exists()):
            if file in problems:
                continue
            reason = file_problem(store.path / file, m)
            # A shared file counts as missing only once a stage has recorded writing it (runs from
            # before a stage added summary rows have none to lose).
            if reason == "missing" and wrote and file not in wrote and (file in spec.outputs or file not in recorded):
                continue
            if reason is not None:
                # A shared file (summary.parquet) is rewritten by every finished stage that adds to it.
                redo = tuple(s for s in registry.writers(file) if s in done) if file in spec.shared else (name,)
                problems[file] = Problem(store.run_id, file, reason, redo, runs_dir)
    return list(problems.values())


def upgrade_note(store: RunStore) -> str | None:
    """For a readable run at an older schema_version, one line naming the command that upgrades
    it (``resdyn.core.upgrade``); None otherwise. Not a problem: such a run is read as it is."""
    m, _ = read_manifest(store)
    try:
        with open(store.path / MANIFEST, encoding="utf-8") as fh:
            stored = json.load(fh).get("schema_version", 0)
    except (OSError, ValueError):
        return None
    if m is None or not isinstance(stored, int) or stored >= schema.SCHEMA_VERSION:
        return None
    return (f"{store.run_id}: written at schema {stored}, read as it is; upgrade it to schema "
            f"{schema.SCHEMA_VERSION} with: python -m resdyn.compute upgrade {store.run_id} --runs-dir "
            f"{shlex.quote(str(store.path.parent))}")


def signature(store: RunStore) -> tuple:
    """(name, size, mtime) of every file of the run: a cache key that changes when any file does.
    ``progress.json``, rewritten every second by a live computation and never checked, is left out."""
    try:
        with os.scandir(store.path) as it:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it
                                if e.is_file() and e.name != PROGRESS))
    except OSError:
        return ()


def check_runs(runs_dir: str | os.PathLike, run_ids: list[str] | None = None) -> tuple[list[str], list[Problem]]:
    """(the run ids checked, their problems). ``run_ids`` None checks every run in ``runs_dir``;
    an unknown id raises a one-line ResdynError."""
    stores = run_stores(Path(runs_dir), run_ids)
    problems = [p for s in stores for p in check_run(s)]
    return [s.run_id for s in stores], problems


def run_stores(root: Path, run_ids: list[str] | None) -> list[RunStore]:
    """The runs ``run_ids`` of ``root`` (None: every run); an unknown id or a missing directory
    raises a one-line ResdynError."""
    from resdyn.config import validate_run_id
    from resdyn.core.store import list_runs

    if run_ids:
        stores = []
        for rid in run_ids:
            validate_run_id(rid)
            if not (root / rid / MANIFEST).is_file():
                raise ResdynError(f"no run {rid!r} in {root}")
            stores.append(RunStore(root / rid))
        return stores
    if not root.is_dir():
        raise ResdynError(f"runs directory {root} does not exist; pass --runs-dir or set RESDYN_RUNS_DIR")
    return list_runs(root)
