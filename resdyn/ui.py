"""Streamlit helpers shared by app.py and every page: the sidebar pickers, banners and plotting.

Pages stay thin: read widgets here, call ``resdyn.core`` queries and figure builders, render.
View state is mirrored into the URL query parameters so a pasted link reopens the same view, and
into ``st.session_state`` so it survives switching pages (navigation may drop the query string).
A value from the URL wins; an invalid one gets a sidebar warning and falls back, never a crash.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from resdyn import stages
from resdyn.core import queries, verify
from resdyn.core.figures.common import highlight_band
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


# -- damaged runs: one line on the page, never a traceback, and the other runs keep working -----
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


# -- cached data access: keyed by runs dir, run, file modification time and arguments -----------
def _stamp(store: RunStore, name: str) -> int:
    p = store.table_path(name)
    return p.stat().st_mtime_ns if p.is_file() else 0


def stamps(store: RunStore, *names: str) -> tuple[int, ...]:
    """Modification times of some tables of a run (0 when absent): a cache key that changes with them."""
    return tuple(_stamp(store, n) for n in names)


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


PLOTLY_CONFIG = {
    "displaylogo": False,
    # Plotly's camera button saves SVG: vector output for slides and papers, at the figure's own
    # size. A second button, PNG at twice the size, is added in the browser by EXPORT_SCRIPT:
    # st.plotly_chart sends the config as JSON, so a custom modebar button (which needs a click
    # function) cannot be declared here, and plotly has only one built-in "toImage" button.
    "toImageButtonOptions": {"format": "svg", "scale": 1},
}
PNG_SCALE = 2

# Runs once per browser tab (app.py renders it on every page). It watches the page for Plotly
# charts and puts a "PNG" button next to each chart's camera button. The click reuses plotly's
# own toImage handler (it reads gd._context.toImageButtonOptions at click time) with the format
# switched to PNG for that one click: the image is made in the browser, no server round trip.
# Streamlit passes st.html through DOMPurify, which drops a <script> whose text holds "<" followed
# by a letter or "/", so the icon is built with DOM calls rather than written as markup.
EXPORT_SCRIPT = """
<script id="resdyn-export">
(function () {
  if (window.__resdynExport) { return; }
  window.__resdynExport = true;
  var NS = 'http://www.w3.org/2000/svg';
  function icon() {
    var svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 30 16');
    svg.setAttribute('height', '1em');
    svg.setAttribute('width', '1.9em');
    svg.setAttribute('class', 'icon');
    var t = document.createElementNS(NS, 'text');
    t.setAttribute('x', '15');
    t.setAttribute('y', '12.5');
    t.setAttribute('text-anchor', 'middle');
    t.setAttribute('font-size', '12');
    t.setAttribute('font-weight', '700');
    t.setAttribute('font-family', 'Arial, sans-serif');
    t.setAttribute('fill', 'currentColor');
    t.textContent = 'PNG';
    svg.appendChild(t);
    return svg;
  }
  function decorate(gd) {
    var cam = gd.querySelector('.modebar-btn[data-title^="Download plot"]:not(.resdyn-png)');
    if (!cam || !gd._context || cam.parentNode.querySelector('.resdyn-png')) { return; }
    var fmt = (gd._context.toImageButtonOptions || {}).format || 'png';
    var title = 'Download plot as ' + fmt.toUpperCase();
    cam.setAttribute('data-title', title);
    cam.setAttribute('aria-label', title);
    var png = document.createElement(cam.tagName);
    if (cam.tagName === 'BUTTON') { png.setAttribute('type', 'button'); }
    png.className = 'modebar-btn resdyn-png';
    png.setAttribute('rel', 'tooltip');
    png.setAttribute('data-title', 'Download plot as PNG');
    png.setAttribute('aria-label', 'Download plot as PNG');
    png.setAttribute('data-toggle', 'false');
    png.setAttribute('data-gravity', 'n');
    png.style.color = 'rgba(68, 68, 68, 0.55)';
    png.appendChild(icon());
    png.addEventListener('click', function (ev) {
      ev.preventDefault();
      var opts = gd._context.toImageButtonOptions || (gd._context.toImageButtonOptions = {});
      var old = {format: opts.format, scale: opts.scale};
      opts.format = 'png';
      opts.scale = %(scale)d;
      try { cam.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true})); }
      finally { opts.format = old.format; opts.scale = old.scale; }
    });
    cam.parentNode.insertBefore(png, cam.nextSibling);
  }
  var pending = false;
  function scan() {
    pending = false;
    document.querySelectorAll('.js-plotly-plot').forEach(decorate);
  }
  new MutationObserver(function () {
    if (!pending) { pending = true; setTimeout(scan, 150); }
  }).observe(document.body, {childList: true, subtree: true});
  scan();
})();
</script>
""" % {"scale": PNG_SCALE}
# DOMPurify's rule, checked here so that an edit cannot silently disable the script.
assert not __import__("re").search(r"<[/\w]", EXPORT_SCRIPT.split(">", 1)[1].rsplit("</script>", 1)[0])


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


def install_export_buttons() -> None:
    """Add the browser-side PNG button to every Plotly chart of the app (see ``EXPORT_SCRIPT``).

    Called by app.py; rendered in the sidebar, where its empty element is hidden by the CSS.
    """
    st.html("<style>.st-key-resdyn-export {display: none;}</style>")
    with st.sidebar.container(key="resdyn-export"):
        st.html(EXPORT_SCRIPT, unsafe_allow_javascript=True)


class _Spec(go.Figure):
    """A figure already built and serialised (``fig.to_dict()``), handed to st.plotly_chart as is.

    Building a plotly Figure costs tens of milliseconds per figure (property validation,
    template copies), most of a page's server time. Pages therefore cache the *serialised*
    figure (``cached_figure``) and add per-view details such as the highlighted layer to a
    shallow copy of the dict (``with_highlight``). st.plotly_chart accepts a Figure or a dict but
    re-validates a dict, which would cost the same again; it only calls ``to_dict()`` on a
    Figure, so this subclass returns the stored dict (no plotly constructor runs).
    """

    def __init__(self, spec: dict):  # noqa: D107 - deliberately not calling go.Figure.__init__
        object.__setattr__(self, "_resdyn_spec", spec)

    def to_dict(self) -> dict:
        return self._resdyn_spec


def figure_spec(fig: go.Figure | dict) -> dict:
    """The serialised form of a figure (a dict with data and layout), as ``plot`` takes it."""
    return fig if isinstance(fig, dict) else fig.to_dict()


@st.cache_resource(max_entries=512, show_spinner=False)
def _figure_cache(name: str, key: tuple, _build) -> dict:
    return figure_spec(_build())


def cached_figure(name: str, key: tuple, build) -> dict:
    """``build()`` (a go.Figure) serialised once per (name, key) for the whole server.

    ``key`` must name everything the figure depends on (run path, table stamps, arguments).
    The result is shared between sessions: never mutate it (``with_highlight`` copies).
    """
    return _figure_cache(name, key, build)


def with_highlight(spec: dict, layer: int | None) -> dict:
    """A copy of ``spec`` with the faint band at ``layer`` that ``common.highlight_layer`` draws."""
    if layer is None:
        return spec
    layout = dict(spec.get("layout", {}))
    layout["shapes"] = [*layout.get("shapes", ()), highlight_band(layer)]
    return {**spec, "layout": layout}


def plot(fig: go.Figure | dict, key: str | None = None) -> None:
    """Render a figure (or its ``figure_spec``) full-width with the house plotly config.

    The camera button saves SVG under the file name ``key``; app.py adds a PNG button.
    """
    name = key or "resdyn-figure"
    config = dict(PLOTLY_CONFIG, toImageButtonOptions=dict(PLOTLY_CONFIG["toImageButtonOptions"], filename=name))
    st.plotly_chart(_Spec(fig) if isinstance(fig, dict) else fig, width="stretch", config=config, key=key)


def runs_dir_caption() -> None:
    st.sidebar.caption(f"Runs from `{os.fspath(queries.runs_dir())}`")


def sidebar_tail(store: RunStore) -> bool:
    """What every single-run page puts after its own sidebar widgets: the presentation toggle, the
    runs directory, and the partial-run banner. Returns whether presentation mode is on."""
    present = presentation_toggle()
    runs_dir_caption()
    partial_banner(store)
    return present
