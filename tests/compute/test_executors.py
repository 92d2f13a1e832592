"""The Ray executor gives the local executor's numbers (METHODS §2–3), on a local Ray with 2 CPUs.

Which results are bit-identical and which agree to float rounding is stated per array below.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from resdyn.compute import executors
from resdyn.compute.cli import main
from resdyn.core import spectral
from resdyn.errors import ResdynError
from tests.compute.test_cli import save_tiny_model_and_corpus

ray = pytest.importorskip("ray")

STAGES = "activations,jacobians,spectra,sample_stats"


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=256 * 1024**2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_and_corpus(tmp_path_factory):
    return save_tiny_model_and_corpus(tmp_path_factory.mktemp("exec"))


def _compute(root, run_id, *extra):
    argv = ["run", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt"), "--samples", "5",
            "--runs-dir", str(root / "runs"), "--run-id", run_id, "--quiet", "--batch-size", "2",
            "--stages", STAGES, *extra]
    assert main(argv) == 0
    return root / "runs" / run_id


def _assert_same_run(a, b, layers=slice(None)):
    """Bit-identical: each layer is the same pure function of the same states whichever process
    runs it, and isolated mode's closed form reduces in a fixed order. (In-context mode, checked by
    hand, agrees to float32 rounding, 1.2e-7: autodiff's reductions split differently over a
    worker's one thread than over the driver's two.)"""
    np.testing.assert_array_equal(np.load(a / "activations.npy"), np.load(b / "activations.npy"))
    np.testing.assert_array_equal(np.load(a / "final_state.npy"), np.load(b / "final_state.npy"))
    np.testing.assert_array_equal(np.load(a / "jacobians.npy")[layers], np.load(b / "jacobians.npy")[layers])
    sa, sb = pd.read_parquet(a / "samples.parquet"), pd.read_parquet(b / "samples.parquet")
    keep = sa["layer"].isin(np.arange(len(np.load(a / "jacobians.npy")))[layers])
    pd.testing.assert_frame_equal(sa[keep], sb[keep], check_exact=True)


@pytest.fixture(scope="module")
def local_run(model_and_corpus):
    return _compute(model_and_corpus, "local")


def test_ray_run_equals_local_run_and_resumes_from_checkpoints(ray_local, model_and_corpus, local_run):
    """Two workers compute layers 0 and 2 of both per-layer model stages (jacobians, sample_stats);
    layer 1's checkpoints, already on disk, are not recomputed."""
    from resdyn.core.store import save_npy

    root = model_and_corpus
    run = _compute(root, "ray", "--stages", "activations")
    for stage, name, sentinel in (("jacobians", "means_001.npy", np.full((2, 32, 32), 7.0)),
                                  ("sample_stats", "stats_001.npy", np.full((5, 5), 7.0))):
        part = run / ".partial" / stage
        part.mkdir(parents=True)
        save_npy(part / name, sentinel)  # a sentinel no worker would produce
    _compute(root, "ray", "--executor", "ray", "--workers", "2")
    jac = np.load(run / "jacobians.npy")
    assert (jac[1] == 7.0).all()
    samples = pd.read_parquet(run / "samples.parquet")
    assert (samples[samples.layer == 1].iloc[:, 2:] == 7.0).all().all()
    _assert_same_run(local_run, run, layers=[0, 2])
    assert not (run / ".partial").exists()  # the driver assembled every layer and cleaned up
    for name in ("layers", "eigenvalues"):  # the spectra of layers 0 and 2 follow bit for bit
        x, y = pd.read_parquet(local_run / f"{name}.parquet"), pd.read_parquet(run / f"{name}.parquet")
        x, y = (t[t.layer.isin([0, 2])].drop(columns=["forward_alignment"], errors="ignore").reset_index(drop=True)
                for t in (x, y))  # (layer 0's forward alignment pairs it with the sentinel layer 1)
        pd.testing.assert_frame_equal(x, y, check_exact=True)


def _schur_diag(a: np.ndarray) -> np.ndarray:
    """Eigenvalues of one layer from its complex Schur form (a pure per-layer numpy function)."""
    _, t = spectral.schur_complex(np.asarray(a, dtype=np.float64))
    return _canonical(np.diag(t))


def _canonical(z: np.ndarray) -> np.ndarray:
    """Eigenvalues in an order that rounding cannot flip (conjugates share a rounded real part)."""
    return z[np.lexsort((np.round(z.imag, 8), np.round(z.real, 8)))]


def test_parallel_map_on_ray_equals_local(ray_local, local_run):
    jac = np.load(local_run / "jacobians.npy")
    local = executors.parallel_map(_schur_diag, list(jac))
    with executors.RayExecutor() as ex, executors.use_executor(ex):
        remote = executors.parallel_map(_schur_diag, list(jac))
    assert ray.is_initialized()  # an executor leaves a Ray it did not start running
    assert len(remote) == len(jac)
    for l, (x, y) in enumerate(zip(local, remote)):
        # LAPACK on one worker thread versus the driver's threads: equal to float64 rounding.
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-12, err_msg=f"layer {l}")
        np.testing.assert_allclose(x, _canonical(np.linalg.eigvals(jac[l].astype(np.float64))), atol=1e-9)


