"""The papers' claims checked on a run (resdyn.core.claims), on tables built here so that every
verdict is reached and both the older and the newer data contract are read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core import claims, nulls
from resdyn.core.headlines import RunTables

L, D, K = 8, 576, 64
GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def _layers(frac_complex: float, self_alignment) -> pd.DataFrame:
    sa = np.broadcast_to(np.asarray(self_alignment, float), (L,))
    return pd.concat([pd.DataFrame({"layer": np.arange(L), "operator": op, "frac_complex": frac_complex,
                                    "self_alignment": sa}) for op in "JR"], ignore_index=True)


def _eigs(near_one: float, seed: int) -> pd.DataFrame:
    """J̄ eigenvalues: a share ``near_one`` at Re λ ≈ 1, the rest spread at Re λ ≈ 0.5."""
    rng = np.random.default_rng(seed)
    n = L * 100
    near = rng.random(n) < near_one
    re = np.where(near, 1 + rng.uniform(-0.05, 0.05, n), 0.5 + rng.uniform(-0.1, 0.1, n))
    return pd.DataFrame({"layer": np.repeat(np.arange(L), 100), "re": re, "im": rng.normal(0, 0.2, n)})


def _dose(curve, *, construction="dose", mode="J", draw=0, beta=None) -> pd.DataFrame:
    df = pd.DataFrame({"mode": mode, "construction": construction, "draw": draw, "c": GRID,
                       "erank": np.asarray(curve, float), "log10_fro": 0.0, "henrici": 0.5})
    if beta is not None:
        df["beta"] = float(beta)
    return df


def _tables(run_id="trained", init="pretrained", **kw) -> RunTables:
    m = {"run_id": run_id, "init": init, "model": "m", "n_layers": L, "d_model": D, "k": K,
         **kw.pop("manifest", {})}
    return RunTables(run_id=run_id, manifest=m, **kw)


def _by_claim(df: pd.DataFrame) -> dict[str, dict]:
    names = [f.__name__ for f in claims.CLAIMS]
    return dict(zip(names, df.to_dict("records")))


FALLING = [45.4, 30.0, 20.0, 12.0, 7.12, 4.0, 2.53]


def _trained(**over) -> RunTables:
    kw = dict(
        layers=_layers(0.995, np.linspace(0.3, 0.9, L)),
        eigenvalues=_eigs(0.1, 0),
        cumulative=pd.DataFrame({"layer": np.arange(L), "erank": np.linspace(7.0, 300.0, L)}),
        schur_dose=pd.concat([_dose(FALLING), _dose(np.linspace(45.4, 80.0, 7), construction="control_a", draw=0),
                              _dose(np.linspace(45.4, 82.0, 7), construction="control_a", draw=1),
                              _dose(np.array(FALLING) * 1.01, mode="R")], ignore_index=True),
        coupling=pd.DataFrame({"layer": np.arange(L), "method": "cpm", "cohens_d": np.linspace(-0.4, 0.4, L),
                               "fdr_significant": [True] * 5 + [False] * 3}),
        mesoscale=pd.DataFrame({"layer": np.arange(L), "method": "cpm", "z": 20.0}),
        summary={"block_coupling.coupling_score": 0.4, "trajectories.lss_median": 4.25, "cumulative.k": float(D)},
    )
    kw.update(over)
    return _tables(**kw)


def _twin(**over) -> RunTables:
    kw = dict(
        layers=_layers(0.9, np.full(L, 0.95)), eigenvalues=_eigs(0.9, 1),
        cumulative=pd.DataFrame({"layer": np.arange(L), "erank": np.full(L, 326.0)}),
        schur_dose=_dose(np.full(7, 300.0)),
        coupling=pd.DataFrame({"layer": np.arange(L), "method": "cpm", "cohens_d": 0.0, "fdr_significant": False}),
        summary={"block_coupling.coupling_score": 0.2, "trajectories.lss_median": 6.54},
    )
    kw.update(over)
    return _tables("init", "random", **kw)


def test_trained_against_its_twin_on_the_older_contract():
    got = _by_claim(claims.evaluate(_trained(), _twin()))
    assert list(claims.evaluate(_trained(), _twin()).columns) == claims.COLUMNS
    assert got["complex_pairs"]["verdict"] == claims.HOLDS
    assert got["complex_pairs"]["null"].startswith("96.6%")  # the exact Ginibre value at d = 576
    assert got["init_cluster"]["verdict"] == claims.HOLDS
    assert got["depth_regimes"]["verdict"] == claims.HOLDS and got["depth_regimes"]["null"] == "k/d = 0.111"
    assert "normal" in got["depth_regimes"]["note"]
    assert got["funnel"]["verdict"] == claims.HOLDS and got["funnel"]["run"] == "7" and got["funnel"]["twin"] == "326"
    dose = got["dose_response"]
    assert dose["verdict"] == claims.HOLDS and dose["run"].startswith(f"ratio {45.4 / 7.12:.3g}")
    assert "no ordering band" in dose["note"] and dose["twin"] == "ratio 1"
    assert got["control_a"]["verdict"] == claims.HOLDS and got["control_a"]["run"] == (
        f"45.4 → {(np.linspace(45.4, 80, 7)[4] + np.linspace(45.4, 82, 7)[4]) / 2:.3g}")
    mode_r = got["mode_r"]
    assert mode_r["verdict"] == claims.TAUTOLOGICAL and mode_r["run"] == "0.01" and "Schur vectors" in mode_r["note"]
    assert got["boundary_layers"]["verdict"] == claims.HOLDS and got["boundary_layers"]["run"] == "5 / 8 (cpm)"
    assert got["boundary_layers"]["twin"] == "0 / 8"
    # Only the independent null (older runs): never "holds", whatever z says.
    assert got["mesoscale"]["verdict"] == claims.CONFOUNDED and got["mesoscale"]["run"] == "8 / 8 (independent)"
    assert got["coupling_score"]["verdict"] == claims.HOLDS
    assert got["line_shape"]["verdict"] == claims.HOLDS and got["line_shape"]["null"].startswith("√L = 2.83")


def test_failures_and_nulls():
    run = _trained(layers=_layers(0.94, np.full(L, 0.5)), eigenvalues=_eigs(0.95, 0),
                   cumulative=pd.DataFrame({"layer": np.arange(L), "erank": np.full(L, 400.0)}),
                   schur_dose=pd.concat([_dose([10, 12, 9, 8, 7, 6, 5]),
                                         _dose(np.linspace(10.0, 5.0, 7), construction="control_a")]),
                   coupling=pd.DataFrame({"layer": np.arange(L), "method": "cpm", "cohens_d": 0.1,
                                          "fdr_significant": False}),
                   summary={"block_coupling.coupling_score": 0.1, "trajectories.lss_median": 7.0})
    got = _by_claim(claims.evaluate(run, _twin()))
    # The demo's 94.0 % at d = 576 sits below the Ginibre value: no evidence of rotation.
    assert got["complex_pairs"]["verdict"] == claims.NULL and "below" in got["complex_pairs"]["note"]
    assert got["init_cluster"]["verdict"] == claims.FAILS  # the trained run clusters more than its twin
    assert got["depth_regimes"]["verdict"] == claims.FAILS
    assert got["funnel"]["verdict"] == claims.FAILS
    assert got["dose_response"]["verdict"] == claims.FAILS and "steadily" in got["dose_response"]["note"]
    assert got["control_a"]["verdict"] == claims.FAILS
    assert got["boundary_layers"]["verdict"] == claims.NULL
    assert got["coupling_score"]["verdict"] == claims.FAILS and got["line_shape"]["verdict"] == claims.FAILS
    # Self-alignment flat at k/d in every regime: what unrelated subspaces (or a normal matrix) give.
    flat = _by_claim(claims.evaluate(_trained(layers=_layers(0.99, np.full(L, K / D + 0.01))), None))
    assert flat["depth_regimes"]["verdict"] == claims.NULL
    # Boundary layers as many at init as trained: not learned.
    same = _twin(coupling=_trained().coupling)
    assert _by_claim(claims.evaluate(_trained(), same))["boundary_layers"]["verdict"] == claims.FAILS


def test_newer_contract_ordering_band_skip_rows_and_joint_null():
    band_rows = [_dose(np.array(FALLING) * f, construction="order_draw", draw=i, beta=1.0)
                 for i, f in enumerate((0.95, 1.0, 1.05, 1.02))]
    skip = [_dose(np.full(7, v), construction="skip", beta=b) for b, v in ((0.0, 50.0), (0.5, 20.0), (1.0, 7.12))]
    dose = pd.concat([_dose(FALLING, beta=1.0), _dose(np.linspace(45.4, 80, 7), construction="control_a", beta=1.0),
                      *band_rows, *skip], ignore_index=True)
    meso = pd.concat([pd.DataFrame({"layer": np.arange(L), "method": "cpm", "null": null, "operator": op, "z": z})
                      for null, op, z in (("independent", "J", 40.0), ("joint", "J", 10.0), ("joint", "R", 3.0))],
                     ignore_index=True)
    got = _by_claim(claims.evaluate(_trained(schur_dose=dose, mesoscale=meso), _twin()))
    d = got["dose_response"]
    assert d["verdict"] == claims.HOLDS and "ordering band" in d["null"]
    assert f"{45.4 * 0.1:.3g}" in d["note"]  # band = 45.4 × (1.05 − 0.95)
    assert "β = 0: 50" in got["mode_r"]["note"] and got["mode_r"]["run"] == "no mode-R rows"
    assert got["mode_r"]["verdict"] == claims.TAUTOLOGICAL
    m = got["mesoscale"]
    assert m["verdict"] == claims.HOLDS and m["run"] == "8 / 8 (joint, R)"  # R preferred to J under the joint null

    # A dose effect no larger than the spread over eigenvalue orders is not resolved.
    wide = [_dose(np.array(FALLING) * f, construction="order_draw", draw=i, beta=1.0)
            for i, f in enumerate((0.2, 1.0, 1.9))]
    dose2 = pd.concat([_dose(FALLING, beta=1.0), *wide], ignore_index=True)
    assert _by_claim(claims.evaluate(_trained(schur_dose=dose2), None))["dose_response"]["verdict"] == claims.NULL
    # Joint null on R not beaten: indistinguishable.
    meso2 = meso.assign(z=np.where(meso["null"] == "joint", 0.5, 40.0))
    assert _by_claim(claims.evaluate(_trained(mesoscale=meso2), None))["mesoscale"]["verdict"] == claims.NULL


def test_every_claim_degrades_to_not_computed():
    empty = _tables()
    got = claims.evaluate(empty, None)
    assert len(got) == len(claims.CLAIMS)
    assert set(got["verdict"]) == {claims.NOT_COMPUTED, claims.TAUTOLOGICAL}
    assert got.loc[got["verdict"] == claims.TAUTOLOGICAL].index.tolist() == [6]
    # A run with every stage but no twin: the trained-vs-init claims need the twin.
    got = _by_claim(claims.evaluate(_trained(), None))
    for name in ("funnel", "coupling_score", "line_shape", "init_cluster"):
        assert got[name]["verdict"] == claims.NOT_COMPUTED, name
        assert "--init random" in got[name]["note"]
    assert got["funnel"]["run"] == "7"
    # A random-init run judges the init claim on itself, and the others say why not.
    got = _by_claim(claims.evaluate(_twin(), None))
    assert got["init_cluster"]["verdict"] == claims.HOLDS
    assert "itself random-init" in got["funnel"]["note"]


def test_truncated_product_is_noted():
    summary = {"block_coupling.coupling_score": 0.4, "trajectories.lss_median": 4.25, "cumulative.k": 512.0}
    for run in (_trained(summary=summary),  # the rank the stage used, as its summary row records it
                _trained(summary={k: v for k, v in summary.items() if k != "cumulative.k"},
                         manifest={"cumulative_rank": 512})):  # else the manifest's setting
        note = _by_claim(claims.evaluate(run, _twin()))["funnel"]["note"]
        assert "truncated at K_cum = 512 < d = 576" in note


def test_every_verdict_has_an_explanation_and_an_icon():
    assert set(claims.VERDICTS) == set(claims.ICONS)
    assert all(s.endswith(".") and len(s) > 20 for s in claims.VERDICTS.values())


def test_ginibre_threshold_is_two_sd():
    sd = nulls.ginibre_complex_fraction_sd(D)
    null = nulls.ginibre_complex_fraction(D)
    just_above = _by_claim(claims.evaluate(_trained(layers=_layers(null + 2.5 * sd, np.linspace(0.3, 0.9, L))), None))
    just_within = _by_claim(claims.evaluate(_trained(layers=_layers(null + 1.5 * sd, np.linspace(0.3, 0.9, L))), None))
    assert just_above["complex_pairs"]["verdict"] == claims.HOLDS
    assert just_within["complex_pairs"]["verdict"] == claims.NULL
    assert sd == pytest.approx(0.0059, abs=1e-4)


def _snapshots(degenerate=(0, 2), n=128) -> pd.DataFrame:
    """2L + 1 snapshots; those in ``degenerate`` hold 8 distinct states of PR 1.7 (the audit's snapshot 0)."""
    s = np.arange(2 * L + 1)
    bad = np.isin(s, degenerate)
    return pd.DataFrame({"snapshot": s, "n_distinct": np.where(bad, 8, n), "rank": np.where(bad, 7, n - 1),
                         "participation_ratio": np.where(bad, 1.7, 10.0)})


def test_a_claim_that_holds_only_through_degenerate_layers_gets_the_degenerate_verdict():
    manifest = {"n_samples": 128}
    coupling = pd.DataFrame({"layer": np.arange(L), "method": "cpm", "cohens_d": 0.3,
                             "fdr_significant": [True, True] + [False] * (L - 2)})
    meso = pd.DataFrame({"layer": np.arange(L), "method": "cpm", "null": "joint", "operator": "R",
                         "snapshot_in": 2 * np.arange(L), "snapshot_out": 2 * np.arange(L) + 2,
                         "z": [20.0, 20.0] + [0.0] * (L - 2)})
    clean = _by_claim(claims.evaluate(_trained(coupling=coupling, mesoscale=meso, manifest=manifest), None))
    assert clean["boundary_layers"]["verdict"] == claims.HOLDS and clean["mesoscale"]["verdict"] == claims.HOLDS
    run = _trained(coupling=coupling, mesoscale=meso, manifest=manifest, snapshots=_snapshots())
    assert run.degenerate_layers() == [0, 1]
    rows = _by_claim(claims.evaluate(run, None))
    for name in ("boundary_layers", "mesoscale"):
        assert rows[name]["verdict"] == claims.DEGENERATE, rows[name]
        assert "layer(s) 0, 1 read a degenerate sample" in rows[name]["note"]
    # A whole-stack claim cannot drop layers: its note names them, its verdict stays.
    assert rows["funnel"]["verdict"] == clean["funnel"]["verdict"]
    assert "the product includes layer(s) 0, 1" in rows["funnel"]["note"]
    # Significant layers beyond the degenerate ones: the claim still holds, and says so.
    coupling["fdr_significant"] = [True] * 5 + [False] * (L - 5)
    rows = _by_claim(claims.evaluate(_trained(coupling=coupling, manifest=manifest, snapshots=_snapshots()), None))
    assert rows["boundary_layers"]["verdict"] == claims.HOLDS and "still holds without" in rows["boundary_layers"]["note"]
    assert claims.DEGENERATE in claims.VERDICTS and "participation ratio < 3" in claims.VERDICTS[claims.DEGENERATE]
