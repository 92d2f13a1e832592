"""The per-sample statistics as tables (resdyn.core.sample_stats) and the schema-2 → 3 upgrade that
moves their per-layer profiles out of layers.parquet (resdyn.core.upgrade)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from resdyn.compute.cli import main
from resdyn.core import queries, sample_stats, schema, upgrade, verify
from resdyn.core.schema import SCHEMA_VERSION
from resdyn.core.store import RunStore
from tests.conftest import TRAINED_RUN
from tests.core.test_schema import assert_conforms
from tests.legacy import copy_with_old_run, downgrade_to_v2


def test_samples_table_is_layer_major_with_int32_indices():
    stats = np.arange(2 * 3 * 5, dtype=np.float64).reshape(2, 3, 5)
    t = sample_stats.samples_table(stats)
    assert list(t.columns) == ["layer", "sample", "sigma_max", "sigma_min", "kappa", "fro", "pr"]
    assert t["layer"].tolist() == [0, 0, 0, 1, 1, 1] and t["sample"].tolist() == [0, 1, 2, 0, 1, 2]
    assert t["layer"].dtype == np.int32 and t["sample"].dtype == np.int32
    np.testing.assert_array_equal(t.iloc[4, 2:].to_numpy(), stats[1, 1])


def test_layer_profiles_are_medians_and_quartiles_per_layer():
    """Layer 0: κ = 1, 2, 3, 4, 100 (median 3, quartiles 2 and 4 by linear interpolation); layer 1:
    κ = 10, 20, 30, inf (a singular sample counts as the largest: the median stays 25, the upper
    quartile 30 + 0.25·(inf − 30) is inf)."""
    samples = pd.DataFrame({
        "layer": [0] * 5 + [1] * 4, "sample": list(range(5)) + list(range(4)),
        "kappa": [3.0, 1.0, 100.0, 2.0, 4.0, 10.0, np.inf, 20.0, 30.0],
        "fro": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 7.0, 9.0, 9.0],
        "pr": [5.0, 1.0, 2.0, 4.0, 3.0, 1.0, 2.0, 3.0, 4.0],
    })
    p = sample_stats.layer_profiles(samples)
    assert list(p.columns) == ["layer", *sample_stats.PROFILE_COLUMNS]
    np.testing.assert_array_equal(p["kappa_median"], [3.0, 25.0])
    np.testing.assert_array_equal(p["kappa_q25"], [2.0, 17.5])
    np.testing.assert_array_equal(p["kappa_q75"], [4.0, np.inf])
    np.testing.assert_array_equal(p["fro_median"], [3.0, 8.0])
    np.testing.assert_array_equal(p["pr_median"], [3.0, 2.5])


def _layers(n=3):
    return pd.DataFrame({"layer": np.repeat(np.arange(n, dtype=np.int32), 2)[::-1].copy(),
                         "operator": ["J", "R"] * n, "henrici": np.linspace(0, 1, 2 * n),
                         "frac_complex_null": 0.9})


def test_join_puts_each_layers_profile_on_both_operators_and_last():
    lay = _layers()
    prof = pd.DataFrame({"layer": np.arange(3, dtype=np.int32), **{c: np.arange(3) * 10.0 + i
                                                                   for i, c in enumerate(sample_stats.PROFILE_COLUMNS)}})
    out = sample_stats.join_profiles(lay, prof)
    assert list(out.columns) == [*lay.columns, *sample_stats.PROFILE_COLUMNS]
    pd.testing.assert_frame_equal(out[lay.columns], lay)  # rows keep their order
    np.testing.assert_array_equal(out["kappa_median"], out["layer"] * 10.0)
    np.testing.assert_array_equal(out["pr_median"], out["layer"] * 10.0 + 4)
    # An older table's own columns (before frac_complex_null) come out in the same place, and a
    # profiles table replaces them.
    old = lay.copy()
    old.insert(3, "kappa_median", 7.0)
    assert list(sample_stats.join_profiles(old, None).columns) == [*lay.columns, "kappa_median"]
    np.testing.assert_array_equal(sample_stats.join_profiles(old, prof)["kappa_median"], out["kappa_median"])
    assert not sample_stats.has_profiles(sample_stats.join_profiles(lay, None))


# -- schema 2 -> 3 -----------------------------------------------------------------------------
@pytest.fixture
def v2_runs(synthetic_runs_dir, tmp_path):
    """A copy of the synthetic runs, ``TRAINED_RUN`` as schema-2 resdyn wrote it (``downgrade_to_v2``)."""
    return copy_with_old_run(synthetic_runs_dir, tmp_path / "runs", TRAINED_RUN, downgrade_to_v2)


def test_a_schema_2_run_is_what_schema_2_wrote_and_reads_the_same(v2_runs, synthetic_runs_dir):
    run, ref = v2_runs / TRAINED_RUN, synthetic_runs_dir / TRAINED_RUN
    m = json.loads((run / "manifest.json").read_text())
    assert m["schema_version"] == 2 and "sample_stats" not in m["stages_done"] + m["stages_all"]
    assert not (run / "sample_profiles.parquet").exists()
    names = pq.read_schema(run / "layers.parquet").names
    # (The fixture is today's synthetic run rewritten: the elliptic-null columns, added since, ride along.)
    assert names[names.index("residual_norm_ratio") + 1:] == [*sample_stats.PROFILE_COLUMNS, "frac_complex_null",
                                                              "tau", "frac_complex_null_elliptic",
                                                              "frac_complex_null_elliptic_sd"]
    assert verify.check_run(RunStore(run)) == []
    # The pages' reads give the same layers either way.
    pd.testing.assert_frame_equal(queries.layers(TRAINED_RUN, root=v2_runs),
                                  queries.layers(TRAINED_RUN, root=synthetic_runs_dir))
    assert sample_stats.has_profiles(queries.layers(TRAINED_RUN, root=v2_runs))
    np.testing.assert_array_equal(pd.read_parquet(run / "samples.parquet"), pd.read_parquet(ref / "samples.parquet"))


def test_upgrade_from_schema_2_moves_the_profiles_without_recomputing(v2_runs, synthetic_runs_dir, capsys):
    run, ref = v2_runs / TRAINED_RUN, synthetic_runs_dir / TRAINED_RUN
    samples_before = pd.read_parquet(run / "samples.parquet")
    assert main(["upgrade", TRAINED_RUN, "--runs-dir", str(v2_runs)]) == 0
    out = capsys.readouterr().out
    assert f"schema 2 -> {SCHEMA_VERSION}" in out and "sample_profiles.parquet written from samples.parquet" in out
    for p in sorted(ref.glob("*.parquet")):
        assert_conforms(run / p.name)
        pd.testing.assert_frame_equal(pd.read_parquet(run / p.name), pd.read_parquet(p), check_exact=True, obj=p.name)
    pd.testing.assert_frame_equal(pd.read_parquet(run / "samples.parquet"), samples_before, check_exact=True)
    m, m_ref = (json.loads((r / "manifest.json").read_text()) for r in (run, ref))
    assert (m["schema_version"], m["status"]) == (SCHEMA_VERSION, "complete")
    assert m["stages_done"] == m_ref["stages_done"] and m["stages_all"] == m_ref["stages_all"]
    assert m["files"] == {"samples.parquet": "sample_stats", "sample_profiles.parquet": "sample_stats"}
    assert verify.check_run(RunStore(run)) == []
    # A second upgrade finds it current and writes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert upgrade.upgrade_run(RunStore(run)).lines() == [f"{TRAINED_RUN}: already at schema {SCHEMA_VERSION}"]
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_an_interrupted_schema_2_upgrade_finishes_when_run_again(v2_runs, synthetic_runs_dir):
    """Killed after the profiles and layers were written but before the manifest: the second call
    sees no columns to move and still records the stage."""
    store = RunStore(v2_runs / TRAINED_RUN)
    real = store.write_manifest
    store.write_manifest = lambda m: (_ for _ in ()).throw(KeyboardInterrupt)  # dies at the manifest
    with pytest.raises(KeyboardInterrupt):
        upgrade.upgrade_run(store)
    assert "kappa_median" not in pq.read_schema(store.table_path("layers")).names
    store.write_manifest = real
    report = upgrade.upgrade_run(store)
    assert report.to_version == SCHEMA_VERSION and "sample_stats recorded as done" in report.moved
    assert "sample_stats" in store.manifest()["stages_done"]
    pd.testing.assert_frame_equal(store.read_table("sample_profiles"),
                                  pd.read_parquet(synthetic_runs_dir / TRAINED_RUN / "sample_profiles.parquet"))


def test_schema_2_upgrade_takes_the_profiles_from_layers_when_samples_is_damaged(v2_runs, synthetic_runs_dir):
    store = RunStore(v2_runs / TRAINED_RUN)
    store.table_path("samples").write_bytes(b"garbage" * 20)
    report = upgrade.upgrade_run(store)
    assert "samples.parquet" in report.skipped and "written from layers.parquet" in report.moved
    pd.testing.assert_frame_equal(store.read_table("sample_profiles"),
                                  pd.read_parquet(synthetic_runs_dir / TRAINED_RUN / "sample_profiles.parquet"))
    # The damaged file is now the sample_stats stage's, and verify names the --redo that rewrites it.
    (p,) = verify.check_run(store)
    assert p.file == "samples.parquet" and p.redo == ("sample_stats",)


def test_a_current_run_that_has_not_reached_sample_stats_is_left_alone(synthetic_runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, root / TRAINED_RUN)
    store = RunStore(root / TRAINED_RUN)
    for f in ("samples.parquet", "sample_profiles.parquet"):
        (store.path / f).unlink()
    store.invalidate({"sample_stats"})
    report = upgrade.upgrade_run(store)
    assert report.lines() == [f"{TRAINED_RUN}: already at schema {SCHEMA_VERSION}"] and report.moved is None
    assert "sample_stats" not in store.manifest()["stages_done"]
    assert not sample_stats.has_profiles(queries.layers(TRAINED_RUN, root=root))
    assert schema.TABLES["layers"].names == tuple(pq.read_schema(store.table_path("layers")).names)


def test_schema_2_upgrade_with_a_damaged_layers_table_still_moves_the_statistics(v2_runs, synthetic_runs_dir):
    """layers.parquet unreadable: the profiles come from samples.parquet all the same, the stage is
    recorded, and verify names the damaged table with the --redo that rewrites it (spectra, which
    now writes it without the five columns)."""
    store = RunStore(v2_runs / TRAINED_RUN)
    store.table_path("layers").write_bytes(b"garbage" * 20)
    report = upgrade.upgrade_run(store)
    assert "layers.parquet" in report.skipped and not report.blocked and report.to_version == SCHEMA_VERSION
    assert "sample_stats" in store.manifest()["stages_done"]
    pd.testing.assert_frame_equal(store.read_table("sample_profiles"),
                                  pd.read_parquet(synthetic_runs_dir / TRAINED_RUN / "sample_profiles.parquet"))
    (p,) = verify.check_run(store)
    assert p.file == "layers.parquet" and p.redo == ("spectra",)
