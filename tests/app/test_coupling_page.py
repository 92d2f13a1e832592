"""The Block coupling page, rendered on its own under AppTest.

The shared synthetic runs get METHODS §9 tables built with the stage's own table builders from
planted Jacobians and trajectories: the trained-like run's Jacobians share singular vectors (small
m̃) and its trajectories drift along one direction (low LSS); the random-init-like run has
unrelated Jacobians and random-walk trajectories.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ortho_group
from streamlit.testing.v1 import AppTest

from resdyn.core import block_coupling as bc
from resdyn.core import trajectory as tj
from resdyn.core.figures import coupling as fig
from resdyn.core.store import RunStore
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN
from tests.figtools import decode

PAGES = Path(__file__).resolve().parents[2] / "pages"
L, D = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]
KS = [10, 30]
W = 3  # token window
S = 2  # coupling prompts


def _jacobians(rng, n: int, coupled: bool) -> np.ndarray:
    """n (d, d) Jacobians: one shared singular basis plus small noise, or unrelated Gaussians."""
    if not coupled:
        return rng.normal(size=(n, D, D))
    u, v = ortho_group.rvs(D, random_state=rng), ortho_group.rvs(D, random_state=rng)
    s = np.sort(rng.uniform(0.2, 4.0, size=(n, D)), axis=1)[:, ::-1]
    return np.einsum("ij,nj,kj->nik", u, s, v) + 0.02 * rng.normal(size=(n, D, D))


def write_coupling_tables(store: RunStore, coupled: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames, a0 = [], None
    rel = np.arange(-W, 0)
    for sample in range(S):
        jac = _jacobians(rng, L, coupled)
        m = tj.depth_coupling(jac, KS)
        frames.append(bc.coupling_rows("depth", KS, m, np.arange(L)[:, None], np.arange(L)[None], -1, -1, np.nan,
                                      sample))
        if sample == 0:
            a0 = tj.coupling_matrices(jac, max(KS)).astype(np.float32)
        for l in range(L):
            tw = tj.token_coupling(_jacobians(rng, W * W, coupled).reshape(W, W, D, D), KS)
            frames.append(bc.coupling_rows("self", KS, tw["self"], l, l, rel[:, None], rel[None], np.nan, sample))
            f, x, y = rel[:, None, None], rel[None, :, None], rel[None, None, :]
            frames.append(bc.coupling_rows("fixed_input", KS, tw["fixed_input"], l, l, x, y, f, sample))
            frames.append(bc.coupling_rows("fixed_output", KS, tw["fixed_output"], l, l, x, y, f, sample))
    rows = bc.aggregate_rows(pd.concat(frames, ignore_index=True))
    store.write_table("block_coupling", rows)
    store.write_array("block_coupling_A", a0)
    traj_rows, pcas = [], []
    width = min(tj.WINDOW, L + 1)
    for sample in range(SYNTHETIC_SIZES["n_samples"]):
        T = int(rng.integers(4, 8))
        drift = rng.normal(size=D) * (3.0 if coupled else 0.0)
        steps = rng.normal(size=(T, L, D)) + drift
        traj = np.concatenate([rng.normal(size=(T, 1, D)), steps], axis=1).cumsum(axis=1)
        traj_rows.append(tj.trajectory_rows(traj, sample, width))
        if sample < S:
            pcas.append(tj.pca_rows(traj, sample))
    table = pd.concat(traj_rows, ignore_index=True)
    store.write_table("trajectories", table)
    store.write_table("trajectory_pca", pd.concat(pcas, ignore_index=True))
    if coupled:  # the trained run has the stored quartiles; the random one (older runs) has not
        store.write_table("trajectory_windows", tj.window_quantiles(table))
    store.update_summary({**bc.coupling_summary(rows, KS), **tj.trajectory_summary(table, width)})


@pytest.fixture(scope="module")
def coupling_root(tmp_path_factory, synthetic_runs_dir) -> Path:
    root = tmp_path_factory.mktemp("coupling_page")
    shutil.copytree(synthetic_runs_dir, root, dirs_exist_ok=True)
    write_coupling_tables(RunStore(root / TRAINED_RUN), coupled=True, seed=0)
    write_coupling_tables(RunStore(root / RANDOM_RUN), coupled=False, seed=1)
    return root


def _page(root: Path, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    at = AppTest.from_file(str(PAGES / "block_coupling.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _titles(at: AppTest) -> list[str]:
    return [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]


def _figure(at: AppTest, title_start: str) -> dict:
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if spec["layout"]["title"]["text"].startswith(title_start):
            return spec
    raise AssertionError(f"no figure titled {title_start!r}: {_titles(at)}")


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _rows(root: Path, run: str) -> pd.DataFrame:
    return RunStore(root / run).read_table("block_coupling")


def test_page_shows_depth_heatmap_grid_tokens_trajectories_and_comparison(coupling_root, monkeypatch):
    at = _page(coupling_root, monkeypatch, run=TRAINED_RUN, layer="1")
    assert not at.exception and not at.error
    # Depth-wise heat map: the aggregate rows at the default K = 30.
    depth = _figure(at, "Depth-wise coupling, K = 30")
    rows = _rows(coupling_root, TRAINED_RUN)
    agg = rows[(rows.kind == "depth") & rows["aggregate"] & (rows.K == 30)]
    np.testing.assert_allclose(np.asarray(decode(depth["data"][0]["z"]), float), fig.depth_matrix(agg, L))
    summary = RunStore(coupling_root / TRAINED_RUN).read_table("summary").set_index("name")["value"]
    assert _metric(at, "coupling score 1 − m̃") == f"{summary['block_coupling.coupling_score']:.3f}"
    # |A| grid over layers 1..(1 + 3 capped at L − 1 = 3): 3 × 3 images.
    grid = _figure(at, "|A| of the first prompt")
    (heat,) = grid["data"]  # one heatmap of 3 × 3 tiles
    assert heat["type"] == "heatmap" and grid["layout"]["yaxis"]["ticktext"] == ["J^1", "J^2", "J^3"]
    # Token-wise (self, mean over prompts) at layer 1.
    tok = _figure(at, "Token-wise coupling at layer 1, K = 30")
    self_rows = rows[(rows.kind == "self") & rows["aggregate"] & (rows.K == 30) & (rows.layer_a == 1)]
    z = np.asarray(decode(tok["data"][0]["z"]), float)
    assert z.shape == (W, W)
    expected = self_rows.pivot(index="token_a", columns="token_b", values="miscoupling").to_numpy()
    np.testing.assert_allclose(z, expected)
    # Trajectory windows (5 states: one window centred at layer 2) and the PCA of prompt 0.
    lss = _figure(at, "line-shape score")
    traj = RunStore(coupling_root / TRAINED_RUN).read_table("trajectories")
    assert np.asarray(decode(lss["data"][2]["y"]), float) == pytest.approx(
        [traj.loc[traj.layer == 2, "lss_window"].median()], rel=1e-6)
    pca = _figure(at, "Token trajectories")
    assert [t["name"] for t in pca["data"]] == ["token trajectories", "states x_t^l", "last token"]
    # Comparison: both runs; the trained-like one is more coupled and straighter.
    # The random run has no trajectory_windows: its curve in the comparison comes from the table.
    cmp = _figure(at, "Windowed LSS, median and IQR per run")
    rnd = RunStore(coupling_root / RANDOM_RUN).read_table("trajectories")
    medians = [np.asarray(decode(t["y"]), float) for t in cmp["data"] if t.get("name") == RANDOM_RUN]
    assert medians and medians[0] == pytest.approx([rnd.loc[rnd.layer == 2, "lss_window"].median()], rel=1e-6)
    table = at.dataframe[0].value.set_index("run")
    assert set(table.index) == {TRAINED_RUN, RANDOM_RUN}
    assert table.loc[TRAINED_RUN, "coupling score"] > table.loc[RANDOM_RUN, "coupling score"] + 0.3
    assert table.loc[TRAINED_RUN, "median LSS"] < table.loc[RANDOM_RUN, "median LSS"]
    overlay = _figure(at, "Coupling of each layer with the rest")
    assert {t["name"] for t in overlay["data"]} == {TRAINED_RUN, RANDOM_RUN}


def test_page_follows_k_and_token_kind(coupling_root, monkeypatch):
    at = _page(coupling_root, monkeypatch, run=RANDOM_RUN, layer="2")
    at.sidebar.selectbox(key="_sel_coupling_k").set_value(10).run()
    at.radio(key="_sel_coupling_kind").set_value("fixed_input").run()
    assert not at.exception
    rows = _rows(coupling_root, RANDOM_RUN)
    agg = rows[(rows.kind == "depth") & rows["aggregate"] & (rows.K == 10)]
    depth = _figure(at, "Depth-wise coupling, K = 10")
    np.testing.assert_allclose(np.asarray(decode(depth["data"][0]["z"]), float), fig.depth_matrix(agg, L))
    # Fixed input token: default the last one (−1), so only t2 = t2′ = −1 is causal.
    tok = _figure(at, "Token-wise coupling at layer 2, K = 10")
    sel = rows[(rows.kind == "fixed_input") & rows["aggregate"] & (rows.K == 10) & (rows.layer_a == 2)
               & (rows.token_fixed == -1)]
    assert len(sel) == 1
    assert np.asarray(decode(tok["data"][0]["z"]), float).ravel() == pytest.approx(sel["miscoupling"].to_list())
    at.selectbox(key="_sel_coupling_fixed").set_value(-3).run()
    tok = _figure(at, "Token-wise coupling at layer 2, K = 10")
    assert np.asarray(decode(tok["data"][0]["z"]), float).shape == (W, W)


def test_page_without_the_stages_says_what_to_compute(synthetic_runs_dir, monkeypatch):
    at = _page(synthetic_runs_dir, monkeypatch, run=TRAINED_RUN)
    assert not at.exception and not at.error
    assert any("--stages block_coupling,trajectories" in c.value for c in at.caption)
    assert not at.get("plotly_chart")
