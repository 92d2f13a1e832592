"""``python -m resdyn.demo`` (what ``make demo`` runs): the dashboard first, then in a background
process both runs' first views' stages, then the rest of both runs; a finished run skipped. On the
tiny random Llama instead of SmolLM2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from resdyn import demo
from resdyn import stages as registry
from resdyn.compute.stages import stage_names
from tests.compute.test_cli import save_tiny_model_and_corpus


@pytest.fixture(scope="module")
def model_and_corpus(tmp_path_factory):
    return save_tiny_model_and_corpus(tmp_path_factory.mktemp("demo"))


def _args(root, runs, *extra):
    return ["--runs-dir", str(runs), "--samples", "5", "--model", str(root / "tiny-llama"),
            "--corpus", str(root / "corpus.txt"), *extra]


def _manifest(runs, run_id):
    return json.loads((runs / run_id / "manifest.json").read_text())


def _stage_file(runs, run_id, stage):
    """The modification time (ns) of the first output of ``stage`` in run ``run_id``."""
    return (runs / run_id / registry.get(stage).outputs[0]).stat().st_mtime_ns


def test_plan_puts_both_runs_first_views_before_everything_else(model_and_corpus, tmp_path):
    root, runs = model_and_corpus, tmp_path / "runs"
    cfgs = demo.configs(demo.build_parser().parse_args(_args(root, runs)))
    rest = [n for n in stage_names() if n not in demo.FIRST]
    trained, random_twin = (run_id for run_id, _ in demo.RUNS)
    assert demo.FIRST == ("activations", "jacobians", "spectra")
    assert rest[0] == "sample_stats"  # the per-sample statistics open step 3: after both runs' spectra
    assert demo.plan(cfgs) == [(trained, list(demo.FIRST)), (random_twin, list(demo.FIRST)),
                               (trained, rest), (random_twin, rest)]


def test_dashboard_opens_before_any_stage_and_the_background_completes_in_order(model_and_corpus, tmp_path,
                                                                                monkeypatch):
    """``main`` serves at once while a background process computes: the trained run's first views,
    then the random twin's, then the rest of both (two processes), each run complete at the end."""
    root, runs = model_and_corpus, tmp_path / "runs"
    argv = _args(root, runs, "--port", "1")
    cfgs = demo.configs(demo.build_parser().parse_args(argv))
    seen = {}
    started = []
    real_start = demo.start_background

    def start(args):
        started.append(real_start(args))
        return started[-1]

    def fake_serve(args):
        # The dashboard comes first: nothing is computed yet, the background is running.
        seen["missing"] = demo.missing(cfgs[0])
        seen["running"] = started[0] is not None and started[0].poll() is None
        assert started[0].wait(timeout=600) == 0, (runs / demo.LOG).read_text()[-3000:]
        return 0

    monkeypatch.setattr(demo, "start_background", start)
    monkeypatch.setattr(demo, "serve", fake_serve)
    assert demo.main(argv) == 0
    assert seen["running"] and seen["missing"] == stage_names()
    log = (runs / demo.LOG).read_text()
    assert "in 2 processes" in log
    for run_id, init in demo.RUNS:
        m = _manifest(runs, run_id)
        assert m["status"] == "complete" and set(m["stages_done"]) == set(stage_names()) and m["init"] == init
    trained, random_twin = (run_id for run_id, _ in demo.RUNS)
    # Order: trained first views < random first views < every other stage of either run.
    assert _stage_file(runs, trained, "spectra") < _stage_file(runs, random_twin, "activations")
    first_done = _stage_file(runs, random_twin, "spectra")
    for run_id in (trained, random_twin):
        for name in stage_names():
            if name not in demo.FIRST:
                assert _stage_file(runs, run_id, name) > first_done, (run_id, name)
    # Nothing left: no background process, and computing again is a no-op.
    assert demo.start_background(demo.build_parser().parse_args(argv)) is None
    assert demo.plan(cfgs) == []
    before = (runs / trained / "manifest.json").stat().st_mtime_ns
    demo.compute(cfgs, demo.FIRST, quiet=True)
    assert (runs / trained / "manifest.json").stat().st_mtime_ns == before
    # A run made by an older resdyn, done but without a file a stage writes now, is not finished.
    (runs / trained / "layer_sigma.parquet").unlink()
    assert demo.missing(cfgs[0]) == ["pseudospectra"] and not demo.missing(cfgs[1])
    assert demo.plan(cfgs) == [(trained, ["pseudospectra"])]


def test_stop_ends_a_running_background_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    demo.stop(proc)
    assert proc.poll() is not None
    demo.stop(None)  # nothing to stop is fine


