"""Faults and bad input: each gives one clear line (exit 2) and loses nothing already computed.

A fault test checks three things: the line (what went wrong and what to do), that finished work
survives byte for byte, and, where a rerun is the fix, that the rerun's numbers equal an
uninterrupted run's.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resdyn.compute.cli import main
from resdyn.core.schema import SCHEMA_VERSION
from resdyn.core.store import RunStore
from tests.compute.test_cli import TEXTS, save_tiny_model_and_corpus

STAGES = "activations,jacobians,spectra,sample_stats"
OUTPUTS = ("activations.npy", "final_state.npy", "jacobians.npy", "layers.parquet", "eigenvalues.parquet",
           "samples.parquet", "sample_profiles.parquet")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny Llama, a 5-passage corpus and one uninterrupted reference run ("ref")."""
    root = save_tiny_model_and_corpus(tmp_path_factory.mktemp("faults"))
    assert main(_argv(root, "ref")) == 0
    return root


def _argv(root: Path, run_id: str, *extra: str, runs: Path | None = None) -> list[str]:
    return ["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"), "--samples", "4",
            "--runs-dir", str(runs or root / "runs"), "--run-id", run_id, "--quiet", "--batch-size", "3",
            "--stages", STAGES, *extra]


def _copy_ref(root: Path, tmp_path: Path, run_id: str = "ref") -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs" / "ref", runs / run_id)
    return runs


def _one_line_error(capsys, code: int, *fragments: str, usage: bool = False) -> str:
    """One ``resdyn: error:`` line holding ``fragments``; exit 2 for a usage error, else 1."""
    err = capsys.readouterr().err.strip()
    assert code == (2 if usage else 1), err
    assert err.startswith("resdyn: error:") and "\n" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name in OUTPUTS}


def _assert_same_numbers(a: Path, b: Path) -> None:
    for name in ("activations.npy", "final_state.npy", "jacobians.npy"):
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    for name in ("layers", "eigenvalues", "samples", "sample_profiles"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"), pd.read_parquet(b / f"{name}.parquet"),
                                      check_exact=True, obj=name)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


# -- SIGKILL ----------------------------------------------------------------------------------
def _kill_when(argv: list[str], trigger: Path, timeout: float = 240) -> None:
    """Run the CLI in a subprocess and SIGKILL it the moment ``trigger`` exists."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "resdyn.compute", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while not trigger.exists():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {trigger.name} appeared"
            assert time.monotonic() - t0 < timeout, f"{trigger.name} never appeared"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage, checkpoint", [("jacobians", "means"), ("sample_stats", "stats")])
def test_sigkill_mid_stage_then_rerun_completes_with_identical_numbers(env, tmp_path, stage, checkpoint):
    """SIGKILL right after a per-layer stage checkpointed its first layer; the rerun resumes at the
    next layer and the run's numbers equal an uninterrupted run's, keeping what was finished.

    In-context mode is used because its layers take about a second each here, which leaves a
    wide window between the first layer's checkpoint and the next."""
    import importlib

    root = env
    ref = root / "runs" / "ref-ic"
    if not ref.exists():
        assert main(_argv(root, "ref-ic", "--mode", "in-context")) == 0
    runs = tmp_path / "runs"
    argv = _argv(root, "ic", "--mode", "in-context", runs=runs)
    run = runs / "ic"
    _kill_when(argv, run / ".partial" / stage / f"{checkpoint}_000.npy")
    m = _manifest(run)
    before = STAGES.split(",")[:STAGES.split(",").index(stage)]
    assert m["status"] == "partial" and m["stages_done"] == before
    kept = sorted(p.name for p in (run / ".partial" / stage).iterdir() if not p.name.startswith("."))
    assert f"{checkpoint}_000.npy" in kept and f"{checkpoint}_002.npy" not in kept  # died mid-stage
    acts = (run / "activations.npy").read_bytes()

    module = importlib.import_module(f"resdyn.compute.stages.{stage}")
    pending = []
    real = module.compute_layer
    module.compute_layer = lambda state, cfg, layer, *a, **k: pending.append(layer) or real(state, cfg, layer, *a, **k)
    try:
        assert main(argv) == 0
    finally:
        module.compute_layer = real
    assert 0 not in pending and pending  # the finished layer was kept, not recomputed
    assert (run / "activations.npy").read_bytes() == acts
    assert _manifest(run)["stages_done"] == STAGES.split(",")
    _assert_same_numbers(ref, run)
    assert not list(run.glob(".*.tmp"))  # no temporary file outlives a kill and a rerun


