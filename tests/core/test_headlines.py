"""Headline numbers of a run (resdyn.core.headlines): values, random-init twin and null baselines."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from resdyn.core import headlines, nulls
from resdyn.core.store import RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN
from tests.legacy import write_old_table

L, D = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]


@pytest.fixture
def root(synthetic_runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    return root


def test_find_twin_matches_model_and_shape(root):
    assert headlines.find_twin(TRAINED_RUN, root) == RANDOM_RUN
    assert headlines.find_twin(RANDOM_RUN, root) is None  # a random-init run is the null itself
    # Another width is not a twin; a complete candidate wins over a partial one.
    make_synthetic_run(root, "wider-random", init="random", n_layers=L, d=2 * D, n_samples=16)
    make_synthetic_run(root, "a-partial-random", init="random", status="partial", **SYNTHETIC_SIZES)
    assert headlines.find_twin(TRAINED_RUN, root) == RANDOM_RUN
    shutil.rmtree(root / RANDOM_RUN)
    assert headlines.find_twin(TRAINED_RUN, root) == "a-partial-random"
    assert headlines.find_twin("no-such-run", root) is None


def test_find_twin_prefers_the_lowest_seed_among_complete_ones(root):
    """Several complete random-init seeds of one model: the lowest seed is the twin, whatever the
    run ids sort as; the extra seeds are what queries.extra_seeds names."""
    from resdyn.core import queries

    assert headlines.find_twin(TRAINED_RUN, root) == RANDOM_RUN  # seed 1, the only one so far
    make_synthetic_run(root, "a-random-seed3", init="random", seed=3, **SYNTHETIC_SIZES)
    assert headlines.find_twin(TRAINED_RUN, root) == RANDOM_RUN
    make_synthetic_run(root, "z-random", init="random", seed=0, **SYNTHETIC_SIZES)
    assert headlines.find_twin(TRAINED_RUN, root) == "z-random"
    assert queries.extra_seeds(queries.runs(root)) == {RANDOM_RUN, "a-random-seed3"}


def test_headline_values_twin_and_nulls(root):
    store = RunStore(root / TRAINED_RUN)
    lay = store.read_table("layers")
    twin_lay = RunStore(root / RANDOM_RUN).read_table("layers")
    h = {x.label: x for x in headlines.headline(store)}
    j, tj = lay[lay["operator"] == "J"], twin_lay[twin_lay["operator"] == "J"]
    cf = h["complex-pair fraction"]
    assert cf.value == f"{j['frac_complex'].mean():.1%}" and cf.twin == f"{tj['frac_complex'].mean():.1%}"
    assert cf.null == f"{nulls.ginibre_complex_fraction(D):.1%}" == "84.5%"
    sa = h["self-alignment range"]
    assert sa.value == f"{j['self_alignment'].min():.2f}–{j['self_alignment'].max():.2f}"
    assert sa.null == f"k/d = {8 / D:.3f}" and "normal" in sa.null_help and "Henrici" in sa.null_help
    assert (h["erank(P_0)"].value, h["erank(P_0)"].stage, h["erank(P_0)"].null) == (None, "cumulative", f"≤ {D}")
    assert (h["FDR-significant layers"].value, h["FDR-significant layers"].stage) == (None, "topology_coupling")

    store.write_table("cumulative", pd.DataFrame({"layer": np.arange(L), "erank": [6.7, 20.0, 80.0, 400.0],
                                                  "log10_fro": np.zeros(L)}))
    store.write_table("summary", pd.DataFrame({"name": ["cumulative.k"], "value": [16.0]}))
    m = store.manifest()  # a run from before the manifest recorded cumulative_rank: the summary's K
    del m["cumulative_rank"]
    store.write_manifest(m)
    write_old_table(store, "coupling", pd.DataFrame({  # only the columns read
        "layer": np.tile(np.arange(L), 2), "method": ["infomap"] * L + ["cpm"] * L,
        "cohens_d": [0.3, -0.2, 0.1, 0.5, 0.3, -0.2, 0.1, 0.5],
        "fdr_significant": [True, True, True, True, True, True, False, False]}))
    h = {x.label: x for x in headlines.headline(store)}
    assert h["erank(P_0)"].value == "6.7" and h["erank(P_0)"].twin is None  # the twin has no cumulative table
    assert "truncated at K_cum = 16" in h["erank(P_0)"].help
    fdr = h["FDR-significant layers"]
    assert fdr.value == "2 / 4"  # the cpm rows, not infomap's 4
    assert "1 with d > 0, 1 with d < 0" in fdr.help
    assert float(fdr.null) == pytest.approx(nulls.bh_null_discoveries(4), abs=0.005)
    assert "α·L = 0.2" in fdr.null_help


def test_headlines_without_twin_and_on_a_partial_run(root):
    make_synthetic_run(root, "half", status="partial", **SYNTHETIC_SIZES)
    h = headlines.headline(RunStore(root / "half"))
    assert [x.value for x in h[:4]] == [None] * 4
    # The sample headlines come from the activations stage, which a partial run has.
    assert [x.label for x in h[4:]] == ["distinct last tokens", "smallest participation ratio"]
    assert h[4].value == "7 / 16" and h[5].value is not None
    # The twin's value is still shown: what the missing stage will be compared with.
    assert h[0].twin is not None and h[0].twin.endswith("%")
    h = headlines.headline(RunStore(root / TRAINED_RUN), twin=False)
    assert all(x.twin is None for x in h)


def test_sample_headlines_from_the_table_or_computed_on_read_for_older_runs(root):
    store = RunStore(root / TRAINED_RUN)
    snaps = store.read_table("snapshots")
    h = {x.label: x for x in headlines.headline(store)}
    low = snaps.loc[snaps["participation_ratio"].idxmin()]
    assert h["distinct last tokens"].value == "7 / 16" and h["distinct last tokens"].null == "16"
    assert h["smallest participation ratio"].value == (f"{low['participation_ratio']:.2g} "
                                                       f"(snapshot {int(low['snapshot'])})")
    assert h["smallest participation ratio"].null == "≤ N − 1 = 15"
    # A run from before snapshots.parquet and token ids: the table is computed from activations.npy
    # (same numbers), the distinct-token count is unknown.
    store.table_path("snapshots").unlink()
    passages = store.read_table("passages")
    write_old_table(store, "passages", passages[["sample", "n_tokens", "text"]])
    summary = store.read_table("summary")
    store.write_table("summary", summary[~summary["name"].str.startswith("samples.")])
    h2 = {x.label: x for x in headlines.headline(store)}
    assert h2["distinct last tokens"].value is None and "predates" in h2["distinct last tokens"].help
    assert h2["smallest participation ratio"].value == h["smallest participation ratio"].value
