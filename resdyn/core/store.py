"""The run store: one directory per run holding ``manifest.json``, Parquet tables and ``.npy`` arrays.

Layout of ``RUNS_DIR/RUN_ID/`` (the data contract, documented in the README):

- ``manifest.json``: settings, status ("partial" | "complete"), stages_done, timings, versions.
- ``NAME.parquet``: tables (``samples``, ``layers``, ``eigenvalues``, ...), each cast to its declared
  schema (``resdyn.core.schema``) and stamped with the resdyn and schema versions.
- ``NAME.npy``: arrays (``activations`` (N, 2L, d) float32, ``jacobians`` (L, d, d) float32, ...).
- ``.partial/``: checkpoints of a stage that has not finished; removed when it finishes.
- ``progress.json``: while a computation runs, what it is doing (``resdyn.core.progress``); removed
  when it ends. Not a result: ``verify`` does not check it.

Every write goes to a temporary name in the same directory and is renamed into place, so a
killed process never leaves a half-written file under a final name. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from resdyn.config import validate_run_id
from resdyn.core import schema
from resdyn.core.schema import SCHEMA_VERSION
from resdyn.errors import ResdynError

MANIFEST = "manifest.json"
LOCK = ".lock"
PROGRESS = "progress.json"
PARTIAL = ".partial"  # checkpoints of unfinished stages: PARTIAL/STAGE/
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; clean up on any failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_for_write_error(exc, path)
        raise
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
        _raise_for_write_error(exc, path)
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CorruptFileError(ResdynError):
    """A run file that exists but cannot be read (truncated, damaged, or not what its name says).

    ``path`` is the file; the message names the stage to recompute when the manifest records it.
    """

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EACCES, errno.EROFS, errno.EPERM)


def _raise_for_write_error(exc: OSError, path: Path) -> None:
    """Turn a full disk or a read-only directory into one line; other errors pass through.

    Some writers (pyarrow) raise OSError without an errno, with the C library's text instead.
    """
    text = str(exc)
    if exc.errno in _DISK_FULL or "No space left on device" in text or "Disk quota exceeded" in text:
        raise ResdynError(f"disk full while writing {path}; free space and rerun the same command "
                          "(finished stages and layers are kept)") from exc
    if exc.errno in _READ_ONLY or "Read-only file system" in text or "Permission denied" in text:
        raise ResdynError(f"cannot write {path}: the runs directory is read-only; "
                          "choose a writable --runs-dir") from exc


def npy_ok(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete, pickle-free .npy file: a valid header and every data byte.

    Reads only the header, so it is cheap for checkpoints of any size.
    """
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read(fh)
            offset = fh.tell()
        if dtype.hasobject:
            return False
        return os.path.getsize(path) == offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except (OSError, ValueError, EOFError):
        return False


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomically write one .npy file (no pickle). Through a handle: np.save renames bare paths."""
    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)

    _atomic_write(path, write)


def write_json(path: Path, obj: dict) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


class RunStore:
    """Read and write one run directory. Arrays are read memory-mapped and read-only.

    A store opened on a stage's checkpoint directory (``RUN/.partial/STAGE``, ``partial_dir``)
    holds private intermediate tables: those are written as they are, not against the schema.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        validate_run_id(self.path.name)
        self.checkpoint = self.path.parent.name == PARTIAL

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
        """Write ``manifest``; a new one gets this resdyn's SCHEMA_VERSION, an existing run keeps
        the version its tables have (``resdyn.core.upgrade`` raises it once they are rewritten)."""
        manifest = dict(manifest)
        manifest.setdefault("schema_version", SCHEMA_VERSION)
        write_json(self.path / MANIFEST, manifest)

    def update_manifest(self, **changes: Any) -> dict:
        m = self.manifest()
        m.update(changes)
        self.write_manifest(m)
        return m

    def mark_stage_done(self, stage: str, seconds: float, all_stages: list[str],
                        outputs: tuple[str, ...] = ()) -> dict:
        """Record a finished stage; status becomes "complete" once every stage in ``all_stages`` is done.

        ``outputs`` (file names) are recorded under ``files`` so that a corrupt file's message can
        name the stage to recompute.
        """
        m = self.manifest()
        done = [s for s in m.get("stages_done", []) if s != stage] + [stage]
        timings = dict(m.get("timings", {}), **{stage: round(float(seconds), 3)})
        status = "complete" if all(s in done for s in all_stages) else "partial"
        files = dict(m.get("files") or {}, **{name: stage for name in outputs})
        m.update(stages_done=done, timings=timings, status=status, files=files)
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
        """Write ``df`` as ``NAME.parquet``, cast to the table's declared schema with its metadata
        (``resdyn.core.schema.to_arrow``). An undeclared table, a column set other than the declared
        one, or a value the cast would change raises SchemaError before anything is written. The
        index is not stored."""
        path = self.table_path(name)
        if self.checkpoint:
            _atomic_write(path, lambda p: df.to_parquet(p, index=False))
            return path
        table = schema.to_arrow(name, df)
        self.write_arrow(name, table)
        return path

    def write_arrow(self, name: str, table) -> Path:
        """Atomically write a pyarrow Table that already has its schema and metadata (``upgrade``)."""
        import pyarrow.parquet as pq

        path = self.table_path(name)
        _atomic_write(path, lambda p: pq.write_table(table, p))
        return path

    def read_table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.table_path(name)
        if not path.is_file():
            raise ResdynError(f"run {self.run_id} has no table {name!r}; compute its stage first")
        try:
            return pd.read_parquet(path, columns=columns)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise CorruptFileError(self._corrupt_message("table", path, exc), path) from exc

    def update_summary(self, values: dict[str, float]) -> pd.DataFrame:
        """Upsert named scalars into ``summary.parquet`` (columns name, value), keeping the other
        stages' rows; sorted by name, so the file does not depend on the order stages ran in."""
        new = pd.DataFrame({"name": [str(k) for k in values], "value": [float(v) for v in values.values()]})
        if self.has_table("summary"):
            old = self.read_table("summary")
            new = pd.concat([old[~old["name"].isin(new["name"])], new], ignore_index=True)
        new = new.sort_values("name", kind="stable", ignore_index=True)
        self.write_table("summary", new)
        return new

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
        if not npy_ok(path):  # a truncated file would otherwise fail later, or mmap garbage
            raise CorruptFileError(self._corrupt_message("array", path, "truncated or not a .npy file"), path)
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptFileError(self._corrupt_message("array", path, exc), path) from exc

    def stage_of(self, filename: str) -> str | None:
        """The stage that wrote ``filename`` (e.g. "samples.parquet"), as the manifest records it."""
        with contextlib.suppress(ResdynError, AttributeError):
            return (self.manifest().get("files") or {}).get(filename)
        return None

    def _corrupt_message(self, kind: str, path: Path, exc) -> str:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stage = self.stage_of(path.name) or "<the stage that writes it>"
        return (f"corrupt {kind} {path} ({reason}); recompute it: rerun your "
                f"`python -m resdyn.compute run --run-id {self.run_id} ...` command with `--redo {stage}`")

    # -- live progress (resdyn.core.progress) ------------------------------------------------
    def write_progress(self, state: dict) -> None:
        """Atomically replace ``progress.json`` (readers never see half a file)."""
        write_json(self.path / PROGRESS, state)

    def read_progress(self) -> dict | None:
        """``progress.json`` as a dict, or None when absent or unreadable."""
        try:
            d = json.loads((self.path / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def clear_progress(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / PROGRESS).unlink()

    # -- stage checkpoints ------------------------------------------------------------------
    def partial_dir(self, stage: str) -> Path:
        d = self.path / PARTIAL / stage
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _raise_for_write_error(exc, d)
            raise
        return d

    def clear_partial(self, stage: str) -> None:
        d = self.path / PARTIAL / stage
        if d.is_dir():
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
        with contextlib.suppress(OSError):  # only succeeds once no stage has checkpoints left
            d.parent.rmdir()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock; a second compute on the same run fails with one line.

        The lock is flock(2) on ``.lock``, which the kernel releases when its holder dies, so a
        ``.lock`` left by a killed process is taken over (with a warning naming its pid). On exit
        the lock file goes, and so does the run directory when this call created it and no
        manifest was written (a run that failed to start leaves nothing behind).
        """
        import fcntl

        created = not self.path.exists()
        lock_path = self.path / LOCK
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fh = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
        except OSError as exc:
            _raise_for_write_error(exc, lock_path)
            raise
        locked = False
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ResdynError(f"run {self.run_id} is being written by another process "
                                  f"(pid {fh.read().strip() or '?'}); wait for it to finish") from exc
            locked = True
            stale = fh.read().strip()
            if stale and stale != str(os.getpid()):
                state = "no longer running" if not _pid_alive(stale) else "not holding it"
                logging.getLogger("resdyn").warning(
                    "taking over the lock of run %s left by process %s (%s)", self.run_id, stale, state)
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            if locked:
                with contextlib.suppress(OSError):
                    lock_path.unlink()
            fh.close()
            if created and not self.exists():
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # only when empty: a failed start leaves no directory


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def holder(path: str | os.PathLike) -> int | None:
    """The pid of the live process computing the run at ``path``, or None.

    Read from ``.lock`` without locking it (a probe lock could make a starting compute fail):
    the holder removes the file when it ends, and a killed holder's pid is no longer alive.
    """
    try:
        text = (Path(path) / LOCK).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and _pid_alive(text) else None


def migrate_manifest(m: dict, path: Path) -> dict:
    """Fill in the keys an older manifest lacks, or refuse one from the future.

    Version 0 (no ``schema_version``) becomes 1: its tables are those of version 1. Tables are not
    touched here; ``resdyn.core.upgrade`` rewrites them and raises the version to SCHEMA_VERSION.
    """
    version = m.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResdynError(f"{path} has schema_version {version!r}, not an integer; move the run aside and "
                          "compute it again")
    if version > SCHEMA_VERSION:
        raise ResdynError(f"{path} has schema_version {version}, newer than this resdyn ({SCHEMA_VERSION}); upgrade resdyn")
    if version == 0:  # pre-versioning manifests lacked these keys
        m.setdefault("stages_done", [])
        m.setdefault("timings", {})
        m.setdefault("status", "partial")
        m["schema_version"] = 1
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
