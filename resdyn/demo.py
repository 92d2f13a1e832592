"""``make demo``: compute the two demo runs and serve the dashboard, the first views first.

    python -m resdyn.demo                       # what `make demo` runs
    python -m resdyn.demo --no-serve            # compute everything, then exit (no dashboard)

The demo runs are the built-in SmolLM2-135M, trained and ``--init random``, on the first
``--samples`` offline Wikipedia passages. Every stage of a run takes about 10 minutes per run on a
2-core CPU, most of it in the Schur dose grid and the pseudospectra. So the demo computes in two
passes:

1. in the foreground, with progress bars, the stages the first views need (``FIRST``: the
   activations, the Jacobians and their spectra) for both runs: about 8.5 minutes on 2 cores;
2. then it serves the dashboard and, in a background process at low priority, computes the other
   stages of both runs (log: ``RUNS/demo-background.log``). Pages show what a run has and name
   the stages still missing until they land; each finished stage is saved, so stopping the demo
   loses nothing, and the next ``make demo`` resumes there.

A run that is already complete is skipped, so a second ``make demo`` serves at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from resdyn import stages as registry
from resdyn.config import RunConfig, default_runs_dir

FIRST = tuple(registry.upstream("spectra"))
"""Stages computed before the dashboard opens: what the Runs, Spectrum and Operator-type pages
show (the "spectra" stage and what it reads)."""
RUNS = (("smollm2-135m", "pretrained"), ("smollm2-135m-random", "random"))
"""(run id, init) of the demo runs."""
LOG = "demo-background.log"


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


def compute(cfgs: list[RunConfig], stages: tuple[str, ...] | None, quiet: bool = False) -> None:
    """Compute ``stages`` (None: all) of every run in ``cfgs``, skipping what is done."""
    import dataclasses

    from resdyn.compute import pipeline

    for cfg in cfgs:
        if missing(cfg, stages):
            store = pipeline.run(dataclasses.replace(cfg, stages=",".join(stages) if stages else None), quiet=quiet)
            m = store.manifest()
            print(f"run {cfg.run_id}: {m['status']} ({', '.join(m['stages_done'])})", flush=True)


def start_background(args) -> subprocess.Popen | None:
    """A low-priority process computing every remaining stage of both runs, or None if none remain."""
    if not any(missing(cfg) for cfg in configs(args)):
        return None
    log = Path(args.runs_dir) / LOG
    cmd = [sys.executable, "-m", "resdyn.demo", "--background", "--runs-dir", str(args.runs_dir),
           "--samples", str(args.samples), "--model", args.model, "--corpus", args.corpus]
    with open(log, "ab") as out:
        # Niced so the dashboard stays responsive; its own process group, so stopping the demo
        # with Ctrl-C reaches it through `stop` rather than mid-write (writes are atomic anyway).
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: os.nice(10))


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.poll() is None:
        proc.kill()


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
    p.add_argument("--no-serve", action="store_true", help="compute every stage of both runs, then exit")
    p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)  # the second pass
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resdyn.demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_arguments(p)


def run(args) -> int:
    """Compute the demo runs as ``args`` say and serve them; errors propagate (``main`` prints them)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    cfgs = configs(args)
    if args.background or args.no_serve:
        compute(cfgs, None, quiet=args.background)
        return 0
    compute(cfgs, FIRST)
    proc = start_background(args)
    if proc is not None:
        rest = sorted({s for cfg in cfgs for s in missing(cfg)})
        print(f"resdyn: the dashboard opens now; stages still computing in the background: "
              f"{', '.join(rest)} (log: {Path(args.runs_dir) / LOG}). Pages fill in as they finish.",
              flush=True)
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
