"""progress.json: what the writer puts in it (with a fake clock), that writes are atomic and
throttled, how a page decides a run is live, and that verify ignores the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from resdyn.core import progress, verify
from resdyn.core.store import LOCK, PROGRESS, RunStore
from resdyn.testing.synthetic import make_synthetic_run
from tests.conftest import TRAINED_RUN


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path) -> RunStore:
    make_synthetic_run(tmp_path, "live", n_layers=2, d=8, n_samples=4, status="partial")
    return RunStore(tmp_path / "live")


def _file(store: RunStore) -> dict:
    return json.loads((store.path / PROGRESS).read_text())


def test_writer_reports_stage_step_and_the_time_left(store):
    clock = Clock()
    w = progress.ProgressWriter(store, ["spectra", "cumulative"], {"spectra": 10.0, "cumulative": 20.0}, clock=clock)
    f = _file(store)
    assert (f["pid"], f["stages"], f["stage"], f["started"]) == (os.getpid(), ["spectra", "cumulative"], None, 1000.0)
    assert f["eta_s"] == 30.0  # nothing started: the two reference times
    w.start_stage("spectra")
    w.step("eigenvalues", 0, 10, "layer")
    clock.t += 2.0
    w.step("eigenvalues", 5, 10, "layer")  # 5 layers in 2 s: 2 s left in the bar
    f = _file(store)
    assert (f["stage"], f["step"], f["done"], f["total"], f["unit"]) == ("spectra", "eigenvalues", 5, 10, "layer")
    assert f["step_eta_s"] == pytest.approx(2.0)
    # The stage: its reference 10 s minus the 2 s it ran (more than the bar's 2 s), then cumulative's 20 s.
    assert f["eta_s"] == pytest.approx(8.0 + 20.0)
    clock.t += 10.0  # slower than the reference: the bar's own estimate takes over
    w.step("eigenvalues", 6, 10, "layer")
    assert _file(store)["step_eta_s"] == pytest.approx(4 * 12.0 / 6)
    assert _file(store)["eta_s"] == pytest.approx(8.0 + 20.0)
    w.end_stage("spectra", 12.5)
    f = _file(store)
    assert f["stage_seconds"] == {"spectra": 12.5} and f["stage"] is None and f["eta_s"] == 20.0
    p = progress.Progress.from_dict(f)
    assert p.pending() == ["cumulative"] and p.left_s(clock.t + 5) == (None, 15.0)
    w.close()
    assert not (store.path / PROGRESS).exists()


def test_time_left_is_unknown_when_a_stage_to_come_was_never_timed(store):
    clock = Clock()
    w = progress.ProgressWriter(store, ["spectra", "schur"], {"spectra": 10.0}, clock=clock)
    w.start_stage("spectra")
    assert _file(store)["eta_s"] is None
    w.step("eigenvalues", 0, 4, "layer")
    clock.t += 1.0
    w.step("eigenvalues", 1, 4, "layer")
    assert _file(store)["step_eta_s"] == pytest.approx(3.0)  # the bar still says how long it has


def test_steps_are_written_at_most_once_a_second_but_stage_changes_at_once(store):
    clock = Clock()
    w = progress.ProgressWriter(store, ["spectra", "cumulative"], clock=clock)
    w.start_stage("spectra")
    w.step("eigenvalues", 1, 10)
    clock.t += 0.4
    w.step("eigenvalues", 2, 10)
    assert _file(store)["done"] == 0  # within the second of the stage start: not written
    clock.t += 0.7
    w.step("eigenvalues", 3, 10)
    assert _file(store)["done"] == 3
    clock.t += 0.1
    w.end_stage("spectra", 1.2)
    assert _file(store)["stage_seconds"] == {"spectra": 1.2}


def test_a_failed_write_leaves_the_previous_file_whole(store, monkeypatch):
    clock = Clock()
    w = progress.ProgressWriter(store, ["spectra"], clock=clock)
    w.start_stage("spectra")
    before = (store.path / PROGRESS).read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dumps", boom)  # the write dies half way, after the temporary file exists
    clock.t += 5
    w.step("eigenvalues", 1, 2)  # swallowed: progress must never stop a computation
    assert (store.path / PROGRESS).read_bytes() == before
    assert not [p for p in store.path.iterdir() if p.name.endswith(".tmp")]


def test_read_tolerates_garbage(store):
    (store.path / PROGRESS).write_text("{not json")
    assert progress.read(store) is None
    (store.path / PROGRESS).write_text(json.dumps({"pid": 1}))  # a field missing
    assert progress.read(store) is None


def test_live_needs_a_live_lock_holder_and_trusts_only_its_own_progress(store):
    assert progress.live(store) is None  # no lock
    w = progress.ProgressWriter(store, ["spectra", "schur"])
    w.start_stage("spectra")
    assert progress.live(store) is None  # a progress file alone is not a live computation
    (store.path / LOCK).write_text(str(os.getpid()))
    lv = progress.live(store)
    assert lv.pid == os.getpid() and lv.progress.stage == "spectra"
    assert lv.computes("schur") and not lv.computes("communities")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store.path / LOCK).write_text(dead.stdout.strip())
    assert progress.live(store) is None  # the holder has exited (a killed computation)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store.path / LOCK).write_text(str(sleeper.pid))
        lv = progress.live(store)
        # Live, but the progress file is another process's: its plan is unknown, so every stage may be coming.
        assert lv.pid == sleeper.pid and lv.progress is None and lv.computes("communities")
        assert "does not report its progress" in progress.describe(lv)[0]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_page_redraws_when_a_stage_lands_or_the_computation_ends():
    lv = progress.Live(1, None)
    assert not progress.needs_redraw(("activations",), ("activations",), lv)
    assert progress.needs_redraw(("activations",), ("activations", "jacobians"), lv)
    assert progress.needs_redraw(("activations",), ("activations",), None)


def test_describe_says_stage_count_and_time_left(store):
    clock = Clock()
    w = progress.ProgressWriter(store, ["spectra", "cumulative"], {"spectra": 10.0, "cumulative": 20.0}, clock=clock)
    w.start_stage("spectra")
    w.end_stage("spectra", 9.0)
    w.start_stage("cumulative")
    w.step("cumulative products", 0, 10, "layer")
    clock.t += 4
    w.step("cumulative products", 4, 10, "layer")
    line, frac = progress.describe(progress.Live(os.getpid(), progress.read(store)), now=clock.t + 1)
    assert "**cumulative** (stage 2 of 2)" in line and "4 of 10 layer" in line
    assert "about 15 s left" in line  # (20 − 4) s at the last write, one second earlier
    assert frac == pytest.approx(0.4)


def test_reference_timings_are_medians_over_runs_of_the_same_shape(tmp_path):
    for rid, secs, d in (("a", 10.0, 8), ("b", 30.0, 8), ("c", 20.0, 8), ("wide", 999.0, 16)):
        make_synthetic_run(tmp_path, rid, n_layers=2, d=d, n_samples=4)
        RunStore(tmp_path / rid).update_manifest(timings={"schur": secs})
    assert progress.reference_timings(RunStore(tmp_path / "a"))["schur"] == 20.0
    assert progress.reference_timings(RunStore(tmp_path / "wide"))["schur"] == 999.0


def test_verify_and_the_page_cache_key_ignore_the_progress_file(synthetic_runs_dir, tmp_path):
    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, tmp_path / TRAINED_RUN)
    s = RunStore(tmp_path / TRAINED_RUN)
    before = verify.signature(s)
    (s.path / PROGRESS).write_text("{half a file")
    assert verify.check_run(s) == []
    assert verify.signature(s) == before
    assert verify.check_runs(tmp_path)[1] == []
