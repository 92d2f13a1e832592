"""The declared table schemas (``resdyn.core.schema``): what ``RunStore.write_table`` accepts and
writes, the synthetic writer's tables, ``verify`` on current and older runs, and ``upgrade``.

A complete run of the real pipeline is checked in tests/compute/test_store_schema.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from resdyn import __version__
from resdyn import stages as registry
from resdyn.compute.cli import main
from resdyn.core import queries, schema, upgrade, verify
from resdyn.core.schema import SCHEMA_VERSION, SchemaError
from resdyn.core.store import RunStore, migrate_manifest
from resdyn.testing.synthetic import make_synthetic_run
from resdyn.testing.synthetic_geometry import add_geometry_stages
from tests.conftest import RANDOM_RUN, TRAINED_RUN
from tests.legacy import V1_INT64, copy_with_old_run, downgrade_to_v1, write_old_table


def assert_conforms(path, *, exact: bool = True) -> None:
    """The file's columns, dtypes and metadata are its table's declaration, read with pyarrow
    directly (not through the code that wrote it)."""
    s = pq.read_schema(path)
    table = schema.TABLES[path.stem]
    names = [c for c in table.names if exact or c in s.names]
    assert s.names == names, path.name
    assert [schema.dtype_name(f.type) for f in s] == [table.dtypes[c] for c in names], path.name
    assert s.metadata[b"resdyn.schema_version"] == str(SCHEMA_VERSION).encode()
    assert s.metadata[b"resdyn.version"] == __version__.encode()
    assert s.metadata[b"resdyn.table"] == path.stem.encode()


def _layers_frame(n=3) -> pd.DataFrame:
    cols = {c: np.linspace(0, 1, 2 * n) for c in schema.TABLES["layers"].names}
    cols["layer"] = np.repeat(np.arange(n), 2)  # int64, as numpy makes it
    cols["operator"] = ["J", "R"] * n
    return pd.DataFrame(cols)


def test_every_parquet_file_of_the_registry_is_declared_and_nothing_else():
    files = {f.removesuffix(".parquet") for s in registry.STAGES for f in s.files if f.endswith(".parquet")}
    assert files == set(schema.TABLES)
    for t in schema.TABLES.values():
        assert set(t.dtypes.values()) <= set(schema.DTYPES)
        assert len(set(t.names)) == len(t.names)
        # Integer columns are int32 everywhere: no other integer width is declared.
        assert all(dt != "int64" for dt in t.dtypes.values())


def test_write_table_casts_to_the_declared_dtypes_and_stamps_the_versions(tmp_path):
    store = RunStore(tmp_path / "r")
    df = _layers_frame()
    shuffled = df[list(reversed(df.columns))]  # any column order: the file gets the declared one
    path = store.write_table("layers", shuffled)
    assert_conforms(path)
    back = store.read_table("layers")
    assert back["layer"].dtype == np.int32
    pd.testing.assert_frame_equal(back, df.astype({"layer": np.int32}), check_dtype=False)
    np.testing.assert_array_equal(back["layer"], [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("case, change, words", [
    ("undeclared table", lambda df: ("layerz", df), ["'layerz'", "not declared"]),
    ("missing column", lambda df: ("layers", df.drop(columns="henrici")), ["missing column(s) henrici"]),
    ("extra column", lambda df: ("layers", df.assign(extra=1.0)), ["undeclared column(s) extra"]),
    ("int32 overflow", lambda df: ("layers", df.assign(layer=2 ** 31)), ["2147483648", "layers"]),
    ("fractional int", lambda df: ("layers", df.assign(layer=0.5)), ["'layer'", "float64", "int32"]),
    ("NaN in an int column", lambda df: ("layers", df.assign(layer=np.nan)), ["'layer'"]),
    ("text in a float column", lambda df: ("layers", df.assign(henrici="0.5")), ["'henrici'", "float64"]),
    ("number in a string column", lambda df: ("layers", df.assign(operator=1)), ["'operator'", "string"]),
])
def test_write_table_refuses_what_the_schema_does_not_declare(tmp_path, case, change, words):
    store = RunStore(tmp_path / "r")
    name, df = change(_layers_frame())
    with pytest.raises(SchemaError) as err:
        store.write_table(name, df)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert not store.path.exists() or not list(store.path.iterdir())  # nothing written


def test_a_nullable_integer_column_keeps_its_nulls(tmp_path):
    store = RunStore(tmp_path / "r")
    n = 3
    df = pd.DataFrame({"kind": ["depth", "self", "fixed_input"], "K": np.int32(10), "layer_a": np.arange(n),
                       "layer_b": np.arange(n), "token_a": -1, "token_b": -1,
                       "token_fixed": pd.array([None, None, -2], dtype="Int32"), "sample": -1,
                       "aggregate": True, "n": 4, "miscoupling": [0.1, 0.2, 0.3]})
    assert_conforms(store.write_table("block_coupling", df))
    back = store.read_table("block_coupling")
    assert back["token_fixed"].isna().tolist() == [True, True, False] and back["token_fixed"].iloc[2] == -2
    assert "token_fixed" in schema.TABLES["block_coupling"].nullable


def test_checkpoint_tables_are_private_and_not_checked(tmp_path):
    store = RunStore(tmp_path / "r")
    cache = RunStore(store.partial_dir("block_coupling"))
    cache.write_table("sample_00000", pd.DataFrame({"anything": [1]}))  # what block_coupling's checkpoint does
    assert cache.read_table("sample_00000")["anything"].tolist() == [1]
    with pytest.raises(SchemaError):
        store.write_table("sample_00000", pd.DataFrame({"anything": [1]}))


def test_the_corr_blocks_table_as_the_communities_stage_builds_it_conforms(tmp_path):
    # Only runs wider than 512 units write it, so no small run holds one: build its frame the same way.
    methods = ["cpm", "infomap"]
    df = pd.DataFrame({"panel": np.arange(1 + len(methods), dtype=np.int32), "order": ["unit", *methods],
                       "f": np.int32(8)})
    assert_conforms(RunStore(tmp_path / "r").write_table("corr_blocks", df))


def test_synthetic_runs_write_schema_conformant_tables(synthetic_runs_dir, tmp_path):
    for run in (TRAINED_RUN, RANDOM_RUN):
        paths = sorted((synthetic_runs_dir / run).glob("*.parquet"))
        assert {p.name for p in paths} >= {"layers.parquet", "eigenvalues.parquet", "samples.parquet"}
        for p in paths:
            assert_conforms(p)
        assert RunStore(synthetic_runs_dir / run).manifest()["schema_version"] == SCHEMA_VERSION
    store = make_synthetic_run(tmp_path, "g", n_layers=2, d=16, n_samples=4)
    add_geometry_stages(store)
    geometry = {f for s in ("schur", "pseudospectra") for f in registry.get(s).outputs if f.endswith(".parquet")}
    assert geometry <= {p.name for p in store.path.glob("*.parquet")}
    for p in store.path.glob("*.parquet"):
        assert_conforms(p)


# -- manifests and older runs -----------------------------------------------------------------
def test_a_version_0_manifest_reads_as_1_and_an_existing_run_keeps_its_version(tmp_path):
    assert migrate_manifest({}, tmp_path / "manifest.json")["schema_version"] == 1
    store = RunStore(tmp_path / "r")
    store.write_manifest({"run_id": "r"})
    assert store.manifest()["schema_version"] == SCHEMA_VERSION  # a new run: this resdyn's version
    store.write_manifest(dict(store.manifest(), schema_version=1))
    store.update_manifest(status="partial")
    assert store.manifest()["schema_version"] == 1  # only upgrade raises it


@pytest.fixture
def old_runs(synthetic_runs_dir, tmp_path):
    """A copy of the synthetic runs, ``TRAINED_RUN`` rewritten as schema-1 resdyn wrote it."""
    return copy_with_old_run(synthetic_runs_dir, tmp_path / "runs", TRAINED_RUN, downgrade_to_v1)


def test_an_old_run_is_not_damaged_and_verify_names_the_upgrade(old_runs, capsys):
    s = pq.read_schema(old_runs / TRAINED_RUN / "layers.parquet")
    assert schema.dtype_name(s.field("layer").type) == "int64" and b"resdyn.schema_version" not in s.metadata
    assert verify.check_run(RunStore(old_runs / TRAINED_RUN)) == []
    assert main(["verify", "--runs-dir", str(old_runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if "upgrade" in line]
    assert len(notes) == 1 and notes[0].startswith(f"{TRAINED_RUN}: written at schema 1")
    assert notes[0].endswith(f"python -m resdyn.compute upgrade {TRAINED_RUN} --runs-dir {old_runs}")
    assert out[-1].endswith("no problems")


def test_queries_read_an_old_run_with_the_same_values(old_runs, synthetic_runs_dir):
    old = queries.layers(TRAINED_RUN, root=old_runs)
    new = queries.layers(TRAINED_RUN, root=synthetic_runs_dir)
    pd.testing.assert_frame_equal(old, new, check_dtype=False)
    assert len(old) == 2 * 4


def test_upgrade_rewrites_an_old_run_exactly_and_once(old_runs, synthetic_runs_dir, capsys):
    run, ref = old_runs / TRAINED_RUN, synthetic_runs_dir / TRAINED_RUN
    assert main(["upgrade", TRAINED_RUN, "--runs-dir", str(old_runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    n_tables = len(list(ref.glob("*.parquet")))
    assert out == [f"{TRAINED_RUN}: schema 1 -> {SCHEMA_VERSION}, {n_tables} table(s) rewritten",
                   "  per-sample statistics: sample_profiles.parquet written from samples.parquet; kappa_median, "
                   "kappa_q25, kappa_q75, fro_median, pr_median dropped from layers.parquet; sample_stats recorded "
                   "as done (it wrote samples.parquet and the profiles)"]
    m, m_ref = (json.loads((r / "manifest.json").read_text()) for r in (run, ref))
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["stages_done"] == m_ref["stages_done"] and m["stages_all"] == m_ref["stages_all"]
    assert m["files"]["samples.parquet"] == m["files"]["sample_profiles.parquet"] == "sample_stats"
    for p in sorted(ref.glob("*.parquet")):
        assert_conforms(run / p.name)
        # The same values and dtypes as the run this resdyn wrote.
        pd.testing.assert_frame_equal(pd.read_parquet(run / p.name), pd.read_parquet(p), check_exact=True)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(["upgrade", "--runs-dir", str(old_runs)]) == 0  # every run: both already current
    assert capsys.readouterr().out.splitlines() == [f"{RANDOM_RUN}: already at schema {SCHEMA_VERSION}",
                                                   f"{TRAINED_RUN}: already at schema {SCHEMA_VERSION}"]
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert main(["verify", "--runs-dir", str(old_runs)]) == 0
    assert "written at schema" not in capsys.readouterr().out


def test_upgrade_names_missing_columns_and_keeps_their_absence(old_runs):
    store = RunStore(old_runs / TRAINED_RUN)
    write_old_table(store, "layers", store.read_table("layers").drop(columns="frac_complex_null"))
    report = upgrade.upgrade_run(store)
    assert report.to_version == SCHEMA_VERSION and not report.blocked
    (line,) = [x for x in report.lines() if "lacks" in x]
    assert "layers.parquet lacks frac_complex_null" in line and "--redo spectra" in line
    assert_conforms(store.table_path("layers"), exact=False)
    assert "frac_complex_null" not in pq.read_schema(store.table_path("layers")).names
    assert verify.check_run(store) == []


def test_upgrade_leaves_a_table_with_an_undeclared_column_and_keeps_the_old_version(old_runs, capsys):
    store = RunStore(old_runs / TRAINED_RUN)
    write_old_table(store, "samples", store.read_table("samples").assign(legacy=1.0))
    assert main(["upgrade", TRAINED_RUN, "--runs-dir", str(old_runs)]) == 1
    out = capsys.readouterr().out
    assert "stays at schema 1" in out and "samples.parquet" in out and "legacy" in out and "--redo sample_stats" in out
    assert store.manifest()["schema_version"] == 1
    assert_conforms(store.table_path("layers"))  # the others were rewritten all the same


def test_upgrade_skips_a_damaged_table_and_verify_still_names_it(old_runs):
    store = RunStore(old_runs / TRAINED_RUN)
    store.table_path("eigenvalues").write_bytes(b"garbage" * 20)
    report = upgrade.upgrade_run(store)
    assert "eigenvalues.parquet" in report.skipped and report.to_version == SCHEMA_VERSION
    (p,) = verify.check_run(store)
    assert p.file == "eigenvalues.parquet" and p.redo == ("spectra",)


def test_verify_names_a_table_of_a_current_run_that_does_not_match_the_schema(synthetic_runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    path = root / TRAINED_RUN / "layers.parquet"
    df = pd.read_parquet(path)
    df["layer"] = df["layer"].astype("int64")
    df.to_parquet(path, index=False)  # what a schema-1 writer would leave in a current run
    (p,) = verify.check_run(RunStore(root / TRAINED_RUN))
    assert p.file == "layers.parquet" and p.redo == ("spectra",)
    assert "layer is int64, not int32" in p.reason and "no resdyn metadata" in p.reason


def test_the_v1_dtypes_of_the_legacy_helper_are_what_schema_1_wrote():
    # tests.legacy lists the columns schema 1 wrote as int64; all are int32 now.
    for name, cols in V1_INT64.items():
        assert all(schema.TABLES[name].dtypes[c] == "int32" for c in cols)
