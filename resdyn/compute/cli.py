"""The `resdyn` command line (also `python -m resdyn.compute`): one parser for every subcommand.

Subcommands compute (run, sweep, demo), inspect (list, verify, upgrade, sql) and share (report, serve).
The flags of run and sweep come from ``RunConfig`` (``resdyn.config``). Importing this module
and parsing need no torch: `resdyn --version`, `list`, `verify` and `sql` work on the light
core install; run, sweep and demo import torch when they start.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from pathlib import Path

from resdyn.config import RunConfig, default_runs_dir
from resdyn.errors import ResdynError, UsageError


def _flag_type(f: dataclasses.Field):
    if f.metadata.get("type"):
        return f.metadata["type"]
    hint = typing.get_type_hints(RunConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return base if base in (int, float, str) else str


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" unless the help text already says what the default is; keeps the
    line breaks of descriptions and epilogs (examples)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False or action.default == "":
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with the one error line of every resdyn command: ``resdyn: error: ...``, exit 2."""

    def error(self, message):
        self.exit(2, f"resdyn: error: {message}; see `{self.prog} --help`\n")


COMMANDS = (  # (section, command, summary): the grouped listing of `resdyn --help`, in order
    ("compute", "run", "compute (or resume) a run"),
    ("compute", "sweep", "compute several runs: every model x revision x init"),
    ("compute", "demo", "compute the four demo runs and serve the dashboard (what `make demo` runs)"),
    ("inspect", "list", "list the runs and their status (--json for scripts)"),
    ("inspect", "verify", "check every file of runs; exit 1 when any is damaged"),
    ("inspect", "upgrade", "rewrite runs from an older resdyn in the current table schema"),
    ("inspect", "sql", "query runs with SQL: every table is a view over all runs with a run_id column"),
    ("inspect", "claims", "judge the papers' claims on a run against its random-init seeds and nulls"),
    ("share", "report", "write a self-contained HTML report of one or more runs"),
    ("share", "serve", "serve the dashboard on a runs directory"),
)

EXAMPLES = """examples:
  resdyn run --model smollm2-135m --samples 128 --run-id my-run
  resdyn run --model allenai/OLMo-2-1124-7B --revision stage1-step140000-tokens588B   # run id allenai--OLMo-2-1124-7B
  resdyn run --run-id my-run --redo spectra          # recompute one stage (and what reads it)
  resdyn list --json
  resdyn sql "select run_id, layer, henrici from layers where operator = 'J' order by run_id, layer"
  resdyn report my-run my-run-random --out report.html
  resdyn serve --runs-dir data/runs --port 8501

exit status: 0 success; 1 runtime error (a missing or damaged file, an unknown run, a model that
cannot be loaded, a full disk, ...); 2 usage error (a bad flag or value, an unknown stage, an invalid
run id, settings that clash with an existing run); 130 interrupted (rerun the same command to
resume). `python -m resdyn.compute ...` is the same command."""

RUNS_DIR_HELP = "directory holding runs (default $RESDYN_RUNS_DIR or data/runs)"


