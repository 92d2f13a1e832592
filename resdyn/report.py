"""A self-contained HTML report of one or more runs, for sharing after the meeting; image export.

    resdyn report RUN [RUN ...] --out report.html [--runs-dir DIR] [--images DIR]
    python -m resdyn.report ...                  # the same command

The report holds, per run, the manifest facts, the headline numbers, the regime tables (the
paper's fixed split and the change-point split, ``resdyn.core.regimes``) and the key figures;
with several runs also the runs table, the paper's Table 2 across runs and overlays of the main
profiles. plotly.js is embedded once, inline, so the file opens offline in any browser; every
figure there has an SVG (camera) and a PNG button. Figures come from the same pure builders as
the dashboard (``resdyn.core.figures``).

``export_figure``/``export_figures`` write SVG/PNG/PDF files on the server with kaleido ≥ 1,
which drives a Chrome or Chromium (Debian's ``chromium`` package works; kaleido finds it).
``--images DIR`` writes every figure of the report there as SVG and PNG.
"""

from __future__ import annotations

import html
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from resdyn import __version__, stages
from resdyn.config import default_runs_dir
from resdyn.core import claims, headlines, nulls, regimes, sample_stats
from resdyn.core.figures import compare
from resdyn.core.store import RunStore, open_run
from resdyn.errors import ResdynError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
IMAGE_FORMATS = ("svg", "png", "pdf")
EXPORT_WIDTH, EXPORT_HEIGHT = 900, 500  # px, for figures whose layout has no size


# -- server-side image export (kaleido v1 + a system Chromium) -----------------------------------

