"""What a page says about its run before drawing: damaged files, missing stages, missing tables.

One line on the page, never a traceback, and the other runs keep working.
"""

from __future__ import annotations

import streamlit as st

from resdyn import stages
from resdyn.core import queries, verify
from resdyn.core.store import RunStore


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


def partial_banner(store: RunStore) -> bool:
    """Warn on a partial run, naming the missing stages; True when the run is partial."""
    m = store.manifest()
    if m.get("status") == "complete":
        return False
    missing = stages.missing(m)
    what = f"missing stages: {', '.join(missing)}" if missing else "some stages have not finished"
    st.warning(
        f"Run `{store.run_id}` is partial; {what}. Showing what it has. Finish it with "
        f"`python -m resdyn.compute run --run-id {store.run_id} --runs-dir {store.path.parent}`.",
        icon="⚠️",
    )
    return True


def require(store: RunStore, *tables: str) -> bool:
    """True when the run has every table; otherwise say which are missing (no exception)."""
    missing = [t for t in tables if not store.has_table(t)]
    if missing:
        st.info(f"Run `{store.run_id}` has no {', '.join(f'`{t}.parquet`' for t in missing)} yet, "
                "so this view is empty. Compute the missing stages to fill it.")
        return False
    return True