def test_ray_sweep_computes_every_cell_like_the_local_executor(ray_local, model_and_corpus, local_run, capsys):
    root = model_and_corpus
    model = str(root / "tiny-llama")
    argv = ["sweep", "--model", model, "--init", "pretrained", "random", "--corpus", str(root / "corpus.txt"),
            "--samples", "5", "--runs-dir", str(root / "sweep"), "--quiet", "--batch-size", "2",
            "--stages", STAGES, "--executor", "ray"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "run tiny-llama: complete" in out or "run tiny-llama: partial" in out
    assert "run tiny-llama-random:" in out and "error" not in out
    local = local_run
    _assert_same_run(local, root / "sweep" / "tiny-llama")
    rnd = np.load(root / "sweep" / "tiny-llama-random" / "jacobians.npy")
    assert not np.array_equal(rnd, np.load(local / "jacobians.npy"))  # a different cell, not a copy


def test_sweep_run_ids_name_each_cell():
    from resdyn.config import RunConfig

    base = RunConfig(run_id="x")
    cfgs = executors.sweep_configs(base, ["allenai/OLMo-2-1B"], ["stage1-step1000", "main"], ["pretrained", "random"])
    assert [c.run_id for c in cfgs] == ["allenai--OLMo-2-1B-stage1-step1000",
                                        "allenai--OLMo-2-1B-stage1-step1000-random",
                                        "allenai--OLMo-2-1B-main", "allenai--OLMo-2-1B-main-random"]
    assert [c.revision for c in cfgs] == ["stage1-step1000", "stage1-step1000", "main", "main"]
    # Two organisations' models of one name are two runs; two local directories of one name clash.
    assert [c.run_id for c in executors.sweep_configs(base, ["a/m", "b/m"], [None], ["pretrained"])] == [
        "a--m", "b--m"]
    with pytest.raises(ResdynError, match="share run ids"):
        executors.sweep_configs(base, ["/x/m", "/y/m"], [None], ["pretrained"])


def test_everything_but_the_ray_executor_works_without_ray(monkeypatch):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from resdyn.compute import executors, pipeline\n"
            "from resdyn.compute.stages import jacobians, sample_stats\n"
            "print(executors.parallel_map(abs, [-1, 2]))\n"
            "try:\n    executors.RayExecutor()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[1, 2]"
    assert lines[1].startswith("ResdynError --executor ray needs Ray: pip install 'ray==2.60.0'")


class _CountingRay(executors.RayExecutor):
    """A Ray executor that records which per-layer functions it ran, in chunks of what size."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str, int]] = []

    def map(self, fn, items):
        items = list(items)
        self.calls.append((fn.__name__, len(items)))
        return super().map(fn, items)


def test_schur_and_leiden_stages_run_per_layer_on_ray(ray_local, local_run, tmp_path):
    """The schur stage (one complex Schur form per layer) and the communities stage (one graph and
    Leiden partition per snapshot) run as Ray tasks, two at a time with --workers 2, and give the
    local executor's results: partitions identical, Schur factors to float32 rounding."""
    import shutil

    from resdyn.compute.stages import stage as stage_named
    from resdyn.compute.context import RunContext
    from resdyn.config import RunConfig
    from resdyn.core.store import RunStore

    runs = {}
    ray_ex = _CountingRay(workers=2)
    for name, ex in (("local", executors.LocalExecutor()), ("ray", ray_ex)):
        root = tmp_path / name
        shutil.copytree(local_run, root / "run", ignore=shutil.ignore_patterns(".lock"))
        ctx = RunContext(RunConfig(runs_dir=root, run_id="run"), RunStore(root / "run"), quiet=True)
        with executors.use_executor(ex):
            stage_named("schur").fn(ctx)
            stage_named("communities").fn(ctx)
        runs[name] = root / "run"
    ray_ex.close()

    n_layers = len(np.load(local_run / "jacobians.npy"))
    n_snap = 2 * n_layers + 1
    assert ray_ex.calls.count(("_schur_layer", 2)) == n_layers // 2
    from resdyn.core import spectral

    # The random-order draws of the dose: one task per layer, all layers of a draw at once.
    assert ray_ex.calls.count(("_order_draw_layer", n_layers)) == spectral.N_DRAWS
    assert sum(n for f, n in ray_ex.calls if f == "_snapshot_job") == n_snap
    assert max(n for f, n in ray_ex.calls if f == "_snapshot_job") == 2

    a, b = runs["local"], runs["ray"]
    ua, ub = pd.read_parquet(a / "units.parquet"), pd.read_parquet(b / "units.parquet")
    np.testing.assert_array_equal(ua["community"].to_numpy(), ub["community"].to_numpy())
    jac = np.load(local_run / "jacobians.npy").astype(np.complex128)
    for run in (a, b):  # each run's factors reproduce J̄
        q, t = np.load(run / "schur_Q.npy"), np.load(run / "schur_T.npy")
        rebuilt = q @ t @ np.conj(np.swapaxes(q, 1, 2))
        assert np.abs(rebuilt - jac).max() < 1e-5 * np.abs(jac).max()
    ta, tb = np.load(a / "schur_T.npy"), np.load(b / "schur_T.npy")
    for l in range(n_layers):  # the canonical order: the same diagonal, entry by entry
        np.testing.assert_allclose(np.diag(ta[l]), np.diag(tb[l]), atol=1e-5)
    da, db = pd.read_parquet(a / "schur_dose.parquet"), pd.read_parquet(b / "schur_dose.parquet")
    np.testing.assert_allclose(da["erank"].to_numpy(), db["erank"].to_numpy(), rtol=1e-4)
