"""Bring a run written by an older resdyn up to the current schema, in place.

``python -m resdyn.compute upgrade [RUN ...]`` (and the pipeline, before it resumes an older run)
rewrites each Parquet table that does not conform to ``resdyn.core.schema``: its columns are cast
to the declared dtypes (``layer`` int64 → int32, ``large_string`` → ``string``, ...), put in the
declared order and stamped with the resdyn and schema versions. Each file is replaced atomically,
values are unchanged (the casts are checked: an integer that does not fit int32 is refused), and the
manifest's ``schema_version`` goes up last, so an interrupted upgrade is simply run again. Tables
that already conform are not touched, so a second upgrade writes nothing.

Schema 3 made the per-sample statistics a stage of their own (``sample_stats``). A run written
before it has them as the jacobians stage wrote them (samples.parquet) and their per-layer medians
as five columns of layers.parquet. Nothing is recomputed: the profiles table is derived from
samples.parquet (``resdyn.core.sample_stats.layer_profiles``, what the stage writes; from the
layers table's own columns if samples.parquet cannot be read), the columns leave layers.parquet,
and the manifest records ``sample_stats`` as done and as the writer of both files. Each step is
safe to repeat, so an interrupted upgrade is run again.

An older table may lack columns added since (``frac_complex_null`` in layers.parquet): the pages
compute or skip those on read, so they stay absent and the upgrade names the ``--redo`` that writes
them. A table that cannot be read (damaged) is left for ``verify`` to name; one with a column the
schema does not declare is left as it is and blocks the version bump.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field

from resdyn import stages as registry
from resdyn.core import schema
from resdyn.core.store import MANIFEST, CorruptFileError, RunStore
from resdyn.errors import ResdynError


DAMAGED = "unreadable (damaged), left as it is; `verify` names the --redo that rewrites it"


@dataclass
class Upgrade:
    """What upgrading one run did and what it left."""

    run_id: str
    from_version: int
    to_version: int  # the manifest's version afterwards (from_version when blocked)
    rewritten: list[str] = field(default_factory=list)  # file names
    lacking: dict[str, list[str]] = field(default_factory=dict)  # file -> declared columns it lacks
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was left as it is
    blocked: bool = False  # a table that cannot be brought to the schema kept the old version
    moved: str | None = None  # what the schema-3 move of the per-sample statistics did, if anything

    def lines(self) -> list[str]:
        """One line for the run, then one per table left incomplete or untouched."""
        if self.from_version == self.to_version and not self.rewritten and not self.blocked:
            head = f"{self.run_id}: already at schema {self.to_version}"
        elif self.blocked:
            head = (f"{self.run_id}: stays at schema {self.from_version}; "
                    f"{len(self.rewritten)} table(s) rewritten, the ones below need recomputing")
        else:
            head = (f"{self.run_id}: schema {self.from_version} -> {self.to_version}, "
                    f"{len(self.rewritten)} table(s) rewritten")
        out = [head]
        if self.moved:
            out.append(f"  {self.moved}")
        for f, why in self.skipped.items():
            out.append(f"  {f}: {why}")
        for f, cols in self.lacking.items():
            stages = ",".join(registry.writers(f)) or "<its stage>"
            out.append(f"  {f} lacks {', '.join(cols)} (an older stage; the pages do without, "
                       f"`--redo {stages}` writes them)")
        return out


def _stored_version(store: RunStore) -> int:
    with open(store.path / MANIFEST, encoding="utf-8") as fh:
        return int(json.load(fh).get("schema_version", 0))


def upgrade_run(store: RunStore) -> Upgrade:
    """Rewrite the non-conforming tables of ``store`` and raise its schema_version (see the module
    docstring). The caller holds the run's lock (``RunStore.lock``)."""
    import pyarrow.parquet as pq

    m = store.manifest()  # refuses a manifest from a newer resdyn
    version = _stored_version(store)
    report = Upgrade(store.run_id, version, version)
    changes = _move_sample_stats(store, m, report) if version < SAMPLE_STATS_VERSION else {}
    for path in sorted(store.path.glob("*.parquet")):
        name = path.stem
        if name not in schema.TABLES:
            report.skipped[path.name] = "not a table of this resdyn; left as it is"
            continue
        try:
            arrow_schema = pq.read_schema(path)
        except Exception:  # noqa: BLE001 - damaged: verify names it with its --redo
            report.skipped[path.name] = DAMAGED
            continue
        lacking = [c for c in schema.TABLES[name].names if c not in arrow_schema.names]
        if lacking:
            report.lacking[path.name] = lacking
        if not schema.mismatches(name, arrow_schema, allow_missing=True):
            continue
        try:
            df = store.read_table(name)
        except CorruptFileError:
            report.skipped[path.name] = DAMAGED
            continue
        try:
            table = schema.to_arrow(name, df, partial=True)
        except ResdynError as exc:
            stages = ",".join(registry.writers(path.name)) or "<its stage>"
            report.skipped[path.name] = f"{exc}; recompute it with `--redo {stages}`"
            report.blocked = True
            continue
        store.write_arrow(name, table)
        report.rewritten.append(path.name)
    if not report.blocked and version < schema.SCHEMA_VERSION:
        changes["schema_version"] = schema.SCHEMA_VERSION
        report.to_version = schema.SCHEMA_VERSION
    if changes:
        store.write_manifest(dict(m, **changes))
    return report


