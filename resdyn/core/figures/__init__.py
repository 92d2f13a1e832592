"""Figure builders: pure functions from tables/arrays to ``plotly.graph_objects.Figure``.

No Streamlit here; pages render what these return, tests read ``fig.to_dict()``.
``common`` holds the shared look (palette, presentation mode), ``spectrum`` the eigenvalue
plots (METHODS §3) and ``operator`` the operator-type profiles (METHODS §4).
"""