# -- disk full, read-only ---------------------------------------------------------------------
@pytest.mark.parametrize("victim", ["means_001.npy", "stats_001.npy", "layers.parquet"])
def test_disk_full_gives_one_line_and_keeps_finished_work(env, tmp_path, monkeypatch, capsys, victim):
    root = env
    runs = tmp_path / "runs"
    assert main(_argv(root, "full", runs=runs)[:-2] + ["--stages", "activations"]) == 0
    run = runs / "full"
    acts = (run / "activations.npy").read_bytes()
    real_fsync = os.fsync

    def fsync(fd):  # the write of ``victim`` finds the disk full; every other write succeeds
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{victim}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code = main(_argv(root, "full", runs=runs))
    _one_line_error(capsys, code, "disk full while writing", victim, "free space and rerun")
    assert (run / "activations.npy").read_bytes() == acts
    assert not [p for p in run.rglob("*.tmp")]  # the half-written temporary file is gone
    if victim == "means_001.npy":  # layer 0 was checkpointed before the disk filled up
        assert (run / ".partial" / "jacobians" / "means_000.npy").is_file()
    elif victim == "stats_001.npy":  # the same in the per-sample statistics, after the spectra
        assert (run / ".partial" / "sample_stats" / "stats_000.npy").is_file()
        assert {"jacobians", "spectra"} <= set(_manifest(run)["stages_done"])
    else:
        assert "jacobians" in _manifest(run)["stages_done"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(_argv(root, "full", runs=runs)) == 0  # space freed: the rerun finishes the run
    _assert_same_numbers(root / "runs" / "ref", run)


def _read_only(monkeypatch, root: Path) -> None:
    """Make ``root`` behave like a read-only mount. (chmod cannot: the tests run as root.)"""
    real_open, real_mkdir = os.open, os.mkdir

    def ro_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(root)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)


@pytest.mark.parametrize("existing", [False, True])
def test_read_only_runs_dir_gives_one_line(env, tmp_path, monkeypatch, capsys, existing):
    runs = _copy_ref(env, tmp_path) if existing else tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    before = _snapshot(runs / "ref") if existing else {}
    _read_only(monkeypatch, runs)
    code = main(_argv(env, "ref", runs=runs))
    _one_line_error(capsys, code, "read-only", "choose a writable --runs-dir")
    if existing:
        assert _snapshot(runs / "ref") == before
    else:
        assert not (runs / "ref").exists()


# -- corrupt files ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, reader, writer", [
    ("jacobians.npy", "spectra", "jacobians"),
    ("activations.npy", "jacobians", "activations"),
    ("activations.npy", "sample_stats", "activations"),
])
def test_corrupt_file_is_named_with_the_stage_to_redo(env, tmp_path, capsys, name, reader, writer):
    runs = _copy_ref(env, tmp_path)
    path = runs / "ref" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a dying disk
    code = main(_argv(env, "ref", "--redo", reader, runs=runs))
    _one_line_error(capsys, code, "corrupt", str(path), f"--redo {writer}`")
    assert main(_argv(env, "ref", "--redo", writer, runs=runs)) == 0  # the fix the line names
    _assert_same_numbers(env / "runs" / "ref", runs / "ref")


def test_damaged_layer_checkpoint_is_recomputed(env, tmp_path):
    """A checkpoint cut short (not by resdyn's atomic writes: by a copy, a disk) is not trusted."""
    runs = tmp_path / "runs"
    argv = _argv(env, "ck", runs=runs)
    assert main(argv[:-2] + ["--stages", "activations"]) == 0
    means, stats = runs / "ck" / ".partial" / "jacobians", runs / "ck" / ".partial" / "sample_stats"
    means.mkdir(parents=True)
    stats.mkdir(parents=True)
    from resdyn.core.store import save_npy

    for part, name, arr in ((means, "means_001.npy", np.zeros((2, 32, 32))), (stats, "stats_000.npy", np.zeros((4, 5)))):
        save_npy(part / name, arr)
        (part / name).write_bytes((part / name).read_bytes()[:-8])
    assert main(argv) == 0
    _assert_same_numbers(env / "runs" / "ref", runs / "ck")


