"""The Claims page under AppTest: the table, the twin, older and partial runs."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from resdyn.core import claims
from resdyn.core.store import RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.app.apptools import open_page
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN
from tests.legacy import write_old_table

PAGE = "pages/claims.py"
L = SYNTHETIC_SIZES["n_layers"]


@pytest.fixture
def root(synthetic_runs_dir, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    return root


def _open(**params):
    at = open_page(PAGE, **params)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _table(at) -> pd.DataFrame:
    (df,) = at.dataframe
    return df.value.set_index("n")


def test_claims_table_with_the_twin(root):
    store = RunStore(root / TRAINED_RUN)
    store.write_table("cumulative", pd.DataFrame({"layer": np.arange(L), "erank": [3.0, 9.0, 14.0, 30.0],
                                                  "log10_fro": np.zeros(L)}))
    RunStore(root / RANDOM_RUN).write_table("cumulative", pd.DataFrame(
        {"layer": np.arange(L), "erank": [25.0, 27.0, 29.0, 31.0], "log10_fro": np.zeros(L)}))
    at = _open(run=TRAINED_RUN)
    t = _table(at)
    assert len(t) == len(claims.CLAIMS)
    assert any(RANDOM_RUN in md.value for md in at.markdown)
    # The funnel: 3 trained against 25 at init, ceiling d.
    assert (t.loc[4, "run"], t.loc[4, "twin"], t.loc[4, "verdict"]) == ("3", "25", f"{claims.ICONS['holds']} holds")
    assert t.loc[7, "verdict"].endswith(claims.TAUTOLOGICAL)
    assert t.loc[1, "null"].startswith("84.5%")  # Ginibre at d = 32
    # The legend explains each verdict that occurs, once.
    legend = " ".join(md.value for md in at.markdown)
    for v in set(claims.VERDICTS) & {s.split(" ", 1)[1] for s in t["verdict"]}:
        assert claims.VERDICTS[v] in legend


def test_run_alone_older_run_and_random_init(root):
    # ?run= alone on a run whose layers table predates frac_complex_null and that has no twin.
    store = RunStore(root / TRAINED_RUN)
    write_old_table(store, "layers", store.read_table("layers").drop(columns="frac_complex_null"))
    shutil.rmtree(root / RANDOM_RUN)
    at = _open(run=TRAINED_RUN)
    t = _table(at)
    assert t.loc[1, "null"].startswith("84.5%")  # computed on read from d
    assert t.loc[4, "verdict"].endswith(claims.NOT_COMPUTED)
    assert any("--init random" in i.value for i in at.info)
    make_synthetic_run(root, "init-only", init="random", **SYNTHETIC_SIZES)
    at = _open(run="init-only")
    assert any("itself a random-init run" in i.value for i in at.info)
    assert _table(at).loc[2, "verdict"].endswith(claims.HOLDS)  # its own eigenvalues sit near Re = 1


def test_partial_run_gets_not_computed(root):
    make_synthetic_run(root, "half-done", status="partial", **SYNTHETIC_SIZES)
    at = _open(run="half-done")
    assert any("partial" in w.value for w in at.warning)
    verdicts = {s.split(" ", 1)[1] for s in _table(at)["verdict"]}
    assert verdicts == {claims.NOT_COMPUTED, claims.TAUTOLOGICAL}
