"""The frame of a page: its opening (title, run picker, guard, layer), its sidebar tail, and timing."""

from __future__ import annotations

import contextlib
import os
import time

import streamlit as st

from resdyn.core.store import RunStore
from resdyn.ui.banners import guard, partial_banner
from resdyn.ui.widgets import presentation_toggle, runs_dir_caption, select_layer, select_run


def run_page(title: str, layer: bool = True) -> tuple[RunStore, dict, int | None]:
    """The opening of every single-run page: its title, the sidebar run picker (the page stops
    there when no run exists), the run's manifest and, unless ``layer`` is False, the sidebar
    layer slider. Returns (store, manifest, layer or None)."""
    st.title(title)
    store = select_run()
    if store is None:
        st.stop()
    guard(store)
    m = store.manifest()
    return store, m, (select_layer(int(m["n_layers"])) if layer else None)


def sidebar_tail(store: RunStore) -> bool:
    """What every single-run page puts after its own sidebar widgets: the presentation toggle, the
    runs directory, and the partial-run banner. Returns whether presentation mode is on."""
    present = presentation_toggle()
    runs_dir_caption()
    partial_banner(store)
    return present


@contextlib.contextmanager
def timed_run():
    """Server time of one script run, appended as "seconds run_id" to ``$RESDYN_TIMING_LOG`` when that
    variable is set (the soak test reads it); a no-op otherwise. A page that stops early counts too."""
    path = os.environ.get("RESDYN_TIMING_LOG")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if path:
            with open(path, "a", encoding="utf-8") as fh:  # one short line: appends do not interleave
                fh.write(f"{time.perf_counter() - t0:.4f} {st.query_params.get('run', '')}\n")