def test_stop_ends_the_background_processes_children_too(tmp_path):
    """The background leads its own process group and starts one child per run: stopping it
    must not leave the children computing."""
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    demo.stop(proc)
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by init, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_computing_processes_get_one_blas_thread_and_a_share_of_the_cores(tmp_path, monkeypatch):
    """The background and its per-run children run numpy's BLAS on one thread and torch's OpenMP
    with passive waits (spinning threads collapsed under load); each child gets its share of the
    cores for torch."""
    started = []

    class FakeProc:
        def __init__(self, cmd, env=None, **kw):
            started.append((cmd, env))

        returncode = 0

        def wait(self):
            return 0

        def poll(self):
            return 0

    for var in (*demo.COMPUTE_ENV, *demo.THREAD_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(demo.subprocess, "Popen", FakeProc)
    monkeypatch.setattr(demo, "cores", lambda: 2)
    args = demo.build_parser().parse_args(["--runs-dir", str(tmp_path), "--jobs", "2"])
    demo.start_background(args)
    cmd, env = started.pop()
    assert "--background" in cmd and all(env[k] == v for k, v in demo.COMPUTE_ENV.items())
    # The last step: first views done (no-op here), the rest of both runs in two children.
    monkeypatch.setattr(demo, "compute", lambda *a, **k: None)
    monkeypatch.setattr(demo, "missing", lambda cfg, stages=None: ["schur"])
    for var, value in demo.COMPUTE_ENV.items():
        monkeypatch.setenv(var, value)  # what main sets in the background process
    assert demo.compute_all(args) == 0
    assert [cmd[cmd.index("--only") + 1] for cmd, _ in started] == [run_id for run_id, _ in demo.RUNS]
    for _, env in started:
        assert env["OMP_NUM_THREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
        assert env["OMP_WAIT_POLICY"] == "PASSIVE"


SLOW_CHILD = """
import pathlib, signal, sys, time
flag = pathlib.Path(sys.argv[1])
ignored = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # until the child's own handler
signal.signal(signal.SIGUSR1, lambda *a: flag.write_text("told"))
pathlib.Path(sys.argv[2]).write_text("ready")  # the sibling ends only now
start = time.monotonic()
while not flag.exists() and time.monotonic() - start < 30:
    time.sleep(0.05)
sys.exit(0 if flag.exists() and ignored else 3)
"""


def test_the_last_child_is_told_to_take_the_cores_when_its_sibling_is_done(tmp_path, monkeypatch):
    """The children start with SIGUSR1 ignored (a word sent while one starts cannot end it), and
    the one still computing when the other finishes gets SIGUSR1."""
    flag, ready = tmp_path / "told", tmp_path / "ready"
    fast = ("import pathlib, time; t = time.monotonic()\n"
            f"while not pathlib.Path({str(ready)!r}).exists() and time.monotonic() - t < 30: time.sleep(0.05)")
    scripts = {demo.RUNS[0][0]: ["-c", fast], demo.RUNS[1][0]: ["-c", SLOW_CHILD, str(flag), str(ready)]}
    monkeypatch.setattr(demo, "_child_args", lambda args, run_id: [sys.executable, *scripts[run_id]])
    monkeypatch.setattr(demo, "compute", lambda *a, **k: None)
    monkeypatch.setattr(demo, "missing", lambda cfg, stages=None: ["schur"])
    monkeypatch.setattr(demo, "cores", lambda: 2)
    args = demo.build_parser().parse_args(["--runs-dir", str(tmp_path), "--jobs", "2"])
    assert demo.compute_all(args) == 0
    assert flag.read_text() == "told"
    assert signal.getsignal(signal.SIGUSR1) != signal.SIG_IGN  # the parent's own disposition is back


def test_a_failed_child_hands_nothing_over_and_its_status_is_returned():
    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(5)"])
    # SIGUSR1's default action ends a process: this one would exit with −SIGUSR1 if it were told.
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    assert demo.wait_and_hand_over([slow, failing], poll=0.1) == 5
    assert slow.returncode == 0


def test_taking_the_cores_sets_torch_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    for var in demo.THREAD_VARS:
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(demo, "cores", lambda: 2)
    try:
        torch.set_num_threads(1)
        demo._take_the_cores(signal.SIGUSR1, None)
        assert torch.get_num_threads() == 2
        assert all(os.environ[var] == "1" for var in demo.THREAD_VARS)  # torch is loaded: left alone
        monkeypatch.setitem(sys.modules, "torch", None)  # as before torch is imported
        demo._take_the_cores(signal.SIGUSR1, None)
        assert all(os.environ[var] == "2" for var in demo.THREAD_VARS)  # read when torch loads
    finally:
        torch.set_num_threads(before)


def test_jobs_below_one_is_one_line(tmp_path, capsys):
    assert demo.main(["--runs-dir", str(tmp_path / "runs"), "--jobs", "0", "--no-serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resdyn: error:")


def test_bad_input_is_one_line(model_and_corpus, tmp_path, capsys):
    root = model_and_corpus
    argv = ["--runs-dir", str(tmp_path / "runs"), "--samples", "5", "--model", str(root / "tiny-llama"),
            "--corpus", str(tmp_path / "none.txt"), "--no-serve"]
    assert demo.main(argv) == 1  # a missing file: a runtime error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resdyn: error:")
