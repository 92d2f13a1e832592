"""Every file of a complete run, damaged two ways: named by ``verify`` and ``list``, shown as one line
on every dashboard page (the other runs keep working), refused by ``run`` without ``--redo``, and
repaired by the ``--redo STAGE`` that the line names, with numbers equal to the undamaged run.

The run is a tiny random Llama (L = 3, d = 32, N = 5) with every stage, about 5 s to compute; the
file list comes from the stage registry, and a test checks that it is exactly what the run holds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resdyn import stages as registry
from resdyn.compute.cli import main
from tests.app.apptools import open_page
from tests.app.pagelist import app_pages
from tests.conftest import COMPLETE_RUN

RUN = COMPLETE_RUN
# Every file a complete run of the tiny model holds besides its manifest: every stage's outputs and
# shared files, and the optional files new runs always write (corr_blocks is written only above 512
# units; jacobians_half is optional only because runs from before the split-half noise lack it).
FILES = sorted({f for s in registry.STAGES for f in s.outputs + s.shared} | {"jacobians_half.npy"})
DAMAGES = {
    "truncated": lambda b: b[: len(b) // 2],
    "garbage": lambda b: bytes((i * 7919) % 251 for i in range(max(len(b), 64))),
}


@pytest.fixture(scope="module")
def complete(complete_runs_dir) -> Path:
    """A runs directory with the complete tiny run ``tiny`` and its model next to it (the session's,
    ``tests.conftest``; every test here changes a copy)."""
    return complete_runs_dir


def _numbers(run: Path) -> dict:
    out = {}
    for p in sorted(run.iterdir()):
        if p.suffix == ".npy":
            out[p.name] = np.load(p, allow_pickle=False)
        elif p.suffix == ".parquet":
            out[p.name] = pd.read_parquet(p)
    return out


def _assert_same_numbers(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name, x in a.items():
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, b[name], err_msg=name)
        else:
            pd.testing.assert_frame_equal(x, b[name], check_exact=True, obj=name)


def test_the_file_list_is_what_a_complete_run_holds(complete):
    held = sorted(p.name for p in (complete / RUN).iterdir() if p.is_file() and p.name != "manifest.json"
                  and not p.name.startswith("."))
    assert held == FILES
    assert main(["verify", "--runs-dir", str(complete)]) == 0


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("name", FILES)
def test_damaged_file_is_named_shown_refused_and_repaired(complete, tmp_path, monkeypatch, capsys, name, damage):
    runs = tmp_path / "runs"
    shutil.copytree(complete, runs)
    shutil.copytree(complete / RUN, runs / "healthy")
    m = json.loads((runs / "healthy" / "manifest.json").read_text())
    (runs / "healthy" / "manifest.json").write_text(json.dumps(dict(m, run_id="healthy")))
    path = runs / RUN / name
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    writers = registry.writers(name)
    redo = f"--redo {','.join(writers)}"

    # verify and list name it, with the command that repairs it.
    capsys.readouterr()
    assert main(["verify", "--runs-dir", str(runs)]) == 1
    out = capsys.readouterr().out.splitlines()
    problems = [line for line in out if line.startswith(f"{RUN}: ")]
    assert len(problems) == 1 and f"{RUN}: {name}: " in problems[0] and problems[0].endswith(redo), out
    assert not any(line.startswith("healthy: ") for line in out)
    assert main(["list", "--runs-dir", str(runs)]) == 0
    assert "corrupt" in capsys.readouterr().out

    # Every page: no exception; a page of the damaged run says so in one line naming the file.
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(runs))
    for page in app_pages():
        at = open_page(page, run=RUN)
        assert not at.exception, (page, [e.value for e in at.exception])
        if page != "pages/compare.py":
            errors = [e.value for e in at.error]
            assert len(errors) == 1 and f"`{name}`" in errors[0] and redo in errors[0], (page, errors)
    at = open_page("pages/compare.py", runs=f"{RUN},healthy")
    assert not at.exception and at.get("plotly_chart")  # the healthy run is still drawn
    assert RUN in " ".join(w.value for w in at.sidebar.warning)  # the damaged one is named as left out

    # `run` without --redo refuses with one line; the named --redo repairs it exactly.
    base = ["run", "--run-id", RUN, "--runs-dir", str(runs), "--quiet"]
    capsys.readouterr()  # the page renders' log lines
    code = main(base)
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("resdyn: error: corrupt file") and name in err and "\n" not in err, err
    assert main(base + ["--redo", ",".join(writers)]) == 0
    assert main(["verify", RUN, "--runs-dir", str(runs)]) == 0
    _assert_same_numbers(_numbers(complete / RUN), _numbers(runs / RUN))
