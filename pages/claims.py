"""Claims: each claim of the two papers judged on this run by one rule, against its random-init
ensemble and a null (the table is ``resdyn.core.claims.claims_table``; this page only renders it)."""

import streamlit as st

from resdyn import ui
from resdyn.core import claims, samples
from resdyn.core.figures.claims import VERDICT_COLORS, claims_figure
from resdyn.core.store import open_run

# The tables and arrays the claims read: the cache key changes when any of them is rewritten.
TABLES = ("layers", "eigenvalues", "cumulative", "schur_dose", "coupling", "mesoscale", "summary", "snapshots",
          "noise", "trajectories", "block_coupling")


@st.cache_data(max_entries=64, show_spinner=False)
def _claims(root: str, run_id: str, ensemble: tuple[str, ...], stamps: tuple) -> claims.ClaimsResult:
    return claims.judge_runs(root, run_id, ensemble)


def _colour(v: str) -> str:
    c = VERDICT_COLORS.get(v)
    return f"background-color: {c}33" if c else ""


store, m, _ = ui.run_page("Claims of the papers, judged on this run", layer=False)
present = ui.sidebar_tail(store)
root = store.path.parent
ensemble = claims.find_ensemble(store.run_id, root)
stamps = ui.stamps(store, *TABLES) + tuple(s for t in ensemble for s in ui.stamps(open_run(root, t), *TABLES))
res = _claims(str(root), store.run_id, tuple(ensemble), stamps)

st.caption(
    "One row per finding of the residual-stream paper (1–9) and the block-coupling paper (10–11), in our words. "
    "Every claim is judged by one rule: it **holds** when this run lies beyond the 95 % prediction interval of "
    "its random-init ensemble in the claimed direction, by more than its own sampling noise, and differs from "
    "the null. The README's *Verdicts* section gives the rule, the noise estimates and the nulls.")
if m.get("init") == "random":
    st.info(f"`{store.run_id}` is itself random-init: judged against its sibling seeds, this is the "
            "null-against-null check, where no claim should hold.", icon=":material/science:")
if ensemble:
    st.markdown(f"Random-init ensemble ({len(ensemble)} seeds, matched on every analysis key): "
                + ", ".join(f"`{t}`" for t in ensemble))
else:
    st.info(f"No random-init run in the runs directory matches `{store.run_id}` on every analysis key, so no "
            "claim can be judged against training. Compute an ensemble with "
            f"`resdyn run --model {m.get('model')} --init random --seeds 0,1,2 --stages claims "
            f"--samples {m.get('n_samples')}` (and this run's other analysis settings).",
            icon=":material/info:")

table = res.table.copy()
table.insert(0, "n", range(1, len(table) + 1))
text_columns = ["run", "twin", "null", "noise_method", "note"]
table[text_columns] = table[text_columns].astype(object).where(table[text_columns].notna(), "—")
shown = ["n", "claim", "verdict", "run", "twin", "null", "noise_method", "note", "paper", "quantity"]
st.dataframe(
    table[shown].style.map(_colour, subset=["verdict"]), hide_index=True, width="stretch", key="claims-table",
    height=36 * (len(table) + 1) + 4,  # every claim visible without scrolling the table
    column_config={
        "n": st.column_config.NumberColumn("#", width="small"),
        "claim": st.column_config.TextColumn("claim", width="medium"),
        "verdict": st.column_config.TextColumn("verdict", width="medium"),
        "run": st.column_config.TextColumn("this run ± noise"),
        "twin": st.column_config.TextColumn("init ensemble (mean ± sd)",
                                            help=f"random-init runs: {', '.join(ensemble) or 'none'}"),
        "null": st.column_config.TextColumn("null", help="what a structureless reference gives"),
        "noise_method": st.column_config.TextColumn("noise from"),
        "note": st.column_config.TextColumn("why", width="large"),
        "paper": st.column_config.TextColumn("paper", help="the papers' figure (numbers only)"),
        "quantity": st.column_config.TextColumn("measured as", width="medium"),
    },
)
st.caption(f"Degenerate sample (METHODS §1): a snapshot whose {samples.DEGENERATE_RULE}. "
           + (f"In this run: snapshot(s) {', '.join(map(str, res.degenerate))}; layer l reads snapshot 2l."
              if res.degenerate else "This run has none."))
if res.table["value"].notna().any():
    ui.plot(claims_figure(res.table, presentation=present), key="claims-figure")
st.markdown("\n".join(f"- {claims.ICONS[v]} **{v}**: {claims.VERDICTS[v]}"
                      for v in claims.VERDICTS if v in set(table["verdict"])))
