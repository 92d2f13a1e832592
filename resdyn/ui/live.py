"""Live progress of a run being computed: what is running, how far, the time left, and a page that
refreshes itself while the computation lasts.

Everything is read from files the computation writes (its ``.lock`` pid and ``progress.json``,
``resdyn.core.progress``), never from the process. The panel is a fragment that reruns every
``REFRESH_S`` seconds; when a stage lands (the manifest's finished stages change) or the
computation ends, it reruns the whole page so the new tables appear.
"""

from __future__ import annotations

import streamlit as st

from resdyn.core import progress
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError

REFRESH_S = 2.0
"""Seconds between two refreshes of a live panel."""


def _done(store: RunStore) -> tuple[str, ...]:
    try:
        return tuple(store.manifest().get("stages_done") or ())
    except ResdynError:  # being rewritten or damaged: the next refresh (or the guard) says more
        return ()


def live(store: RunStore) -> progress.Live | None:
    """The run's live computation, or None (no live process holds its lock)."""
    return progress.live(store)


@st.fragment(run_every=REFRESH_S)
def _panel(paths: tuple[str, ...], seen: tuple[tuple[str, ...], ...], label_runs: bool) -> None:
    for path, seen_done in zip(paths, seen):
        store = RunStore(path)
        lv = progress.live(store)
        if progress.needs_redraw(seen_done, _done(store), lv):
            st.rerun()  # a stage landed or the computation ended: draw the whole page again
        line, frac = progress.describe(lv)
        if label_runs:
            line = f"`{store.run_id}`: {line}"
        if frac is None:
            st.markdown(line)
        else:
            st.progress(frac, text=line)
    st.caption(f"Read every {REFRESH_S:g} s from progress.json in the run's directory; the page redraws as each "
               "stage lands.")


def live_panel(stores: list[RunStore], label_runs: bool = False) -> list[RunStore]:
    """Show the progress of those of ``stores`` being computed now, refreshing by itself while they
    are; returns them (empty: nothing shown, and the page does not refresh)."""
    running = [s for s in stores if progress.live(s) is not None]
    if running:
        with st.container(border=True):
            _panel(tuple(str(s.path) for s in running), tuple(_done(s) for s in running), label_runs)
    return running


def compute_hint(store: RunStore, *stages: str, verb: str = "Compute") -> str:
    """How a page tells the user to get the missing ``stages``: the command to run, or, when a live
    computation is going to write them, that they are on their way (never a second computation)."""
    lv = progress.live(store)
    names = ", ".join(f"`{s}`" for s in stages)
    if lv is not None:
        coming = [s for s in stages if lv.computes(s)]
        if coming:
            one = len(coming) == 1
            return (f"{', '.join(f'`{s}`' for s in coming)} {'is on its way' if one else 'are on their way'}: the "
                    f"computation running now (pid {lv.pid}) writes {'it' if one else 'them'}, and this page "
                    f"redraws when {'it lands' if one else 'each lands'}.")
        return (f"The computation running now (pid {lv.pid}) does not compute {names}; once it ends, "
                f"{verb.lower()} {'it' if len(stages) == 1 else 'them'} with `python -m resdyn.compute run --run-id "
                f"{store.run_id} --runs-dir {store.path.parent} --stages {','.join(stages)}`.")
    return (f"{verb} {'it' if len(stages) == 1 else 'them'} with `python -m resdyn.compute run --run-id "
            f"{store.run_id} --runs-dir {store.path.parent} --stages {','.join(stages)}`.")