def build_parser() -> argparse.ArgumentParser:
    from resdyn import __version__
    from resdyn.compute.stages import all_stages

    listing = "\n".join(
        f"{section}:\n" + "\n".join(f"  {name:<8}{summary}" for sec, name, summary in COMMANDS if sec == section)
        for section in dict.fromkeys(sec for sec, _, _ in COMMANDS))
    parser = _Parser(
        prog="resdyn", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure a transformer's residual stream as a dynamical system: compute runs, query "
                    "them, show them.\n\n" + listing, epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"resdyn {__version__}")
    # The grouped listing above replaces argparse's flat one.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)

    def command(name: str, description: str, epilog: str | None = None):
        return sub.add_parser(name, description=_wrap(description, indent=0), epilog=epilog,
                              formatter_class=_HelpFormatter)

    stage_help = "\n".join(f"  {s.name:<18}{s.description}" for s in all_stages())
    run = command(
        "run", "Compute every stage of a run, skipping stages already done; a killed run resumes where it "
               "stopped. On an existing --run-id, settings not given are taken from its manifest.",
        epilog="stages, in computation order:\n" + _wrap(stage_help) + "\n\nexamples:\n"
               "  resdyn run --model smollm2-135m --samples 128 --run-id my-run\n"
               "  resdyn run --model smollm2-135m --init random --samples 128     # the random-init twin\n"
               "  resdyn run --init random --seeds 1,2 --stages claims   # two more twins, for the Claims table\n"
               "  resdyn run --run-id my-run --stages activations,jacobians,spectra\n"
               "  resdyn run --run-id my-run --redo jacobians          # after verify names a damaged file")
    _add_seeds_flag(_add_config_flags(run))
    own = run.add_argument_group("this command")
    own.add_argument("--redo", default="", help="comma-separated stages to recompute even if done "
                     "(e.g. after a corrupt file is reported); the stages that read them follow")
    own.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep = command(
        "sweep", "Compute one run per combination of --model, --revision and --init (each takes several "
                 "values) and --seeds, with the other settings shared. Each run's id is the one `resdyn run` "
                 "derives from the same settings (a hub id keeps its organisation: org--name; -random, mode, "
                 "position, -seedS) with the revision after the model. With --executor ray the runs are computed at "
                 "once, one Ray task (one GPU when the cluster has any) per run; on several nodes the --runs-dir "
                 "must be on storage every node mounts. A failing run does not stop the others; the exit status "
                 "is 1 when any failed.",
        epilog="examples:\n  resdyn sweep --model allenai/OLMo-2-1124-7B --revision main stage1-step140000-tokens588B "
               "--init pretrained random\n  resdyn sweep --model smollm2-135m --init random --seeds 0,1,2   "
               "# smollm2-135m-random, -random-seed1, -random-seed2")
    _add_seeds_flag(_add_config_flags(sweep, multi=SWEEP_AXES, skip=("run_id",)))
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    demo_cmd = command(
        "demo", "Serve the dashboard at once and compute the four demo runs (SmolLM2-135M trained, and "
                "random-init with seeds 0, 1 and 2) behind it in a background process: the first views "
                "(activations, jacobians, spectra) of the trained run and of the seed-0 twin first, then "
                "every other stage of both, then the stages the Claims table reads (--stages claims) of "
                "seeds 1 and 2. A second call serves at once.")
    from resdyn import demo

    demo.add_arguments(demo_cmd)
    lst = command("list", "List the runs of a runs directory: status (complete, partial, or corrupt when a "
                          "file is damaged), model, sizes, stages and compute time.",
                  epilog="example:\n  resdyn list --json | python -c 'import json,sys; print(len(json.load(sys.stdin)))'")
    lst.add_argument("--runs-dir", type=str, default=None, help=RUNS_DIR_HELP)
    lst.add_argument("--json", action="store_true",
                     help="print a JSON array, one object per run, with the columns of resdyn.runs() "
                          "(stages_done and missing_stages as arrays)")
    ver = command(
        "verify", "Check each file of the given runs (default: every run) cheaply: Parquet footers and "
                  "schemas, .npy headers against the file size and the manifest's shapes, and the manifest's "
                  "finished stages against the files present. Prints one line per problem, naming the file "
                  "and the command that repairs it; exits 1 when there is any, else 0.")
    ver.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (default: every run)")
    ver.add_argument("--runs-dir", type=str, default=None, help=RUNS_DIR_HELP)
    upg = command(
        "upgrade", "Bring runs written by an older resdyn (a lower schema_version in manifest.json) up to "
                   "the current schema in place: each table is cast to its declared dtypes and stamped with "
                   "the resdyn and schema versions, atomically, values unchanged; then the manifest's "
                   "schema_version goes up. Runs already current are left as they are. Exits 1 when a run "
                   "has a table that needs recomputing instead (named with its --redo).")
    upg.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (default: every run)")
    upg.add_argument("--runs-dir", type=str, default=None, help=RUNS_DIR_HELP)
    sql = command(
        "sql", "Run a DuckDB SQL query over the runs and print the result. Every table name (layers, "
               "eigenvalues, samples, ...; the README's data contract) is a view over all runs that have it, "
               "with a first column run_id; `runs` is the view of the runs' manifests (resdyn list). With "
               "--run, the views are that run's tables as written.",
        epilog="examples:\n"
               "  resdyn sql \"select run_id, layer, henrici from layers where operator = 'J'\"\n"
               "  resdyn sql \"select r.init, avg(l.frac_complex) from layers l join runs r using (run_id) "
               "group by r.init\"\n"
               "  resdyn sql --run my-run \"select * from summary\" --format csv")
    sql.add_argument("query", help="the SQL (DuckDB dialect); quote it for the shell")
    sql.add_argument("--run", default=None, metavar="RUN", help="query one run's tables (no run_id column)")
    sql.add_argument("--runs-dir", type=str, default=None, help=RUNS_DIR_HELP)
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table",
                     help="table (aligned text), csv, or json (an array of row objects)")
    clm = command(
        "claims", "Judge each claim of the two papers on RUN by one rule: beyond the 95 % prediction interval "
                  "of its random-init ensemble in the claimed direction, by more than the run's sampling noise, "
                  "and different from the null (README, Verdicts). The ensemble is every random-init run in the "
                  "runs directory that matches RUN on each analysis key (model, revision, mode, position, "
                  "corpus, samples, dtype, k, cumulative rank, community method, coupling settings), unless "
                  "--twin names the runs to judge against (any init: a random-init run judged against other "
                  "seeds of itself is the null-against-null check).",
        epilog="examples:\n"
               "  resdyn claims smollm2-135m\n"
               "  resdyn claims smollm2-135m-random --twin smollm2-135m-random-seed1,smollm2-135m-random-seed2\n"
               "  resdyn claims smollm2-135m --json | python -c 'import json,sys; print(json.load(sys.stdin)[0])'")
    clm.add_argument("run", metavar="RUN", help="run id in the runs directory")
    clm.add_argument("--twin", default=None, metavar="RUN[,RUN...]",
                     help="the runs to judge against, comma-separated (default: the matching random-init runs)")
    clm.add_argument("--json", action="store_true", help="print a JSON array, one object per claim")
    clm.add_argument("--runs-dir", default=None, help=RUNS_DIR_HELP)
    rep = command(
        "report", "Write a self-contained HTML report of one or more runs: per run the manifest facts, "
                  "headline numbers, regime tables and key figures; with several runs also a comparison. "
                  "plotly.js is embedded, so the file opens offline.")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run ids in the runs directory")
    rep.add_argument("--out", default="report.html", help="HTML file to write")
    rep.add_argument("--runs-dir", default=None, help=RUNS_DIR_HELP)
    rep.add_argument("--images", default=None, metavar="DIR",
                     help="also write every figure as SVG and PNG into DIR (needs Chromium)")
    rep.add_argument("--title", default=None, help="title of the report (default: the run ids)")
    srv = command(
        "serve", "Serve the dashboard (Streamlit) on a runs directory, from any working directory. It "
                 "listens on 127.0.0.1 unless --address says otherwise; see the README before exposing it.")
    srv.add_argument("--runs-dir", default=None, help=RUNS_DIR_HELP)
    srv.add_argument("--address", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it)")
    srv.add_argument("--port", type=int, default=8501, help="port")
    return parser


