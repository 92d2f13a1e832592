"""End to end in a real browser: ``streamlit run app.py`` served on a free localhost port, every page
opened in headless Chromium (Debian's ``chromium``, driven by Playwright through ``executable_path``).

Checks: every page draws its Plotly charts (the DOM plotly.js builds) and shows no exception box;
the dose slider changes the Schur-surgery readout; the SVG and PNG buttons download images made
in the browser; two browser sessions on different runs at once each get their own run; a bad link
warns instead of failing. Screenshots go to ``artifacts/e2e/`` (git-ignored).

The runs are the shared synthetic fixture runs (L = 4, d = 32) with the numpy-only stages added
(cumulative, schur, pseudospectra, communities, topology_coupling), so every page that does not
need a model has something to draw. Chromium comes from the Makefile's ``test`` target; the test
tries ``apt-get install chromium`` itself when it is missing and skips only if that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resdyn.compute.context import RunContext
from resdyn.config import RunConfig
from resdyn.core.store import RunStore
from tests.conftest import RANDOM_RUN, TRAINED_RUN
from tests.e2e.serve import serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
# URL path of each page (st.Page names it after the file) -> least number of Plotly charts on a
# run with every numpy-only stage.
PAGES = {
    "": 1,  # Runs (the default page): the regime profile
    "spectrum": 2,
    "claims": 0,  # a table, no figure
    "operator_type": 6,
    "bottleneck": 3,
    "schur_surgery": 3,
    "communities": 3,
    "topology_dynamics": 3,
    "block_coupling": 0,  # needs a model (in-context Jacobians): the page names the missing stages
    "compare": 1,
}
PAGE_FILES = {"": "runs"}
READY = "[data-testid='stApp'][data-test-script-state='notRunning']"
TIMEOUT_MS = 90_000  # first renders on a busy 2-core machine


def _chromium() -> str | None:
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        # The Makefile installs it; this covers `pytest` run by hand on a fresh machine.
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
        path = shutil.which("chromium")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("Debian's chromium is not installed and `apt-get install chromium` failed")
    return path


@pytest.fixture(scope="module")
def e2e_runs(synthetic_runs_dir, tmp_path_factory) -> Path:
    """Copies of the two synthetic runs with every stage that needs no model."""
    from resdyn.compute.stages import stages_named

    root = tmp_path_factory.mktemp("e2e") / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    for run in (TRAINED_RUN, RANDOM_RUN):
        ctx = RunContext(RunConfig(runs_dir=root, run_id=run), RunStore(root / run), quiet=True)
        for stage in stages_named("cumulative", "schur", "pseudospectra", "communities", "topology_coupling"):
            stage.fn(ctx)
    return root


@pytest.fixture(scope="module")
def server(e2e_runs, chromium, tmp_path_factory):
    """``streamlit run app.py`` on a free loopback port; yields its base URL."""
    with serve(e2e_runs, tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(page, url: str) -> None:
    page.goto(url, timeout=TIMEOUT_MS)
    _settle(page)


def _settle(page) -> None:
    """Wait until the script run that the last action started has finished and the DOM is drawn."""
    page.wait_for_timeout(300)  # let a rerun begin before waiting for its end
    page.wait_for_selector(READY, timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)


def _exceptions(page) -> list[str]:
    return [e.inner_text()[:2000] for e in page.locator("[data-testid='stException']").all()]


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _metric(page, label_start: str) -> tuple[str, str]:
    """(label, value) of the first st.metric whose label starts with ``label_start`` (waiting for
    it: on a loaded machine the readouts can land after the script-state flag)."""
    page.wait_for_function(
        "(start) => [...document.querySelectorAll(\"[data-testid='stMetricLabel']\")]"
        ".some(e => e.innerText.trim().startsWith(start))", arg=label_start, timeout=TIMEOUT_MS)
    for m in page.locator("[data-testid='stMetric']").all():
        label = m.locator("[data-testid='stMetricLabel']").inner_text().strip()
        if label.startswith(label_start):
            return label, m.locator("[data-testid='stMetricValue']").inner_text().strip()
    raise AssertionError(f"no metric labelled {label_start!r}")


def test_every_page_of_the_navigation_is_opened():
    from tests.app.pagelist import app_pages

    assert sorted(PAGE_FILES.get(p, p) for p in PAGES) == sorted(Path(p).stem for p in app_pages())


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_draws_its_plots_without_an_exception(server, browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    try:
        _open(page, f"{server}/{path}?run={TRAINED_RUN}")
        name = path or "runs"
        _shot(page, name)
        assert _exceptions(page) == []
        charts = page.locator(".js-plotly-plot")
        if PAGES[path]:
            charts.first.wait_for(timeout=TIMEOUT_MS)
            assert charts.count() >= PAGES[path]
            # plotly.js drew into the chart (an SVG with a plot area), not just an empty div.
            assert page.locator(".js-plotly-plot .main-svg").count() >= PAGES[path]
        elif path == "claims":
            page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=TIMEOUT_MS)
        else:
            assert "block_coupling" in page.locator("[data-testid='stMain']").inner_text()
    finally:
        page.close()


def test_dose_slider_changes_the_readout(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        _open(page, f"{server}/schur_surgery?run={TRAINED_RUN}&c=1.00")
        label, before = _metric(page, "erank(P_{0:L−1})")
        assert "c = 1.00" in label
        slider = page.locator("[data-testid='stSidebar'] input[type='range'][aria-label='Dose c']")
        assert slider.get_attribute("value") == "1"
        slider.focus()
        page.keyboard.press("Home")  # to the slider's minimum: c = 0, every J̄_l made normal
        _settle(page)
        page.wait_for_function("() => location.search.includes('c=0.00')", timeout=TIMEOUT_MS)
        # On a loaded machine the rerun may start late: wait for the new readout itself.
        page.wait_for_function(
            "() => [...document.querySelectorAll(\"[data-testid='stMetricLabel']\")]"
            ".some(e => e.innerText.includes('c = 0.00'))", timeout=TIMEOUT_MS)
        _settle(page)
        label, after = _metric(page, "erank(P_{0:L−1})")
        _shot(page, "schur_surgery_c0")
        assert "c = 0.00" in label
        assert after != before  # without the non-normal part, a different effective rank
        assert _exceptions(page) == []
    finally:
        page.close()


def test_svg_and_png_buttons_download_from_the_browser(server, browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    try:
        _open(page, f"{server}/operator_type?run={TRAINED_RUN}")
        chart = page.locator(".js-plotly-plot").first
        chart.locator(".resdyn-png").wait_for(state="attached", timeout=TIMEOUT_MS)
        chart.hover()  # the modebar shows on hover
        got = {}
        for fmt, selector in (("svg", ".modebar-btn[data-title='Download plot as SVG']"), ("png", ".resdyn-png")):
            with page.expect_download(timeout=TIMEOUT_MS) as info:
                chart.locator(selector).click()
            dl = info.value
            got[fmt] = (dl.suggested_filename, Path(dl.path()).read_bytes())
        assert got["svg"][0] == "operator-self-alignment.svg" and got["svg"][1].startswith(b"<svg")
        assert got["png"][0] == "operator-self-alignment.png" and got["png"][1][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        context.close()


def test_two_sessions_on_different_runs_at_once(server, browser):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1400}) for _ in range(2)]
    pages = [c.new_page() for c in contexts]
    runs = (TRAINED_RUN, RANDOM_RUN)
    try:
        # Start both loads before waiting for either, so the server runs the two sessions together.
        for page, run in zip(pages, runs):
            page.goto(f"{server}/spectrum?run={run}&layer=2", wait_until="commit", timeout=TIMEOUT_MS)
        values = []
        for page, run in zip(pages, runs):
            _settle(page)
            page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT_MS)
            assert _exceptions(page) == []
            assert page.locator("[data-testid='stSidebar'] input[aria-label='Run']").input_value() == run
            values.append(_metric(page, "complex pairs, layer 2")[1])
            _shot(page, f"concurrent_{run}")
        # Each session kept its own run: the random-init run's layer-2 spectrum is not the trained one's.
        assert values[0] != values[1]
        assert all(r in p.url for p, r in zip(pages, runs))
    finally:
        for c in contexts:
            c.close()


def test_a_bad_link_warns_and_falls_back(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        _open(page, f"{server}/operator_type?run=nope&layer=99")
        text = page.locator("[data-testid='stSidebar']").inner_text()
        assert "'nope'" in text and "'99'" in text
        assert _exceptions(page) == []
        page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT_MS)  # the fallback run is drawn
        assert "layer=0" in page.url and "run=synthetic-" in page.url
    finally:
        page.close()
