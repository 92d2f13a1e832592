"""Every page renders under AppTest against synthetic runs, alone and through app.py's navigation.

Bad values from a pasted link (unknown run, layer out of range, unknown operator) must give a
warning and a fallback, never an exception.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resdyn import stages
from resdyn.testing.synthetic import make_synthetic_run
from tests.app.apptools import charts, open_page
from tests.app.pagelist import app_pages
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN

ROOT = Path(__file__).resolve().parents[2]
# page file -> number of plotly charts it shows for a complete run
PAGES = {"pages/runs.py": 1, "pages/claims.py": 1, "pages/spectrum.py": 2, "pages/operator_type.py": 6,
         "pages/compare.py": 1}
TIMEOUT = 60  # seconds; first imports are slow on a busy 2-core machine


_app = open_page


def _charts(at: AppTest) -> list[dict]:
    return charts(at, decoded=False)


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", app_pages())
def test_every_declared_page_renders_alone_with_only_the_run_in_the_link(synthetic_runs_env, page):
    """Every page app.py's navigation declares, so that a new page is tested without being listed."""
    at = _app(page, run=TRAINED_RUN)
    _no_exception(at)
    assert at.title and not at.error


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_standalone(synthetic_runs_env, page):
    at = _app(page)
    _no_exception(at)
    charts = _charts(at)
    assert len(charts) == PAGES[page]
    assert all(c["data"] for c in charts)  # every chart has traces
    assert at.title and not at.warning


def test_app_navigation_renders_every_page(synthetic_runs_env):
    at = _app("app.py")
    _no_exception(at)
    assert at.title[0].value == "Runs"  # the default page
    for page, n in PAGES.items():
        at.switch_page(page).run()
        _no_exception(at)
        assert len(at.get("plotly_chart")) == n


def test_runs_page_lists_every_run_with_its_facts(synthetic_runs_env):
    at = _app("pages/runs.py")
    df = at.dataframe[0].value
    assert sorted(df["run_id"]) == [RANDOM_RUN, TRAINED_RUN]
    row = df.set_index("run_id").loc[TRAINED_RUN]
    assert (row["status"], row["init"], row["d_model"], row["n_layers"], row["n_samples"]) == (
        "complete", "pretrained", SYNTHETIC_SIZES["d"], SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["n_samples"])
    assert "jacobians" in row["timings"] and row["seconds_jacobians"] >= 0
    assert df.set_index("run_id").loc[RANDOM_RUN, "init"] == "random"


@pytest.mark.parametrize("page", ["pages/spectrum.py", "pages/operator_type.py"])
def test_invalid_link_values_fall_back_with_a_warning(synthetic_runs_env, page):
    at = _app(page, run="nope", layer="999", op="X", layers="1,77,abc")
    _no_exception(at)
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "'nope'" in warnings and "'999'" in warnings
    assert at.sidebar.selectbox[0].value in (RANDOM_RUN, TRAINED_RUN)
    assert at.sidebar.slider[0].value == 0
    assert at.query_params["layer"] == "0" and at.query_params["run"] != "nope"
    assert len(at.get("plotly_chart")) == PAGES[page]


def test_non_numeric_layer_in_link(synthetic_runs_env):
    at = _app("pages/operator_type.py", layer="first")
    _no_exception(at)
    assert at.sidebar.slider[0].value == 0 and at.sidebar.warning


def test_link_selects_run_layer_and_operator(synthetic_runs_env):
    at = _app("pages/spectrum.py", run=TRAINED_RUN, layer="2", op="R", layers="0")
    _no_exception(at)
    assert at.sidebar.selectbox[0].value == TRAINED_RUN
    assert at.sidebar.slider[0].value == 2
    assert at.sidebar.radio[0].value == "R"
    scatter = _charts(at)[0]
    assert [t["name"] for t in scatter["data"] if t["type"] == "scattergl"] == ["layer 2", "layer 0"]
    assert "R = J̄ − I" in scatter["layout"]["title"]["text"]
    # Changing the layer in the sidebar updates the URL.
    at.sidebar.slider[0].set_value(3).run()
    assert at.query_params["layer"] == "3"


def test_presentation_mode_enlarges_figures(synthetic_runs_env):
    normal = _charts(_app("pages/operator_type.py"))[0]
    at = _app("pages/operator_type.py", present="1")
    _no_exception(at)
    big = _charts(at)[0]
    assert big["layout"]["font"]["size"] > normal["layout"]["font"]["size"]
    assert at.sidebar.toggle[0].value is True


def test_partial_run_shows_banner_and_what_it_has(synthetic_runs_dir, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    make_synthetic_run(root, "half-done", n_layers=2, d=16, n_samples=4, status="partial")
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    for page in [p for p in PAGES if p != "pages/compare.py"]:  # compare: tests/app/test_compare.py
        at = _app(page, run="half-done")
        _no_exception(at)
        banner = " ".join(w.value for w in at.warning)
        assert "partial" in banner and "missing stages: spectra" in banner
        assert not at.get("plotly_chart")  # no table to draw from, and no crash
    assert "layers.parquet" in " ".join(i.value for i in _app("pages/operator_type.py", run="half-done").info)


def without_sample_stats(root: Path, run: str) -> None:
    """Make ``run`` (under ``root``) a run whose spectra landed before its per-sample statistics, as
    ``make demo`` computes them: no samples or sample_profiles table, ``sample_stats`` not done."""
    from resdyn.core.store import RunStore

    store = RunStore(root / run)
    for f in stages.get("sample_stats").outputs:
        (store.path / f).unlink()
    store.invalidate({"sample_stats"})


def test_pages_draw_a_run_whose_spectra_came_before_its_per_sample_statistics(synthetic_runs_dir, tmp_path,
                                                                           monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    without_sample_stats(root, TRAINED_RUN)
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    for page in app_pages():
        at = _app(page, run=TRAINED_RUN) if page != "pages/compare.py" else _app(page, runs=TRAINED_RUN)
        _no_exception(at)
        assert not at.error, [e.value for e in at.error]
    at = _app("pages/operator_type.py", run=TRAINED_RUN)
    (note,) = [i.value for i in at.info if "sample_stats" in i.value]  # one line where κ would be
    assert "κ" in note and f"--run-id {TRAINED_RUN}" in note and "--stages sample_stats" in note
    assert len(at.get("plotly_chart")) == PAGES["pages/operator_type.py"] - 1  # every other profile
    assert "no κ statistics" not in json.dumps(_charts(at))
    at = _app("pages/compare.py", runs=TRAINED_RUN)
    options = at.sidebar.selectbox[0].options  # the profiles' labels
    assert "Henrici δ" in options and not [o for o in options if "κ" in o or "median over samples" in o]


def test_empty_runs_dir_says_how_to_make_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(tmp_path))
    for page in ["app.py", *PAGES]:
        at = _app(page)
        _no_exception(at)
        assert any("No runs" in i.value for i in at.info)


def _select_runs_script():
    from resdyn import ui

    ui.select_runs()


def test_select_runs_keeps_known_ids_from_the_link(synthetic_runs_env):
    at = AppTest.from_function(_select_runs_script, default_timeout=TIMEOUT)
    at.query_params["runs"] = f"{TRAINED_RUN},nope"
    at.run()
    _no_exception(at)
    assert at.sidebar.multiselect[0].value == [TRAINED_RUN]
    assert "'nope'" in at.sidebar.warning[0].value
    assert at.query_params["runs"] == TRAINED_RUN
