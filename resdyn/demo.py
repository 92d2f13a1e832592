"""``make demo``: serve the dashboard at once and compute the two demo runs behind it, the first views first.

    python -m resdyn.demo                       # what `make demo` runs
    python -m resdyn.demo --no-serve            # compute everything, then exit (no dashboard)

The demo runs are the built-in SmolLM2-135M, trained and ``--init random``, on the first
``--samples`` offline Wikipedia passages. The dashboard opens first (seconds after the start) and
a background process at low priority computes what is missing, in this order (``plan``):

1. the trained run's activations, mean Jacobians and spectra (``FIRST``: what the Runs, Spectrum
   and Operator-type pages draw), the one-time GGUF conversion of the model included;
2. the same three stages of the random twin;
3. every other stage of both runs, in the registry's order, so the per-sample statistics
   (``sample_stats``: κ and PR on the Operator-type page) come first; the two runs in parallel
   processes when the machine has two cores or more (``--jobs``), each with its share of the
   BLAS/OpenMP threads: most of these stages run one thread at a time, so two runs at once fill
   two cores. When one run is done, the other is told (SIGUSR1) to take every core for torch's
   threads (``wait_and_hand_over``).

The log is ``RUNS/demo-background.log``. Pages show what a run has and name the stages still
missing until they land; each finished stage is saved, so stopping the demo loses nothing, and the
next ``make demo`` resumes there. A run that is already complete is skipped, so a second
``make demo`` serves at once with nothing computing.
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

from resdyn import stages as registry
from resdyn.config import RunConfig, default_runs_dir
from resdyn.errors import UsageError

FIRST = tuple(registry.upstream("spectra"))
"""Stages computed first, for each run in turn: what the Runs, Spectrum and Operator-type pages
show (the "spectra" stage and what it reads; not the per-sample statistics, which the spectra no
longer read: the Operator-type page says that κ is on its way until ``sample_stats`` lands)."""
RUNS = (("smollm2-135m", "pretrained"), ("smollm2-135m-random", "random"))
"""(run id, init) of the demo runs; the first is the one the dashboard shows first."""
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
    """The RunConfig of each demo run (every stage)."""
    return [RunConfig(model=args.model, init=init, corpus=args.corpus, samples=args.samples,
                      runs_dir=Path(args.runs_dir), run_id=run_id) for run_id, init in RUNS]


def missing(cfg: RunConfig, stages: tuple[str, ...] | None = None) -> list[str]:
    """Stages of ``cfg``'s run not done yet (all stages when ``stages`` is None): not recorded as
    done, or done by an older resdyn that did not write one of the files the stage writes now."""
    from resdyn.core.store import RunStore

    store = RunStore(cfg.run_dir)
    done = set(store.manifest().get("stages_done", [])) if store.exists() else set()
    wanted = [st for st in registry.STAGES if stages is None or st.name in stages]
    return [st.name for st in wanted
            if st.name not in done or not all((store.path / o).is_file() for o in st.outputs)]


def plan(cfgs: list[RunConfig]) -> list[tuple[str, list[str]]]:
    """The background's work in order: [(run id, stages)], each run's ``FIRST`` stages in ``RUNS``
    order, then the rest of every run (what is already done is left out; the last entries run
    in parallel when ``--jobs`` > 1)."""
    steps = [(cfg.run_id, missing(cfg, FIRST)) for cfg in cfgs]
    steps += [(cfg.run_id, [n for n in missing(cfg) if n not in FIRST]) for cfg in cfgs]
    return [(run_id, names) for run_id, names in steps if names]


def compute(cfgs: list[RunConfig], stages: tuple[str, ...] | None, quiet: bool = False) -> None:
    """Compute ``stages`` (None: all) of every run in ``cfgs``, one after the other, skipping what is done."""
    from resdyn.compute import pipeline

    for cfg in cfgs:
        if missing(cfg, stages):
            # The rest of the run is computed next (plan): its stages are ahead of this pass.
            store = pipeline.run(dataclasses.replace(cfg, stages=",".join(stages) if stages else None), quiet=quiet,
                                 ahead=tuple(registry.names()))
            m = store.manifest()
            print(f"run {cfg.run_id}: {m['status']} ({', '.join(m['stages_done'])})", flush=True)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def jobs_default() -> int:
    """Runs computed at once in the last step: 2 with two cores or more, else 1."""
    return 2 if cores() >= 2 else 1


def _child_args(args, run_id: str) -> list[str]:
    return [sys.executable, "-m", "resdyn.demo", "--background", "--only", run_id, "--runs-dir", str(args.runs_dir),
            "--samples", str(args.samples), "--model", args.model, "--corpus", args.corpus]


def compute_all(args, quiet: bool = True) -> int:
    """Everything missing in both runs, in ``plan`` order: the ``FIRST`` stages of each run in
    this process, then the rest of each run in ``--jobs`` parallel processes (this one when 1).
    Returns 0, or the first failing child's exit status."""
    cfgs = configs(args)
    if args.only:
        signal.signal(signal.SIGUSR1, _take_the_cores)  # the parent's word that the sibling is done
        signal.siginterrupt(signal.SIGUSR1, False)  # system calls under way restart rather than fail
        cfgs = [c for c in cfgs if c.run_id == args.only]
        compute(cfgs, None, quiet=quiet)
        return 0
    for cfg in cfgs:
        compute([cfg], FIRST, quiet=quiet)
    rest = [cfg for cfg in cfgs if missing(cfg)]
    if len(rest) < 2 or args.jobs < 2:
        compute(rest, None, quiet=quiet)
        return 0
    # One process per run, each with its share of the cores for torch and BLAS: the later stages
    # mostly run one thread at a time, and two processes with two threads each oversubscribe.
    share = str(max(1, cores() // len(rest)))
    env = dict(os.environ, **{var: share for var in THREAD_VARS})  # COMPUTE_ENV is set: see main
    print(f"resdyn: the other stages of {', '.join(c.run_id for c in rest)} in {len(rest)} processes "
          f"({share} thread{'s' if share != '1' else ''} each)", flush=True)
    # Children start with SIGUSR1 ignored (inherited through exec) until they install their handler,
    # so the word that a sibling is done can never end a child that is still starting.
    old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        children = [subprocess.Popen(_child_args(args, cfg.run_id), env=env) for cfg in rest]
    finally:
        signal.signal(signal.SIGUSR1, old)
    return wait_and_hand_over(children)


def wait_and_hand_over(children: list[subprocess.Popen], poll: float = 1.0) -> int:
    """Wait for every child; when one finishes well while others still compute, send those SIGUSR1
    so they take its cores (``_take_the_cores``). The runs rarely take equally long (the random
    twin's per-sample statistics take about a quarter longer), and the later stages of the last run
    use torch's threads. Returns 0, or the first failing child's exit status in ``children`` order."""
    told = False
    while any(c.poll() is None for c in children):
        if not told and any(c.returncode == 0 for c in children):
            for c in children:
                if c.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        c.send_signal(signal.SIGUSR1)
            told = True
        time.sleep(poll)
    return next((c.returncode for c in children if c.returncode), 0)


def _take_the_cores(signum, frame) -> None:
    """SIGUSR1 in a child: its sibling is done, so torch's later operations here may use every core
    (taken at the next operation; the BLAS limits that the stages set themselves stay)."""
    n = cores()
    # A handler's exception would surface in whatever the process was doing: none may escape.
    with contextlib.suppress(Exception):
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(n)
        else:  # read when torch loads; no other thread reads the environment before that
            os.environ.update({var: str(n) for var in THREAD_VARS})
        print(f"resdyn: the other demo run is done; this one now uses {n} threads", flush=True)


def start_background(args) -> subprocess.Popen | None:
    """A low-priority process computing every remaining stage of both runs (``compute_all``), or
    None if none remain. It leads its own process group, so ``stop`` reaches its children too."""
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
    p.add_argument("--model", default="smollm2-135m", help="model of both runs (the demo uses the built-in one)")
    p.add_argument("--corpus", default="wiki-sample", help="corpus of both runs")
    p.add_argument("--address", default="127.0.0.1", help="dashboard address (0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8501, help="dashboard port")
    p.add_argument("--jobs", type=int, default=jobs_default(),
                   help="runs computed at once after both runs' first views (2 with two cores or more)")
    p.add_argument("--no-serve", action="store_true", help="compute every stage of both runs, then exit")
    p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)  # the computing process
    p.add_argument("--only", choices=[r for r, _ in RUNS], help=argparse.SUPPRESS)  # one run's rest (a child)
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
        todo = "; ".join(f"{run_id}: {', '.join(names)}" for run_id, names in plan(configs(args)))
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
