"""``python -m resdyn.demo`` (what ``make demo`` runs): the dashboard first, then in a background
process the first views' stages of the trained run and the seed-0 twin, then the rest of both, then
the claim stages of twin seeds 1 and 2, as a queue over two processes; a finished run skipped. On
the tiny random Llama instead of SmolLM2."""

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
from resdyn.config import RunConfig
from resdyn.core import headlines, queries
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


def _last_file(runs, run_id):
    """The modification time (ns) of the last output the demo's stages of ``run_id`` wrote."""
    return max(_stage_file(runs, run_id, name) for name in demo.BY_ID[run_id].stages)


def test_the_demo_runs_are_the_trained_model_and_three_twin_seeds():
    """Ids as `resdyn run` names the same settings; the trained run gets every stage, seed 0 every
    stage but the noise (never read for an ensemble member), seeds 1 and 2 the claim stages; only
    the first two get the first pass."""
    assert [(r.run_id, r.init, r.seed, r.first) for r in demo.RUNS] == [
        ("smollm2-135m", "pretrained", 0, True), ("smollm2-135m-random", "random", 0, True),
        ("smollm2-135m-random-seed1", "random", 1, False), ("smollm2-135m-random-seed2", "random", 2, False)]
    every = tuple(stage_names())
    assert [r.stages for r in demo.RUNS] == [every, tuple(n for n in every if n != "noise")] + [
        registry.CLAIM_STAGES] * 2
    assert [r.run_id for r in demo.RUNS] == [RunConfig(init=r.init, seed=r.seed).run_id for r in demo.RUNS]


def test_claim_stages_are_closed_under_what_they_read_and_leave_out_the_slow_extras():
    claims = set(registry.CLAIM_STAGES)
    assert claims <= set(stage_names()) and {"sample_stats", "pseudospectra"}.isdisjoint(claims)
    for name in claims:
        assert set(registry.upstream(name)) <= claims, name  # computable alone: `--stages claims`
    assert registry.expand("claims") == [n for n in stage_names() if n in claims]
    assert registry.expand("sample_stats,claims") == [n for n in stage_names() if n in claims | {"sample_stats"}]
    assert registry.expand(None) is None


def test_plan_puts_the_first_views_first_and_the_extra_seeds_last(model_and_corpus, tmp_path):
    root, runs = model_and_corpus, tmp_path / "runs"
    cfgs = demo.configs(demo.build_parser().parse_args(_args(root, runs)))
    assert [(c.run_id, c.init, c.seed) for c in cfgs] == [(r.run_id, r.init, r.seed) for r in demo.RUNS]
    rest = [n for n in stage_names() if n not in demo.FIRST]
    claims = [n for n in stage_names() if n in registry.CLAIM_STAGES]
    trained, twin, seed1, seed2 = (r.run_id for r in demo.RUNS)
    assert demo.FIRST == ("activations", "jacobians", "spectra")
    assert rest[0] == "sample_stats"  # the per-sample statistics open step 3: after both runs' spectra
    assert demo.plan(cfgs) == [(trained, list(demo.FIRST)), (twin, list(demo.FIRST)),
                               (trained, rest), (twin, [n for n in rest if n != "noise"]),
                               (seed1, claims), (seed2, claims)]
    line = demo.describe(demo.plan(cfgs))
    assert line.startswith(f"{trained}: activations, jacobians, spectra; {twin}: activations")
    assert f"{seed2}: the {len(claims)} stages the Claims page reads (seed 2 of the twin ensemble)" in line


def test_dashboard_opens_before_any_stage_and_the_background_completes_in_order(model_and_corpus, tmp_path,
                                                                                monkeypatch):
    """``main`` serves at once while a background process computes: the trained run's first views,
    then the seed-0 twin's, then the rest of both and the extra seeds' claim stages (a queue over
    two processes); each run has its demo stages at the end."""
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
    assert "in 2 processes at a time" in log
    for r in demo.RUNS:
        m = _manifest(runs, r.run_id)
        assert set(m["stages_done"]) == set(r.stages) and (m["init"], m["seed"]) == (r.init, r.seed)
        assert m["status"] == ("complete" if r.stages == tuple(stage_names()) else "partial")
    trained, twin, seed1, seed2 = (r.run_id for r in demo.RUNS)
    # Order: trained first views < twin first views < every other stage of any run.
    assert _stage_file(runs, trained, "spectra") < _stage_file(runs, twin, "activations")
    first_done = _stage_file(runs, twin, "spectra")
    for r in demo.RUNS:
        for name in r.stages:
            if name not in demo.FIRST or not r.first:
                assert _stage_file(runs, r.run_id, name) > first_done, (r.run_id, name)
    # The extra seeds come last: each starts once a process has finished a run before it.
    ends = sorted(_last_file(runs, r) for r in (trained, twin))
    assert _stage_file(runs, seed1, "activations") > ends[0]
    assert _stage_file(runs, seed2, "activations") > min(ends[1], _last_file(runs, seed1))
    # Nothing left: no background process, and computing again is a no-op.
    assert demo.start_background(demo.build_parser().parse_args(argv)) is None
    assert demo.plan(cfgs) == []
    before = (runs / trained / "manifest.json").stat().st_mtime_ns
    demo.compute(cfgs, demo.FIRST, quiet=True)
    assert (runs / trained / "manifest.json").stat().st_mtime_ns == before
    # A run made by an older resdyn, done but without a file a stage writes now, is not finished.
    (runs / trained / "layer_sigma.parquet").unlink()
    assert demo.missing(cfgs[0]) == ["pseudospectra"] and not any(demo.missing(c) for c in cfgs[1:])
    assert demo.plan(cfgs) == [(trained, ["pseudospectra"])]
    # The seed-0 twin is the one the other pages pick, whatever the run ids sort as.
    assert headlines.find_twin(trained, runs) == twin
    assert queries.extra_seeds(queries.runs(runs)) == {seed1, seed2}


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
    # The last step: first views done (no-op here), the rest of the four runs in children, in order.
    monkeypatch.setattr(demo, "compute", lambda *a, **k: None)
    monkeypatch.setattr(demo, "missing", lambda cfg, stages=None: ["schur"])
    for var, value in demo.COMPUTE_ENV.items():
        monkeypatch.setenv(var, value)  # what main sets in the background process
    assert demo.compute_all(args) == 0
    assert [cmd[cmd.index("--only") + 1] for cmd, _ in started] == [r.run_id for r in demo.RUNS]
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


