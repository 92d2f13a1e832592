"""A page of a run being computed, in a real browser: its progress moves and the stage's figures
appear as the stage lands, with no reload, and the panel goes when the computation ends.

The "computation" is a small process that holds the run's lock and writes progress.json through
``ProgressWriter`` like the pipeline, then lands the spectra stage (the tables of a finished
synthetic run of the same shape). Files ``go`` and ``end`` in its folder pace it, so the browser
sees each phase.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from resdyn.testing.synthetic import make_synthetic_run
from tests.e2e.serve import serve
from tests.e2e.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, _exceptions, _settle, _shot, chromium  # noqa: F401

RUN = "being-computed"
COMPUTE = textwrap.dedent("""
    import os, shutil, sys, time
    from pathlib import Path
    from resdyn import stages
    from resdyn.core import progress
    from resdyn.core.store import LOCK, RunStore

    run, donor, ctl = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    store = RunStore(run)
    (run / LOCK).write_text(str(os.getpid()))
    w = progress.ProgressWriter(store, stages.missing(store.manifest()), min_interval=0)
    w.start_stage("spectra")
    w.step("eigenvalues", 1, 16, "layer")
    (ctl / "ready").write_text("")
    while not (ctl / "go").exists():
        time.sleep(0.1)
    for i in range(2, 9):
        time.sleep(0.6)
        w.step("eigenvalues", i, 16, "layer")
    for f in ("layers.parquet", "eigenvalues.parquet"):
        shutil.copy(donor / f, run / f)
    store.mark_stage_done("spectra", 5.0, stages.names(), outputs=("layers.parquet", "eigenvalues.parquet"))
    w.end_stage("spectra", 5.0)
    w.start_stage("cumulative")
    while not (ctl / "end").exists():
        time.sleep(0.1)
    w.close()
    (run / LOCK).unlink()
""")


@pytest.fixture
def live_server(tmp_path, chromium):  # noqa: F811 - the fixture imported above
    root, donors, ctl = tmp_path / "runs", tmp_path / "donors", tmp_path / "ctl"
    ctl.mkdir()
    make_synthetic_run(root, RUN, n_layers=4, d=16, n_samples=4, status="partial")
    make_synthetic_run(donors, "donor", n_layers=4, d=16, n_samples=4)
    proc = subprocess.Popen([sys.executable, "-c", COMPUTE, str(root / RUN), str(donors / "donor"), str(ctl)])
    try:
        with serve(root, tmp_path / "streamlit.log") as url:
            yield url, ctl, proc
    finally:
        (ctl / "end").write_text("")
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_progress_moves_and_figures_land_without_a_reload(live_server, chromium):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, ctl, proc = live_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for _ in range(200):
            if (ctl / "ready").exists():
                break
            page.wait_for_timeout(100)
        page.goto(f"{url}/spectrum?run={RUN}", timeout=TIMEOUT_MS)
        _settle(page)
        bar = page.locator("[data-testid='stProgress']")
        assert "1 of 16 layer" in bar.inner_text() and "on their way" in page.inner_text("body")
        assert "Finish it with" not in page.inner_text("body")
        assert page.locator(".js-plotly-plot").count() == 0  # no eigenvalues yet
        loads = []
        page.on("load", lambda _: loads.append(1))
        (ctl / "go").write_text("")
        # The panel refreshes itself: the count moves on while the stage runs ...
        page.wait_for_function("() => /[2-8] of 16 layer/.test(document.body.innerText)", timeout=30_000)
        # ... and when the stage lands the page redraws with its figures.
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
        assert "**cumulative**" not in page.inner_text("body")  # Markdown was rendered, not shown raw
        page.wait_for_function("() => /Computing cumulative/.test(document.body.innerText)", timeout=30_000)
        _shot(page, "live-progress")
        (ctl / "end").write_text("")
        proc.wait(timeout=20)
        # The computation ended: the panel goes, and the page gives the command for what is left.
        page.wait_for_function("() => !document.querySelector(\"[data-testid='stProgress']\")", timeout=30_000)
        page.wait_for_function("() => /Finish it with/.test(document.body.innerText)", timeout=30_000)
        assert not loads, "the page was reloaded"
        assert not _exceptions(page)
        browser.close()
