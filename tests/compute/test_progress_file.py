"""The pipeline keeps progress.json while it computes a tiny run: every stage it runs appears in
order, the stages' own progress bars report through ``RunContext.progress`` (under --quiet too),
each write is a whole JSON object, and the file is gone at the end."""

from __future__ import annotations

import json
import os

import pytest

from resdyn.compute.cli import main
from resdyn.core import progress
from resdyn.core.store import PROGRESS, RunStore
from tests.compute.test_cli import save_tiny_model_and_corpus

STAGES = ["activations", "jacobians", "spectra"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Compute a tiny run while recording every progress.json write (as read back from disk) and
    every report of a progress bar."""
    root = save_tiny_model_and_corpus(tmp_path_factory.mktemp("progress"))
    writes, steps = [], []
    real_write, real_step = RunStore.write_progress, progress.ProgressWriter.step

    def write(self, state):
        real_write(self, state)
        writes.append(json.loads((self.path / PROGRESS).read_text()))  # what a page reads at that moment

    def step(self, desc, done, total, unit=""):
        steps.append((self.state.stage, desc, done, total, unit))
        real_step(self, desc, done, total, unit)

    mp = pytest.MonkeyPatch()
    mp.setattr(RunStore, "write_progress", write)
    mp.setattr(progress.ProgressWriter, "step", step)
    try:
        argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"), "--samples", "4",
                "--runs-dir", str(root / "runs"), "--run-id", "p", "--quiet", "--batch-size", "3",
                "--stages", ",".join(STAGES)]
        assert main(argv) == 0
    finally:
        mp.undo()
    return root / "runs" / "p", writes, steps


def test_every_stage_is_announced_in_order_and_timed(recorded):
    run, writes, _ = recorded
    assert writes and all(w["pid"] == os.getpid() and w["stages"] == STAGES for w in writes)
    started = [w["stage"] for w in writes if w["stage"] is not None]
    assert list(dict.fromkeys(started)) == STAGES
    last = writes[-1]
    assert list(last["stage_seconds"]) == STAGES and last["stage"] is None
    timings = json.loads((run / "manifest.json").read_text())["timings"]
    for name in STAGES:  # the seconds the manifest records
        assert last["stage_seconds"][name] == pytest.approx(timings[name], abs=1e-3)
    assert all(progress.Progress.from_dict(w) for w in writes)  # every write parses


def test_the_stages_progress_bars_report_without_any_stage_edit(recorded):
    _, _, steps = recorded
    jac = [s for s in steps if s[0] == "jacobians"]
    # The Jacobian stage's bar: 3 layers × 4 samples Jacobians, counted to the end under --quiet.
    assert jac and jac[-1][2] == jac[-1][3] == 3 * 4 and jac[-1][4] == "J"
    assert [s[2] for s in jac] == sorted(s[2] for s in jac)  # done only grows
    assert any(s[0] == "activations" and s[1] == "activations" for s in steps)


def test_the_file_is_gone_when_the_computation_ends(recorded):
    run, _, _ = recorded
    assert not (run / PROGRESS).exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