def find_browser() -> str | None:
    """Path of a Chrome/Chromium kaleido can drive, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _check_export(paths: Sequence[Path]) -> list[str]:
    if find_browser() is None:
        raise ResdynError("image export needs Chrome or Chromium; install Debian's package with "
                          "`apt-get install chromium` (kaleido finds it on its own)")
    formats = []
    for p in paths:
        fmt = p.suffix.lstrip(".").lower()
        if fmt not in IMAGE_FORMATS:
            raise ResdynError(f"cannot export {p.name!r}: the file name must end in "
                              f"{', '.join('.' + f for f in IMAGE_FORMATS)}")
        formats.append(fmt)
    return formats


def export_figures(figs: Sequence[go.Figure], paths: Sequence[str | Path], scale: float = 2.0) -> list[Path]:
    """Write each figure to its path (format from the suffix: .svg, .png or .pdf) in one browser session.

    ``scale`` multiplies the pixel size of PNGs (vector formats ignore it). Raises ResdynError
    when no browser is installed or a suffix is unknown.
    """
    import plotly.io as pio

    paths = [Path(p) for p in paths]
    if len(paths) != len(figs):
        raise ValueError(f"{len(figs)} figures but {len(paths)} paths")
    if not paths:
        return []
    formats = _check_export(paths)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    # write_images (plotly 7.1) does not read the size from the layout as write_image does, so
    # pass it; the dashboard's figures have no width (the page stretches them): EXPORT_WIDTH.
    widths = [int(f.layout.width or EXPORT_WIDTH) for f in figs]
    heights = [int(f.layout.height or EXPORT_HEIGHT) for f in figs]
    scales = [scale if fmt == "png" else 1 for fmt in formats]  # vector formats keep their size
    # One Chromium for all images: write_images is much faster than a write_image per figure.
    pio.write_images(list(figs), paths, format=formats, scale=scales, width=widths, height=heights)
    return paths


def export_figure(fig: go.Figure, path: str | Path, scale: float = 2.0) -> Path:
    """Write one figure as SVG, PNG or PDF (from the suffix) with kaleido; see ``export_figures``."""
    return export_figures([fig], [path], scale)[0]


# -- the report ------------------------------------------------------------------------------------

@dataclass
class Section:
    """A titled part of the report: HTML blocks and figures, in order."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)  # ("html", str) | ("figure", (name, fig))

    def html(self, text: str) -> None:
        self.blocks.append(("html", text))

    def figure(self, name: str, fig: go.Figure) -> None:
        self.blocks.append(("figure", (name, fig)))

    def figures(self) -> list[tuple[str, go.Figure]]:
        return [b for kind, b in self.blocks if kind == "figure"]


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def table_html(df: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as an escaped HTML table, numbers to ``digits`` significant digits."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "—" if not np.isfinite(v) else f"{v:.{digits}g}"
        return v
    return df.map(fmt).to_html(index=False, escape=True, classes="table", border=0, na_rep="—")


def claims_html(table: pd.DataFrame) -> str:
    """The claims table (``resdyn.core.claims.evaluate``) as HTML, verdict cells coloured, then
    one sentence per verdict that occurs."""
    cols = ["claim", "quantity", "paper", "run", "twin", "null", "verdict", "noise_method", "note"]
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    rows = []
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            v = "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v
            cls = ""
            if c == "verdict":
                cls = {claims.HOLDS: "verdict-holds", claims.FAILS: "verdict-fails"}.get(v, "verdict-other")
            cells.append(f"<td class='{cls}' style='text-align:left'>{_esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    legend = "".join(f"<li><b>{_esc(v)}</b>: {_esc(claims.VERDICTS[v])}</li>"
                     for v in claims.VERDICTS if v in set(table["verdict"]))
    return (f"<table class='table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<ul class='note'>{legend}</ul>")


def _optional(section: Section, name: str, build: Callable[[], go.Figure]) -> None:
    """Add a figure made by another module's builder; a failure becomes a visible note, not a crash."""
    try:
        section.figure(name, build())
    except Exception as exc:  # noqa: BLE001 - the report must still be written
        print(f"report: figure {name!r} skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        section.html(f"<p class='note'>Figure <code>{_esc(name)}</code> could not be drawn: "
                     f"{_esc(type(exc).__name__)}: {_esc(exc)}</p>")


def run_section(store: RunStore) -> Section:
    """Facts, headline numbers, regime tables and key figures of one run."""
    from resdyn.core.figures import operator, spectrum

    m = store.manifest()
    n_layers, d = int(m["n_layers"]), int(m["d_model"])
    k = nulls.run_k(m)
    sec = Section(f"Run {store.run_id}")
    facts = pd.DataFrame([{
        "model": m.get("model"), "revision": m.get("revision"), "init": m.get("init"),
        "architecture": m.get("architecture"), "mode": m.get("mode"), "L": n_layers, "d": d,
        "N": m.get("n_samples"), "k": k, "status": m.get("status"),
        "compute s": round(float(sum((m.get("timings") or {}).values())), 1),
    }])
    sec.html(table_html(facts))
    missing = stages.missing(m)
    if m.get("status") != "complete":
        sec.html(f"<p class='note'>Partial run; missing stages: {_esc(', '.join(missing) or 'unknown')}. "
                 "Shown: what it has.</p>")
    run = headlines.RunTables.from_store(store, eigenvalues=True)
    twin_id = headlines.find_twin(store.run_id, store.path.parent)
    twin = headlines.RunTables.from_store(RunStore(store.path.parent / twin_id), eigenvalues=True) if twin_id else None
    lay = run.layers

    def baselines(h: headlines.Headline) -> str:
        bits = ([f"init twin ({twin_id}): {h.twin if h.twin is not None else '—'}"] if twin_id else [])
        bits += [f"null: {h.null}"] if h.null is not None else []
        return (f"<div class='null' title='{_esc(h.null_help)}'>{_esc(' · '.join(bits))}</div>") if bits else ""

    sec.html("<div class='cards'>" + "".join(
        f"<div class='card'><div class='label'>{_esc(h.label)}</div>"
        f"<div class='value'>{_esc(h.value if h.value is not None else '—')}</div>{baselines(h)}"
        f"<div class='help'>{_esc(h.help if h.value is not None else f'needs the {h.stage} stage')}</div></div>"
        for h in headlines.headlines(run, twin)) + "</div>")
    res = claims.claims_table(store.path.parent, store.run_id)
    sec.html("<h3>Claims of the papers, judged on this run</h3>")
    sec.html(f"<p class='note'>Against {len(res.ensemble)} random-init run(s) matched on every analysis key: "
             f"{_esc(', '.join(res.ensemble) or 'none')}. A claim holds when the run lies beyond the "
             "ensemble's 95 % prediction interval in the claimed direction, by more than its sampling noise, and "
             "differs from the null.</p>")
    sec.html(claims_html(res.table))
    from resdyn.core.figures.claims import claims_figure

    _optional(sec, f"{store.run_id}-claims", lambda: claims_figure(res.table))
    if lay is None:
        sec.html("<p class='note'>No layers.parquet (the <code>spectra</code> stage): no profiles.</p>")
        return sec

    slug = store.run_id
    reg = regimes.regime_summary(lay, n_layers, store.read_table("cumulative") if store.has_table("cumulative") else None)
    if reg is not None:
        for split, table in zip(reg.splits, reg.tables):
            title = "the paper's fixed split" if split.method == "paper" else "change points of self-alignment"
            sec.html(f"<h3>Regime means, {title} (breaks at layers {split.breaks[0]}, {split.breaks[1]})</h3>")
            sec.html(table_html(table))
        sec.figure(f"{slug}-regimes", compare.regime_profile(reg.profile, list(reg.splits), label="self-alignment of J̄",
                                                            baseline=k / d))
    sec.figure(f"{slug}-self-alignment", operator.self_alignment_profile(lay, k=k, d=d))
    sec.figure(f"{slug}-henrici", operator.henrici_profile(lay))
    if sample_stats.has_profiles(lay):
        sec.figure(f"{slug}-kappa", operator.kappa_profile(lay))
    else:
        sec.html("<p class='note'>No sample_profiles.parquet (the <code>sample_stats</code> stage): no κ "
                 "profile.</p>")
    if store.has_table("eigenvalues"):
        from resdyn.core import queries

        eig = queries.eigenvalues(store.run_id, None, "J", root=store.path.parent)
        sec.figure(f"{slug}-eigenvalue-density", spectrum.eigenvalue_density(eig, operator="J", n_layers=n_layers))
    if store.has_table("cumulative"):
        def erank():
            from resdyn.core.figures import bottleneck
            return bottleneck.erank_profile({store.run_id: store.read_table("cumulative")}, {store.run_id: lay})
        _optional(sec, f"{slug}-erank", erank)
    if store.has_table("schur_dose"):
        def dose():
            from resdyn.core.figures import surgery
            return surgery.dose_curves({store.run_id: store.read_table("schur_dose")})
        _optional(sec, f"{slug}-dose", dose)
    if store.has_table("coupling"):
        def coupling():
            from resdyn.core.figures import topology
            return topology.cohens_d_figure(store.read_table("coupling"), n_layers)
        _optional(sec, f"{slug}-cohens-d", coupling)
    return sec


def compare_section(stores: Sequence[RunStore]) -> Section:
    """Runs table, Table 2 across runs (both splits) and overlays of the main profiles."""
    from resdyn.core import queries

    sec = Section("All runs")
    ids = [s.run_id for s in stores]
    ov = queries.run_overview(stores[0].path.parent)
    ov = ov[ov["run_id"].isin(ids)]
    sec.html(table_html(ov[["run_id", "status", "model", "init", "d_model", "n_layers", "n_samples", "k", "seconds"]]
                        .rename(columns={"run_id": "run", "d_model": "d", "n_layers": "L", "n_samples": "N",
                                         "seconds": "compute s"})))
    tables = {s.run_id: sample_stats.with_profiles(s, s.read_table("layers")) for s in stores if s.has_table("layers")}
    if not tables:
        return sec
    for method, title in (("paper", "the paper's split"), ("changepoint", "each run's change points")):
        sec.html(f"<h3>Self-alignment of J̄ by regime ({title}; the paper's Table 2)</h3>")
        sec.html(table_html(regimes.self_alignment_table(tables, method)))
    n_layers = {s.run_id: int(s.manifest()["n_layers"]) for s in stores}
    for key in ("layers:self_alignment", "layers:henrici", "layers:residual_norm_ratio", "layers:frac_expanding"):
        col = key.split(":", 1)[1]
        _, log, pct = compare.PROFILES[key]
        profiles = {r: compare.profile_frame(t, col, "J") for r, t in tables.items()}
        base = None
        if col == "self_alignment":
            base = {s.run_id: nulls.run_k(s.manifest()) / int(s.manifest()["d_model"]) for s in stores}
        sec.figure(f"compare-{col}", compare.profile_overlay(profiles, n_layers, label=compare.profile_label(key),
                                                             log_y=log, percent=pct, baselines=base))
    cums = {s.run_id: s.read_table("cumulative") for s in stores if s.has_table("cumulative")}
    if cums:
        profiles = {r: compare.profile_frame(t, "erank") for r, t in cums.items()}
        sec.figure("compare-erank", compare.profile_overlay(profiles, n_layers, label="erank(P_l)", log_y=True))
    return sec


_CSS = """
body {font-family: Inter, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222;
      padding: 0 1rem;}
h1 {margin-bottom: 0.2rem;} h2 {margin-top: 2.5rem; border-bottom: 1px solid #ccc;}
h3 {font-size: 1rem; margin-top: 1.5rem;}
.meta, .note {color: #666;} .note {font-style: italic;}
table.table {border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0;}
table.table th, table.table td {padding: 0.25rem 0.6rem; border-bottom: 1px solid #e3e3e3; text-align: right;}
table.table th:first-child, table.table td:first-child {text-align: left;}
.cards {display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0;}
.card {border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 200px; flex: 1;}
.card .label {font-size: 0.85rem; color: #555;} .card .value {font-size: 1.6rem; font-weight: 600;}
.card .help {font-size: 0.75rem; color: #777;} .card .null {font-size: 0.8rem; color: #444;}
td.verdict-holds {color: #007a4d; font-weight: 600;} td.verdict-fails {color: #b3261e; font-weight: 600;}
td.verdict-other {color: #8a5a00; font-weight: 600;}
.figure {width: 100%; margin: 1rem 0;}
"""

# One helper for every figure: the SVG camera button plus a PNG button (a config with a click
# function is possible here, unlike in Streamlit, because this page writes its own JavaScript).
_PLOT_JS = """
function resdynPlot(id, fig, name) {
  var png = {name: 'Download plot as PNG', icon: Plotly.Icons.camera, click: function (gd) {
    Plotly.downloadImage(gd, {format: 'png', scale: 2, filename: name}); }};
  var config = {displaylogo: false, responsive: true,
                toImageButtonOptions: {format: 'svg', filename: name}, modeBarButtonsToAdd: [png]};
  Plotly.newPlot(id, fig.data, fig.layout, config);
}
"""


def _script_json(fig: go.Figure) -> str:
    # "</" inside a <script> would end it early (a run id or label could hold "</script>").
    return fig.to_json().replace("</", "<\\/")


def render(sections: Sequence[Section], title: str) -> str:
    """The report as one HTML string with plotly.js inline exactly once."""
    from plotly.offline import get_plotlyjs

    parts, n = [], 0
    for sec in sections:
        parts.append(f"<h2>{_esc(sec.title)}</h2>")
        for kind, item in sec.blocks:
            if kind == "html":
                parts.append(item)
            else:
                name, fig = item
                n += 1
                height = fig.layout.height or 450
                parts.append(f"<div id='fig{n}' class='figure' style='height:{int(height)}px'></div>"
                             f"<script>resdynPlot('fig{n}', {_script_json(fig)}, {json.dumps(name)});</script>")
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script><script>{_PLOT_JS}</script></head><body>"
        f"<h1>{_esc(title)}</h1><p class='meta'>resdyn {_esc(__version__)} · {stamp}</p>"
        + "\n".join(parts) + "</body></html>\n"
    )


