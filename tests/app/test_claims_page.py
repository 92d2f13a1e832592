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


def _cumulative(store: RunStore, erank) -> None:
    store.write_table("cumulative", pd.DataFrame({"layer": np.arange(L), "erank": erank, "log10_fro": np.zeros(L)}))


def test_claims_table_against_the_ensemble(root):
    for seed in (2, 3):
        make_synthetic_run(root, f"{RANDOM_RUN}-seed{seed}", init="random", seed=seed, **SYNTHETIC_SIZES)
    trained = RunStore(root / TRAINED_RUN)
    _cumulative(trained, [3.0, 9.0, 14.0, 30.0])
    # The split-half noise, as the noise stage writes it (here from J̄ itself: noise 0).
    from resdyn.core.noise import half_statistics

    trained.write_table("noise", half_statistics(trained.read_array("jacobians", mmap=False), 8, dose=False))
    for i, rid in enumerate((RANDOM_RUN, f"{RANDOM_RUN}-seed2", f"{RANDOM_RUN}-seed3")):
        _cumulative(RunStore(root / rid), [25.0 + i, 27.0, 29.0, 31.0])
    at = _open(run=TRAINED_RUN)
    t = _table(at)
    assert len(t) == len(claims.CLAIMS)
    assert any("3 seeds" in md.value and RANDOM_RUN in md.value for md in at.markdown)
    # The funnel: 3 trained against 25–27 at init, beyond the ensemble's interval.
    assert t.loc[4, "run"].startswith("3 ± ") and t.loc[4, "twin"].startswith("26 ± 1")
    assert t.loc[4, "verdict"] == claims.HOLDS
    assert t.loc[7, "verdict"] == claims.TAUTOLOGICAL
    assert "elliptic law" in t.loc[1, "null"]  # matched to each layer's τ, not Ginibre's 84.5 % at d = 32
    assert len(at.get("plotly_chart")) == 1  # the claims as strips
    # The legend explains each verdict that occurs, once.
    legend = " ".join(md.value for md in at.markdown)
    for v in set(claims.VERDICTS) & set(t["verdict"]):
        assert claims.VERDICTS[v] in legend


def test_run_alone_older_run_and_random_init(root):
    # ?run= alone on a run whose layers table predates frac_complex_null and that has no ensemble.
    store = RunStore(root / TRAINED_RUN)
    write_old_table(store, "layers", store.read_table("layers").drop(columns="frac_complex_null"))
    shutil.rmtree(root / RANDOM_RUN)
    at = _open(run=TRAINED_RUN)
    t = _table(at)
    assert "elliptic law" in t.loc[1, "null"]  # τ computed on read from jacobians.npy
    assert t.loc[4, "verdict"] == claims.NOT_COMPUTED
    assert any("--seeds 0,1,2" in i.value for i in at.info)
    for seed in (1, 2):
        make_synthetic_run(root, f"init-only-seed{seed}", init="random", seed=seed, **SYNTHETIC_SIZES)
    at = _open(run="init-only-seed1")
    assert any("null-against-null" in i.value for i in at.info)
    assert _no_holds(_table(at))


def _no_holds(t: pd.DataFrame) -> bool:
    return claims.HOLDS not in set(t["verdict"])


def test_partial_run_gets_not_computed(root):
    make_synthetic_run(root, "half-done", status="partial", **SYNTHETIC_SIZES)
    at = _open(run="half-done")
    assert any("partial" in w.value for w in at.warning)
    verdicts = set(_table(at)["verdict"])
    assert verdicts == {claims.NOT_COMPUTED, claims.TAUTOLOGICAL}
