"""``verify``: the cheap checks name what is wrong with a run and the command that repairs it.

The full matrix (every file of a real run, truncated and overwritten, through verify, the pages,
``run`` and the repair) is tests/compute/test_fault_matrix.py; these cover the cases it does not.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from resdyn import stages as registry
from resdyn.compute.cli import main
from resdyn.core import verify
from resdyn.core.store import RunStore, save_npy
from tests.app.apptools import open_page
from tests.conftest import RANDOM_RUN, TRAINED_RUN


@pytest.fixture
def runs(synthetic_runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, root)
    return root


def test_healthy_runs_have_no_problems(synthetic_runs_dir, capsys):
    assert main(["verify", "--runs-dir", str(synthetic_runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) checked" in out and out.rstrip().endswith("no problems")
    for run in (TRAINED_RUN, RANDOM_RUN):
        assert verify.check_run(RunStore(synthetic_runs_dir / run)) == []


def test_an_array_of_the_wrong_shape_is_named(runs, capsys):
    jac = np.load(runs / TRAINED_RUN / "jacobians.npy")
    save_npy(runs / TRAINED_RUN / "jacobians.npy", jac[:-1])  # a valid file, one layer short
    (p,) = verify.check_run(RunStore(runs / TRAINED_RUN))
    assert p.file == "jacobians.npy" and p.redo == ("jacobians",)
    assert p.reason == f"shape {(jac.shape[0] - 1, *jac.shape[1:])} where the manifest implies {jac.shape}"
    assert main(["verify", TRAINED_RUN, "--runs-dir", str(runs)]) == 1
    out = capsys.readouterr().out
    assert f"{TRAINED_RUN}: jacobians.npy: shape" in out and "--redo jacobians" in out


def test_a_missing_file_of_a_finished_stage_is_named(runs):
    (runs / RANDOM_RUN / "eigenvalues.parquet").unlink()
    (p,) = verify.check_run(RunStore(runs / RANDOM_RUN))
    assert (p.file, p.reason, p.redo) == ("eigenvalues.parquet", "missing", ("spectra",))
    assert p.line().endswith("--redo spectra") and f"--run-id {RANDOM_RUN}" in p.line()


def test_a_corrupt_manifest_is_listed_verified_and_shown_in_one_line(runs, capsys, monkeypatch):
    (runs / TRAINED_RUN / "manifest.json").write_text('{"run_id": "synth')  # cut short
    (p,) = verify.check_run(RunStore(runs / TRAINED_RUN))
    assert p.file == "manifest.json" and p.redo == () and "move the run directory" in p.repair()
    assert main(["verify", "--runs-dir", str(runs)]) == 1
    assert main(["list", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and RANDOM_RUN in out
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(runs))
    at = open_page("pages/spectrum.py", run=TRAINED_RUN)
    assert not at.exception and len(at.error) == 1 and "`manifest.json`" in at.error[0].value
    at = open_page("pages/spectrum.py", run=RANDOM_RUN)  # the other run is untouched
    assert not at.exception and not at.error and at.get("plotly_chart")


def test_verify_refuses_an_unknown_run_in_one_line(runs, capsys):
    assert main(["verify", "nope", "--runs-dir", str(runs)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"resdyn: error: no run 'nope' in {runs}"


def test_signature_changes_when_a_file_does(runs):
    store = RunStore(runs / TRAINED_RUN)
    before = verify.signature(store)
    path = runs / TRAINED_RUN / "layers.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    assert verify.signature(store) != before


def test_an_output_added_after_a_run_was_computed_is_not_damage_and_its_pages_render(runs, monkeypatch):
    """A run whose activations stage finished before it wrote snapshots.parquet (its manifest's
    ``files`` record says what the stage wrote): verify passes it, and the pages compute the
    table on read. A file the record lists is still reported missing."""
    import json

    store = RunStore(runs / TRAINED_RUN)
    store.table_path("snapshots").unlink()
    m = json.loads((store.path / "manifest.json").read_text())
    old = {f: "activations" for f in ("activations.npy", "final_state.npy", "passages.parquet")}
    (store.path / "manifest.json").write_text(json.dumps(dict(m, files=old)))
    assert verify.check_run(store) == []
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(runs))
    for page in ("pages/runs.py", "pages/operator_type.py", "pages/claims.py"):
        at = open_page(page, run=TRAINED_RUN)
        assert not at.exception and not at.error, page
    (store.path / "manifest.json").write_text(json.dumps(dict(m, files={**old, "snapshots.parquet": "activations"})))
    (p,) = verify.check_run(store)
    assert (p.file, p.reason, p.redo) == ("snapshots.parquet", "missing", ("activations",))


def test_a_run_from_before_a_stage_wrote_summary_rows_is_not_damaged(runs):
    """A partial run whose finished stages predate their summary rows has no summary.parquet to
    lose; once a stage has recorded writing it, its absence is damage."""
    import json

    path = runs / RANDOM_RUN / "manifest.json"
    m = json.loads(path.read_text())
    m["stages_done"] = ["activations", "jacobians", "spectra"]
    m["files"] = {f: s for s in m["stages_done"] for f in registry.get(s).outputs}  # no summary recorded
    path.write_text(json.dumps(m))
    (runs / RANDOM_RUN / "summary.parquet").unlink(missing_ok=True)
    assert verify.check_run(RunStore(runs / RANDOM_RUN)) == []
    path.write_text(json.dumps(dict(m, files={**m["files"], "summary.parquet": "activations"})))
    (p,) = verify.check_run(RunStore(runs / RANDOM_RUN))
    assert (p.file, p.reason, p.redo) == ("summary.parquet", "missing", ("activations",))
