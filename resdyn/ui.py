"""Streamlit helpers shared by app.py and every page: the sidebar pickers, banners and plotting.

Pages stay thin: read widgets here, call ``resdyn.core`` queries and figure builders, render.
View state is mirrored into the URL query parameters so a pasted link reopens the same view, and
into ``st.session_state`` so it survives switching pages (navigation may drop the query string).
A value from the URL wins; an invalid one gets a sidebar warning and falls back, never a crash.
"""

from __future__ import annotations

import os

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from resdyn.core import queries
from resdyn.core.store import RunStore, open_run

_SESSION = "resdyn."  # prefix of the session-state keys that mirror the URL


def _param(name: str):
    return st.query_params.get(name)


def _remembered(name: str):
    return st.session_state.get(_SESSION + name)


def _remember(name: str, value: str) -> None:
    st.session_state[_SESSION + name] = value
    st.query_params[name] = value


def leave_legacy_pages_mode() -> None:
    """Make a deep link into a freshly started server go through app.py's navigation.

    Streamlit decides per process whether it is in the legacy "pages/ directory" mode: yes while
    a ``pages/`` folder exists and ``st.navigation`` has not yet been called. So when the first
    request after a start is ``/spectrum?...``, Streamlit runs pages/spectrum.py alone, with an
    auto-generated sidebar and without app.py (no wide layout, no sections). ``st.navigation``
    switches that mode off as its first act; here we do the same one run earlier and rerun, so
    the request is served by app.py, which resolves the same page (same URL path -> same page
    hash). No-op under AppTest of a single page and once the mode is off.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future Streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()


def select_run(label: str = "Run", key: str = "run") -> RunStore | None:
    """Sidebar picker of one run; synced to ``?run=``. Returns None (with a message) if no runs."""
    leave_legacy_pages_mode()  # every page calls select_run first
    df = queries.runs()
    if df.empty:
        st.info(f"No runs in `{queries.runs_dir()}`. Compute one with `python -m resdyn.compute run` or `make demo`.")
        return None
    ids = df["run_id"].tolist()
    complete = df.loc[df["status"] == "complete", "run_id"].tolist()
    default = complete[0] if complete else ids[0]  # open on a run that has everything to show
    wanted = _param(key)
    if wanted is not None and wanted not in ids:
        fallback = _remembered(key) if _remembered(key) in ids else default
        st.sidebar.warning(f"Run {wanted!r} from the link does not exist; showing {fallback!r}.")
        wanted = fallback
    if wanted is None:
        wanted = _remembered(key)
    index = ids.index(wanted) if wanted in ids else ids.index(default)
    run_id = st.sidebar.selectbox(label, ids, index=index, key=f"_sel_{key}")
    _remember(key, run_id)
    return open_run(queries.runs_dir(), run_id)


def select_runs(label: str = "Runs", key: str = "runs", default: list[str] | None = None) -> list[str]:
    """Sidebar multiselect of several runs; synced to ``?runs=a,b``. Unknown ids are dropped with a warning."""
    leave_legacy_pages_mode()
    df = queries.runs()
    if df.empty:
        st.info(f"No runs in `{queries.runs_dir()}`. Compute one with `python -m resdyn.compute run` or `make demo`.")
        return []
    ids = df["run_id"].tolist()
    raw = _param(key)
    if raw is None:
        raw = _remembered(key)
    if raw is not None:
        wanted = [r for r in str(raw).split(",") if r]
        unknown = [r for r in wanted if r not in ids]
        if unknown:
            st.sidebar.warning(f"Run(s) {', '.join(map(repr, unknown))} from the link do not exist; left out.")
        chosen = [r for r in wanted if r in ids]
    else:
        chosen = [r for r in (default or ids[:2]) if r in ids]
    chosen = st.sidebar.multiselect(label, ids, default=chosen, key=f"_sel_{key}")
    _remember(key, ",".join(chosen))
    return chosen


def select_layer(n_layers: int, label: str = "Layer", key: str = "layer") -> int:
    """Sidebar layer slider in [0, n_layers); synced to ``?layer=``; bad URL values fall back to 0."""
    raw = _param(key)
    source = "link"
    if raw is None:
        raw, source = _remembered(key), "previous page"
    try:
        layer = int(raw) if raw is not None else 0
        if not 0 <= layer < n_layers:
            raise ValueError
    except (TypeError, ValueError):
        if source == "link":
            st.sidebar.warning(f"Layer {raw!r} from the link is out of range (0–{n_layers - 1}); showing layer 0.")
        layer = 0
    if n_layers > 1:
        # The slider's bounds are part of its identity, so a run with another L gets a fresh slider.
        layer = st.sidebar.slider(label, 0, n_layers - 1, layer, key=f"_sel_{key}")
    else:
        layer = 0
    _remember(key, str(layer))
    return layer


def select_layers(n_layers: int, default: list[int], label: str = "Layers", key: str = "layers",
                  container=None) -> list[int]:
    """Multiselect of several layers; synced to ``?layers=0,5,9``; out-of-range entries are dropped."""
    where = container or st
    raw = _param(key)
    if raw is None:
        raw = _remembered(key)
    chosen = [l for l in default if 0 <= l < n_layers]
    if raw is not None:
        parsed, bad = [], []
        for tok in str(raw).split(","):
            try:
                v = int(tok)
                (parsed if 0 <= v < n_layers else bad).append(v)
            except ValueError:
                if tok:
                    bad.append(tok)
        if bad:
            st.sidebar.warning(f"Layer(s) {', '.join(map(repr, bad))} from the link are out of range; left out.")
        if parsed or not bad:
            chosen = parsed
    chosen = where.multiselect(label, list(range(n_layers)), default=list(dict.fromkeys(chosen)),
                               key=f"_sel_{key}_{n_layers}")
    _remember(key, ",".join(str(l) for l in chosen))
    return chosen


def select_operator(label: str = "Operator", key: str = "op") -> str:
    """Sidebar choice between J̄ (the block) and R = J̄ − I (its residual branch); synced to ``?op=``."""
    options = ["J", "R"]
    raw = _param(key) or _remembered(key)
    if raw is not None and raw not in options:
        st.sidebar.warning(f"Operator {raw!r} from the link is not J or R; showing J.")
        raw = None
    names = {"J": "J̄  (block, with skip)", "R": "R = J̄ − I  (residual branch)"}
    op = st.sidebar.radio(label, options, index=options.index(raw) if raw else 0, format_func=names.get,
                          key=f"_sel_{key}")
    _remember(key, op)
    return op


_PRESENTATION_CSS = """
<style>
  header[data-testid="stHeader"], footer, [data-testid="stToolbar"] {display: none;}
  .block-container {padding-top: 1rem;}
  html, body, [data-testid="stAppViewContainer"] {font-size: 1.25rem;}
