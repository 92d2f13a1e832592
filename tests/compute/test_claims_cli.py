"""`resdyn claims` and ``Run.claims``: the same table, the ensemble, explicit twins and bad input."""

from __future__ import annotations

import json
import shutil

import pytest

import resdyn
from resdyn.compute.cli import main
from resdyn.core import claims
from resdyn.testing.synthetic import make_synthetic_run
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN


@pytest.fixture(scope="module")
def root(synthetic_runs_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("claims") / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    for seed in (2, 3):
        make_synthetic_run(root, f"{RANDOM_RUN}-seed{seed}", init="random", seed=seed, **SYNTHETIC_SIZES)
    make_synthetic_run(root, "other-n", init="random", seed=4, **dict(SYNTHETIC_SIZES, n_samples=12))
    return root


def test_table_json_and_python_agree(root, capsys):
    assert main(["claims", TRAINED_RUN, "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "judged against 3 random-init run(s)" in out and "other-n" not in out.splitlines()[0]
    assert main(["claims", TRAINED_RUN, "--runs-dir", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(claims.CLAIMS)
    assert {"claim", "verdict", "run", "twin", "null", "note"} <= set(rows[0])
    assert rows[0]["ensemble"] == [RANDOM_RUN, f"{RANDOM_RUN}-seed2", f"{RANDOM_RUN}-seed3"]
    df = resdyn.open(root / TRAINED_RUN).claims()
    assert list(df["verdict"]) == [r["verdict"] for r in rows]
    assert df.attrs["ensemble"] == rows[0]["ensemble"]


def test_explicit_twins_judge_a_random_run_against_its_siblings(root, capsys):
    twins = f"{RANDOM_RUN}-seed2,{RANDOM_RUN}-seed3"
    assert main(["claims", RANDOM_RUN, "--twin", twins, "--runs-dir", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["ensemble"] == twins.split(",")
    assert claims.HOLDS not in {r["verdict"] for r in rows}
    df = resdyn.open(root / RANDOM_RUN).claims(twin=twins.split(","))
    assert list(df["verdict"]) == [r["verdict"] for r in rows]


@pytest.mark.parametrize("argv, code, words", [
    (["claims", "nope"], 1, "no run 'nope'"),
    (["claims", TRAINED_RUN, "--twin", "other-n"], 2, "analysis key n_samples"),
    (["claims", TRAINED_RUN, "--twin", "absent"], 1, "no run 'absent'"),
    (["claims", TRAINED_RUN, "--twin", ","], 2, "--twin needs at least one run id"),
    (["claims", TRAINED_RUN, "--twin", "../x"], 2, "invalid run id"),
])
def test_bad_input_gets_one_line(root, capsys, argv, code, words):
    assert main(argv + ["--runs-dir", str(root)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
