"""Runs as an older resdyn wrote them, for the tests of reading and upgrading old runs.

``RunStore.write_table`` only writes tables that match the current schema, so a test that needs a
table from before a column existed writes it the way schema-1 resdyn did: ``DataFrame.to_parquet``
with pandas' dtypes and no resdyn metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd

from resdyn.core.store import RunStore

# The integer columns schema 1 wrote as int64 (pandas' default); the others were int32 already.
V1_INT64 = {
    "layers": ("layer",),
    "passages": ("token",),
    "coupling": ("layer", "snapshot", "n_top", "n_bottom"),
    "mesoscale": ("layer", "snapshot_in", "snapshot_out", "n_comm_in", "n_comm_out"),
    "trajectory_windows": ("n",),
}


def write_old_table(store: RunStore, name: str, df: pd.DataFrame) -> Path:
    """Write ``df`` as ``NAME.parquet`` as schema-1 resdyn did (any columns, pandas' dtypes), and
    mark the run as schema 1, as a run holding such a table is (``verify`` checks the tables of a
    current run against the schema, and leaves older runs to ``upgrade``)."""
    path = store.table_path(name)
    df.to_parquet(path, index=False)
    _mark_v1(path.parent)
    return path


def _mark_v1(run: Path) -> None:
    p = run / "manifest.json"
    if p.is_file():
        m = json.loads(p.read_text())
        if m.get("schema_version", 0) > 1:
            p.write_text(json.dumps(dict(m, schema_version=1), indent=2))


# Where schema 2 kept the per-sample profiles: five columns of layers.parquet, before this one.
V2_PROFILES_BEFORE = "frac_complex_null"


def downgrade_to_v2(run: Path) -> None:
    """Rewrite the run at ``run`` in place as schema-2 resdyn wrote it, before the ``sample_stats``
    stage existed: the per-layer profiles as columns of layers.parquet (no sample_profiles.parquet),
    samples.parquet recorded as the jacobians stage's, ``sample_stats`` in neither ``stages_done``
    nor ``stages_all``, and every table stamped with schema version 2."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from resdyn.core import schema, sample_stats

    store = RunStore(run)
    profiles = store.table_path(sample_stats.TABLE)
    if profiles.is_file() and store.has_table("layers"):
        lay = store.read_table("layers").merge(pd.read_parquet(profiles), on="layer", how="left")
        cols = [c for c in lay.columns if c not in sample_stats.PROFILE_COLUMNS]
        at = cols.index(V2_PROFILES_BEFORE) if V2_PROFILES_BEFORE in cols else len(cols)
        lay = lay[cols[:at] + list(sample_stats.PROFILE_COLUMNS) + cols[at:]]
        store.write_arrow("layers", pa.Table.from_pandas(lay, preserve_index=False).cast(
            pa.schema([(c, pa.int32() if c == "layer" else pa.string() if c == "operator" else pa.float64())
                       for c in lay.columns])))
    profiles.unlink(missing_ok=True)
    for path in sorted(run.glob("*.parquet")):  # schema 2's stamp
        t = pq.read_table(path)
        meta = {**(t.schema.metadata or {}), **schema.metadata(path.stem), schema.SCHEMA_KEY: b"2"}
        pq.write_table(t.replace_schema_metadata(meta), path)
    p = run / "manifest.json"
    m = json.loads(p.read_text())
    m["stages_done"] = [x for x in m.get("stages_done", []) if x != "sample_stats"]
    if "stages_all" in m:
        m["stages_all"] = [x for x in m["stages_all"] if x != "sample_stats"]
    m["timings"] = {k: v for k, v in (m.get("timings") or {}).items() if k != "sample_stats"}
    files = {f: st for f, st in (m.get("files") or {}).items() if f != f"{sample_stats.TABLE}.parquet"}
    if "samples.parquet" in files:
        files["samples.parquet"] = "jacobians"
    m["files"] = files
    p.write_text(json.dumps(dict(m, schema_version=2), indent=2))


def downgrade_to_v1(run: Path) -> None:
    """Rewrite the run at ``run`` in place as schema-1 resdyn wrote it: the layout of schema 2
    (``downgrade_to_v2``), its int64 columns, pandas' ``large_string``, no resdyn metadata, and
    ``schema_version`` 1 in the manifest."""
    downgrade_to_v2(run)
    store = RunStore(run)
    for path in sorted(run.glob("*.parquet")):
        df = pd.read_parquet(path)
        for col in V1_INT64.get(path.stem, ()):
            if col in df:
                df[col] = df[col].astype("int64")
        write_old_table(store, path.stem, df)
    _mark_v1(run)


def copy_with_old_run(runs_dir: Path, dest: Path, run_id: str, downgrade: Callable[[Path], None]) -> Path:
    """A copy of the runs directory ``runs_dir`` at ``dest`` with run ``run_id`` rewritten by
    ``downgrade`` (``downgrade_to_v1``, ``downgrade_to_v2``); returns ``dest``."""
    shutil.copytree(runs_dir, dest)
    downgrade(dest / run_id)
    return dest
