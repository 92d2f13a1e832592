"""Cached data access for pages: keyed by runs directory, run, file modification time and arguments."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from resdyn.core import queries, sample_stats
from resdyn.core.store import RunStore


def _stamp(store: RunStore, name: str) -> int:
    p = store.table_path(name)
    return p.stat().st_mtime_ns if p.is_file() else 0


def stamps(store: RunStore, *names: str) -> tuple[int, ...]:
    """Modification times of some tables of a run (0 when absent): a cache key that changes with them."""
    return tuple(_stamp(store, n) for n in names)


@st.cache_data(max_entries=256, show_spinner=False)
def _cached(fn: str, root: str, run_id: str, stamp, args: tuple):
    return getattr(queries, fn)(run_id, *args, root=root)


def load_query(store: RunStore, fn: str, *args, tables: tuple[str, ...]):
    """``queries.<fn>(run_id, *args, root=...)`` through st.cache_data, computed again when any of
    ``tables`` (the tables it reads) changes. ``args`` must be hashable values (ints, strings)."""
    return _cached(fn, str(store.path.parent), store.run_id, stamps(store, *tables), args)


def load_layers(store: RunStore, operator: str | None = None) -> pd.DataFrame:
    """``queries.layers`` through st.cache_data: layers.parquet with the per-sample profiles joined
    (recomputed when either file changes, so the κ columns appear when ``sample_stats`` lands)."""
    return _cached("layers", str(store.path.parent), store.run_id, stamps(store, *sample_stats.LAYER_TABLES),
                   (operator,))


def load_eigenvalues(store: RunStore, layers: list[int] | None = None, operator: str = "J") -> pd.DataFrame:
    """``queries.eigenvalues`` through st.cache_data."""
    key = tuple(int(l) for l in layers) if layers is not None else None  # hashable for the cache
    return _cached("eigenvalues", str(store.path.parent), store.run_id, _stamp(store, "eigenvalues"),
                   (key, operator))


def load_samples(store: RunStore, layer: int | None = None) -> pd.DataFrame:
    """``queries.samples`` through st.cache_data."""
    return _cached("samples", str(store.path.parent), store.run_id, _stamp(store, "samples"), (layer,))


def load_table(store: RunStore, name: str, where: str = "", params: tuple = ()) -> pd.DataFrame | None:
    """Any table of a run (``queries.table``) through st.cache_data; None when the run lacks it.

    ``where`` is fixed SQL text with ``?`` placeholders bound to ``params`` (never URL text).
    """
    if not store.has_table(name):
        return None
    return _cached("table", str(store.path.parent), store.run_id, _stamp(store, name),
                   (name, where, list(params)) if params else (name, where))


@st.cache_data(max_entries=64, show_spinner=False)
def _snapshot_table(path: str, stamp: tuple) -> tuple[pd.DataFrame | None, str]:
    from resdyn.core import samples

    return samples.run_snapshot_table(RunStore(path))


def load_snapshots(store: RunStore) -> tuple[pd.DataFrame | None, str]:
    """(snapshot table, "stored" | "computed" | why not) of a run: snapshots.parquet, or computed
    from activations.npy for runs from before the table (``resdyn.core.samples``), cached."""
    acts = store.array_path("activations")
    stamp = (_stamp(store, "snapshots"), acts.stat().st_mtime_ns if acts.is_file() else 0)
    return _snapshot_table(str(store.path), stamp)
