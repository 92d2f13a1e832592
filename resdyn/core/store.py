"""The run store: one directory per run holding ``manifest.json``, Parquet tables and ``.npy`` arrays.

Layout of ``RUNS_DIR/RUN_ID/`` (the data contract, documented in the README):

- ``manifest.json``: settings, status ("partial" | "complete"), stages_done, timings, versions.
- ``NAME.parquet``: tables (``samples``, ``layers``, ``eigenvalues``, ...).
- ``NAME.npy``: arrays (``activations`` (N, 2L, d) float32, ``jacobians`` (L, d, d) float32, ...).
- ``.partial/``: checkpoints of a stage that has not finished; removed when it finishes.

Every write goes to a temporary name in the same directory and is renamed into place, so a
killed process never leaves a half-written file under a final name. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from resdyn.config import validate_run_id
from resdyn.errors import ResdynError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
LOCK = ".lock"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; clean up on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give run files the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno == errno.ENOSPC:
            raise ResdynError(f"disk full while writing {path}; free space and rerun (finished stages are kept)") from exc
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise ResdynError(f"cannot write {path}: the runs directory is read-only; choose --runs-dir elsewhere") from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomically write one .npy file (no pickle). Through a handle: np.save renames bare paths."""
    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)

    _atomic_write(path, write)


def write_json(path: Path, obj: dict) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


class RunStore:
    """Read and write one run directory. Arrays are read memory-mapped and read-only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        validate_run_id(self.path.name)

    @property
    def run_id(self) -> str:
        return self.path.name

    # -- manifest ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def manifest(self) -> dict:
        p = self.path / MANIFEST
        if not p.is_file():
            raise ResdynError(f"no run at {self.path} (manifest.json missing); compute it with `python -m resdyn.compute run`")
        try:
            m = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ResdynError(f"corrupt manifest {p}: {exc.msg if hasattr(exc, 'msg') else exc}; delete the run and recompute") from exc
        return migrate_manifest(m, p)

    def write_manifest(self, manifest: dict) -> None:
        manifest = dict(manifest, schema_version=SCHEMA_VERSION)
        write_json(self.path / MANIFEST, manifest)

    def update_manifest(self, **changes: Any) -> dict:
        m = self.manifest()
        m.update(changes)
        self.write_manifest(m)
        return m

    def mark_stage_done(self, stage: str, seconds: float, all_stages: list[str]) -> dict:
        """Record a finished stage; status becomes "complete" once every stage in ``all_stages`` is done."""
        m = self.manifest()
        done = [s for s in m.get("stages_done", []) if s != stage] + [stage]
        timings = dict(m.get("timings", {}), **{stage: round(float(seconds), 3)})
        status = "complete" if all(s in done for s in all_stages) else "partial"
        m.update(stages_done=done, timings=timings, status=status)
        self.write_manifest(m)
        return m

    def invalidate(self, stages: set[str]) -> dict:
        """Forget that ``stages`` were done (before recomputing them); the run becomes partial."""
        m = self.manifest()
        m["stages_done"] = [s for s in m.get("stages_done", []) if s not in stages]
        m["status"] = "partial"
        self.write_manifest(m)
        return m

    # -- tables -----------------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def has_table(self, name: str) -> bool:
        return self.table_path(name).is_file()

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        path = self.table_path(name)
        _atomic_write(path, lambda p: df.to_parquet(p, index=False))
        return path

    def read_table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.table_path(name)
        if not path.is_file():
            raise ResdynError(f"run {self.run_id} has no table {name!r}; compute its stage first")
        try:
            return pd.read_parquet(path, columns=columns)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise ResdynError(
                f"corrupt table {path}: {type(exc).__name__}; recompute with "
                f"`python -m resdyn.compute run --run-id {self.run_id} --redo {name}`"
            ) from exc

    # -- arrays -----------------------------------------------------------------------------
    def array_path(self, name: str) -> Path:
        return self.path / f"{name}.npy"

    def has_array(self, name: str) -> bool:
        return self.array_path(name).is_file()

    def write_array(self, name: str, arr: np.ndarray) -> Path:
        path = self.array_path(name)
        save_npy(path, arr)
        return path

    def read_array(self, name: str, mmap: bool = True) -> np.ndarray:
        """Load ``NAME.npy``; memory-mapped read-only by default."""
        path = self.array_path(name)
        if not path.is_file():
            raise ResdynError(f"run {self.run_id} has no array {name!r}; compute its stage first")
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ResdynError(
                f"corrupt array {path}: {exc}; recompute with "
                f"`python -m resdyn.compute run --run-id {self.run_id} --redo {name}`"
            ) from exc

    # -- stage checkpoints ------------------------------------------------------------------
    def partial_dir(self, stage: str) -> Path:
        d = self.path / ".partial" / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clear_partial(self, stage: str) -> None:
        d = self.path / ".partial" / stage
        if d.is_dir():
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
        with contextlib.suppress(OSError):  # only succeeds once no stage has checkpoints left
            d.parent.rmdir()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock; a second compute on the same run fails with one line."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / LOCK, "w")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ResdynError(f"run {self.run_id} is being written by another process; wait for it to finish") from exc
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fh.close()


def migrate_manifest(m: dict, path: Path) -> dict:
    """Bring an older manifest up to SCHEMA_VERSION, or refuse one from the future."""
    version = m.get("schema_version", 0)
    if version > SCHEMA_VERSION:
        raise ResdynError(f"{path} has schema_version {version}, newer than this resdyn ({SCHEMA_VERSION}); upgrade resdyn")
    if version == 0:  # pre-versioning manifests lacked these keys
        m.setdefault("stages_done", [])
        m.setdefault("timings", {})
        m.setdefault("status", "partial")
        m["schema_version"] = SCHEMA_VERSION
    return m


def list_runs(runs_dir: str | os.PathLike) -> list[RunStore]:
    """Every run under ``runs_dir`` that has a manifest, sorted by id."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and (p / MANIFEST).is_file():
            with contextlib.suppress(ResdynError):
                out.append(RunStore(p))
    return out


def open_run(runs_dir: str | os.PathLike, run_id: str) -> RunStore:
    """Open a run by id, refusing anything that is not a plain child of ``runs_dir``."""
    validate_run_id(run_id)
    store = RunStore(Path(runs_dir) / run_id)
    if not store.exists():
        raise ResdynError(f"no run {run_id!r} in {runs_dir}")
    return store
