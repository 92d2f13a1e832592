"""The README's "Python API" examples run as written.

The reading example runs against two small synthetic runs named like the demo's; the ``analyze``
example runs with its hub id replaced by a tiny random Llama saved to disk (no network here).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import RANDOM_RUN, SYNTHETIC_SIZES, TRAINED_RUN

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_ID = '"HuggingFaceTB/SmolLM2-135M"'


def api_blocks() -> list[str]:
    """The ```python blocks of the README's "## Python API" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Python API\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def demo_like_runs(synthetic_runs_dir, tmp_path, monkeypatch) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(synthetic_runs_dir / TRAINED_RUN, runs / "smollm2-135m")
    shutil.copytree(synthetic_runs_dir / RANDOM_RUN, runs / "smollm2-135m-random")
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(runs))
    monkeypatch.chdir(tmp_path)
    return runs


def test_the_section_has_a_reading_and_an_analyze_example():
    blocks = api_blocks()
    assert len(blocks) == 2 and "resdyn.open(" in blocks[0] and "resdyn.analyze(" in blocks[1]
    assert blocks[1].count(HUB_ID) == 1


def test_reading_example_runs(demo_like_runs):
    ns: dict = {}
    exec(compile(api_blocks()[0], "README.md:python-api-1", "exec"), ns)  # noqa: S102 - our own README
    L, d = SYNTHETIC_SIZES["n_layers"], SYNTHETIC_SIZES["d"]
    assert list(ns["overview"]["run_id"]) == ["smollm2-135m", "smollm2-135m-random"]
    assert ns["J"].shape == (L, d, d) and len(ns["layers"]) == 2 * L
    layers = pd.read_parquet(demo_like_runs / "smollm2-135m" / "layers.parquet")
    j3 = layers[(layers["operator"] == "J") & (layers["layer"] == 3)]
    np.testing.assert_allclose(ns["radius"], j3["spectral_radius"].item(), rtol=1e-4)
    assert list(ns["profile"]["layer"]) == list(range(L))
    henrici = ns["henrici"]
    assert len(henrici) == 2 * L and set(henrici["init"]) == {"pretrained", "random"}


def test_analyze_example_runs(demo_like_runs, tmp_path):
    from tests.compute.test_cli import save_tiny_model_and_corpus

    model_dir = save_tiny_model_and_corpus(tmp_path / "model") / "tiny-llama"
    code = api_blocks()[1].replace(HUB_ID, repr(str(model_dir)))
    ns: dict = {}
    exec(compile(code, "README.md:python-api-2", "exec"), ns)  # noqa: S102 - our own README
    run = ns["run"]
    assert run.path == demo_like_runs / "notebook" and run.manifest["origin"]["via"] == "resdyn.analyze"
    assert run.manifest["n_samples"] == 3 and list(ns["j_profile"]["layer"]) == [0, 1, 2]
