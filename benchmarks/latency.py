"""Server time of every dashboard page: first render and every widget change, against 300 ms.

    python benchmarks/latency.py                          # d = 4096, L = 32, N = 1,000 (the issue's size)
    python benchmarks/latency.py --d 1024                 # smaller
    python benchmarks/latency.py --pages runs,spectrum    # some pages only

It builds (once; reused from ``--cache``) a synthetic run with the real table sizes
(``resdyn.testing.synthetic``: activations (N, 2L, d), jacobians (L, d, d), samples L·N rows and
their per-layer profiles, eigenvalues 2·L·d rows), plus a random-init twin for the multi-run views, and adds the later
stages named by ``--stages`` (default ``all``) to the main run:

- cumulative, communities, topology_coupling: the real stages (numpy only; ~25 min at d = 4096, estimated:
  the exact cumulative products take ~7 min of it and the second mesoscale null ~2.5 min);
- schur, pseudospectra: the real stages up to d = 1024; above, written block by block from the
  synthetic operator by ``resdyn.testing.synthetic_geometry`` (same files, columns and grid sizes;
  ~5 min and 8.6 GB instead of hours);
- block_coupling (with trajectories): the real stages run on a tiny random Llama with the same L
  and N (their tables do not depend on d), copied into the run.

Each page file runs under ``streamlit.testing.v1.AppTest`` in this process: that is the script's
own time on the server (queries, figure building, serialising), without the network and the
browser. Per page it reports:

- cold: the first render in a fresh process state (empty st.cache_data), Python imports excluded;
- first: the first render of a new session once the caches are warm (a second visitor);
- every widget change (a new option, a moved slider, a flipped toggle), one rerun each.

The Schur-surgery dose and skip sliders are exempt from the 300 ms budget (they recompute the
linearised stack live); they are listed, marked "exempt". Pages whose stage tables are missing say so in the
"note" column: their time is that of the "stage missing" message, not of their figures.
BLAS runs single-threaded (OPENBLAS_NUM_THREADS=1, set before numpy loads): on the shared 2-core
machine that is faster than the default, and it is what one Streamlit session gets.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402,F401  (before AppTest: pages/bottleneck.py must not shadow the "bottleneck" package)
from streamlit.proto.WidgetStates_pb2 import WidgetState  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from resdyn.compute.context import RunContext  # noqa: E402
from resdyn.config import RunConfig  # noqa: E402
from resdyn.core.store import RunStore  # noqa: E402
from resdyn.testing.synthetic import make_synthetic_run  # noqa: E402
from resdyn.testing.synthetic_geometry import add_geometry_stages  # noqa: E402

BUDGET_MS = 300.0
# The live dose sliders (c and the skip weight β) have their own budget (benchmarks/dose_slider.py).
EXEMPT = {("schur_surgery", "Dose c"), ("schur_surgery", "Skip weight β")}
ALL_STAGES = ("cumulative", "schur", "pseudospectra", "communities", "topology_coupling", "block_coupling")
# Above this width "schur" and "pseudospectra" are written block by block from the synthetic
# operator (minutes) instead of by the real stages (hours on a small CPU at d = 4096).
BLOCKWISE, BLOCKWISE_MIN_D = ("schur", "pseudospectra"), 1024
# Page file stem -> the tables it draws (for the "note" column: which stage is missing).
NEEDS = {"bottleneck": {"cumulative": "cumulative"}, "schur_surgery": {"schur_dose": "schur"},
         "communities": {"communities": "communities"},
         "topology_dynamics": {"communities": "communities", "coupling": "topology_coupling"},
         "block_coupling": {"block_coupling": "block_coupling", "trajectories": "trajectories"}}
_COMPONENTS = None


def _components():
    """One component registry for every AppTest: AppTest scans all installed packages' metadata
    for components on each new instance (~0.2–0.5 s), which a server does once at start."""
    global _COMPONENTS
    if _COMPONENTS is None:
        from streamlit.components.v2.component_manager import BidiComponentManager

        _COMPONENTS = BidiComponentManager()
        _COMPONENTS.discover_and_register_components(start_file_watching=False)
    return _COMPONENTS


def prepare(cache: Path, d: int, n_layers: int, n_samples: int, stages: tuple[str, ...]) -> tuple[Path, str, str]:
    """The runs directory with the benchmark run and its random-init twin (built once)."""
    root = cache / f"d{d}-L{n_layers}-N{n_samples}" / "runs"
    main, twin = "bench-trained", "bench-random"
    for run, init, seed in ((main, "pretrained", 0), (twin, "random", 1)):
        store = RunStore(root / run)
        if store.exists() and store.manifest().get("status") == "complete":
            continue
        t0 = time.perf_counter()
        print(f"building {run} (d={d}, L={n_layers}, N={n_samples}) ...", flush=True)
        make_synthetic_run(root, run, n_layers=n_layers, d=d, n_samples=n_samples, seed=seed, init=init)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    from resdyn.compute.stages import stages_named

    by_name = {s.name: s for s in stages_named("cumulative", "schur", "pseudospectra", "communities", "topology_coupling")}
    store = RunStore(root / main)
    ctx = RunContext(RunConfig(runs_dir=root, run_id=main), store, quiet=True)
    from resdyn.core.correlation import HEATMAP_MAX

    for name in (s for s in stages if s in by_name):
        outputs = by_name[name].outputs
        if name == "communities" and d > HEATMAP_MAX:  # the overview images wide runs also get
            outputs = (*outputs, "corr_blocks.npy")
        if all((store.path / o).exists() for o in outputs):
            continue
        t0 = time.perf_counter()
        if name in BLOCKWISE and d > BLOCKWISE_MIN_D:
            print(f"stages {', '.join(BLOCKWISE)}, block by block (resdyn.testing.synthetic_geometry) ...", flush=True)
            add_geometry_stages(store)
        else:
            print(f"stage {name} ...", flush=True)
            by_name[name].fn(ctx)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    if "block_coupling" in stages and not all((store.path / f).exists() for f in COUPLING_FILES):
        t0 = time.perf_counter()
        print("stages block_coupling, trajectories (tiny random Llama, same L and N) ...", flush=True)
        coupling_stages(cache, n_layers, n_samples, store)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return root, main, twin


COUPLING_FILES = ("block_coupling.parquet", "block_coupling_A.npy", "trajectories.parquet",
                  "trajectory_pca.parquet", "trajectory_windows.parquet")


def coupling_stages(cache: Path, n_layers: int, n_samples: int, target: RunStore, window: int = 4) -> None:
    """The "block_coupling" and "trajectories" files of ``target``, from the real stages run on a tiny
    random Llama with the benchmark's L (d = 64) over ``n_samples`` synthetic passages of ~100 words.

    Their table sizes depend on L, N, the passage lengths and the coupling settings, not on d: the
    trajectories table has a row per token per state (~N·100·(L+1) rows). ``window`` ≥ 2 adds the
    token-wise coupling rows, so that every widget of the page is timed.
    """
    import numpy as np
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    from resdyn.compute.cli import main as compute

    work = cache / f"coupling-L{n_layers}-N{n_samples}-w{window}"
    model_dir, corpus, runs = work / "tiny-llama", work / "corpus.txt", work / "runs"
    if not all((runs / "tiny" / f).is_file() for f in COUPLING_FILES):
        rng = np.random.default_rng(0)
        words = [f"w{i}" for i in range(400)]
        corpus.parent.mkdir(parents=True, exist_ok=True)
        corpus.write_text("\n".join(" ".join(rng.choice(words, int(rng.integers(60, 140))))
                                     for _ in range(n_samples)) + "\n")
        vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=len(vocab),
                             max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=None)
        tf.LlamaForCausalLM(cfg).save_pretrained(model_dir)
        fast.save_pretrained(model_dir)
        rc = compute(["run", "--model", str(model_dir), "--corpus", str(corpus), "--samples", str(n_samples),
                      "--runs-dir", str(runs), "--run-id", "tiny", "--quiet", "--coupling-window", str(window),
                      "--stages", "activations,block_coupling,trajectories"])
        if rc != 0:
            raise SystemExit(f"the tiny model's coupling stages failed (exit {rc})")
    src = RunStore(runs / "tiny")
    for name in COUPLING_FILES:
        shutil.copyfile(src.path / name, target.path / name)
    # The page's headline numbers: the summary rows those stages wrote.
    rows = src.read_table("summary")
    rows = rows[rows["name"].str.startswith(("block_coupling.", "trajectories."))]
    
    target.update_summary(dict(zip(rows["name"], rows["value"])))
    m = target.manifest()
    m.update(coupling_samples=src.manifest().get("coupling_samples"), coupling_window=window,
             coupling_tokens=src.manifest().get("coupling_tokens"))
    target.write_manifest(m)


def _force(widget, **state) -> None:
    """Make ``widget`` report a raw WidgetState (for options known only by their display text)."""
    base = type(widget)

    def ws(self):
        w = WidgetState()
        w.id = self.id
        for field, value in state.items():
            if field == "string_array_value":
                w.string_array_value.data[:] = value
            else:
                setattr(w, field, value)
        return w

    widget.__class__ = type(f"Forced{base.__name__}", (base,), {"_widget_state": property(ws)})


def changes(at: AppTest):
    """(description, apply) for one new value of every widget on the page, sidebar and main."""
    out = []
    for w in at.selectbox:
        if len(w.options) > 1:
            i = (w.index + 1) % len(w.options) if w.index is not None else 0
            # Not select_index: AppTest passes the display text through format_func again.
            out.append((f"selectbox {w.label!r} → {w.options[i]!r}",
                        lambda w=w, t=w.options[i]: _force(w, string_value=t)))
    for w in at.radio:
        if len(w.options) > 1:
            target = w.options[(w.index + 1) % len(w.options)]
            out.append((f"radio {w.label!r} → {target!r}", lambda w=w, t=target: _force(w, string_value=t)))
    for w in at.slider:
        lo, hi, v = w.min, w.max, w.value
        if isinstance(v, (list, tuple)) or hi == lo:
            continue
        step = w.step or 1
        mid = lo + round((hi - lo) / 2 / step) * step
        new = mid if mid != v else min(hi, v + step) if v + step <= hi else v - step
        if isinstance(lo, int) and isinstance(hi, int):
            new = int(new)
        out.append((f"slider {w.label!r} {v} → {new}", lambda w=w, n=new: w.set_value(n)))
    for w in at.select_slider:
        opts = list(w.options)
        if len(opts) > 1:
            cur = w.proto.value[0] if len(w.proto.value) else 0
            target = opts[(cur + len(opts) // 2) % len(opts)]
            out.append((f"select_slider {w.label!r} → {target!r}",
                        lambda w=w, t=target: _force(w, string_array_value=[t])))
    for w in at.multiselect:
        shown = [o for o in w.options if o not in w.values] if hasattr(w, "values") else []
        if shown:
            new = list(w.values) + [shown[0]]
            out.append((f"multiselect {w.label!r} + {shown[0]!r}",
                        lambda w=w, n=new: _force(w, string_array_value=n)))
    for w in [*at.toggle, *at.checkbox]:
        out.append((f"{w.type} {w.label!r} → {not w.value}", lambda w=w: w.set_value(not w.value)))
    return out


def _clear_caches() -> None:
    import streamlit as st

    from resdyn.core.figures import common

    st.cache_data.clear()
    st.cache_resource.clear()
    common._GRIDS.clear()  # the subplot-grid prototypes: a cold page builds its own
    gc.collect()


def time_page(page: Path, params: dict[str, str], timeout: float) -> list[dict]:
    """Rows (page, action, ms, note) for the first renders and every widget change of one page."""
    name = page.stem
    rows = []

    def fresh() -> AppTest:
        at = AppTest.from_file(str(page), default_timeout=timeout)
        at._bidi_component_manager = _components()
        for k, v in params.items():
            at.query_params[k] = v
        return at

    _clear_caches()
    at = fresh()
    t0 = time.perf_counter()
    at.run()
    rows.append({"page": name, "action": "first render, cold caches", "ms": 1e3 * (time.perf_counter() - t0)})
    if at.exception:
        rows[-1]["note"] = "EXCEPTION: " + at.exception[0].value.splitlines()[0][:80]
        return rows
    at = fresh()
    t0 = time.perf_counter()
    at.run()
    rows.append({"page": name, "action": "first render, new session", "ms": 1e3 * (time.perf_counter() - t0)})
    for desc, apply in changes(at):
        # Each change starts from the same page state: a new session, rendered once (not timed).
        at = fresh()
        at.run()
        match = next((a for d, a in changes(at) if d == desc), None)
        if match is None:
            continue
        match()
        t0 = time.perf_counter()
        try:
            at.run()
        except Exception as exc:  # noqa: BLE001 - AppTest could not replay this change; say so
            rows.append({"page": name, "action": desc, "ms": float("nan"),
                         "note": f"not replayed: {type(exc).__name__}: {exc}"[:90]})
            continue
        ms = 1e3 * (time.perf_counter() - t0)
        label = desc.split("'")[1] if "'" in desc else desc
        row = {"page": name, "action": desc, "ms": ms}
        if (name, label) in EXEMPT:
            row["note"] = "exempt (live dose)"
        if at.exception:
            row["note"] = "EXCEPTION: " + at.exception[0].value.splitlines()[0][:80]
        rows.append(row)
    return rows


def page_files(selected: list[str] | None) -> list[Path]:
    """The pages of app.py's navigation that exist, in its order."""
    sys.modules.pop("app", None)
    import ast

    tree = ast.parse((ROOT / "app.py").read_text())
    files = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("pages/") and n.value.endswith(".py")]
    paths = [ROOT / f for f in dict.fromkeys(files) if (ROOT / f).is_file()]
    if selected:
        paths = [p for p in paths if p.stem in selected]
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--stages", default="all",
                    help=f"stages to add to the run: comma-separated, 'none' or 'all' ({', '.join(ALL_STAGES)})")
    ap.add_argument("--pages", default=None, help="comma-separated page file stems (default: every page of app.py)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "resdyn-latency"),
                    help="where the synthetic runs are kept between invocations")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one script run may take")
    args = ap.parse_args()
    stages = () if args.stages == "none" else ALL_STAGES if args.stages == "all" else tuple(
        s for s in args.stages.split(",") if s)
    root, main_run, twin = prepare(Path(args.cache), args.d, args.layers, args.samples, stages)
    os.environ["RESDYN_RUNS_DIR"] = str(root)
    store = RunStore(root / main_run)
    present = {f.stem for f in store.path.iterdir()}

    # Python imports are a once-per-server cost, not a page's: load them before timing. So is
    # Streamlit's "not run with `streamlit run`" check (inspect.stack() on the first element drawn
    # in the process, ~0.2 s), which would otherwise land on the first page timed.
    import PIL.PngImagePlugin  # noqa: F401  (the Communities page's image panels)
    import streamlit.delta_generator as dg

    import resdyn.ui  # noqa: F401
    from resdyn.core import correlation, dose, regimes, spectral, trajectory  # noqa: F401
    from resdyn.core.figures import bottleneck, compare, coupling, operator, spectrum, surgery, topology  # noqa: F401

    dg._maybe_print_use_warning()

    params = {"run": main_run, "runs": f"{main_run},{twin}", "overlay": main_run}
    rows = []
    for page in page_files(args.pages.split(",") if args.pages else None):
        print(f"timing {page.name} ...", flush=True)
        page_rows = time_page(page, params, args.timeout)
        missing = sorted({stage for table, stage in NEEDS.get(page.stem, {}).items() if table not in present})
        if missing:
            for r in page_rows:
                r.setdefault("note", f"stage missing: {', '.join(missing)}")
        rows.extend(page_rows)

    df = pd.DataFrame(rows)
    df["note"] = df["note"].fillna("") if "note" in df else ""
    df["over"] = (df["ms"] > BUDGET_MS) & ~df["note"].str.startswith("exempt")
    pd.set_option("display.width", 200, "display.max_colwidth", 70, "display.max_rows", 500)
    print(f"\nServer time per script run (AppTest), d={args.d}, L={args.layers}, N={args.samples}, "
          f"stages added: {', '.join(stages) or 'none'}; budget {BUDGET_MS:.0f} ms\n")
    print(df.assign(ms=df["ms"].round(0).astype("Int64"), over=df["over"].map({True: "OVER", False: ""}))
          .to_string(index=False))
    judged = df[~df["note"].str.startswith("exempt") & df["ms"].notna()]
    worst = judged.groupby("page")["ms"].max().sort_values(ascending=False)
    print("\nWorst action per page (ms):")
    for page, ms in worst.items():
        print(f"  {page:20s} {ms:8.0f}{'  OVER' if ms > BUDGET_MS else ''}")
    top = judged.loc[judged["ms"].idxmax()]
    print(f"\nWorst page: {top['page']} ({top['action']}: {top['ms']:.0f} ms; budget {BUDGET_MS:.0f} ms)")
    med = statistics.median(judged["ms"])
    print(f"Median over all timed actions: {med:.0f} ms; {int(judged['over'].sum())} of {len(judged)} over budget.")


if __name__ == "__main__":
    main()
