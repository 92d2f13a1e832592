"""``python -m resdyn.compute``: compute runs and list them. Flags come from ``RunConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from pathlib import Path

from resdyn.config import RunConfig, default_runs_dir
from resdyn.errors import ResdynError


def _flag_type(f: dataclasses.Field):
    if f.metadata.get("type"):
        return f.metadata["type"]
    hint = typing.get_type_hints(RunConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return base if base in (int, float, str) else str


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" unless the help text already says what the default is."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False or action.default == "":
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from resdyn.compute.stages import all_stages

    parser = argparse.ArgumentParser(
        prog="python -m resdyn.compute",
        description="Measure a transformer's residual stream as a dynamical system and write a run.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    stage_help = "; ".join(f"{s.name}: {s.description}" for s in all_stages())
    run = sub.add_parser(
        "run", help="compute (or resume) a run",
        description="Compute every stage of a run, skipping stages already done. Stages: " + stage_help,
        formatter_class=_HelpFormatter,
    )
    _add_config_flags(run)
    run.add_argument("--redo", default="", help="comma-separated stages to recompute even if done "
                     "(e.g. after a corrupt file is reported)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep = sub.add_parser(
        "sweep", help="compute several runs: every model × revision × init",
        description="Compute one run per combination of --model, --revision and --init (each takes "
                    "several values), with the other settings shared. Run ids are derived from model, "
                    "revision and init. With --executor ray the runs are computed at once, one Ray task "
                    "(one GPU when the cluster has any) per run; on several nodes the --runs-dir must be "
                    "on storage every node mounts. A failing run does not stop the others.",
        formatter_class=_HelpFormatter,
    )
    _add_config_flags(sweep, multi=SWEEP_AXES, skip=("run_id",))
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    lst = sub.add_parser("list", help="list the runs and their status (complete, partial or corrupt)")
    lst.add_argument("--runs-dir", type=str, default=None, help="default $RESDYN_RUNS_DIR or data/runs")
    ver = sub.add_parser(
        "verify", help="check every file of runs; exit 1 when any is damaged",
        description="Check each file of the given runs (default: every run) cheaply: Parquet footers and "
                    "schemas, .npy headers against the file size and the manifest's shapes, and the "
                    "manifest's finished stages against the files present. Prints one line per problem, "
                    "naming the file and the command that repairs it; exits 1 when there is any, else 0.",
    )
    ver.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (default: every run)")
    ver.add_argument("--runs-dir", type=str, default=None, help="default $RESDYN_RUNS_DIR or data/runs")
    upg = sub.add_parser(
        "upgrade", help="rewrite runs from an older resdyn in the current table schema",
        description="Bring runs written by an older resdyn (a lower schema_version in manifest.json) up to "
                    "the current schema in place: each table is cast to its declared dtypes and stamped "
                    "with the resdyn and schema versions, atomically, values unchanged; then the manifest's "
                    "schema_version goes up. Runs already current are left as they are. Exits 1 when a run "
                    "has a table that needs recomputing instead (named with its --redo).",
    )
    upg.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (default: every run)")
    upg.add_argument("--runs-dir", type=str, default=None, help="default $RESDYN_RUNS_DIR or data/runs")
    return parser


def explicit_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The destinations the command line set explicitly (not left at their defaults)."""
    saved = []
    for action in _all_actions(parser):
        saved.append((action, action.default))
        action.default = argparse.SUPPRESS
    try:
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)
        elif action.dest not in ("help", "command"):
            yield action


SWEEP_AXES = ("model", "revision", "init")


