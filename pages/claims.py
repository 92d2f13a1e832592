"""Claims: each qualitative claim of the two papers, checked on this run against its random-init
twin and a null baseline (the table is ``resdyn.core.claims.evaluate``; this page only renders it)."""

import pandas as pd
import streamlit as st

from resdyn import ui
from resdyn.core import claims, headlines, samples
from resdyn.core.store import open_run

# The tables the claims read: the cache key changes when any of them is rewritten.
TABLES = ("layers", "eigenvalues", "cumulative", "schur_dose", "coupling", "mesoscale", "summary", "snapshots")


@st.cache_data(max_entries=64, show_spinner=False)
def _claims(root: str, run_id: str, twin_id: str | None, stamps: tuple) -> tuple[pd.DataFrame, list[int]]:
    """The claims table and the run's degenerate snapshots."""
    run = headlines.RunTables.from_store(open_run(root, run_id), eigenvalues=True)
    twin = headlines.RunTables.from_store(open_run(root, twin_id), eigenvalues=True) if twin_id else None
    return claims.evaluate(run, twin), run.degenerate_snapshots()


store, m, _ = ui.run_page("Claims of the papers, checked on this run", layer=False)
ui.sidebar_tail(store)
root = store.path.parent
twin_id = headlines.find_twin(store.run_id, root)
stamps = ui.stamps(store, *TABLES) + (ui.stamps(open_run(root, twin_id), *TABLES) if twin_id else ())

st.caption(
    "One row per finding of the residual-stream paper (claims 1–9) and the block-coupling paper "
    "(10–11), in our words. Each is measured on this run, on its random-init twin (same model and "
    "shape, random weights) and against what a structureless reference gives; the verdict says "
    "whether the run supports the finding beyond both."
)
if twin_id:
    st.markdown(f"Random-init twin: `{twin_id}`.")
elif m.get("init") == "random":
    st.info(f"`{store.run_id}` is itself a random-init run, the null of the trained-versus-init claims; "
            "open its trained twin to check them.")
else:
    st.info(f"No random-init twin of `{m.get('model')}` (d = {m.get('d_model')}, L = {m.get('n_layers')}) "
            "in the runs directory, so the trained-versus-init claims are not computed. Compute one with "
            f"`python -m resdyn.compute run --model {m.get('model')} --init random`.")

table, degenerate = _claims(str(root), store.run_id, twin_id, stamps)
table = table.copy()
st.caption(f"Degenerate sample (METHODS §1): a snapshot whose {samples.DEGENERATE_RULE}. "
           + (f"In this run: snapshot(s) {', '.join(map(str, degenerate))}; layer l reads snapshot 2l."
              if degenerate else "This run has none."))
table.insert(0, "n", range(1, len(table) + 1))
table["verdict"] = [f"{claims.ICONS[v]} {v}" for v in table["verdict"]]
st.dataframe(
    table, hide_index=True, width="stretch", key="claims-table",
    height=36 * (len(table) + 1) + 4,  # every claim visible without scrolling the table
    # The verdict next to the claim, so that it is on screen without scrolling sideways.
    column_order=["n", "claim", "verdict", "run", "twin", "null", "paper", "quantity", "note"],
    column_config={
        "n": st.column_config.NumberColumn("#", width="small"),
        "claim": st.column_config.TextColumn("claim", width="medium"),
        "quantity": st.column_config.TextColumn("measured as", width="medium"),
        "paper": st.column_config.TextColumn("paper", help="the papers' figure (numbers only)"),
        "run": st.column_config.TextColumn("this run"),
        "twin": st.column_config.TextColumn("init twin", help=f"random-init twin: {twin_id or 'none'}"),
        "null": st.column_config.TextColumn("null baseline", help="what a structureless reference gives"),
        "verdict": st.column_config.TextColumn("verdict", width="medium"),
        "note": st.column_config.TextColumn("why", width="large"),
    },
)
st.markdown("\n".join(f"- {claims.ICONS[v]} **{v}**: {claims.VERDICTS[v]}"
                      for v in claims.VERDICTS if any(t.endswith(v) for t in table["verdict"])))