# -- manifest schema --------------------------------------------------------------------------
def test_manifest_from_an_older_schema_is_migrated(env, tmp_path, capsys):
    runs = _copy_ref(env, tmp_path)
    run = runs / "ref"
    m = _manifest(run)
    for key in ("schema_version", "stages_all", "files"):  # what a version-0 manifest lacked
        m.pop(key, None)
    (run / "manifest.json").write_text(json.dumps(m))
    before = _snapshot(run)
    assert main(_argv(env, "ref", runs=runs)) == 0
    assert _manifest(run)["schema_version"] == SCHEMA_VERSION  # 0 -> 1, then tables already current
    assert _snapshot(run) == before  # migration recomputes nothing
    assert main(["list", "--runs-dir", str(runs)]) == 0
    assert "ref" in capsys.readouterr().out


def test_manifest_from_a_newer_schema_is_refused(env, tmp_path, capsys):
    runs = _copy_ref(env, tmp_path)
    run = runs / "ref"
    m = dict(_manifest(run), schema_version=99)
    (run / "manifest.json").write_text(json.dumps(m))
    before = (run / "manifest.json").read_bytes()
    code = main(_argv(env, "ref", runs=runs))
    _one_line_error(capsys, code, "schema_version 99", f"newer than this resdyn ({SCHEMA_VERSION})", "upgrade resdyn")
    assert (run / "manifest.json").read_bytes() == before


# -- non-finite numbers -----------------------------------------------------------------------
def test_nan_or_inf_activations_give_one_line(env, tmp_path, capsys):
    import torch
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(env / "tiny-llama")
    with torch.no_grad():  # an overflowing MLP, as an fp16 model overflows
        model.model.layers[1].mlp.down_proj.weight.fill_(float("inf"))
    bad = tmp_path / "overflow"
    model.save_pretrained(bad)
    shutil.copy(env / "tiny-llama" / "tokenizer.json", bad)
    shutil.copy(env / "tiny-llama" / "tokenizer_config.json", bad)
    runs = tmp_path / "runs"
    argv = _argv(env, "nan", runs=runs)
    argv[argv.index("--model") + 1] = str(bad)
    code = main(argv)
    _one_line_error(capsys, code, "activations contain NaN or Inf", "--dtype")
    assert not (runs / "nan" / "activations.npy").exists()
    assert _manifest(runs / "nan")["stages_done"] == []


@pytest.mark.parametrize("stage, checkpoint, engine, poisoned_call, done", [
    ("jacobians", "means", "isolated_jacobian_sum", 3, ["activations"]),
    ("sample_stats", "stats", "isolated_jacobians", 3, ["activations", "jacobians", "spectra"]),
])
def test_nan_in_jacobians_gives_one_line_and_keeps_earlier_layers(env, tmp_path, monkeypatch, capsys, stage,
                                                                  checkpoint, engine, poisoned_call, done):
    """Both stages that take the Jacobians refuse a non-finite one. The jacobians stage takes each
    layer's sum over samples in two calls of the closed-form sum, one per half of the passages
    (call 3 is layer 1's first half); sample_stats
    takes 4 samples in batches of 3, two engine calls per layer (call 3 is layer 1's first batch).
    The engine is replaced where both stages look it up (``resdyn.compute.block_jacobians``)."""
    from resdyn.compute import block_jacobians

    real, calls = getattr(block_jacobians, engine), {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        jac = real(*args, **kwargs)
        return jac * float("nan") if calls["n"] == poisoned_call else jac

    monkeypatch.setattr(block_jacobians, engine, poisoned)
    runs = tmp_path / "runs"
    code = main(_argv(env, "nanj", runs=runs))
    _one_line_error(capsys, code, "non-finite Jacobian at layer 1", "--dtype float64", "new --run-id")
    run = runs / "nanj"
    assert _manifest(run)["stages_done"] == done
    assert sorted(p.name for p in (run / ".partial" / stage).glob("*.npy")) == [f"{checkpoint}_000.npy"]


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_hub_model_gives_one_line(env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(_argv(env, "x", runs=tmp_path)[:1] + ["--model", "no-such-org/no-such-model", "--corpus",
                                                      str(env / "corpus.txt"), "--samples", "2",
                                                      "--runs-dir", str(tmp_path), "--quiet"])
    _one_line_error(capsys, code, "cannot load model 'no-such-org/no-such-model'")
    assert not list(tmp_path.iterdir())  # no run directory, no .lock


def test_unsupported_architecture_gives_one_line(env, tmp_path, capsys):
    import transformers as tf

    tf.MambaConfig(hidden_size=16, num_hidden_layers=1, vocab_size=32).save_pretrained(tmp_path / "mamba")
    argv = _argv(env, "m", runs=tmp_path / "runs")
    argv[argv.index("--model") + 1] = str(tmp_path / "mamba")
    _one_line_error(capsys, main(argv), "unsupported architecture 'mamba'", "supported:", "llama")


@pytest.mark.parametrize("lines, samples, message", [
    ([], 4, "holds no passages"),
    (["", "   ", ""], 4, "holds no passages"),
    (TEXTS[:2], 4, "has only 2 passages, asked for 4; lower --samples"),
])
def test_empty_or_short_corpus_gives_one_line(env, tmp_path, capsys, lines, samples, message):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines))
    argv = _argv(env, "c", runs=tmp_path / "runs")
    argv[argv.index("--corpus") + 1] = str(corpus)
    argv[argv.index("--samples") + 1] = str(samples)
    _one_line_error(capsys, main(argv), message)
    assert not (tmp_path / "runs" / "c").exists()  # a run that failed to start leaves no directory


