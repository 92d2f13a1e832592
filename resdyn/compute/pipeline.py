"""Run the stages of a run in order, skipping finished ones, under a writer lock.

The manifest is written before the first stage (status "partial") and updated after each, so a
killed run is visible as partial and a rerun continues where it stopped. While it computes, the
run's progress.json says which stage is running, how far its progress bar is and the time left
(``resdyn.core.progress``); the dashboard reads it. The executor
(``--executor local|ray``, ``resdyn.compute.executors``) decides where a stage's per-layer work
runs; the stages themselves, their order and the store writes are the same for both.
"""

from __future__ import annotations

import json
import platform
import time

from resdyn import __version__
from resdyn import stages as registry
from resdyn.compute import executors
from resdyn.compute.context import RunContext
from resdyn.compute.stages import Stage, all_stages
from resdyn.config import LEGACY_DEFAULTS, RunConfig, resolve_cumulative_rank
from resdyn.core import progress
from resdyn.core.store import MANIFEST, SCHEMA_VERSION, CorruptFileError, RunStore
from resdyn.errors import ResdynError, UsageError


def select_stages(spec: str | None, stages: list[Stage]) -> list[Stage]:
    """The stages of ``stages`` that a ``--stages`` value names (``resdyn.stages.expand``: stage
    names and group names such as ``claims``); all of them for None."""
    names = registry.expand(spec)
    return stages if names is None else [s for s in stages if s.name in names]


def _versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "resdyn": __version__}


def _check_same_settings(old: dict, cfg: RunConfig) -> None:
    """Refuse to resume a run with other settings; a key an older manifest lacks counts as its
    ``LEGACY_DEFAULTS`` value (``position``: "last"), or as unknown when it has none."""
    old = {**LEGACY_DEFAULTS, **old}
    for key, value in cfg.manifest_fields().items():
        if value is not None and key in old and old[key] is not None and old[key] != value:
            raise UsageError(
                f"run {cfg.run_id} exists with {key}={old[key]!r}, not {value!r}; use another --run-id"
            )


def _stored_schema(store: RunStore):
    """The schema_version written in the run's manifest.json (0 when absent), before migration."""
    with open(store.path / MANIFEST, encoding="utf-8") as fh:
        return json.load(fh).get("schema_version", 0)


def init_manifest(ctx: RunContext, stage_list: list[Stage]) -> dict:
    """Create or validate the manifest; model facts need the model, so it is loaded here."""
    store, cfg = ctx.store, ctx.cfg
    if store.exists():
        m = store.manifest()
        if cfg.cumulative_rank is not None and "d_model" in m:  # d is known: check the flag now
            resolve_cumulative_rank(cfg.cumulative_rank, int(m["d_model"]))
        _check_same_settings(m, cfg)
        if m.get("n_samples") not in (None, cfg.samples):
            raise UsageError(f"run {cfg.run_id} has n_samples={m['n_samples']}, not {cfg.samples}; use another --run-id")
        if _stored_schema(store) != SCHEMA_VERSION or "stages_all" not in m or not LEGACY_DEFAULTS.keys() <= m.keys():
            # Persist the migration (migrate_manifest ran on read) before any stage runs, and
            # record what an older run's missing settings meant (its stages were computed so).
            m.setdefault("stages_all", [s.name for s in all_stages()])
            for key, value in LEGACY_DEFAULTS.items():
                m.setdefault(key, value)
            store.write_manifest(m)
        if m.get("schema_version", 0) < SCHEMA_VERSION:  # new tables must not join old-format ones
            from resdyn.core.upgrade import upgrade_run

            upgrade_run(store)
            m = store.manifest()
        return m
    ctx.texts()  # a bad corpus should fail before a slow model load
    bundle = ctx.model()
    m = cfg.new_manifest(architecture=bundle.adapter.name, model_type=bundle.config.model_type,
                         snapshots=bundle.adapter.boundaries, n_layers=bundle.n_layers, d_model=bundle.d_model,
                         versions=_versions(), **({"origin": ctx.origin} if ctx.origin else {}))
    store.write_manifest(m)
    return m


