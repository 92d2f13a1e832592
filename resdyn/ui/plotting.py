"""Rendering figures: the house Plotly config, the browser-side PNG button, and figure caches.

Figures come from the pure builders in ``resdyn.core.figures``; this module only serialises,
caches and hands them to ``st.plotly_chart``.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from resdyn.core.figures.common import highlight_band


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
