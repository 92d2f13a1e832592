"""``make demo``: serve the dashboard at once and compute the four demo runs behind it, the first views first.

    python -m resdyn.demo                       # what `make demo` runs
    python -m resdyn.demo --no-serve            # compute everything, then exit (no dashboard)

The demo runs (``RUNS``) are the built-in SmolLM2-135M on the first ``--samples`` offline
Wikipedia passages: trained, and three ``--init random`` twins, seeds 0, 1 and 2, the ensemble
the Claims page judges the trained run against. The trained run and the seed-0 twin get every
stage; seeds 1 and 2 only the stages the Claims table reads (``resdyn.stages.CLAIM_STAGES``). The
dashboard opens first (seconds after the start) and a background process at low priority
computes what is missing, in this order (``plan``):

1. the trained run's activations, mean Jacobians and spectra (``FIRST``: what the Runs, Spectrum
   and Operator-type pages draw), the one-time GGUF conversion of the model included;
2. the same three stages of the seed-0 twin;
3. every other stage of those two runs, in the registry's order, so the per-sample statistics
   (``sample_stats``: κ and PR on the Operator-type page) come first; then the claim stages of
   seeds 1 and 2, which no page but Claims needs. These four jobs form a queue worked by
   ``--jobs`` processes (two when the machine has two cores or more), each with its share of the
   BLAS/OpenMP threads: most of these stages run one thread at a time, so two runs at once fill
   two cores, and a process that ends hands its core to the next job in the queue
   (``run_queue``). When the queue is empty and one process remains, it is told (SIGUSR1) to take
   every core for torch's threads.

The log is ``RUNS/demo-background.log``. Pages show what a run has and name the stages still
missing until they land; each finished stage is saved, so stopping the demo loses nothing, and the
next ``make demo`` resumes there. A run whose demo stages are all done is skipped, so a second
``make demo`` serves at once with nothing computing. Seeds 1 and 2 stay "partial" in the run list
(they lack ``sample_stats`` and ``pseudospectra``); `resdyn run --run-id ID` completes one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

from resdyn import stages as registry
from resdyn.config import RunConfig, default_runs_dir
from resdyn.errors import UsageError

FIRST = tuple(registry.upstream("spectra"))
"""Stages computed first, for each run in turn: what the Runs, Spectrum and Operator-type pages
show (the "spectra" stage and what it reads; not the per-sample statistics, which the spectra no
longer read: the Operator-type page says that κ is on its way until ``sample_stats`` lands)."""


class DemoRun(NamedTuple):
    """One demo run: its id (from ``RunConfig``, as `resdyn run` names the same settings), init,
    seed, the stages the demo computes for it, and whether its ``FIRST`` stages come in the first
    pass (the runs the dashboard's pages open on) or with the rest of it, last."""

    run_id: str
    init: str
    seed: int
    stages: tuple[str, ...]
    first: bool


def _demo_run(init: str, seed: int, stages: tuple[str, ...], first: bool) -> DemoRun:
    return DemoRun(RunConfig(model="smollm2-135m", init=init, seed=seed).run_id, init, seed, stages, first)


TWIN_SEEDS = (0, 1, 2)
"""Seeds of the random-init twin ensemble; seed 0 is the twin the other pages show."""
TWIN_STAGES = tuple(n for n in registry.names() if n != "noise")
"""The seed-0 twin's stages: every page's, without ``noise``. The split-half noise is read only for
the run being judged (the trained one); an ensemble member's spread is the ensemble's own."""
RUNS = (_demo_run("pretrained", 0, tuple(registry.names()), True),
        *(_demo_run("random", s, TWIN_STAGES if s == 0 else registry.CLAIM_STAGES, s == 0)
          for s in TWIN_SEEDS))
"""The demo runs in order: smollm2-135m, smollm2-135m-random (seed 0), smollm2-135m-random-seed1,
smollm2-135m-random-seed2. The first is the one the dashboard shows first. The run ids stay those of
the built-in model whatever ``--model`` computes them from."""
BY_ID = {r.run_id: r for r in RUNS}
LOG = "demo-background.log"
COMPUTE_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
"""Thread settings of every computing process (unless the user set them): numpy/scipy's OpenBLAS
on one thread, and torch's OpenMP threads sleeping rather than spinning while they wait. On the
shared 2-core machine at load average 8 (measured), two spinning threads made one d = 576
eigvals + SVD + product cost 3.2 CPU-seconds instead of 0.24 with one OpenBLAS thread (the
``pseudospectra`` stage 812 CPU-seconds instead of 86), and a torch float64 Gram + eigvalsh batch
7.7 instead of 0.35 with passive waiting; on an idle machine the single BLAS thread costs little,
as these matrices are too small for OpenBLAS's threads to pay."""
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that set a child process's torch thread count (its share of the cores)."""


def configs(args) -> list[RunConfig]:
    """The RunConfig of each demo run, in ``RUNS`` order (``stages`` unset: the demo passes them). The
    seeds that only join the ensemble take the claims' dose grid (``--dose-grid claims``)."""
    return [RunConfig(model=args.model, init=r.init, seed=r.seed, corpus=args.corpus, samples=args.samples,
                      runs_dir=Path(args.runs_dir), run_id=r.run_id,
                      dose_grid="full" if r.first else "claims") for r in RUNS]


def missing(cfg: RunConfig, stages: tuple[str, ...] | None = None) -> list[str]:
    """Stages of ``cfg``'s run among ``stages`` (None: the demo's stages of that run, ``RUNS``)
    not done yet: not recorded as done, or done by an older resdyn that did not write one of the
    files the stage writes now."""
    from resdyn.core.store import RunStore

    if stages is None:
        stages = BY_ID[cfg.run_id].stages
    store = RunStore(cfg.run_dir)
    done = set(store.manifest().get("stages_done", [])) if store.exists() else set()
    wanted = [st for st in registry.STAGES if st.name in stages]
    return [st.name for st in wanted
            if st.name not in done or not all((store.path / o).is_file() for o in st.outputs)]


def plan(cfgs: list[RunConfig]) -> list[tuple[str, list[str]]]:
    """The background's work in order: [(run id, stages)]: the ``FIRST`` stages of the runs
    marked ``first`` in ``RUNS`` order, then the rest of every run in ``RUNS`` order (what is
    already done is left out). The entries after the first pass are the queue of ``run_queue``."""
    first = [cfg for cfg in cfgs if BY_ID[cfg.run_id].first]
    steps = [(cfg.run_id, missing(cfg, FIRST)) for cfg in first]
    steps += [(cfg.run_id, [n for n in missing(cfg) if cfg not in first or n not in FIRST]) for cfg in cfgs]
    return [(run_id, names) for run_id, names in steps if names]


def describe(steps: list[tuple[str, list[str]]]) -> str:
    """``plan`` in a line: each step's run and stages, a run's full list of demo stages said in
    words ("the claim stages", "N more stages") so that four runs fit in a line."""
    out = []
    for run_id, names in steps:
        r = BY_ID[run_id]
        if tuple(names) == FIRST:
            what = ", ".join(names)
        elif r.stages == registry.CLAIM_STAGES and len(names) == len(r.stages):
            what = f"the {len(names)} stages the Claims page reads (seed {r.seed} of the twin ensemble)"
        elif len(names) > 3:
            what = f"{len(names)} more stages ({names[0]} first)"
        else:
            what = ", ".join(names)
        out.append(f"{run_id}: {what}")
    return "; ".join(out)


def compute(cfgs: list[RunConfig], stages: tuple[str, ...] | None, quiet: bool = False) -> None:
    """Compute ``stages`` (None: the run's demo stages, ``RUNS``) of every run in ``cfgs``, one
    after the other, skipping what is done."""
    from resdyn.compute import pipeline

    for cfg in cfgs:
        todo = missing(cfg, stages)
        if todo:
            # The rest of the run is computed next (plan): its stages are ahead of this pass.
            store = pipeline.run(dataclasses.replace(cfg, stages=",".join(todo)), quiet=quiet,
                                 ahead=BY_ID[cfg.run_id].stages)
            m = store.manifest()
            print(f"run {cfg.run_id}: {m['status']} ({', '.join(m['stages_done'])})", flush=True)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def jobs_default() -> int:
    """Processes computing at once in the last step: 2 with two cores or more, else 1."""
    return 2 if cores() >= 2 else 1


def _child_args(args, run_id: str) -> list[str]:
    return [sys.executable, "-m", "resdyn.demo", "--background", "--only", run_id, "--runs-dir", str(args.runs_dir),
            "--samples", str(args.samples), "--model", args.model, "--corpus", args.corpus]


def compute_all(args, quiet: bool = True) -> int:
    """Everything missing in the demo runs, in ``plan`` order: the ``FIRST`` stages of the
    ``first`` runs in this process, then the rest of each run as a queue worked by ``--jobs``
    processes (in this process when 1, or when one run is left). Returns 0, or the first failing
    child's exit status in ``RUNS`` order."""
    cfgs = configs(args)
    if args.only:
        signal.signal(signal.SIGUSR1, _take_the_cores)  # the parent's word that the others are done
        signal.siginterrupt(signal.SIGUSR1, False)  # system calls under way restart rather than fail
        try:
            compute([c for c in cfgs if c.run_id == args.only], None, quiet=quiet)
        finally:
            # The word may come as this run ends, when Python's shutdown has put back SIGUSR1's
            # default action (which ends a process) but not an ignored disposition.
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        return 0
    for cfg in cfgs:
        if BY_ID[cfg.run_id].first:
            compute([cfg], FIRST, quiet=quiet)
    rest = [cfg for cfg in cfgs if missing(cfg)]
    width = min(args.jobs, len(rest))
    if width < 2:
        compute(rest, None, quiet=quiet)
        return 0
    # One process per run, `width` at a time, each with its share of the cores for torch and BLAS:
    # the later stages mostly run one thread at a time, and two processes with two threads each
    # oversubscribe.
    share = str(max(1, cores() // width))
    env = dict(os.environ, **{var: share for var in THREAD_VARS})  # COMPUTE_ENV is set: see main
    print(f"resdyn: the rest of {', '.join(c.run_id for c in rest)}, one run a process, in {width} processes "
          f"at a time ({share} thread{'s' if share != '1' else ''} each)", flush=True)

    def start(run_id: str) -> subprocess.Popen:
        # A child starts with SIGUSR1 ignored (inherited through exec) until it installs its
        # handler, so the word to take the cores can never end a child that is still starting.
        old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        try:
            return subprocess.Popen(_child_args(args, run_id), env=env)
        finally:
            signal.signal(signal.SIGUSR1, old)

    return run_queue([c.run_id for c in rest], start, width)


def run_queue(queue: list[str], start: Callable[[str], subprocess.Popen], width: int, poll: float = 1.0) -> int:
    """Work ``queue`` (run ids, in order) with at most ``width`` processes at once: ``start(run_id)``
    for the first ``width``, then for the next one each time a process ends (well or not: the runs
    are independent). When nothing waits any more, a process has ended well and one process is
    left, that one is sent SIGUSR1 (once) to take the cores (``_take_the_cores``): the runs rarely
    take equally long, and the later stages of the last run use torch's threads. Returns 0, or
    the exit status of the first failing run in ``queue`` order."""
    waiting = list(queue)
    running: dict[str, subprocess.Popen] = {}
    status: dict[str, int] = {}
    told = False
    while waiting or running:
        while waiting and len(running) < width:
            run_id = waiting.pop(0)
            running[run_id] = start(run_id)
        for run_id, proc in list(running.items()):
            if proc.poll() is not None:
                status[run_id] = proc.returncode
                del running[run_id]
        if waiting and len(running) < width:
            continue  # a process has ended: its core takes the next run at once
        if not told and not waiting and len(running) == 1 and 0 in status.values():
            last = next(iter(running.values()))
            with contextlib.suppress(ProcessLookupError):
                last.send_signal(signal.SIGUSR1)
            told = True
        if running:
            time.sleep(poll)
    return next((status[r] for r in queue if status.get(r)), 0)


def _take_the_cores(signum, frame) -> None:
    """SIGUSR1 in a child: the other runs are done, so torch's later operations here may use every core
    (taken at the next operation; the BLAS limits that the stages set themselves stay)."""
    n = cores()
    # A handler's exception would surface in whatever the process was doing: none may escape.
    with contextlib.suppress(Exception):
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(n)
        else:  # read when torch loads; no other thread reads the environment before that
            os.environ.update({var: str(n) for var in THREAD_VARS})
        print(f"resdyn: the other demo runs are done; this one now uses {n} threads", flush=True)


def start_background(args) -> subprocess.Popen | None:
    """A low-priority process computing every remaining demo stage of the runs (``compute_all``),
    or None if none remain. It leads its own process group, so ``stop`` reaches its children too."""
    if not any(missing(cfg) for cfg in configs(args)):
        return None
    log = Path(args.runs_dir) / LOG
    cmd = [sys.executable, "-m", "resdyn.demo", "--background", "--runs-dir", str(args.runs_dir),
           "--samples", str(args.samples), "--model", args.model, "--corpus", args.corpus, "--jobs", str(args.jobs)]
    env = {**COMPUTE_ENV, **os.environ}
    with open(log, "ab") as out:
        # Niced so the dashboard stays responsive; its own session, so Ctrl-C in the terminal
        # reaches it through `stop` rather than mid-write (writes are atomic anyway).
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                preexec_fn=lambda: os.nice(10))


def stop(proc: subprocess.Popen | None) -> None:
    """End ``proc`` and the processes it started (its process group): SIGTERM, then SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal ``proc``'s process group when it leads one (``start_background``), else ``proc`` alone."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def serve(args) -> int:
    """The dashboard (``resdyn.dashboard.serve``) in the foreground on ``--address``:``--port``;
    its exit status."""
    from resdyn import dashboard

    return dashboard.serve(args.runs_dir, args.address, args.port)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's flags, on ``p`` (this module's own parser, and `resdyn demo`'s)."""
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="where the demo runs live")
    p.add_argument("--samples", type=int, default=128, help="passages per run (at least 128 to be meaningful)")
    p.add_argument("--model", default="smollm2-135m", help="model of every demo run (the demo uses the built-in one)")
    p.add_argument("--corpus", default="wiki-sample", help="corpus of every demo run")
    p.add_argument("--address", default="127.0.0.1", help="dashboard address (0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8501, help="dashboard port")
    p.add_argument("--jobs", type=int, default=jobs_default(),
                   help="processes computing runs at once after the first views of the trained run and its twin "
                        "(2 with two cores or more); each takes the next run when it finishes one")
    p.add_argument("--no-serve", action="store_true", help="compute the demo runs, then exit")
    p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)  # the computing process
    p.add_argument("--only", choices=list(BY_ID), help=argparse.SUPPRESS)  # one run's rest (a child)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resdyn.demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_arguments(p)


def run(args) -> int:
    """Serve the dashboard and compute the demo runs behind it as ``args`` say; errors propagate
    (the CLI's ``main`` prints them)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    if args.background or args.no_serve:
        for var, value in COMPUTE_ENV.items():  # numpy and torch are not loaded yet
            os.environ.setdefault(var, value)
        return compute_all(args, quiet=args.background)
    proc = start_background(args)
    url = f"http://{args.address}:{args.port}"
    if proc is not None:
        todo = describe(plan(configs(args)))
        print(f"resdyn: the dashboard opens at {url} while a background process computes, in this order: "
              f"{todo} (log: {Path(args.runs_dir) / LOG}). Pages fill in as stages land.", flush=True)
    try:
        return serve(args)
    finally:
        stop(proc)


def main(argv=None) -> int:
    """``python -m resdyn.demo ...`` is ``resdyn demo ...``: one parser, one way of reporting errors."""
    from resdyn.compute.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
