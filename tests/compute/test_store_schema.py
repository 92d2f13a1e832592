"""A complete run of the real pipeline against the declared schemas (``resdyn.core.schema``), and
the same run as schema-1 resdyn wrote it: read by ``verify``, ``list``, the queries and every page,
then brought up to date by ``run`` (which upgrades before it resumes) with the same files.

Uses the session's complete tiny run (``tests.conftest.complete_runs_dir``); changes go to copies.
"""

from __future__ import annotations

import json
import shutil

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from resdyn import stages as registry
from resdyn.compute.cli import main
from resdyn.core import queries, schema
from resdyn.core.schema import SCHEMA_VERSION
from tests.app.apptools import open_page
from tests.app.pagelist import app_pages
from tests.conftest import COMPLETE_RUN
from tests.core.test_schema import assert_conforms
from tests.legacy import downgrade_to_v1

# Every table a complete run of the tiny model holds (corr_blocks is written only above 512 units).
TABLES = sorted({f for s in registry.STAGES for f in s.outputs + s.shared if f.endswith(".parquet")})


def test_every_table_of_a_complete_run_matches_its_declared_schema(complete_runs_dir):
    run = complete_runs_dir / COMPLETE_RUN
    assert sorted(p.name for p in run.glob("*.parquet")) == TABLES
    assert json.loads((run / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION
    for name in TABLES:
        assert_conforms(run / name)
        t = pq.read_table(run / name)
        for col, dtype in schema.TABLES[name.removesuffix(".parquet")].columns:
            if dtype == "int32" and col not in schema.TABLES[name.removesuffix(".parquet")].nullable:
                assert t.column(col).null_count == 0, (name, col)
    # What the issue asked for: `layer` is the same type in every table, for cross-table SQL.
    types = duckdb.sql(" union all ".join(
        f"select distinct typeof(layer) as t from read_parquet('{run / f}')" for f in TABLES
        if "layer" in pq.read_schema(run / f).names)).df()
    assert set(types["t"]) == {"INTEGER"}


@pytest.fixture(scope="module")
def old_runs(complete_runs_dir, tmp_path_factory):
    """The complete run as schema-1 resdyn wrote it (int64 ``layer``, no metadata, manifest 1)."""
    root = tmp_path_factory.mktemp("old") / "runs"
    shutil.copytree(complete_runs_dir / COMPLETE_RUN, root / COMPLETE_RUN)
    downgrade_to_v1(root / COMPLETE_RUN)
    return root


def test_an_old_complete_run_is_listed_verified_and_queried(old_runs, complete_runs_dir, capsys):
    assert main(["verify", "--runs-dir", str(old_runs)]) == 0
    out = capsys.readouterr().out
    assert "written at schema 1" in out and f"upgrade {COMPLETE_RUN}" in out and "no problems" in out
    assert main(["list", "--runs-dir", str(old_runs)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "corrupt" not in out
    pd.testing.assert_frame_equal(queries.layers(COMPLETE_RUN, root=old_runs),
                                  queries.layers(COMPLETE_RUN, root=complete_runs_dir), check_dtype=False)


@pytest.mark.parametrize("page", app_pages())
def test_every_page_renders_an_old_complete_run(old_runs, monkeypatch, page):
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(old_runs))
    at = open_page(page, run=COMPLETE_RUN) if page != "pages/compare.py" else open_page(page, runs=COMPLETE_RUN)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_resuming_an_old_run_upgrades_it_to_the_files_this_resdyn_writes(old_runs, complete_runs_dir, tmp_path,
                                                                       capsys):
    runs = tmp_path / "runs"
    shutil.copytree(old_runs, runs)
    assert main(["run", "--run-id", COMPLETE_RUN, "--runs-dir", str(runs), "--quiet"]) == 0
    run, ref = runs / COMPLETE_RUN, complete_runs_dir / COMPLETE_RUN
    assert json.loads((run / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION
    for name in TABLES:
        assert_conforms(run / name)
        pd.testing.assert_frame_equal(pd.read_parquet(run / name), pd.read_parquet(ref / name), check_exact=True,
                                      obj=name)
    capsys.readouterr()
    assert main(["verify", "--runs-dir", str(runs)]) == 0
    assert "written at schema" not in capsys.readouterr().out
