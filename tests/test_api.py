"""The public reading API: ``resdyn.open``, ``resdyn.runs``, ``resdyn.sql`` (torch-free)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import resdyn
from resdyn import stages as registry
from resdyn.errors import ResdynError, UsageError
from resdyn.core.store import RunStore
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN
from tests.legacy import write_old_table

L, D, N = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"], SYNTHETIC_SIZES["n_samples"]


@pytest.fixture
def runs(synthetic_runs_dir, tmp_path) -> Path:
    """A private copy of the two synthetic runs, free to damage."""
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    return root


def test_import_resdyn_loads_no_torch_and_the_api_stays_light():
    code = ("import sys, resdyn; resdyn.open; resdyn.runs; resdyn.sql; import resdyn.compute.cli\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'streamlit', 'plotly', 'tqdm') if m in sys.modules)\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_open_reads_manifest_tables_and_arrays_as_written(synthetic_runs_dir):
    run = resdyn.open(TRAINED_RUN, runs_dir=synthetic_runs_dir)
    path = synthetic_runs_dir / TRAINED_RUN
    assert run.run_id == TRAINED_RUN and run.path == path
    assert run.manifest == json.loads((path / "manifest.json").read_text()) | {"schema_version": run.manifest["schema_version"]}
    assert run.status == "complete" and run.problems == []
    assert run.missing_stages == registry.missing(run.manifest)
    pd.testing.assert_frame_equal(run.table("layers"), pd.read_parquet(path / "layers.parquet"))
    assert list(run.table("layers", columns=["layer", "henrici"]).columns) == ["layer", "henrici"]
    jac = run.array("jacobians")
    assert jac.shape == (L, D, D) and jac.dtype == np.float32 and isinstance(jac, np.memmap)
    np.testing.assert_array_equal(jac, np.load(path / "jacobians.npy"))
    with pytest.raises(ValueError, match="read-only"):
        jac[0, 0, 0] = 1.0
    assert {"layers", "eigenvalues", "samples"} <= set(run.tables) and "jacobians" in run.arrays
    assert TRAINED_RUN in repr(run) and f"L={L}" in repr(run)
    assert resdyn.open(path) == run  # a run directory's path opens it too


def test_run_sql_sees_the_run_tables_as_views(synthetic_runs_dir):
    run = resdyn.open(TRAINED_RUN, runs_dir=synthetic_runs_dir)
    got = run.sql("select layer, henrici from layers where operator = 'J' order by layer")
    ref = pd.read_parquet(synthetic_runs_dir / TRAINED_RUN / "layers.parquet")
    ref = ref[ref["operator"] == "J"].sort_values("layer")
    np.testing.assert_array_equal(got["henrici"].to_numpy(), ref["henrici"].to_numpy())
    assert "run_id" not in got.columns
    n = run.sql("select count(*) as n from eigenvalues where operator = 'J'")["n"].item()
    assert n == L * D  # d eigenvalues per layer


def test_runs_dir_resolves_like_the_cli(synthetic_runs_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(synthetic_runs_dir))
    assert resdyn.open(RANDOM_RUN).path == synthetic_runs_dir / RANDOM_RUN
    assert list(resdyn.runs()["run_id"]) == sorted([TRAINED_RUN, RANDOM_RUN])
    monkeypatch.delenv("RESDYN_RUNS_DIR")
    monkeypatch.chdir(tmp_path)  # no ./data/runs here
    with pytest.raises(ResdynError, match=r"runs directory data/runs \(the default ./data/runs\) does not exist"):
        resdyn.runs()
    (tmp_path / "data" / "runs").mkdir(parents=True)
    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, tmp_path / "data" / "runs" / TRAINED_RUN)
    assert resdyn.open(TRAINED_RUN).status == "complete"


@pytest.mark.parametrize("call", [
    lambda d: resdyn.open("x", runs_dir=d / "missing"),
    lambda d: resdyn.runs(d / "missing"),
    lambda d: resdyn.sql("select 1", runs_dir=d / "missing"),
])
def test_a_missing_runs_directory_is_named(tmp_path, call):
    with pytest.raises(ResdynError, match=f"runs directory {tmp_path / 'missing'} .*does not exist"):
        call(tmp_path)


def test_a_missing_run_is_named_with_the_directory_and_its_runs(synthetic_runs_dir):
    with pytest.raises(ResdynError) as err:
        resdyn.open("nope", runs_dir=synthetic_runs_dir)
    assert str(err.value) == f"no run 'nope' in {synthetic_runs_dir}; runs there: {RANDOM_RUN}, {TRAINED_RUN}"
    with pytest.raises(UsageError, match="invalid run id"):
        resdyn.open("..", runs_dir=synthetic_runs_dir)


def test_a_missing_table_names_the_stage_that_writes_it(synthetic_runs_dir):
    run = resdyn.open(TRAINED_RUN, runs_dir=synthetic_runs_dir)
    with pytest.raises(ResdynError, match=r"no table 'cumulative' yet: stage cumulative writes it; .*--stages cumulative"):
        run.table("cumulative")
    with pytest.raises(ResdynError, match=r"no array 'bogus'; its arrays: activations"):
        run.array("bogus")


def test_runs_has_one_row_per_run_with_status_and_missing_stages(runs):
    m = json.loads((runs / RANDOM_RUN / "manifest.json").read_text())
    m["stages_done"] = ["activations", "jacobians"]
    m["status"] = "partial"
    (runs / RANDOM_RUN / "manifest.json").write_text(json.dumps(m))
    (runs / TRAINED_RUN / "layers.parquet").write_bytes(b"PAR1 not really")
    df = resdyn.runs(runs).set_index("run_id")
    assert list(df.index) == [RANDOM_RUN, TRAINED_RUN]
    assert df.loc[RANDOM_RUN, "status"] == "partial" and df.loc[TRAINED_RUN, "status"] == "corrupt"
    assert df.loc[RANDOM_RUN, "missing_stages"] == ",".join(n for n in registry.names()
                                                            if n not in ("activations", "jacobians"))
    assert (df["n_layers"] == L).all() and (df["d_model"] == D).all() and (df["n_samples"] == N).all()
    assert resdyn.open(TRAINED_RUN, runs_dir=runs).status == "corrupt"
    assert "layers.parquet" in resdyn.open(TRAINED_RUN, runs_dir=runs).problems[0]


def test_sql_across_runs_has_a_run_id_column_per_row(synthetic_runs_dir):
    df = resdyn.sql("select run_id, layer, henrici from layers where operator = 'J' order by run_id, layer",
                    runs_dir=synthetic_runs_dir)
    assert list(df.columns) == ["run_id", "layer", "henrici"]
    for rid in (RANDOM_RUN, TRAINED_RUN):
        ref = pd.read_parquet(synthetic_runs_dir / rid / "layers.parquet")
        ref = ref[ref["operator"] == "J"].sort_values("layer")
        np.testing.assert_array_equal(df.loc[df["run_id"] == rid, "henrici"].to_numpy(), ref["henrici"].to_numpy())
    # The runs view joins the manifests' facts.
    joined = resdyn.sql("select r.init, count(*) as n from eigenvalues e join runs r using (run_id) "
                        "group by r.init order by r.init", runs_dir=synthetic_runs_dir)
    assert joined.to_dict("list") == {"init": ["pretrained", "random"], "n": [2 * L * D, 2 * L * D]}


def test_sql_unions_runs_by_column_name_and_skips_damaged_files(runs):
    old = pd.read_parquet(runs / RANDOM_RUN / "layers.parquet").drop(columns=["henrici"])
    write_old_table(RunStore(runs / RANDOM_RUN), "layers", old)  # a run from before henrici existed
    df = resdyn.sql("select run_id, henrici from layers", runs_dir=runs)
    assert (df["run_id"] == RANDOM_RUN).sum() == len(old)  # the old run is in, its henrici missing
    assert df.loc[df["run_id"] == RANDOM_RUN, "henrici"].isna().all()
    assert df.loc[df["run_id"] == TRAINED_RUN, "henrici"].notna().all()

    (runs / TRAINED_RUN / "samples.parquet").write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        n = resdyn.sql("select run_id, count(*) as n from samples group by run_id", runs_dir=runs)
    assert n.to_dict("list") == {"run_id": [RANDOM_RUN], "n": [L * N]}
    msg = " ".join(str(w.message) for w in caught)
    assert f"{TRAINED_RUN}/samples.parquet" in msg and "--redo sample_stats" in msg
    with pytest.raises(ResdynError, match=r"samples.parquet is damaged .*--redo sample_stats"):
        resdyn.open(TRAINED_RUN, runs_dir=runs).sql("select count(*) from samples")


def test_bad_sql_is_a_one_line_usage_error(synthetic_runs_dir):
    with pytest.raises(UsageError, match=r"SQL failed: Parser Error.*\(tables: .*layers"):
        resdyn.sql("selec * from layers", runs_dir=synthetic_runs_dir)
    with pytest.raises(UsageError, match=r"SQL failed: Catalog Error: Table with name nope does not exist"):
        resdyn.sql("select * from nope", runs_dir=synthetic_runs_dir)