def run(cfg: RunConfig, quiet: bool = False, redo: tuple[str, ...] = (), *, bundle=None,
        texts: list[str] | None = None, origin: dict | None = None, ahead: tuple[str, ...] = ()) -> RunStore:
    """Compute the stages of ``cfg`` that are not done yet; return the run's store.

    ``bundle`` (a prepared ``ModelBundle``) and ``texts`` (``cfg.samples`` passages) replace the
    model and corpus that ``cfg`` names, for ``resdyn.analyze``; ``origin`` (where that model came
    from) is then written to a new run's manifest. They need the local executor. ``ahead`` names
    stages the caller computes next (the demo's first pass): a stage computed now may prepare work
    for them (``RunContext.planned``), as for stages of this invocation.
    """
    stages = all_stages()
    todo = select_stages(cfg.stages, stages)
    store = RunStore(cfg.run_dir)
    with store.lock(), executors.make_executor(cfg) as executor, executors.use_executor(executor):
        ctx = RunContext(cfg, store, quiet=quiet, _bundle=bundle, _texts=texts, origin=origin)
        m = init_manifest(ctx, todo)
        names = [s.name for s in stages]
        unknown = set(redo) - set(names)
        if unknown:
            raise UsageError(f"unknown stage(s) in --redo: {', '.join(sorted(unknown))}; stages: {', '.join(names)}")
        # A redone stage makes its dependents stale; those never computed (nor asked for) stay so.
        wanted = set(m.get("stages_done", [])) | {s.name for s in todo}
        stale = set(registry.dependents(set(redo))) & (wanted | set(redo)) if redo else set()
        todo = [s for s in stages if s in todo or s.name in stale]
        _check_borrowed_model(ctx, m, [s for s in todo if s.name in stale or s.name not in m.get("stages_done", [])])
        _check_damaged(store, stale | {s.name for s in todo if s.name not in m.get("stages_done", [])})
        if stale:
            for name in stale:
                store.clear_partial(name)
            m = store.invalidate(stale)
        done = set(m.get("stages_done", []))
        todo = [s for s in todo if not (s.name in done and all((store.path / o).is_file() for o in s.outputs))]
        ctx.planned = frozenset(s.name for s in todo) | (frozenset(ahead) - done)
        tracker = progress.ProgressWriter(store, [s.name for s in todo], progress.reference_timings(store))
        ctx.report = tracker.step
        try:
            for stage in todo:
                missing = [r for r in stage.requires if r not in done]
                if missing:
                    raise UsageError(f"stage {stage.name} needs {', '.join(missing)} first; run without --stages")
                tracker.start_stage(stage.name)
                t0 = time.perf_counter()
                run_stage(ctx, stage, executor, stages)
                seconds = time.perf_counter() - t0
                written = stage.outputs + tuple(f for f in stage.spec.shared if (store.path / f).is_file())
                store.mark_stage_done(stage.name, seconds, names, outputs=written)
                tracker.end_stage(stage.name, seconds)
                done.add(stage.name)
        finally:
            tracker.close()
    return store


def _check_borrowed_model(ctx: RunContext, m: dict, pending: list[Stage]) -> None:
    """A run that ``resdyn.analyze`` computed from a model object can only get its model stages
    from analyze again: refuse before anything is invalidated, naming the call."""
    if ctx._bundle is not None or (m.get("origin") or {}).get("via") != "resdyn.analyze":
        return
    need = [s.name for s in pending if s.needs_model]
    if need:
        raise UsageError(f"run {ctx.cfg.run_id} was computed by resdyn.analyze from a loaded model; compute "
                         f"{', '.join(need)} with resdyn.analyze(model, tokenizer, texts, run_id={ctx.cfg.run_id!r}, "
                         f"stages=...) (the other stages work here with --stages)")


def _check_damaged(store: RunStore, recomputed: set[str]) -> None:
    """Stop with one line when a finished stage's file is damaged and nothing asked to rewrite it;
    delete the damaged files that the stages about to run rewrite.

    A missing file is not refused: its stage is simply computed again (that is how a run gains a
    file a newer resdyn writes). ``verify`` lists every problem; this names the first.
    """
    from resdyn.core.verify import check_run

    found = [p for p in check_run(store) if p.reason != "missing"]
    for p in found:
        if set(p.redo) <= recomputed:  # about to be rewritten; a shared file must not be merged into
            p.path.unlink()
    bad = [p for p in found if not set(p.redo) <= recomputed]
    if bad:
        more = (f" ({len(bad) - 1} more: `python -m resdyn.compute verify {store.run_id} --runs-dir "
                f"{store.path.parent}` lists them)") if len(bad) > 1 else ""
        raise ResdynError(f"corrupt file {bad[0].path} ({bad[0].reason}); repair it: `{bad[0].repair()}`{more}")


def run_stage(ctx: RunContext, stage: Stage, executor, stages: list[Stage]) -> None:
    """One stage: its per-layer units on the executor first (when it declares a ``Split``), then
    its own function, which computes anything left and writes the outputs. A damaged input file
    is reported with the stage that writes it, so the fix (``--redo STAGE``) is in the message."""
    try:
        split = executors.split_for(stage)
        if split is not None:
            executor.run_split(ctx, stage, split)
        stage.fn(ctx)
    except CorruptFileError as exc:
        writer = next((s.name for s in stages if exc.path.name in s.outputs), None)
        if writer is None or f"--redo {writer}`" in str(exc):
            raise
        raise CorruptFileError(
            f"corrupt file {exc.path}; recompute it: rerun your `python -m resdyn.compute run "
            f"--run-id {ctx.cfg.run_id} ...` command with `--redo {writer}`", exc.path) from exc
