"""resdyn dashboard: ``streamlit run app.py``. Declares the navigation only; pages live in pages/.

Each page draws its own sidebar (run, layer, ...) through ``resdyn.ui`` so that it also renders on
its own under ``AppTest.from_file("pages/<page>.py")``; the choices are shared between pages
through the URL query parameters and the session state, so a pasted link reopens the same view.
"""

import streamlit as st

from resdyn import ui

# No page_icon: a Material icon favicon would be fetched from fonts.gstatic.com (offline here).
st.set_page_config(page_title="resdyn", layout="wide")

# ---- PAGES ------------------------------------------------------------------------------------
# The navigation, grouped by section: (file, title, icon). Add a page by adding a line; the
# tests render every page declared here (tests/app/pagelist.py reads this literal).
SECTIONS = {
    "Runs": [
        ("pages/runs.py", "Runs", ":material/table_view:"),
        ("pages/claims.py", "Claims", ":material/fact_check:"),
    ],
    "Dynamics": [
        ("pages/spectrum.py", "Spectrum", ":material/scatter_plot:"),
        ("pages/operator_type.py", "Operator type", ":material/ssid_chart:"),
        ("pages/bottleneck.py", "Bottleneck", ":material/filter_alt:"),
        ("pages/schur_surgery.py", "Schur surgery", ":material/tune:"),
    ],
    "Topology": [
        ("pages/communities.py", "Communities", ":material/hub:"),
        ("pages/topology_dynamics.py", "Topology ↔ dynamics", ":material/join_inner:"),
    ],
    "Coupling": [
        ("pages/block_coupling.py", "Block coupling", ":material/grid_on:"),
    ],
    "Compare": [
        ("pages/compare.py", "Compare", ":material/compare_arrows:"),
    ],
}
# ---- end of PAGES -----------------------------------------------------------------------------

PAGES = {
    section: [st.Page(path, title=title, icon=icon, default=(path == "pages/runs.py"))
              for path, title, icon in pages]
    for section, pages in SECTIONS.items()
}

ui.install_export_buttons()
with ui.timed_run():  # appends each script run's seconds to $RESDYN_TIMING_LOG when it is set
    st.navigation(PAGES).run()