@pytest.mark.parametrize("flag, value, message", [
    ("--samples", "0", "--samples must be at least 1, got 0"),
    ("--k", "32", "k = 32 must be smaller than d_model = 32"),
    ("--k", "0", "--k must be at least 1"),
    ("--batch-size", "0", "--batch-size must be at least 1"),
])
def test_bad_numbers_give_one_line(env, tmp_path, capsys, flag, value, message):
    argv = _argv(env, "n", runs=tmp_path / "runs") + [flag, value]  # argparse: the last value wins
    _one_line_error(capsys, main(argv), message, usage=True)
    assert not (tmp_path / "runs" / "n" / "manifest.json").exists()


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", "/abs", "a\\b", "x y", ""])
def test_path_like_run_id_is_refused(env, tmp_path, capsys, run_id):
    runs = tmp_path / "sub" / "runs"
    argv = _argv(env, run_id, runs=runs)
    _one_line_error(capsys, main(argv), "invalid run id", "no path separators", usage=True)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written anywhere


# -- two writers --------------------------------------------------------------------------------
def test_second_compute_on_the_same_run_is_refused_by_the_lock(env, tmp_path, capsys):
    runs = _copy_ref(env, tmp_path)
    before = _snapshot(runs / "ref")
    # The lock is flock(2) on .lock: another open file description conflicts even in one process,
    # exactly as a second `python -m resdyn.compute run` would.
    with RunStore(runs / "ref").lock():
        code = main(_argv(env, "ref", "--redo", "spectra", runs=runs))
        _one_line_error(capsys, code, "run ref is being written by another process", "wait for it to finish")
    assert _snapshot(runs / "ref") == before
    assert main(_argv(env, "ref", runs=runs)) == 0  # released: the next compute proceeds


def test_stale_lock_of_a_killed_process_is_taken_over_with_a_warning(env, tmp_path, caplog):
    runs = _copy_ref(env, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is gone, as a SIGKILLed compute's is
    (runs / "ref" / ".lock").write_text(str(dead.pid))
    with caplog.at_level("WARNING", logger="resdyn"):
        assert main(_argv(env, "ref", "--redo", "spectra", runs=runs)) == 0
    assert f"taking over the lock of run ref left by process {dead.pid} (no longer running)" in caplog.text
    assert not (runs / "ref" / ".lock").exists()  # released and removed
    _assert_same_numbers(env / "runs" / "ref", runs / "ref")


def test_lock_holder_is_read_without_locking(env, tmp_path):
    from resdyn.core.store import holder

    runs = _copy_ref(env, tmp_path)
    assert holder(runs / "ref") is None
    with RunStore(runs / "ref").lock():
        assert holder(runs / "ref") == os.getpid()
    assert holder(runs / "ref") is None