def _wrap(text: str, width: int = 100, indent: int = 20) -> str:
    """Each line of ``text`` filled to ``width``, continuation lines indented by ``indent``."""
    import textwrap

    return "\n".join(textwrap.fill(line, width, subsequent_indent=" " * indent) for line in text.splitlines())


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


def _add_config_flags(parser: argparse.ArgumentParser, multi: tuple[str, ...] = (),
                      skip: tuple[str, ...] = ()) -> dict[str, argparse._ArgumentGroup]:
    """One flag per RunConfig field, in the sections of ``config.FLAG_GROUPS``; fields in
    ``multi`` take several values (a sweep's axes). Returns each field's section (by field name),
    so a command can add a flag of its own beside a setting's."""
    from resdyn.config import FLAG_GROUPS

    groups = {name: group for title, names in FLAG_GROUPS.items()
              for group in [parser.add_argument_group(title)] for name in names}
    other = None
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        if f.name not in groups:  # a field not yet given a section still gets its flag
            other = other or parser.add_argument_group("other settings")
        group = groups.get(f.name, other)
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        if f.name in multi:
            group.add_argument(flag, type=_flag_type(f), nargs="+", default=[f.default],
                               choices=f.metadata.get("choices"), help=f.metadata["help"] + " (several allowed)")
            continue
        group.add_argument(flag, type=_flag_type(f), default=f.default, choices=f.metadata.get("choices"),
                           help=f.metadata["help"])
    return groups


