"""What a page says about its run before drawing: damaged files, missing stages, missing tables.

One line on the page, never a traceback, and the other runs keep working.
"""

from __future__ import annotations

import streamlit as st

from resdyn import stages
from resdyn.core import queries, verify
from resdyn.core.store import RunStore
from resdyn.ui import live


@st.cache_data(max_entries=512, show_spinner=False)
def _problems(path: str, signature: tuple) -> list[verify.Problem]:
    return verify.check_run(RunStore(path))


def problems(store: RunStore) -> list[verify.Problem]:
    """``verify.check_run`` of the run, cached until any of its files changes."""
    return _problems(str(store.path), verify.signature(store))


def damaged_ids(ids: list[str]) -> set[str]:
    """The runs among ``ids`` (in the current runs directory) that have a damaged or missing file."""
    root = queries.runs_dir()
    return {r for r in ids if problems(RunStore(root / r))}


def damaged_message(store: RunStore, found: list[verify.Problem]) -> str:
    """One line: the first damaged file, the command that repairs it, and how to list the rest."""
    p = found[0]
    more = (f" ({len(found) - 1} more file(s): `python -m resdyn.compute verify {store.run_id}` lists them)"
            if len(found) > 1 else "")
    return f"Run `{store.run_id}` cannot be shown: `{p.file}` is {p.reason}. Repair it with `{p.repair()}`{more}."


def guard(store: RunStore) -> None:
    """Stop the page with one ``st.error`` when the run has a damaged or missing file."""
    found = problems(store)
    if found:
        st.error(damaged_message(store, found), icon=":material/build:")
        st.stop()


def partial_banner(store: RunStore, panel: bool = True) -> bool:
    """Say that a run is partial, naming the missing stages; True when it is partial.

    While a live computation holds the run's lock, the missing stages it computes are on their way:
    no command is suggested, and (with ``panel``) its live progress is shown, refreshing by itself.
    Otherwise the line ends with the command that finishes the run.
    """
    m = store.manifest()
    lv = live.live(store)
    if m.get("status") == "complete" and lv is None:
        return False
    missing = stages.missing(m)
    if lv is not None:
        coming = [s for s in missing if lv.computes(s)]
        later = [s for s in missing if s not in coming]
        what = (f"on their way: {', '.join(coming)}" if coming else "a computation is writing it")
        rest = (f"; not in this computation: {', '.join(later)} (compute them once it ends with "
                f"`python -m resdyn.compute run --run-id {store.run_id} --runs-dir {store.path.parent}`)"
                if later else "")
        st.info(f"Run `{store.run_id}` is being computed (pid {lv.pid}); {what}{rest}. Showing what it has; "
                "this page redraws as each stage lands.", icon=":material/hourglass_top:")
        if panel:
            live.live_panel([store])
        return True
    what = f"missing stages: {', '.join(missing)}" if missing else "some stages have not finished"
    st.warning(
        f"Run `{store.run_id}` is partial; {what}. Showing what it has. Finish it with "
        f"`python -m resdyn.compute run --run-id {store.run_id} --runs-dir {store.path.parent}`.",
        icon="⚠️",
    )
    return True


def require(store: RunStore, *tables: str) -> bool:
    """True when the run has every table; otherwise say which are missing and how they come (the
    stage to compute, or that a live computation is writing it), without an exception."""
    missing = [t for t in tables if not store.has_table(t)]
    if missing:
        writers = list(dict.fromkeys(w for t in missing for w in stages.writers(f"{t}.parquet")))
        st.info(f"Run `{store.run_id}` has no {', '.join(f'`{t}.parquet`' for t in missing)} yet, "
                "so this view is empty.")
        st.caption(live.compute_hint(store, *writers) if writers else "Compute the missing stages to fill it.")
        return False
    return True