def build(stores: Sequence[RunStore]) -> list[Section]:
    """The report's sections: one per run, then the comparison when there are several runs."""
    sections = [run_section(s) for s in stores]
    if len(stores) > 1:
        sections.append(compare_section(stores))
    return sections


def write_report(run_ids: Sequence[str], out: str | Path, runs_dir: str | Path | None = None,
                 images: str | Path | None = None, title: str | None = None) -> Path:
    """Write the HTML report of ``run_ids`` to ``out``; with ``images``, also every figure as SVG and PNG."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not run_ids:
        raise ResdynError("name at least one run")
    stores = [open_run(root, r) for r in dict.fromkeys(run_ids)]
    sections = build(stores)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(sections, title or "resdyn report: " + ", ".join(s.run_id for s in stores))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    if images is not None:
        figs = [(name, fig) for sec in sections for name, fig in sec.figures()]
        folder = Path(images)
        export_figures([f for _, f in figs for _ in IMAGE_FORMATS[:2]],
                       [folder / f"{name}.{fmt}" for name, _ in figs for fmt in IMAGE_FORMATS[:2]])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resdyn.report ...`` is ``resdyn report ...`` (the flags live in the one parser,
    ``resdyn.compute.cli``); errors print as ``resdyn: error: ...``."""
    from resdyn.compute.cli import main as cli_main

    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