</style>
"""


def presentation_toggle(key: str = "present") -> bool:
    """Sidebar toggle for presentation mode (larger fonts, thicker lines, no chrome); ``?present=1``."""
    raw = _param(key) or _remembered(key)
    on = st.sidebar.toggle("Presentation mode", value=raw in ("1", "true", "True"), key=f"_sel_{key}",
                           help="Larger fonts and thicker lines for a projector; hides Streamlit's toolbar.")
    st.session_state[_SESSION + key] = "1" if on else "0"
    if on:
        st.query_params[key] = "1"
        st.html(_PRESENTATION_CSS)
    elif key in st.query_params:  # keep ordinary links short
        del st.query_params[key]
    return on


def _stage_names() -> list[str]:
    """All stages the pipeline knows, without importing torch (module tails of STAGE_MODULES)."""
    try:
        from resdyn.compute.stages import STAGE_MODULES
    except Exception:  # the dashboard must not depend on the compute side being importable
        return []
    return [m.rsplit(".", 1)[-1] for m in STAGE_MODULES]


def missing_stages(manifest: dict) -> list[str]:
    """Stages not yet done: ``stages_all`` from the manifest when recorded, else the known stages."""
    planned = manifest.get("stages_all") or _stage_names()
    done = set(manifest.get("stages_done", []))
    return [s for s in planned if s not in done]


def partial_banner(store: RunStore) -> bool:
    """Warn on a partial run, naming the missing stages; True when the run is partial."""
    m = store.manifest()
    if m.get("status") == "complete":
        return False
    missing = missing_stages(m)
    what = f"missing stages: {', '.join(missing)}" if missing else "some stages have not finished"
    st.warning(
        f"This run is partial; {what}. Showing what it has. Finish it with "
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


# -- cached data access: keyed by runs dir, run, file modification time and arguments -----------
def _stamp(store: RunStore, name: str) -> int:
    p = store.table_path(name)
    return p.stat().st_mtime_ns if p.is_file() else 0


@st.cache_data(max_entries=128, show_spinner=False)
def _cached(fn: str, root: str, run_id: str, stamp: int, args: tuple) -> pd.DataFrame:
    return getattr(queries, fn)(run_id, *args, root=root)


def load_layers(store: RunStore, operator: str | None = None) -> pd.DataFrame:
    """``queries.layers`` through st.cache_data (recomputed when the file changes)."""
    return _cached("layers", str(store.path.parent), store.run_id, _stamp(store, "layers"), (operator,))


def load_eigenvalues(store: RunStore, layers: list[int] | None = None, operator: str = "J") -> pd.DataFrame:
    """``queries.eigenvalues`` through st.cache_data."""
    key = tuple(int(l) for l in layers) if layers is not None else None  # hashable for the cache
    return _cached("eigenvalues", str(store.path.parent), store.run_id, _stamp(store, "eigenvalues"),
                   (key, operator))


def load_samples(store: RunStore, layer: int | None = None) -> pd.DataFrame:
    """``queries.samples`` through st.cache_data."""
    return _cached("samples", str(store.path.parent), store.run_id, _stamp(store, "samples"), (layer,))


PLOTLY_CONFIG = {
    "displaylogo": False,
    # The camera button saves SVG: vector output for slides and papers, at the figure's own size.
    "toImageButtonOptions": {"format": "svg", "scale": 1},
}


def plot(fig: go.Figure, key: str | None = None) -> None:
    """Render a figure full-width with the house plotly config."""
    name = key or "resdyn-figure"
    config = dict(PLOTLY_CONFIG, toImageButtonOptions=dict(PLOTLY_CONFIG["toImageButtonOptions"], filename=name))
    st.plotly_chart(fig, width="stretch", config=config, key=key)


def runs_dir_caption() -> None:
    st.sidebar.caption(f"Runs from `{os.fspath(queries.runs_dir())}`")
