"""The Communities and Topology ↔ dynamics pages, each rendered on its own under AppTest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from resdyn.compute.stages import communities as communities_stage
from resdyn.compute.stages import topology_coupling as topology_coupling_stage
from resdyn.core import communities as T
from resdyn.compute.context import RunContext
from resdyn.config import RunConfig
from resdyn.core.store import RunStore
from tests.app.apptools import open_page
from tests.figtools import decode
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN
from tests.legacy import write_old_table

PAGES = Path(__file__).resolve().parents[2] / "pages"
L = SYNTHETIC_SIZES["n_layers"]


@pytest.fixture(scope="module")
def topo_root(tmp_path_factory, synthetic_runs_dir) -> Path:
    """The shared synthetic runs, copied; the trained one gets both topology stages (all methods),
    the random one none."""
    root = tmp_path_factory.mktemp("topo_pages")
    shutil.copytree(synthetic_runs_dir, root, dirs_exist_ok=True)
    ctx = RunContext(RunConfig(runs_dir=root, run_id=TRAINED_RUN, communities="all"),
                     RunStore(root / TRAINED_RUN), quiet=True)
    communities_stage.run(ctx)
    topology_coupling_stage.run(ctx)
    return root


def _page(name: str, root: Path, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    return open_page(PAGES / name, **params)


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_communities_page_shows_matrix_nmi_and_sizes(topo_root, monkeypatch):
    at = _page("communities.py", topo_root, monkeypatch, run=TRAINED_RUN)
    assert not at.exception and not at.error
    figs = _figures(at)
    assert len(figs) == 4  # matrix pair, zoomed block, NMI, sizes
    assert [t["type"] for t in figs[0]["data"]][:2] == ["heatmap", "heatmap"]
    comms = RunStore(topo_root / TRAINED_RUN).read_table("communities")
    cpm0 = comms[(comms.method == "cpm") & (comms.snapshot == 0)]
    assert _metric(at, "communities") == str(len(cpm0))
    nmi = np.asarray(decode(figs[2]["data"][0]["z"]), dtype=float)
    assert nmi.shape == (2 * L + 1, 2 * L + 1)  # every snapshot and the final state
    np.testing.assert_allclose(np.diag(nmi), 1.0, atol=1e-6)


def test_communities_page_follows_snapshot_and_method(topo_root, monkeypatch):
    at = _page("communities.py", topo_root, monkeypatch, run=TRAINED_RUN, snapshot="3")
    assert not at.exception
    at.selectbox(key="_sel_method").set_value("infomap").run()
    assert not at.exception
    comms = RunStore(topo_root / TRAINED_RUN).read_table("communities")
    expected = comms[(comms.method == "infomap") & (comms.snapshot == 3)]
    assert _metric(at, "communities") == str(len(expected))
    assert at.query_params["snapshot"] == "3"


@pytest.mark.parametrize("stored", [True, False])
def test_wide_runs_draw_block_mean_images_stored_or_computed(tmp_path, synthetic_runs_dir, monkeypatch, stored):
    """Above HEATMAP_MAX the overview is two images: from corr_blocks when the stage stored them,
    else computed on the page from the activations (older runs); both draw the same pixels."""
    import base64
    import io

    from PIL import Image

    from resdyn.core.figures import topology as F

    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, tmp_path / TRAINED_RUN)
    store = RunStore(tmp_path / TRAINED_RUN)
    ctx = RunContext(RunConfig(runs_dir=tmp_path, run_id=TRAINED_RUN), store, quiet=True)
    monkeypatch.setattr(communities_stage, "HEATMAP_MAX", 8)
    monkeypatch.setattr(F, "HEATMAP_MAX", 8)
    monkeypatch.setattr(F, "IMAGE_MAX_PX", 512)
    communities_stage.run(ctx)
    assert store.has_array("corr_blocks")
    if not stored:
        store.array_path("corr_blocks").unlink()
    at = _page("communities.py", tmp_path, monkeypatch, run=TRAINED_RUN, snapshot="2")
    assert not at.exception, [e.value for e in at.exception]
    images = [t for t in _figures(at)[0]["data"] if t["type"] == "image"]
    assert len(images) == 2
    got = [np.asarray(Image.open(io.BytesIO(base64.b64decode(t["source"].split(",", 1)[1]))).convert("RGB"))
           for t in images]
    units = store.read_table("units")
    lab = units[(units.snapshot == 2) & (units.method == "cpm")].sort_values("unit")["community"].to_numpy()
    from resdyn.core.correlation import block_correlation, overview_blocks, standardize

    zu = standardize(np.asarray(store.read_array("activations")[:, 2, :]))
    if stored:  # the float16 panels of the stage
        want = overview_blocks(zu, [lab])[0].astype(np.float32)
    else:  # computed on the page in float32
        want = [block_correlation(zu, o, 512)[0] for o in (np.arange(len(lab)), F.community_order(lab))]
    for img, panel in zip(got, want):
        np.testing.assert_array_equal(img, F.colormap_rgb(panel))


def test_topology_dynamics_page_shows_every_view(topo_root, monkeypatch):
    at = _page("topology_dynamics.py", topo_root, monkeypatch, run=TRAINED_RUN, layer="2")
    assert not at.exception and not at.error
    figs = _figures(at)
    assert len(figs) == 6  # scatter, Cohen's d, self-alignment, mesoscale, mesoscale z (4 panels), rate-level
    assert "R, joint null" in figs[3]["layout"]["title"]["text"]
    assert len([a for a in figs[4]["layout"]["annotations"] if "layers BH-significant" in a["text"]]) == 4
    assert any("Only the joint null on R supports" in c.value for c in at.caption)
    assert not at.info
    coup = RunStore(topo_root / TRAINED_RUN).read_table("coupling")
    d2 = coup[(coup.method == "cpm") & (coup.layer == 2)]["cohens_d"].iloc[0]
    assert _metric(at, "Cohen's d, layer 2") == f"{d2:+.3f}"
    table = at.dataframe[0].value
    assert len(table) == len(T.METHODS)


@pytest.mark.parametrize("page", ["communities.py", "topology_dynamics.py"])
def test_pages_say_what_is_missing_on_a_run_without_topology(topo_root, monkeypatch, page):
    at = _page(page, topo_root, monkeypatch, run=RANDOM_RUN)
    assert not at.exception
    assert not at.get("plotly_chart")
    assert any("units.parquet" in i.value for i in at.info)
    assert any("--stages communities" in c.value for c in at.caption)


def test_topology_dynamics_page_reads_a_mesoscale_table_from_before_the_joint_null(topo_root, monkeypatch, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(topo_root / TRAINED_RUN, root / TRAINED_RUN)
    store = RunStore(root / TRAINED_RUN)
    meso = store.read_table("mesoscale")
    old = meso[(meso["null"] == "independent") & (meso["operator"] == "J")].drop(columns=["null", "operator"])
    write_old_table(store, "mesoscale", old.reset_index(drop=True))
    at = _page("topology_dynamics.py", root, monkeypatch, run=TRAINED_RUN, layer="1")
    assert not at.exception and not at.error
    figs = _figures(at)
    assert len(figs) == 6
    assert "J̄, independent null" in figs[3]["layout"]["title"]["text"]
    assert [i.value for i in at.info] and "--redo topology_coupling" in at.info[0].value


def test_topology_dynamics_page_notes_a_mesoscale_table_from_before_bh(topo_root, monkeypatch, tmp_path):
    # A table of the unstratified 100-draw null (no q_bh / bh_significant): BH on read, and a note.
    root = tmp_path / "runs"
    shutil.copytree(topo_root / TRAINED_RUN, root / TRAINED_RUN)
    store = RunStore(root / TRAINED_RUN)
    meso = store.read_table("mesoscale")
    write_old_table(store, "mesoscale", meso.drop(columns=["q_bh", "bh_significant"]))
    at = _page("topology_dynamics.py", root, monkeypatch, run=TRAINED_RUN, layer="1")
    assert not at.exception and not at.error
    assert any("predates the stratified null" in c.value for c in at.caption)
    figs = _figures(at)
    assert len([a for a in figs[4]["layout"]["annotations"] if "layers BH-significant" in a["text"]]) == 4
