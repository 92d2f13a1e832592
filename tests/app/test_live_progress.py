"""Pages of a run being computed: they show the running stage, its progress and the time left,
refresh by themselves, and never suggest computing what the live computation is writing.

A run is live while the pid in its ``.lock`` is alive; here that is this test process, or a
sleeping subprocess that writes no progress file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

from resdyn import stages
from resdyn.core import progress
from resdyn.core.store import LOCK, RunStore
from resdyn.testing.synthetic import make_synthetic_run
from resdyn.ui.live import REFRESH_S
from tests.app.apptools import open_page

RUN = "half-done"
FINISH = "Finish it with"


@pytest.fixture
def runs(synthetic_runs_dir, tmp_path, monkeypatch):
    """The shared runs plus a partial one (activations and Jacobians only), as RESDYN_RUNS_DIR."""
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    make_synthetic_run(root, RUN, n_layers=4, d=16, n_samples=4, status="partial")
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    return root


@pytest.fixture
def auto_reruns(monkeypatch) -> list[float]:
    """The intervals of the self-refreshing fragments the page declares (Streamlit's auto_rerun)."""
    seen = []

    def record(msg):
        if msg.HasField("auto_rerun"):
            seen.append(msg.auto_rerun.interval)

    monkeypatch.setattr(ForwardMsgQueue, "_before_enqueue_msg", record)
    return seen


def _computing(root, pid: int) -> progress.ProgressWriter:
    """Hold the run's lock with ``pid`` and report the spectra stage 3 of 4 layers in, after 30 s."""
    store = RunStore(root / RUN)
    (store.path / LOCK).write_text(str(pid))
    clock = [time.time() - 30]
    w = progress.ProgressWriter(store, stages.missing(store.manifest()), clock=lambda: clock[0], min_interval=0)
    w.start_stage("spectra")
    w.step("eigenvalues", 0, 4, "layer")
    clock[0] += 30
    w.step("eigenvalues", 3, 4, "layer")  # 10 s per layer: 10 s left in this step
    return w


def _texts(at) -> str:
    parts = [e.value for kind in ("info", "warning", "caption", "markdown", "error") for e in getattr(at, kind)]
    return " ".join(parts + [p.text for p in at.get("progress")])


def test_a_live_run_shows_its_progress_says_on_its_way_and_refreshes(runs, auto_reruns):
    _computing(runs, os.getpid())
    at = open_page("pages/spectrum.py", run=RUN)
    assert not at.exception, [e.value for e in at.exception]
    text = _texts(at)
    assert FINISH not in text and "python -m resdyn.compute run" not in text  # no second computation
    assert "being computed" in text and "on their way" in text
    assert "`spectra` is on its way" in text  # the empty view's note, for the table spectra writes
    (bar,) = at.get("progress")
    assert bar.value == 75 and "**spectra** (stage 1 of" in bar.text and "3 of 4 layer" in bar.text
    assert "s left in this step" in bar.text and "running for 3" in bar.text  # 30 s and counting
    assert auto_reruns == [REFRESH_S]  # the progress panel reruns itself every REFRESH_S seconds


def test_the_runs_page_lists_the_run_as_computing(runs, auto_reruns):
    _computing(runs, os.getpid())
    at = open_page("pages/runs.py", run=RUN)
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("run_id")
    assert table.loc[RUN, "status"] == "computing" and table["status"].tolist().count("computing") == 1
    (bar,) = at.get("progress")
    assert bar.text.startswith(f"`{RUN}`: Computing **spectra**")
    assert FINISH not in _texts(at)
    assert auto_reruns == [REFRESH_S]


def test_a_lock_held_by_a_process_that_reports_nothing_still_means_on_its_way(runs, auto_reruns):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (runs / RUN / LOCK).write_text(str(sleeper.pid))
        at = open_page("pages/operator_type.py", run=RUN)
        assert not at.exception, [e.value for e in at.exception]
        text = _texts(at)
        assert FINISH not in text and "python -m resdyn.compute run" not in text
        assert f"pid {sleeper.pid}" in text and "does not report its progress" in text
        assert auto_reruns == [REFRESH_S]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_without_a_live_lock_the_page_gives_the_command_and_does_not_refresh(runs, auto_reruns):
    w = _computing(runs, os.getpid())
    (runs / RUN / LOCK).unlink()  # the computation was killed: its progress file stays behind
    at = open_page("pages/spectrum.py", run=RUN)
    assert not at.exception
    warning = " ".join(x.value for x in at.warning)
    assert FINISH in warning and f"--run-id {RUN}" in warning
    assert "--stages spectra" in " ".join(c.value for c in at.caption)
    assert not at.get("progress") and auto_reruns == []
    w.close()


def test_a_stage_outside_the_live_computation_is_offered_for_afterwards(runs):
    store = RunStore(runs / RUN)
    (store.path / LOCK).write_text(str(os.getpid()))
    w = progress.ProgressWriter(store, ["spectra"])  # a `--stages spectra` computation
    w.start_stage("spectra")
    at = open_page("pages/bottleneck.py", run=RUN)
    assert not at.exception
    text = _texts(at)
    assert "does not compute `cumulative`; once it ends" in text and "--stages cumulative" in text
    assert FINISH not in text


def test_a_missing_kappa_is_on_its_way_while_sample_stats_is_being_computed(synthetic_runs_dir, tmp_path,
                                                                           monkeypatch, auto_reruns):
    """The demo's order: spectra first, the per-sample statistics later. While the computation that
    writes them holds the lock, the Operator-type page's κ line says they are on their way."""
    from tests.app.test_pages import without_sample_stats

    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    run = "synthetic-trained"
    without_sample_stats(root, run)
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(root))
    store = RunStore(root / run)
    (store.path / LOCK).write_text(str(os.getpid()))
    w = progress.ProgressWriter(store, ["sample_stats"], min_interval=0)
    w.start_stage("sample_stats")
    w.step("sample_stats (isolated)", 8, 64, "J")
    at = open_page("pages/operator_type.py", run=run)
    assert not at.exception, [e.value for e in at.exception]
    (note,) = [i.value for i in at.info if "κ" in i.value and "sample_stats" in i.value]
    assert "`sample_stats` is on its way" in note and "python -m resdyn.compute run" not in note
    assert "**sample_stats**" in at.get("progress")[0].text
    assert auto_reruns == [REFRESH_S]
