"""``python -m resdyn.demo`` (what ``make demo`` runs): the first views' stages first, the rest in a
background process, a finished run skipped. On the tiny random Llama instead of SmolLM2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resdyn import demo
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


def test_first_pass_then_background_pass_complete_both_runs(model_and_corpus, tmp_path):
    root, runs = model_and_corpus, tmp_path / "runs"
    cfgs = demo.configs(demo.build_parser().parse_args(_args(root, runs)))
    demo.compute(cfgs, demo.FIRST, quiet=True)
    for run_id, init in demo.RUNS:
        m = _manifest(runs, run_id)
        assert m["stages_done"] == list(demo.FIRST) and m["status"] == "partial" and m["init"] == init
        assert set(demo.missing(cfgs[0])) == set(stage_names()) - set(demo.FIRST)

    proc = demo.start_background(demo.build_parser().parse_args(_args(root, runs)))
    assert proc is not None
    assert proc.wait(timeout=600) == 0, (runs / demo.LOG).read_text()[-2000:]
    for run_id, _ in demo.RUNS:
        m = _manifest(runs, run_id)
        assert m["status"] == "complete" and set(m["stages_done"]) == set(stage_names())
    # Nothing left: no background process, and the first pass is a no-op.
    assert demo.start_background(demo.build_parser().parse_args(_args(root, runs))) is None
    before = (runs / "smollm2-135m" / "manifest.json").stat().st_mtime_ns
    demo.compute(cfgs, demo.FIRST, quiet=True)
    assert (runs / "smollm2-135m" / "manifest.json").stat().st_mtime_ns == before
    # A run made by an older resdyn, done but without a file a stage writes now, is not finished.
    (runs / "smollm2-135m" / "layer_sigma.parquet").unlink()
    assert demo.missing(cfgs[0]) == ["pseudospectra"] and not demo.missing(cfgs[1])


def test_stop_ends_a_running_background_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    demo.stop(proc)
    assert proc.poll() is not None
    demo.stop(None)  # nothing to stop is fine


def test_bad_input_is_one_line(model_and_corpus, tmp_path, capsys):
    root = model_and_corpus
    argv = ["--runs-dir", str(tmp_path / "runs"), "--samples", "5", "--model", str(root / "tiny-llama"),
            "--corpus", str(tmp_path / "none.txt"), "--no-serve"]
    assert demo.main(argv) == 1  # a missing file: a runtime error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resdyn: error:")