SAMPLE_STATS_VERSION = 3
"""The schema version from which the per-sample statistics are the ``sample_stats`` stage's."""


def _move_sample_stats(store: RunStore, m: dict, report: Upgrade) -> dict:
    """Schema < 3 -> 3 for the per-sample statistics (see the module docstring): write
    sample_profiles.parquet, drop its columns from layers.parquet, and return the manifest keys that
    record ``sample_stats`` as done (empty when there is nothing to record). A damaged layers or
    samples file is left for ``verify`` to name."""
    import pyarrow.parquet as pq

    from resdyn.core import sample_stats

    stage = registry.get("sample_stats")
    moved: list[str] = []
    try:
        layer_cols = pq.read_schema(store.table_path("layers")).names if store.has_table("layers") else []
    except Exception:  # noqa: BLE001 - damaged: the loop over the tables names it
        layer_cols = []
    in_layers = [c for c in sample_stats.PROFILE_COLUMNS if c in layer_cols]
    done = list(m.get("stages_done") or ())
    # Before schema 3 the jacobians stage wrote samples.parquet.
    old_samples = "jacobians" in done and store.has_table("samples")
    if not store.has_table(sample_stats.TABLE) and (in_layers or old_samples):
        profiles, source = None, "samples.parquet"
        try:
            profiles = sample_stats.layer_profiles(store.read_table("samples"))
        except ResdynError:  # missing or damaged: the layers table's copy of the same numbers
            if in_layers:
                with contextlib.suppress(ResdynError):  # damaged too: nothing to move, verify names both
                    lay = store.read_table("layers", columns=["layer", *in_layers])
                    profiles = lay.drop_duplicates("layer").sort_values("layer", ignore_index=True)
                    source = "layers.parquet"
        if profiles is not None and set(sample_stats.PROFILE_COLUMNS) <= set(profiles.columns):
            store.write_table(sample_stats.TABLE, profiles)
            report.rewritten.append(f"{sample_stats.TABLE}.parquet")
            moved.append(f"{sample_stats.TABLE}.parquet written from {source}")
    if in_layers:
        try:
            layers = store.read_table("layers").drop(columns=in_layers)
            store.write_arrow("layers", schema.to_arrow("layers", layers, partial=True))
            report.rewritten.append("layers.parquet")
            moved.append(f"{', '.join(in_layers)} dropped from layers.parquet")
        except CorruptFileError:  # the loop over the tables below names it
            pass
        except ResdynError as exc:  # columns this resdyn does not know
            report.skipped["layers.parquet"] = f"{exc}; recompute it with `--redo spectra`"
            report.blocked = True
    changes: dict = {}
    if "sample_stats" not in done and old_samples and store.has_table(sample_stats.TABLE):
        files = dict(m.get("files") or {}, **{f: stage.name for f in stage.outputs})
        changes = {"stages_done": done + [stage.name], "files": files}
        if m.get("stages_all") and stage.name not in m["stages_all"]:
            planned = set(m["stages_all"]) | {stage.name}
            changes["stages_all"] = [n for n in registry.names() if n in planned] + \
                [n for n in m["stages_all"] if n not in registry.BY_NAME]
        moved.append("sample_stats recorded as done (it wrote samples.parquet and the profiles)")
    elif "sample_stats" not in done and "jacobians" in done and m.get("status") == "complete":
        changes = {"status": "partial"}  # samples.parquet is gone: the stage is to be computed
    if moved:
        report.moved = "per-sample statistics: " + "; ".join(moved)
    return changes


def upgrade_runs(runs_dir, run_ids: list[str] | None = None) -> list[Upgrade]:
    """Upgrade the runs ``run_ids`` of ``runs_dir`` (default: every run), each under its lock."""
    from pathlib import Path

    from resdyn.core.verify import run_stores

    return [_locked_upgrade(s) for s in run_stores(Path(runs_dir), run_ids)]


def _locked_upgrade(store: RunStore) -> Upgrade:
    with store.lock():
        return upgrade_run(store)
