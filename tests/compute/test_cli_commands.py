"""The `resdyn` command line: one parser, grouped help, exit statuses, list --json, sql, serve."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import resdyn
from resdyn.compute import cli
from resdyn.compute.cli import main
from resdyn.config import FLAG_GROUPS, RunConfig
from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN

ROOT = Path(__file__).resolve().parents[2]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_version_and_grouped_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"resdyn {resdyn.__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    # Sections in order, each command under its own, and examples and exit statuses at the end.
    assert out.index("compute:\n  run") < out.index("inspect:\n  list") < out.index("share:\n  report")
    for _, name, summary in cli.COMMANDS:
        assert f"  {name:<8}{summary}" in out
    assert "examples:\n  resdyn run --model" in out and "2 usage error" in out and "130 interrupted" in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for title in FLAG_GROUPS:
        assert f"\n{title}:\n" in out
    sections = out[out.index("\nmodel and passages:"):]
    assert sections.index("--model MODEL") < sections.index("\nmeasurement:") < sections.index("--mode {")
    assert "stages, in computation order:" in out and "examples:" in out


def test_every_run_setting_is_in_exactly_one_help_section():
    grouped = [name for names in FLAG_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(RunConfig))


@pytest.mark.parametrize("argv, status, message", [
    ([], 2, "the following arguments are required: COMMAND"),
    (["frobnicate"], 2, "argument COMMAND: invalid choice: 'frobnicate'"),
    (["list", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["run", "--samples", "0"], 2, "--samples must be at least 1, got 0"),
    (["run", "--run-id", "a/b"], 2, "invalid run id 'a/b'"),
    (["run", "--stages", "spectra,nope"], 2, "unknown stage(s) nope"),
    (["run", "--stages", "claims,nope"], 2, "unknown stage(s) nope"),
    (["run", "--seeds", ""], 2, "argument --seeds: needs at least one seed"),
    (["run", "--seeds", "-1"], 2, "argument --seeds: seeds are integers 0 or more, separated by commas; got '-1'"),
    (["run", "--seeds", "a"], 2, "argument --seeds: seeds are integers 0 or more, separated by commas; got 'a'"),
    (["run", "--seeds", "0,,1"], 2, "got ''"),
    (["run", "--seeds", "1,2,1"], 2, "seed 1 is given twice"),
    (["run", "--seed", "1", "--seeds", "0,1"], 2, "give either --seed S (one run) or --seeds S1,S2,..."),
    (["run", "--seed", "-1"], 2, "--seed must be 0 or more, got -1"),
    (["run", "--seeds", "0,1", "--run-id", "a/b"], 2, "invalid run id 'a/b'"),
    (["sweep", "--seeds", "x"], 2, "argument --seeds: seeds are integers"),
    (["sweep", "--seed", "0", "--seeds", "1"], 2, "give either --seed S"),
    (["sql", "selec 1"], 2, "SQL failed: Parser Error"),
    (["verify", "nope"], 1, "no run 'nope' in"),
    (["report", "nope"], 1, "no run 'nope' in"),
    (["list", "--runs-dir", "/nonexistent/runs"], 1, "runs directory /nonexistent/runs does not exist"),
    (["serve", "--runs-dir", "/nonexistent/runs"], 1, "runs directory /nonexistent/runs does not exist"),
])
def test_exit_status_and_one_error_line(synthetic_runs_env, capsys, argv, status, message):
    assert main(argv) == status
    err = _err(capsys)
    assert err.startswith("resdyn: error: ") and "\n" not in err and message in err, err


def test_python_m_resdyn_compute_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "resdyn.compute", "list", "--bogus"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("resdyn: error: unrecognized arguments: --bogus")


def test_interrupt_exits_130(tmp_path):
    """A real SIGINT while a command runs: one line, exit 130."""
    # A shell starts background jobs with SIGINT ignored, and Python then installs no handler: put
    # back the handler a terminal's foreground process has, so the test does not depend on how it
    # was launched (`make test &` in CI scripts).
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import time, resdyn.compute.cli as c\n"
            "def slow(ns):\n    print('started', flush=True)\n    time.sleep(60)\n"
            "c.COMMAND_FUNCTIONS['list'] = slow\n"
            "raise SystemExit(c.main(['list']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "resdyn: interrupted; rerun the same command to resume"


def test_list_json_is_one_object_per_run(synthetic_runs_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir, runs)
    (runs / RANDOM_RUN / "eigenvalues.parquet").write_bytes(b"not parquet")
    assert main(["list", "--json", "--runs-dir", str(runs)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == [RANDOM_RUN, TRAINED_RUN]
    by_id = {r["run_id"]: r for r in rows}
    assert by_id[RANDOM_RUN]["status"] == "corrupt" and by_id[TRAINED_RUN]["status"] == "complete"
    t = by_id[TRAINED_RUN]
    assert (t["n_layers"], t["d_model"], t["n_samples"]) == (SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"],
                                                             SYNTHETIC_SIZES["n_samples"])
    manifest = json.loads((runs / TRAINED_RUN / "manifest.json").read_text())
    assert t["stages_done"] == manifest["stages_done"] and isinstance(t["missing_stages"], list)
    assert t["model"] == manifest["model"] and t["init"] == "pretrained"
    # The same facts as resdyn.runs(), where the stage lists are "a,b" strings.
    df = resdyn.runs(runs).set_index("run_id")
    for r in rows:
        for key, value in r.items():
            if key == "run_id":
                continue
            want = ",".join(value) if isinstance(value, list) else value
            got = df.loc[r["run_id"], key]
            assert (want is None and pd.isna(got)) or got == want, (key, got, want)
    # The text listing names the damage and the command that lists its repair.
    assert main(["list", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert f"resdyn verify --runs-dir {runs}" in out and "corrupt" in out


def test_list_of_an_empty_directory(tmp_path, capsys):
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no runs in {tmp_path}"
    assert main(["list", "--json", "--runs-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_sql_command_across_runs_and_for_one_run(synthetic_runs_dir, capsys):
    q = "select run_id, count(*) as n from eigenvalues group by run_id order by run_id"
    assert main(["sql", q, "--runs-dir", str(synthetic_runs_dir), "--format", "json"]) == 0
    n = SYNTHETIC_SIZES["n_layers"] * SYNTHETIC_SIZES["d"] * 2  # J and R
    assert json.loads(capsys.readouterr().out) == [{"run_id": RANDOM_RUN, "n": n}, {"run_id": TRAINED_RUN, "n": n}]
    assert main(["sql", "select layer, operator from layers order by operator, layer limit 2", "--run", TRAINED_RUN,
                 "--runs-dir", str(synthetic_runs_dir), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "layer,operator\n0,J\n1,J\n"
    assert main(["sql", "select 1 as one", "--runs-dir", str(synthetic_runs_dir)]) == 0
    assert capsys.readouterr().out.split() == ["one", "1"]


def test_report_prints_resdyn_errors_and_writes(synthetic_runs_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", TRAINED_RUN, "--out", str(out), "--runs-dir", str(synthetic_runs_dir)]) == 0
    assert out.is_file() and capsys.readouterr().out.startswith(f"wrote {out}")


def test_serve_becomes_streamlit_on_the_dashboard_app_and_absolute_runs_dir(synthetic_runs_dir, monkeypatch,
                                                                           tmp_path):
    from resdyn import dashboard

    seen = {}

    def fake_execve(path, cmd, env):
        seen.update(path=path, cmd=cmd, env=env, cwd=Path.cwd())
        raise SystemExit(0)  # an exec does not return

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execve", fake_execve)
    rel = os.path.relpath(synthetic_runs_dir, tmp_path)
    with pytest.raises(SystemExit):
        main(["serve", "--runs-dir", rel, "--port", "8642"])
    assert seen["path"] == sys.executable and seen["cmd"][:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(seen["cmd"][4]) == dashboard.app_path() == ROOT / "app.py"  # the checkout's app
    assert seen["cmd"][5:] == ["--server.address", "127.0.0.1", "--server.port", "8642", "--server.headless", "true"]
    # Streamlit finds .streamlit/config.toml in its working directory; the runs dir survives the chdir.
    assert seen["env"]["RESDYN_RUNS_DIR"] == str(synthetic_runs_dir.resolve()) and seen["cwd"] == ROOT


@pytest.mark.parametrize("model, init, run_id", [
    ("allenai/OLMo-2-1124-7B", "pretrained", "allenai--OLMo-2-1124-7B"),
    ("allenai/OLMo-2-1124-7B", "random", "allenai--OLMo-2-1124-7B-random"),
    ("smollm2-135m", "pretrained", "smollm2-135m"),
    ("/data/checkpoints/step1000", "pretrained", "step1000"),
    ("./models/tiny", "random", "tiny-random"),
])
def test_default_run_id_keeps_a_hub_organisation(model, init, run_id):
    assert RunConfig(model=model, init=init).run_id == run_id


def test_seed_0_keeps_the_run_id_and_other_seeds_get_their_own():
    """Seed 0 is named as runs were before seeds were (existing runs and fixtures stay valid);
    seed S appends -seedS after everything else, for any init; an explicit id gets it too."""
    from resdyn.config import seed_run_id

    assert RunConfig(init="random").run_id == RunConfig(init="random", seed=0).run_id == "smollm2-135m-random"
    ids = [RunConfig(init="random", seed=s).run_id for s in (0, 1, 2, 10)]
    assert ids == ["smollm2-135m-random", "smollm2-135m-random-seed1", "smollm2-135m-random-seed2",
                   "smollm2-135m-random-seed10"]
    assert RunConfig(seed=3).run_id == "smollm2-135m-seed3"
    assert RunConfig(init="random", mode="in-context", position="random", seed=1).run_id == \
        "smollm2-135m-random-in-context-random-position-seed1"
    assert RunConfig(init="random", seed=4, run_id="mine").run_id == "mine"  # explicit: as given
    assert [seed_run_id("mine", s) for s in (0, 4)] == ["mine", "mine-seed4"]


def test_seeds_parse_in_order_and_sit_beside_seed_in_the_help(capsys):
    from resdyn.compute.cli import build_parser, parse_seeds

    assert parse_seeds("0") == [0] and parse_seeds(" 2, 0,1 ") == [2, 0, 1]
    assert main(["run", "--help"]) == 0
    measurement = capsys.readouterr().out.split("\nmeasurement:")[1].split("\nrun store and stages:")[0]
    assert "--seed SEED" in measurement and "--seeds S1,S2,..." in measurement
    ns = build_parser().parse_args(["sweep", "--seeds", "0,1"])
    assert ns.seeds == [0, 1] and ns.seed == 0


def test_sweep_run_ids_are_the_run_commands_ids_with_the_revision():
    """A sweep cell gets the id `resdyn run` derives for the same settings (position, mode and seed
    included), the revision after the model; --seeds makes seeds a sweep axis."""
    from resdyn.compute import executors

    base = RunConfig(run_id="x", position="random", mode="in-context")
    cfgs = executors.sweep_configs(base, ["smollm2-135m"], [None], ["pretrained", "random"], [0, 1])
    expected = [RunConfig(model="smollm2-135m", init=i, seed=s, position="random", mode="in-context").run_id
                for i in ("pretrained", "random") for s in (0, 1)]
    assert [c.run_id for c in cfgs] == expected == [
        "smollm2-135m-in-context-random-position", "smollm2-135m-in-context-random-position-seed1",
        "smollm2-135m-random-in-context-random-position", "smollm2-135m-random-in-context-random-position-seed1"]
    assert [(c.init, c.seed, c.position) for c in cfgs] == [
        ("pretrained", 0, "random"), ("pretrained", 1, "random"), ("random", 0, "random"), ("random", 1, "random")]
    # No --seeds: the base's one seed; a revision goes after the model.
    one = executors.sweep_configs(dataclasses.replace(base, seed=2), ["a/m"], ["step/1"], ["random"])
    assert [c.run_id for c in one] == ["a--m-step_1-random-in-context-random-position-seed2"]


def test_a_local_directory_gives_its_own_name(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert RunConfig(model="org/name").run_id == "name"  # exists here: a directory, not a hub id


def test_progress_bars_stay_once_a_stage_ends(tmp_path):
    from resdyn.compute.context import RunContext
    from resdyn.core.store import RunStore

    ctx = RunContext(RunConfig(run_id="x", runs_dir=tmp_path), RunStore(tmp_path / "x"))
    bar = ctx.progress(range(3), desc="stage", total=3)
    try:
        assert bar.leave is True and not bar.disable
    finally:
        bar.close()
    assert RunContext(RunConfig(run_id="x", runs_dir=tmp_path), RunStore(tmp_path / "x"), quiet=True).progress(
        range(3)).disable
