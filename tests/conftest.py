"""Fixtures shared by every test package.

``synthetic_runs_dir`` is a session-wide runs directory holding two small synthetic runs (see
``resdyn.testing.synthetic``): ``TRAINED_RUN`` (trained-like operators) and ``RANDOM_RUN``
(near-identity, the random-init null model), each with ``SYNTHETIC_SIZES``. It is shared by all
tests of the session, so treat it as read-only: a test that must change a run copies the directory
first (``shutil.copytree(synthetic_runs_dir, tmp_path / "runs")``).

``complete_runs_dir`` holds ``COMPLETE_RUN``, a run of every stage computed by the real pipeline
on a tiny random Llama; it is shared the same way (read-only; copy it to change it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resdyn.testing.synthetic import make_synthetic_run

_LAYER = {"core": "unit", "compute": "integration", "app": "integration", "e2e": "e2e",
          "test_demo.py": "integration"}  # the demo's two passes on a tiny model


def pytest_collection_modifyitems(config, items):
    """Mark every test by its folder (pytest.ini's markers): tests/core → unit, tests/compute and
    tests/app → integration, tests/e2e → e2e, the top-level tests/test_*.py → unit (test_demo.py: integration)."""
    root = Path(__file__).resolve().parent
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(root)
        layer = _LAYER.get(rel.parts[0], "unit")
        item.add_marker(getattr(pytest.mark, layer))


TRAINED_RUN = "synthetic-trained"
RANDOM_RUN = "synthetic-random"
SYNTHETIC_SIZES = {"n_layers": 4, "d": 32, "n_samples": 16}
COMPLETE_RUN = "tiny"


@pytest.fixture(scope="session")
def synthetic_runs_dir(tmp_path_factory) -> Path:
    """A runs directory with ``synthetic-trained`` (seed 0) and ``synthetic-random`` (seed 1): L=4, d=32, N=16."""
    root = tmp_path_factory.mktemp("runs")
    make_synthetic_run(root, TRAINED_RUN, init="pretrained", seed=0, **SYNTHETIC_SIZES)
    make_synthetic_run(root, RANDOM_RUN, init="random", seed=1, **SYNTHETIC_SIZES)
    return root


@pytest.fixture
def synthetic_runs_env(synthetic_runs_dir, monkeypatch) -> Path:
    """``synthetic_runs_dir`` with ``RESDYN_RUNS_DIR`` pointing at it for this test."""
    monkeypatch.setenv("RESDYN_RUNS_DIR", str(synthetic_runs_dir))
    return synthetic_runs_dir


@pytest.fixture(scope="session")
def complete_runs_dir(tmp_path_factory) -> Path:
    """A runs directory with the complete run ``tiny`` of a tiny random Llama (L = 3, d = 32, N = 5,
    every stage, about 5 s), its model ``../tiny-llama`` and corpus ``../corpus.txt`` next to it."""
    from resdyn.compute.cli import main  # torch: imported only by the tests that use this run
    from tests.compute.test_cli import save_tiny_model_and_corpus

    root = save_tiny_model_and_corpus(tmp_path_factory.mktemp("complete"))
    argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"), "--samples", "5",
            "--runs-dir", str(root / "runs"), "--run-id", COMPLETE_RUN, "--quiet", "--batch-size", "5"]
    assert main(argv) == 0
    return root / "runs"
