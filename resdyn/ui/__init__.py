"""Streamlit helpers shared by app.py and every page, one module per job.

- ``widgets``: URL-synced sidebar widgets (run, layer, choices, presentation mode);
- ``banners``: damaged-run guard, partial-run banner, missing-table notes;
- ``live``: the progress of a run being computed, refreshing itself, and how a missing stage comes
  (the command, or "on its way" while a live computation holds the run's lock);
- ``loaders``: cached table loads keyed by file modification time;
- ``plotting``: ``plot``, figure caches and the browser-side PNG button;
- ``page``: the opening and sidebar tail every single-run page shares, and script timing.

Pages stay thin: read widgets here, call ``resdyn.core`` queries and figure builders, render.
They write ``from resdyn import ui`` and ``ui.NAME``; every name below is part of that surface.
"""

from resdyn.ui.banners import damaged_ids, damaged_message, guard, partial_banner, problems, require
from resdyn.ui.live import compute_hint, live_panel
from resdyn.ui.loaders import (load_eigenvalues, load_layers, load_query, load_samples, load_snapshots, load_table,
                               stamps)
from resdyn.ui.page import run_page, sidebar_tail, timed_run
from resdyn.ui.plotting import (EXPORT_SCRIPT, PLOTLY_CONFIG, PNG_SCALE, cached_figure, figure_spec,
                                install_export_buttons, plot, with_highlight)
from resdyn.ui.widgets import (current_run, leave_legacy_pages_mode, presentation_toggle, runs_dir_caption,
                               select_choice, select_layer, select_layers, select_number, select_operator,
                               select_run, select_runs)

__all__ = [
    "EXPORT_SCRIPT", "PLOTLY_CONFIG", "PNG_SCALE", "cached_figure", "compute_hint", "current_run", "damaged_ids",
    "damaged_message", "figure_spec", "guard", "install_export_buttons", "leave_legacy_pages_mode", "live_panel",
    "load_eigenvalues", "load_layers", "load_query", "load_samples", "load_snapshots", "load_table", "partial_banner",
    "plot", "presentation_toggle", "problems", "require", "run_page", "runs_dir_caption", "select_choice",
    "select_layer", "select_layers", "select_number", "select_operator", "select_run", "select_runs",
    "sidebar_tail", "stamps", "timed_run", "with_highlight",
]
