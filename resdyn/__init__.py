"""resdyn: the residual stream of a transformer language model as a dynamical system.

Data flows compute -> store -> query -> figure -> page:
``resdyn.compute`` (torch) writes runs, ``resdyn.core`` (no torch) reads them.

The public Python API (the README's "Python API" section shows a session):

- ``resdyn.open(run, runs_dir=None) -> Run``: one run; ``Run.manifest``, ``Run.status``,
  ``Run.missing_stages``, ``Run.table(name) -> DataFrame``, ``Run.array(name)`` (read-only,
  memory-mapped) and ``Run.sql(query)`` with the run's tables as views.
- ``resdyn.runs(runs_dir=None) -> DataFrame``: one row per run.
- ``resdyn.sql(query, runs_dir=None) -> DataFrame``: every table name is a view over all runs,
  with a ``run_id`` column.
- ``resdyn.analyze(model, tokenizer, texts, *, run_id, ...) -> Run``: compute a run of an
  already-loaded transformers model on a list of strings (needs torch; the only function here
  that imports it).
- ``resdyn.register_adapter(model_type, adapter)``: teach resdyn a custom architecture.

``runs_dir`` resolves like the CLI's ``--runs-dir``: the argument, else ``$RESDYN_RUNS_DIR``, else
``./data/runs``. Importing ``resdyn`` loads none of this until it is used.
"""

from resdyn.errors import ResdynError

__version__ = "0.1.0"

__all__ = ["Run", "ResdynError", "__version__", "analyze", "open", "register_adapter", "runs", "sql"]

# name -> (module, attribute), imported on first access (PEP 562) so that `import resdyn` stays
# instant and torch-free: the CLI reads __version__ and the stage registry through this package.
_LAZY = {
    "Run": ("resdyn.api", "Run"),
    "open": ("resdyn.api", "open_run"),
    "runs": ("resdyn.api", "runs"),
    "sql": ("resdyn.api", "sql"),
    "analyze": ("resdyn.compute.analyze", "analyze"),
    "register_adapter": ("resdyn.compute.adapters", "register_adapter"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resdyn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