SEEDS_HELP = ("one run per seed, computed one after the other, e.g. --init random --seeds 0,1,2 (an init-seed "
              "ensemble); seed 0 keeps the run id without a seed, seed S gets '-seedS' (also after an explicit "
              "--run-id); instead of --seed")


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: comma-separated distinct integers ≥ 0 ("0,1,2" -> [0, 1, 2]), in the order
    given; anything else is an argparse error (one line, exit 2)."""
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError("needs at least one seed, e.g. --seeds 0,1,2")
    seeds = []
    for p in parts:
        if not p.isdigit():  # also refuses '-1', '1.5' and empty items ('0,,1')
            raise argparse.ArgumentTypeError(f"seeds are integers 0 or more, separated by commas; got {p!r}")
        if int(p) in seeds:
            raise argparse.ArgumentTypeError(f"seed {int(p)} is given twice")
        seeds.append(int(p))
    return seeds


def _add_seeds_flag(groups: dict[str, argparse._ArgumentGroup]) -> None:
    groups["seed"].add_argument("--seeds", type=parse_seeds, default=None, metavar="S1,S2,...", help=SEEDS_HELP)


def _seeds(ns) -> list[int] | None:
    """The seeds of ``--seeds`` (None without it), after refusing it beside ``--seed``."""
    if ns.seeds is not None and "seed" in ns.explicit:
        raise UsageError("give either --seed S (one run) or --seeds S1,S2,... (one run per seed), not both")
    return ns.seeds


def cmd_sweep(ns) -> int:
    from resdyn.compute import executors

    kwargs = {f.name: getattr(ns, f.name) for f in dataclasses.fields(RunConfig)
              if f.name not in SWEEP_AXES and f.name != "run_id"}
    base = RunConfig(**kwargs, run_id="sweep")
    cfgs = executors.sweep_configs(base, ns.model, ns.revision, ns.init, _seeds(ns))
    with executors.make_executor(base) as ex:
        results = executors.run_sweep(cfgs, ex, quiet=ns.quiet)
    for run_id, outcome in results:
        print(f"run {run_id}: {outcome}")
    return 1 if any(o.startswith("error") for _, o in results) else 0


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


def run_configs(ns) -> list[RunConfig]:
    """The runs `resdyn run` computes, in order: one, or one per ``--seeds`` seed (id from
    ``config.seed_run_id``: an explicit ``--run-id`` names seed 0 and gets ``-seedS`` for the
    others). Every config is built, so checked, before the first run starts."""
    from resdyn.config import seed_run_id

    kwargs = {f.name: getattr(ns, f.name) for f in dataclasses.fields(RunConfig)}
    seeds = _seeds(ns)
    if seeds is None:
        return [RunConfig(**settings_from_manifest(kwargs, ns.explicit))]
    cfgs = []
    for seed in seeds:
        one = dict(kwargs, seed=seed)
        if one["run_id"]:
            one["run_id"] = seed_run_id(one["run_id"], seed)
        cfgs.append(RunConfig(**settings_from_manifest(one, ns.explicit | {"seed"})))
    return cfgs


def cmd_run(ns) -> int:
    from resdyn.compute import pipeline

    cfgs = run_configs(ns)
    redo = tuple(s.strip() for s in ns.redo.split(",") if s.strip())
    for i, cfg in enumerate(cfgs):
        if len(cfgs) > 1:
            print(f"resdyn: run {i + 1} of {len(cfgs)}: {cfg.run_id} (seed {cfg.seed})", flush=True)
        store = pipeline.run(cfg, quiet=ns.quiet, redo=redo)
        m = store.manifest()
        secs = sum(m["timings"].values())
        print(f"run {m['run_id']}: {m['status']} ({', '.join(m['stages_done'])}) in {store.path}, "
              f"{secs:.1f} s of compute", flush=True)
    return 0


LIST_COLUMNS = ("run_id", "status", "model", "init", "seed", "architecture", "n_layers", "d_model", "n_samples",
                "stages", "missing", "seconds")


def cmd_list(ns) -> int:
    import json

    from resdyn.core.queries import require_runs_dir, run_rows

    root = require_runs_dir(ns.runs_dir or default_runs_dir())
    rows = run_rows(root, check=True)
    if ns.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no runs in {root}")
        return 0
    import pandas as pd

    table = pd.DataFrame([{**r, "stages": f"{len(r['stages_done'] or [])}/{len(r['stages_done'] or []) + len(r['missing_stages'] or [])}",
                           "missing": ",".join(r["missing_stages"] or []) or "-"} for r in rows])
    print(f"runs in {root}:")
    print(table[list(LIST_COLUMNS)].fillna("?").to_string(index=False))
    damaged = [r["run_id"] for r in rows if r["status"] == "corrupt"]
    if damaged:
        print(f"{len(damaged)} run(s) have damaged files: `resdyn verify --runs-dir {root}` "
              "names each with the command that repairs it")
    return 0


def cmd_sql(ns) -> int:
    import warnings

    from resdyn import api

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if ns.run:
            df = api.open_run(ns.run, ns.runs_dir).sql(ns.query)
        else:
            df = api.sql(ns.query, ns.runs_dir)
    for w in caught:
        print(f"resdyn: warning: {w.message}", file=sys.stderr)
    if ns.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif ns.format == "json":
        print(df.to_json(orient="records", indent=2))
    else:
        print(df.to_string(index=False) if len(df.columns) else "(no columns)")
    return 0


def cmd_claims(ns) -> int:
    import json

    import numpy as np

    from resdyn.core.claims import claims_table
    from resdyn.core.queries import require_runs_dir

    root = require_runs_dir(ns.runs_dir or default_runs_dir())
    twins = None
    if ns.twin is not None:
        twins = [t.strip() for t in ns.twin.split(",") if t.strip()]
        if not twins:
            raise UsageError("--twin needs at least one run id")
    res = claims_table(root, ns.run, twins)
    table = res.table
    if ns.json:
        rows = []
        for i, r in enumerate(table.to_dict("records"), 1):
            rows.append({"n": i, **{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                    for k, v in r.items()}, "ensemble": res.ensemble})
        print(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
        return 0
    how = "given with --twin" if res.explicit else "matched on every analysis key"
    print(f"claims of {res.run_id}, judged against {len(res.ensemble)} random-init run(s) ({how}): "
          + (", ".join(res.ensemble) or "none"))
    import pandas as pd

    show = table[["claim", "verdict", "run", "twin", "null"]].copy()
    show.insert(0, "#", range(1, len(show) + 1))
    with pd.option_context("display.max_colwidth", 48, "display.width", 200):
        print(show.fillna("—").to_string(index=False))
    print("\nwhy:")
    for i, (claim, verdict, note) in enumerate(zip(table["claim"], table["verdict"], table["note"]), 1):
        print(f"  {i:>2}. {verdict}: {note}")
    return 0


def cmd_report(ns) -> int:
    import time

    from resdyn import report

    t0 = time.perf_counter()
    out = report.write_report(ns.runs, ns.out, ns.runs_dir, ns.images, ns.title)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_serve(ns) -> int:
    from resdyn import dashboard

    return dashboard.serve(ns.runs_dir or default_runs_dir(), ns.address, ns.port, replace_process=True)


def cmd_demo(ns) -> int:
    from resdyn import demo

    return demo.run(ns)


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

COMMAND_FUNCTIONS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "verify": cmd_verify,
                     "upgrade": cmd_upgrade, "sql": cmd_sql, "claims": cmd_claims, "report": cmd_report, "serve": cmd_serve,
                     "demo": cmd_demo}


def main(argv=None) -> int:
    """The `resdyn` command (also `python -m resdyn.compute`, `python -m resdyn`); its exit status:
    0, 1 for a runtime error, 2 for a usage error, 130 when interrupted. Errors print one line,
    ``resdyn: error: ...``, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="resdyn: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        if ns.command in ("run", "sweep"):
            ns.explicit = explicit_flags(parser, argv)
    except SystemExit as exc:  # --help and --version (0), usage errors (2): argparse printed them
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return COMMAND_FUNCTIONS[ns.command](ns)
    except UsageError as exc:
        print(f"resdyn: error: {exc}", file=sys.stderr)
        return 2
    except ResdynError as exc:
        print(f"resdyn: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("resdyn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