def _add_config_flags(parser: argparse.ArgumentParser, multi: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> None:
    """One flag per RunConfig field; fields in ``multi`` take several values (a sweep's axes)."""
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        if f.name in multi:
            parser.add_argument(flag, type=_flag_type(f), nargs="+", default=[f.default],
                                choices=f.metadata.get("choices"), help=f.metadata["help"] + " (several allowed)")
            continue
        parser.add_argument(flag, type=_flag_type(f), default=f.default, choices=f.metadata.get("choices"),
                            help=f.metadata["help"])


def cmd_sweep(ns) -> int:
    from resdyn.compute import executors

    kwargs = {f.name: getattr(ns, f.name) for f in dataclasses.fields(RunConfig)
              if f.name not in SWEEP_AXES and f.name != "run_id"}
    base = RunConfig(**kwargs, run_id="sweep")
    cfgs = executors.sweep_configs(base, ns.model, ns.revision, ns.init)
    with executors.make_executor(base) as ex:
        results = executors.run_sweep(cfgs, ex, quiet=ns.quiet)
    for run_id, outcome in results:
        print(f"run {run_id}: {outcome}")
    return 2 if any(o.startswith("error") for _, o in results) else 0


def settings_from_manifest(kwargs: dict, explicit: set[str]) -> dict:
    """For an existing run named by ``--run-id``, the settings the command line did not give are
    taken from its manifest, so `run --run-id X --redo STAGE` repairs or finishes run X whatever
    model and settings it was computed with. Explicit flags are kept (and checked by the pipeline)."""
    from resdyn.config import validate_run_id
    from resdyn.core.verify import read_manifest
    from resdyn.core.store import RunStore

    if "run_id" not in explicit or not kwargs.get("run_id"):
        return kwargs
    validate_run_id(kwargs["run_id"])
    store = RunStore(Path(kwargs["runs_dir"] or default_runs_dir()) / kwargs["run_id"])
    m, _ = read_manifest(store)
    if m is None:
        return kwargs
    out = dict(kwargs)
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("manifest") and f.name not in explicit and f.name in m:
            out[f.name] = m[f.name]
    if "samples" not in explicit and m.get("n_samples"):
        out["samples"] = int(m["n_samples"])
    return out


def cmd_run(ns) -> int:
    from resdyn.compute import pipeline

    kwargs = {f.name: getattr(ns, f.name) for f in dataclasses.fields(RunConfig)}
    cfg = RunConfig(**settings_from_manifest(kwargs, ns.explicit))
    redo = tuple(s.strip() for s in ns.redo.split(",") if s.strip())
    store = pipeline.run(cfg, quiet=ns.quiet, redo=redo)
    m = store.manifest()
    secs = sum(m["timings"].values())
    print(f"run {m['run_id']}: {m['status']} ({', '.join(m['stages_done'])}) in {store.path}, {secs:.1f} s of compute")
    return 0


def cmd_list(ns) -> int:
    from resdyn.core.queries import runs

    from resdyn.core.store import RunStore
    from resdyn.core.verify import check_run

    root = Path(ns.runs_dir or default_runs_dir())
    df = runs(root)
    if df.empty:
        print(f"no runs in {root}")
        return 0
    damaged = {rid for rid in df["run_id"] if check_run(RunStore(root / rid))}
    df.loc[df["run_id"].isin(damaged), "status"] = "corrupt"
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs in {root}")
    cols = ["run_id", "status", "model", "init", "architecture", "n_layers", "d_model", "n_samples", "stages_done", "seconds"]
    for c in cols:
        table.add_column(c)
    for _, row in df.iterrows():
        table.add_row(*[str(row[c]) for c in cols])
    Console(width=200).print(table)
    if damaged:
        print(f"{len(damaged)} run(s) have damaged files: `python -m resdyn.compute verify --runs-dir {root}` "
              "names each with the command that repairs it")
    return 0


def cmd_verify(ns) -> int:
    from resdyn.core.verify import check_runs

    root = Path(ns.runs_dir or default_runs_dir())
    checked, problems = check_runs(root, ns.run_ids or None)
    for p in problems:
        print(p.line())
    _print_upgrade_notes(root, checked)
    bad = len({p.run_id for p in problems})
    print(f"{len(checked)} run(s) checked in {root}: " +
          (f"{len(problems)} problem(s) in {bad} run(s)" if problems else "no problems"))
    return 1 if problems else 0


def _print_upgrade_notes(root: Path, run_ids: list[str]) -> None:
    """One line per run written at an older schema (not damage): the command that upgrades it."""
    from resdyn.core.store import RunStore
    from resdyn.core.verify import upgrade_note

    for rid in run_ids:
        note = upgrade_note(RunStore(root / rid))
        if note:
            print(note)


def cmd_upgrade(ns) -> int:
    from resdyn.core.upgrade import upgrade_runs

    reports = upgrade_runs(Path(ns.runs_dir or default_runs_dir()), ns.run_ids or None)
    for r in reports:
        print("\n".join(r.lines()))
    return 1 if any(r.blocked for r in reports) else 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="resdyn: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.explicit = explicit_flags(parser, argv)
    try:
        return {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "verify": cmd_verify,
                "upgrade": cmd_upgrade}[ns.command](ns)
    except ResdynError as exc:
        print(f"resdyn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resdyn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
