"""resdyn dashboard: ``streamlit run app.py``. Declares the navigation only; pages live in pages/.

Each page draws its own sidebar (run, layer, ...) through ``resdyn.ui`` so that it also renders on
its own under ``AppTest.from_file("pages/<page>.py")``; the choices are shared between pages
through the URL query parameters and the session state.
"""

import streamlit as st

st.set_page_config(page_title="resdyn", page_icon=":material/blur_on:", layout="wide")

# ---- PAGES ------------------------------------------------------------------------------------
# The navigation, grouped by section. Add a page by adding a st.Page here (paths are relative to
# this file); a new section is a new key. Planned: Bottleneck, Schur surgery, Communities,
# Topology ↔ dynamics, Block coupling, Compare.
PAGES = {
    "Overview": [
        st.Page("pages/runs.py", title="Runs", icon=":material/table_view:", default=True),
    ],
    "Dynamics": [
        st.Page("pages/spectrum.py", title="Spectrum", icon=":material/scatter_plot:"),
        st.Page("pages/operator_type.py", title="Operator type", icon=":material/ssid_chart:"),
    ],
    "Topology": [
        st.Page("pages/communities.py", title="Communities", icon=":material/hub:"),
        st.Page("pages/topology_dynamics.py", title="Topology ↔ dynamics", icon=":material/join_inner:"),
    ],
}
# ---- end of PAGES -----------------------------------------------------------------------------

st.navigation(PAGES).run()
