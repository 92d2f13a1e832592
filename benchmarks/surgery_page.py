"""Server time of the Schur surgery page on one run (AppTest): first render, slider moves, surrogate switches.

    python benchmarks/surgery_page.py --runs-dir DIR --run-id smollm2-135m [--root REPO] [--repeat 3]

``--root`` is the checkout whose ``pages/schur_surgery.py`` and ``resdyn`` are timed (default: this
one), so the same script times an older commit against the same run. Each row is one script run
under ``streamlit.testing.v1.AppTest`` in this process, BLAS single-threaded as one Streamlit
session gets it:

- first render, cold: empty caches (Streamlit's and the live dose's), Python imports excluded;
- slider move: c from 1 to 0.37 (off the stored grid: a live recomputation), then to 0.63;
- surrogate switch (runs that store the surrogates): to each other surrogate at c = 0.63;
- grid move: c to 0.5, a stored dose (read from the table).

Moves are timed on one session, in this order, so a move may wait for the live factors that the
first render started building in the background; ``--settle S`` sleeps S seconds after the first
render (a reader's pause) to time the moves without that wait.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--repeat", type=int, default=1, help="independent sessions, each from cold caches")
    ap.add_argument("--settle", type=float, default=0.0)
    ap.add_argument("--layer", default="15")
    ap.add_argument("--surrogate", default=None, help="the ?surrogate= of the link (default: the page's)")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.environ["RESDYN_RUNS_DIR"] = str(Path(args.runs_dir).resolve())

    import pandas as pd  # noqa: F401  (before AppTest: pages/bottleneck.py must not shadow a package)
    import streamlit as st
    import streamlit.delta_generator as dg
    from streamlit.testing.v1 import AppTest

    import resdyn
    import resdyn.ui  # noqa: F401
    from resdyn.core import dose
    from resdyn.core.figures import surgery  # noqa: F401

    print(f"timing {root / 'pages/schur_surgery.py'} (resdyn from {Path(resdyn.__file__).parent})")
    dg._maybe_print_use_warning()
    page = str(root / "pages" / "schur_surgery.py")

    def clear():
        for fut in list(getattr(dose, "_LIVE", {}).values()):  # a previous session's background builds
            fut.exception()
        st.cache_data.clear()
        st.cache_resource.clear()
        for name in ("_LIVE",):
            if hasattr(dose, name):
                getattr(dose, name).clear()
        for name in ("_cached_live", "_layer_factor"):
            if hasattr(dose, name):
                getattr(dose, name).cache_clear()

    def timed(label, at, rows, fn=None):
        if fn is not None:
            fn(at)
        t0 = time.perf_counter()
        at.run(timeout=600)
        ms = 1e3 * (time.perf_counter() - t0)
        err = at.exception[0].value.splitlines()[0][:80] if at.exception else ""
        how = " ".join(c.value for c in at.caption if c.value.startswith("Run `"))
        path = ("grid" if "stored dose grid (exact" in how else "live" if "recomputed live" in how
                else "interpolated" if "interpolated" in how else "?")
        rows.append((label, ms, f"{path} {err}".strip()))

    for rep in range(args.repeat):
        clear()
        rows = []
        at = AppTest.from_file(page, default_timeout=600)
        at.query_params["run"] = args.run_id
        at.query_params["layer"] = args.layer
        if args.surrogate:
            at.query_params["surrogate"] = args.surrogate
        timed("first render, cold (c = 1)", at, rows)
        if args.settle:
            time.sleep(args.settle)
            for fut in list(getattr(dose, "_LIVE", {}).values()):
                fut.exception()  # settled: the build the render started has finished
        timed("slider move c 1 → 0.37", at, rows, lambda a: a.slider(key="_sel_c").set_value(0.37))
        timed("slider move c 0.37 → 0.63", at, rows, lambda a: a.slider(key="_sel_c").set_value(0.63))
        boxes = [b for b in at.selectbox if b.key == "_sel_surrogate"]
        if boxes:
            start = boxes[0].value
            for sur in [s for s in ("descending", "ascending", "polar") if s != start] + [start]:
                timed(f"surrogate → {sur} (c = 0.63)", at, rows,
                      lambda a, s=sur: a.selectbox(key="_sel_surrogate").set_value(s))
        timed("slider move c → 0.5 (stored)", at, rows, lambda a: a.slider(key="_sel_c").set_value(0.5))
        print(f"\nsession {rep + 1}:")
        for label, ms, err in rows:
            print(f"  {label:40s} {ms:8.0f} ms {err}")


if __name__ == "__main__":
    main()
