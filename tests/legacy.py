"""Runs as an older resdyn wrote them, for the tests of reading and upgrading old runs.

``RunStore.write_table`` only writes tables that match the current schema, so a test that needs a
table from before a column existed writes it the way schema-1 resdyn did: ``DataFrame.to_parquet``
with pandas' dtypes and no resdyn metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def downgrade_to_v1(run: Path) -> None:
    """Rewrite the run at ``run`` in place as schema-1 resdyn wrote it: its int64 columns, pandas'
    ``large_string``, no resdyn metadata, and ``schema_version`` 1 in the manifest."""
    store = RunStore(run)
    for path in sorted(run.glob("*.parquet")):
        df = pd.read_parquet(path)
        for col in V1_INT64.get(path.stem, ()):
            if col in df:
                df[col] = df[col].astype("int64")
        write_old_table(store, path.stem, df)
    _mark_v1(run)
