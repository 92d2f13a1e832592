"""The HTML report (python -m resdyn.report) and the kaleido image export."""

from __future__ import annotations

import json
import re
import struct

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from resdyn import report
from resdyn.core import regimes
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError
from tests.conftest import RANDOM_RUN, TRAINED_RUN

FIG_CALL = re.compile(r"resdynPlot\('fig\d+', (.*?), (\"[^\"]*\")\);</script>", re.S)


@pytest.fixture(scope="module")
def two_run_report(synthetic_runs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    report.write_report([TRAINED_RUN, RANDOM_RUN], out, runs_dir=synthetic_runs_dir)
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained_with_plotly_once(two_run_report):
    text = two_run_report
    js = get_plotlyjs()
    assert text.count(js[:2000]) == 1 and js[-2000:] in text  # the whole library, exactly once
    assert not re.search(r"<script[^>]+src=", text)  # nothing fetched from elsewhere
    assert not re.search(r"<link[^>]+href=", text)


def test_report_figures_are_valid_plotly_json(two_run_report):
    calls = FIG_CALL.findall(two_run_report)
    names = [json.loads(n) for _, n in calls]
    # Per run: the claims, regimes, self-alignment, Henrici, κ, eigenvalue density; then the comparisons.
    for run in (TRAINED_RUN, RANDOM_RUN):
        assert [n for n in names if n.startswith(run)] == [
            f"{run}-claims", f"{run}-regimes", f"{run}-self-alignment", f"{run}-henrici", f"{run}-kappa", f"{run}-eigenvalue-density"]
    assert {"compare-self_alignment", "compare-henrici"} <= set(names)
    fig = json.loads(calls[names.index("compare-henrici")][0])
    assert [t["name"] for t in fig["data"] if "baseline" not in t["name"]] == [f"{TRAINED_RUN} (L = 4)",
                                                                               f"{RANDOM_RUN} (L = 4)"]


def test_report_tables_hold_the_regime_means(two_run_report, synthetic_runs_dir):
    lay = RunStore(synthetic_runs_dir / TRAINED_RUN).read_table("layers")
    t = regimes.regime_table(lay, regimes.paper_split(4)).set_index("quantity")
    early = t.loc["Henrici δ of J̄", "early"]
    assert f"<td>{early:.4g}</td>" in two_run_report
    t2 = regimes.self_alignment_table({TRAINED_RUN: lay}, "changepoint")
    assert f"<td>{t2['mid'].iloc[0]:.4g}</td>" in two_run_report
    assert "<h2>All runs</h2>" in two_run_report and "needs the cumulative stage" in two_run_report


def test_script_text_cannot_end_the_script_early():
    title = "</script><b>x</b>"
    fig = go.Figure(layout={"title": {"text": title}})
    html = report.render([report.Section("s", [("figure", ("n", fig))])], "t")
    body = html.split("<h2>s</h2>", 1)[1]
    assert body.count("</script>") == 1  # only the figure's own script tag closes
    (spec, name), = FIG_CALL.findall(body)
    assert json.loads(spec)["layout"]["title"]["text"] == title and json.loads(name) == "n"


def test_cli_writes_the_report_and_rejects_unknown_runs(synthetic_runs_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert report.main([TRAINED_RUN, "--out", str(out), "--runs-dir", str(synthetic_runs_dir)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert report.main(["no-such-run", "--out", str(tmp_path / "x.html"), "--runs-dir", str(synthetic_runs_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("resdyn: error: no run 'no-such-run'") and err.count("\n") == 1 and not (tmp_path / "x.html").exists()


def test_export_rejects_unknown_formats(tmp_path):
    if report.find_browser() is None:
        with pytest.raises(ResdynError, match="chromium"):
            report.export_figure(go.Figure(), tmp_path / "f.png")
    else:
        with pytest.raises(ResdynError, match=r"\.svg"):
            report.export_figure(go.Figure(), tmp_path / "f.gif")


@pytest.mark.skipif(report.find_browser() is None, reason="no Chrome/Chromium for kaleido on this machine")
def test_kaleido_exports_svg_and_png_on_the_system_chromium(tmp_path):
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2]), layout={"width": 300, "height": 200})
    svg, png = report.export_figures([fig, fig], [tmp_path / "a.svg", tmp_path / "a.png"], scale=2)
    assert svg.read_text().startswith("<svg") and 'width="300"' in svg.read_text()
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (600, 400)  # the layout's size times scale 2
    # A dashboard figure has no width (the page stretches it): EXPORT_WIDTH, and its own height.
    out = report.export_figure(go.Figure(layout={"height": 450}), tmp_path / "b.svg")
    assert f'width="{report.EXPORT_WIDTH}" height="450"' in out.read_text()


def test_report_cards_carry_twin_and_null_and_the_claims_table(two_run_report, synthetic_runs_dir):
    from resdyn.core import claims, headlines, nulls

    text = two_run_report
    run = headlines.RunTables.from_store(RunStore(synthetic_runs_dir / TRAINED_RUN), eigenvalues=True)
    twin = headlines.RunTables.from_store(RunStore(synthetic_runs_dir / RANDOM_RUN), eigenvalues=True)
    h = headlines.headlines(run, twin)[0]
    assert f"init twin ({RANDOM_RUN}): {h.twin} · null: {nulls.ginibre_complex_fraction(32):.1%}" in text
    table = claims.claims_table(synthetic_runs_dir, TRAINED_RUN).table
    # The same table as the Claims page, once per run (the random-init run judged against the
    # other random-init runs that match it: here none), one row per claim.
    assert text.count("Claims of the papers, judged on this run") == 2
    for v in table["verdict"]:
        assert f">{v}</td>" in text
    assert text.count("<td class='verdict-") == 2 * len(claims.CLAIMS)
    assert claims.VERDICTS[claims.TAUTOLOGICAL] in text
