"""Where the pipeline's work runs: in this process (``local``) or on a Ray cluster (``ray``).

Stages stay pure functions; an executor only decides where they run, so a run computed with
``--executor ray`` holds the same numbers as one computed locally (``tests/compute/test_executors.py``
checks which are bit-identical and which agree to float rounding). Three kinds of work are spread:

- **Per-layer work of a model stage** (a ``Split``, declared by the stage module in ``SPLITS``):
  the layers of the ``jacobians`` and ``sample_stats`` stages. Each Ray worker is an actor holding
  its own copy of the model (one per GPU when the cluster has GPUs, else one per CPU). The driver
  sends it a layer's inputs (the layer's states or the passages), the worker returns the layer's
  result (the mean Jacobian, or the per-sample statistics), and the driver writes the layer's
  checkpoint atomically into the run's
  ``.partial/`` as it arrives. Only the driver, under the run's lock, writes the run store: the
  workers need no shared filesystem, and a killed run resumes at layer granularity either way.
- **Per-layer numpy work inside a stage**: ``parallel_map(fn, items)`` applies a pure function to
  each item on the active executor (a list comprehension locally, one Ray task per item on Ray).
- **Several runs at once**: ``run_sweep`` computes models × revisions × inits, one Ray task per
  run. Each task writes its own run directory, so on a multi-node cluster the runs directory must
  be on storage that every node mounts.

Ray is imported only inside ``RayExecutor``: everything else works without it installed. Ray moves
task arguments and results between its own processes with pickle; that traffic stays inside the
cluster you started, and nothing resdyn stores on disk is a pickle.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from resdyn.errors import ResdynError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Split:
    """How a model stage's work splits into independent units (its layers), each checkpointed.

    Attributes:
        pending: ``(ctx) -> list[int]``: the units without a valid checkpoint, in order.
        inputs: ``(ctx, unit) -> dict``: everything a worker needs for one unit (numpy arrays,
            strings); read by the driver, so workers never touch the run store.
        prepare: ``(bundle, cfg) -> state``: per-worker state built once from the loaded model.
        compute: ``(state, cfg, unit, inputs) -> result``: the pure computation of one unit.
        save: ``(store, unit, result) -> None``: the driver's atomic checkpoint write.

    The stage's own function must compute whatever ``pending`` still lists and then assemble the
    checkpoints, so it finishes the stage alone when no executor has run the units first.
    """

    pending: Callable[[Any], list[int]]
    inputs: Callable[[Any, int], dict]
    prepare: Callable[[Any, Any], Any]
    compute: Callable[[Any, Any, int, dict], Any]
    save: Callable[[Any, int, Any], None]


def split_for(stage) -> Split | None:
    """The ``Split`` a stage's module declares for it in ``SPLITS`` (by stage name), or None."""
    module = importlib.import_module(stage.module)
    return getattr(module, "SPLITS", {}).get(stage.name)


class LocalExecutor:
    """Everything in this process, in order."""

    name = "local"
    width = 1  # items per parallel_chunks round: one, so every item is checkpointed as it ends

    def map(self, fn: Callable, items: Iterable) -> list:
        return [fn(x) for x in items]

    def run_split(self, ctx, stage, split: Split) -> None:
        """Nothing to do up front: the stage's own function computes its pending units here."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("resdyn_executor", default=LocalExecutor())


def current():
    """The executor that ``parallel_map`` uses now (the local one unless a run set another)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use_executor(executor) -> Iterator[None]:
    """Make ``executor`` the one ``parallel_map`` uses inside the ``with`` block."""
    token = _ACTIVE.set(executor)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def parallel_map(fn: Callable, items: Iterable) -> list:
    """``[fn(x) for x in items]`` on the active executor, results in the order of ``items``.

    ``fn`` must be a pure, importable (module-level) function of its argument, e.g. the Schur
    factorisation of one layer: with Ray each call is a task on some worker.
    """
    return current().map(fn, list(items))


def parallel_chunks(fn: Callable, items: Iterable) -> Iterator[tuple[int, object]]:
    """Yield ``(index, fn(item))`` in the order of ``items``, computed on the active executor
    ``width`` items at a time (one at a time locally, a cluster's worth on Ray).

    For per-layer stages that checkpoint or report progress as results arrive: the caller saves
    each result before the next round starts, so a killed run loses at most one round.
    """
    ex = current()
    step = max(1, int(getattr(ex, "width", 1)))
    items, start = iter(items), 0
    while chunk := list(itertools.islice(items, step)):  # lazily: items may be large arrays
        for k, result in enumerate(ex.map(fn, chunk)):
            yield start + k, result
        start += len(chunk)


