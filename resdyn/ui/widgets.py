"""URL-synced sidebar widgets: run and layer pickers, choices, numbers, the presentation toggle.

View state is mirrored into the URL query parameters so a pasted link reopens the same view, and
into ``st.session_state`` so it survives switching pages (navigation may drop the query string).
A value from the URL wins; an invalid one gets a sidebar warning and falls back, never a crash.
"""

from __future__ import annotations

import os

import numpy as np
import streamlit as st

from resdyn.core import queries
from resdyn.core.store import RunStore, open_run
from resdyn.ui.banners import damaged_ids

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


def _run_label(damaged: set[str]):
    return lambda r: f"{r}  (damaged)" if r in damaged else r


def select_run(label: str = "Run", key: str = "run") -> RunStore | None:
    """Sidebar picker of one run; synced to ``?run=``. Returns None (with a message) if no runs.
    Damaged runs stay selectable (the page then says what is wrong) and are marked as such."""
    leave_legacy_pages_mode()  # every page calls select_run first
    df = queries.runs()
    if df.empty:
        st.info(f"No runs in `{queries.runs_dir()}`. Compute one with `python -m resdyn.compute run` or `make demo`.")
        return None
    ids = df["run_id"].tolist()
    damaged = damaged_ids(ids)
    complete = [r for r in df.loc[df["status"] == "complete", "run_id"] if r not in damaged]
    default = complete[0] if complete else ids[0]  # open on a run that has everything to show
    wanted = _param(key)
    if wanted is not None and wanted not in ids:
        fallback = _remembered(key) if _remembered(key) in ids else default
        st.sidebar.warning(f"Run {wanted!r} from the link does not exist; showing {fallback!r}.")
        wanted = fallback
    if wanted is None:
        wanted = _remembered(key)
    index = ids.index(wanted) if wanted in ids else ids.index(default)
    run_id = st.sidebar.selectbox(label, ids, index=index, key=f"_sel_{key}", format_func=_run_label(damaged))
    _remember(key, run_id)
    return open_run(queries.runs_dir(), run_id)


def current_run(key: str = "run") -> str | None:
    """The single run chosen on another page (link or session), without drawing a widget."""
    return _param(key) or _remembered(key)


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
    damaged = damaged_ids(ids)
    chosen = st.sidebar.multiselect(label, ids, default=chosen, key=f"_sel_{key}", format_func=_run_label(damaged))
    _remember(key, ",".join(chosen))
    left_out = [r for r in chosen if r in damaged]
    if left_out:
        st.sidebar.warning(f"Left out, damaged: {', '.join(map(repr, left_out))}; the Runs page or "
                           "`python -m resdyn.compute verify` says how to repair them.")
    return [r for r in chosen if r not in damaged]


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


def select_choice(label: str, options: list, key: str, default=None, format_func=str, container=None,
                  help: str | None = None):
    """A selectbox synced to ``?KEY=`` (options compared as strings, so ints work too).

    An unknown value from the link warns in the sidebar and falls back to ``default`` (the first
    option when None). For method, K, snapshot and similar choices on any page.
    """
    where = container or st.sidebar
    if not options:
        return None
    names = [str(o) for o in options]
    fallback = default if default in options else options[0]
    raw = _param(key)
    if raw is not None and str(raw) not in names:
        st.sidebar.warning(f"{label} {raw!r} from the link is not one of {', '.join(names[:8])}"
                           f"{' …' if len(names) > 8 else ''}; showing {fallback!r}.")
        raw = None
    if raw is None:
        raw = _remembered(key)
    index = names.index(str(raw)) if raw is not None and str(raw) in names else options.index(fallback)
    value = where.selectbox(label, options, index=index, format_func=format_func, key=f"_sel_{key}", help=help)
    _remember(key, str(value))
    return value


def select_number(label: str, lo: float, hi: float, default: float, key: str, step: float = 0.01,
                  container=None, help: str | None = None) -> float:
    """A float slider in [lo, hi] synced to ``?KEY=`` (e.g. the dose ``c``); bad link values warn and fall back."""
    where = container or st.sidebar
    raw = _param(key)
    value = default
    if raw is not None:
        try:
            value = float(raw)
            if not (lo <= value <= hi) or value != value:  # NaN is not in range either
                raise ValueError
        except (TypeError, ValueError):
            st.sidebar.warning(f"{label} {raw!r} from the link is not a number in [{lo:g}, {hi:g}]; "
                               f"showing {default:g}.")
            value = default
    elif _remembered(key) is not None:
        try:
            value = min(max(float(_remembered(key)), lo), hi)
        except ValueError:
            value = default
    decimals = max(0, -int(np.floor(np.log10(step)))) if step < 1 else 0
    value = round(round(value / step) * step, decimals)
    value = where.slider(label, float(lo), float(hi), float(value), step=float(step), key=f"_sel_{key}", help=help)
    _remember(key, f"{value:.{decimals}f}")
    return value


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


def runs_dir_caption() -> None:
    """A sidebar caption naming the runs directory the pickers list."""
    st.sidebar.caption(f"Runs from `{os.fspath(queries.runs_dir())}`")