def test_the_last_child_is_told_to_take_the_cores_when_the_others_are_done(tmp_path, monkeypatch):
    """Four runs over two processes: the children start with SIGUSR1 ignored (a word sent while one
    starts cannot end it), and the one still computing when the queue is empty and the others
    have finished gets SIGUSR1."""
    flag, ready = tmp_path / "told", tmp_path / "ready"
    fast = ("import pathlib, time; t = time.monotonic()\n"
            f"while not pathlib.Path({str(ready)!r}).exists() and time.monotonic() - t < 30: time.sleep(0.05)")
    trained, twin, seed1, seed2 = (r.run_id for r in demo.RUNS)
    scripts = {trained: ["-c", "pass"], twin: ["-c", "pass"], seed1: ["-c", fast],
               seed2: ["-c", SLOW_CHILD, str(flag), str(ready)]}
    monkeypatch.setattr(demo, "_child_args", lambda args, run_id: [sys.executable, *scripts[run_id]])
    monkeypatch.setattr(demo, "compute", lambda *a, **k: None)
    monkeypatch.setattr(demo, "missing", lambda cfg, stages=None: ["schur"])
    monkeypatch.setattr(demo, "cores", lambda: 2)
    args = demo.build_parser().parse_args(["--runs-dir", str(tmp_path), "--jobs", "2"])
    assert demo.compute_all(args) == 0
    assert flag.read_text() == "told"
    assert signal.getsignal(signal.SIGUSR1) != signal.SIG_IGN  # the parent's own disposition is back


def test_a_child_ignores_the_word_once_its_run_is_done(tmp_path, monkeypatch):
    """A child told to take the cores just as its run ends must not die of it: Python's shutdown
    puts back SIGUSR1's default action (which ends the process) unless the signal is ignored."""
    args = demo.build_parser().parse_args(["--runs-dir", str(tmp_path), "--only", demo.RUNS[2].run_id])
    seen = []
    monkeypatch.setattr(demo, "compute", lambda cfgs, stages, quiet: seen.append(
        ([c.run_id for c in cfgs], signal.getsignal(signal.SIGUSR1))))
    old = signal.getsignal(signal.SIGUSR1)
    try:
        assert demo.compute_all(args) == 0
        assert seen == [([demo.RUNS[2].run_id], demo._take_the_cores)]  # while computing: the handler
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # after: ignored
    finally:
        signal.signal(signal.SIGUSR1, old)


class FakeChild:
    """A process that ends after ``polls`` polls with ``status`` and records the signals sent."""

    def __init__(self, log, run_id, polls, status=0):
        self.log, self.run_id, self.polls, self.status = log, run_id, polls, status
        self.returncode = None
        self.signals = []
        log.append(("start", run_id))

    def poll(self):
        if self.returncode is None:
            self.polls -= 1
            if self.polls < 0:
                self.returncode = self.status
                self.log.append(("end", self.run_id))
        return self.returncode

    def send_signal(self, sig):
        self.signals.append(sig)


def test_the_queue_gives_a_freed_process_the_next_run_and_hands_the_cores_over_once():
    """Runs a (long), b, c, d (long) over two processes: c starts when b ends, while a still runs;
    d when a or c ends; only the last process left is told, once, and only once the queue is empty."""
    log, children = [], {}
    lengths = {"a": 6, "b": 1, "c": 2, "d": 8}

    def start(run_id):
        children[run_id] = FakeChild(log, run_id, lengths[run_id])
        return children[run_id]

    assert demo.run_queue(list("abcd"), start, 2, poll=0) == 0
    starts = [r for what, r in log if what == "start"]
    assert starts == list("abcd")
    running = 0
    for what, _ in log:  # never more than two at once
        running += 1 if what == "start" else -1
        assert running <= 2
    assert log.index(("start", "c")) < log.index(("end", "a"))  # b's process took c at once
    assert log.index(("start", "c")) > log.index(("end", "b"))
    assert children["d"].signals == [signal.SIGUSR1] and not any(children[r].signals for r in "abc")


def test_a_failed_run_hands_nothing_over_and_its_status_is_returned():
    """A run that fails does not stop the queue (the runs are independent); the first failing
    status in queue order is returned; the last process is told only after a run ended well."""
    log, children = [], {}
    plan = {"a": (0, 5), "b": (4, 0)}

    def start(run_id):
        children[run_id] = FakeChild(log, run_id, *plan[run_id])
        return children[run_id]

    assert demo.run_queue(["a", "b"], start, 2, poll=0) == 5
    assert children["b"].returncode == 0 and children["b"].signals == []
    plan.update(c=(0, 3), d=(0, 0), e=(3, 0))
    assert demo.run_queue(["c", "d", "e"], start, 2, poll=0) == 3  # c failed, d ended well: e is told
    assert children["e"].signals == [signal.SIGUSR1]


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