def make_executor(cfg):
    """The executor ``cfg.executor`` names (``--executor``, ``--address``, ``--workers``)."""
    if cfg.executor == "local":
        if cfg.address:
            raise ResdynError("--address needs --executor ray")
        return LocalExecutor()
    if cfg.executor == "ray":
        return RayExecutor(address=cfg.address, workers=cfg.workers)
    raise ResdynError(f"unknown --executor {cfg.executor!r}; choose one of {', '.join(EXECUTORS)}")


def _unwrap(exc: BaseException) -> BaseException:
    """The exception a Ray task really raised (Ray wraps it with the remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _worker_cfg(cfg, has_gpu: bool):
    """The run settings as a worker sees them: one GPU of its own (cuda:0) or the CPU."""
    device = cfg.device
    if device.startswith("cuda") or device == "auto":
        device = "cuda" if has_gpu else ("cpu" if device == "auto" else device)
    return dataclasses.replace(cfg, device=device, executor="local", address=None)


class _SplitWorker:
    """A Ray actor body: loads the model once, then computes units of one stage."""

    def __init__(self, cfg, module: str, stage: str, threads: int | None):
        import torch

        from resdyn.compute.models import load_bundle

        if threads:
            torch.set_num_threads(threads)
        self.cfg = cfg
        self.split = getattr(importlib.import_module(module), "SPLITS")[stage]
        self.state = self.split.prepare(load_bundle(cfg), cfg)

    def compute(self, unit: int, inputs: dict):
        return self.split.compute(self.state, self.cfg, unit, inputs)


def _run_in_worker(cfg, quiet: bool = True) -> tuple[str, str]:
    """One run of a sweep, inside a Ray task: (run_id, outcome line)."""
    from resdyn.compute import pipeline

    try:
        store = pipeline.run(cfg, quiet=quiet)
    except ResdynError as exc:
        return cfg.run_id, f"error: {exc}"
    m = store.manifest()
    return cfg.run_id, f"{m['status']} ({', '.join(m['stages_done'])})"


class RayExecutor:
    """Work on a Ray cluster: an existing one (``address``) or one started on this machine.

    ``workers`` bounds the actors of a split stage (default: the cluster's GPUs when the run uses
    CUDA and the cluster has any, else its CPUs). A Ray instance this executor started is shut
    down by ``close``; one that was already running (``ray.init`` by the caller) is left alone.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError as exc:
            raise ResdynError("--executor ray needs Ray: pip install 'ray==2.60.0'") from exc
        if workers is not None and workers < 1:
            raise ResdynError(f"--workers must be at least 1, got {workers}")
        self.ray = ray
        self.workers = workers
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = address or "this machine"
                raise ResdynError(f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0]}") from exc
            self._started = True

    # -- resources --------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Tasks in flight per ``parallel_chunks`` round: ``--workers``, else the cluster's CPUs."""
        return self.workers or max(1, self._cluster()[0])

    def _cluster(self) -> tuple[int, int]:
        res = self.ray.cluster_resources()
        return int(res.get("CPU", 1)), int(res.get("GPU", 0))

    def _worker_options(self, cfg) -> tuple[dict, int, bool]:
        """(actor options, number of workers, whether each worker has a GPU)."""
        cpus, gpus = self._cluster()
        use_gpu = gpus > 0 and cfg.device != "cpu"
        if cfg.device.startswith("cuda") and not use_gpu:
            raise ResdynError(f"--device {cfg.device} asked for, but the Ray cluster has no GPU; use --device cpu")
        n = self.workers or (gpus if use_gpu else max(1, cpus))
        opts = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        return opts, n, use_gpu

    # -- parallel_map -----------------------------------------------------------------------
    def map(self, fn: Callable, items: Iterable) -> list:
        ray = self.ray
        items = list(items)
        if not items:
            return []
        task = ray.remote(num_cpus=1)(fn)
        refs = [task.remote(x) for x in items]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None

    # -- split stages -----------------------------------------------------------------------
    def run_split(self, ctx, stage, split: Split) -> None:
        """Compute the pending units of ``stage`` on worker actors; checkpoint each on arrival."""
        ray = self.ray
        units = split.pending(ctx)
        if not units:
            return
        opts, n_workers, use_gpu = self._worker_options(ctx.cfg)
        n_workers = min(n_workers, len(units))
        # The driver may hold the model from the manifest or activations stage: free it (and its
        # GPU memory) for the workers, which load their own copies.
        ctx._bundle = None
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()
        wcfg = _worker_cfg(ctx.cfg, use_gpu)
        threads = None if use_gpu else opts["num_cpus"]
        actor_cls = ray.remote(**opts)(_SplitWorker)
        actors = [actor_cls.remote(wcfg, stage.module, stage.name, threads) for _ in range(n_workers)]
        queue = list(units)
        running: dict = {}
        bar = ctx.progress(total=len(units), desc=f"{stage.name} (ray, {n_workers} workers)", unit="layer")
        try:
            def submit(actor) -> None:
                unit = queue.pop(0)
                running[actor.compute.remote(unit, split.inputs(ctx, unit))] = (unit, actor)

            for actor in actors:
                if queue:
                    submit(actor)
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                unit, actor = running.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    raise _unwrap(exc) from None
                except ray.exceptions.RayActorError as exc:
                    raise ResdynError(f"a Ray worker died while computing {stage.name} unit {unit} "
                                      f"({type(exc).__name__}); rerun the same command to resume "
                                      "(finished units are kept)") from exc
                split.save(ctx.store, unit, result)
                bar.update(1)
                if queue:
                    submit(actor)
        finally:
            bar.close()
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)

    # -- sweeps -----------------------------------------------------------------------------
    def run_many(self, cfgs: list) -> list[tuple[str, str]]:
        """Compute several runs at once, one Ray task each; [(run_id, outcome line)] in order."""
        ray = self.ray
        opts, _, use_gpu = self._worker_options(cfgs[0]) if cfgs else ({}, 0, False)
        task = ray.remote(**opts)(_run_in_worker)
        refs = [task.remote(_worker_cfg(c, use_gpu)) for c in cfgs]
        out = []
        for cfg, ref in zip(cfgs, refs):
            try:
                out.append(ray.get(ref))
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
                err = _unwrap(exc)
                out.append((cfg.run_id, f"error: {type(err).__name__}: {str(err).splitlines()[0]}"))
        return out

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- sweeps ---------------------------------------------------------------------------------
def sweep_configs(base, models: list[str], revisions: list[str | None], inits: list[str],
                  seeds: list[int] | None = None) -> list:
    """One RunConfig per (model, revision, init, seed), in that nesting order, other settings
    from ``base``; ``seeds`` None keeps ``base.seed``. Each cell's run id is the one
    ``resdyn run`` derives for the same settings (``RunConfig.default_run_id``), with the
    revision put in; ids must differ."""
    cfgs = []
    for m, r, i, s in itertools.product(models, revisions, inits, seeds or [base.seed]):
        cell = dataclasses.replace(base, model=m, revision=r, init=i, seed=s, run_id=None)
        cfgs.append(dataclasses.replace(cell, run_id=cell.default_run_id(with_revision=True)))
    ids = [c.run_id for c in cfgs]
    dupes = sorted({r for r in ids if ids.count(r) > 1})
    if dupes:
        raise ResdynError(f"sweep cells share run ids {', '.join(dupes)}; give models distinct names")
    return cfgs


def run_sweep(cfgs: list, executor=None, quiet: bool = False) -> list[tuple[str, str]]:
    """Compute every run of ``cfgs``: one after another locally, at once on Ray.

    A failing run does not stop the others; its outcome line says why.
    Returns [(run_id, outcome)] in the order of ``cfgs``.
    """
    if isinstance(executor, RayExecutor):
        return executor.run_many(cfgs)
    from resdyn.compute import pipeline

    out = []
    for cfg in cfgs:
        try:
            m = pipeline.run(cfg, quiet=quiet).manifest()
            out.append((cfg.run_id, f"{m['status']} ({', '.join(m['stages_done'])})"))
        except ResdynError as exc:
            out.append((cfg.run_id, f"error: {exc}"))
    return out
