"""DuckDB access to the run store.

One process-wide in-memory DuckDB connection; each query takes its own ``cursor()`` because
Streamlit serves sessions from threads and a DuckDB connection is not thread-safe. Tables are
read straight from the runs' Parquet files (``read_parquet``), so nothing is copied.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from resdyn.config import default_runs_dir
from resdyn.core import nulls, sample_stats
from resdyn.core.store import RunStore, list_runs, open_run
from resdyn.errors import ResdynError, UsageError

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def connection() -> duckdb.DuckDBPyConnection:
    """The shared connection; take ``connection().cursor()`` per query."""
    return duckdb.connect(database=":memory:")


def runs_dir() -> Path:
    return default_runs_dir()


RUN_COLUMNS = ("run_id", "status", "model", "revision", "init", "seed", "architecture", "mode", "n_layers",
               "d_model", "n_samples", "stages_done", "missing_stages", "seconds", "created")
"""The columns of ``runs``, one row per run (also ``resdyn.runs()`` and ``resdyn list --json``)."""


def require_runs_dir(root: str | os.PathLike) -> Path:
    """``root`` as a Path if it is a directory, else a one-line ResdynError naming it."""
    path = Path(root)
    if not path.is_dir():
        raise ResdynError(f"runs directory {path} does not exist; pass --runs-dir (runs_dir=) or set "
                          "RESDYN_RUNS_DIR")
    return path


def run_rows(root: str | os.PathLike, check: bool = False) -> list[dict]:
    """One dict per run under ``root`` (keys ``RUN_COLUMNS``; the stage lists are lists).

    A run whose manifest cannot be read has status "corrupt" and no other facts; with ``check``,
    so does a run with a damaged or missing file (``verify.check_run``, a few ms per run).
    """
    from resdyn import stages as registry
    from resdyn.core.verify import check_run

    rows = []
    for store in list_runs(root):
        try:
            m = store.manifest()
        except ResdynError:  # listed, so that a damaged run is named rather than vanishing
            rows.append({**dict.fromkeys(RUN_COLUMNS), "run_id": store.run_id, "status": "corrupt"})
            continue
        rows.append({
            "run_id": store.run_id,
            "status": "corrupt" if check and check_run(store) else m.get("status"),
            "model": m.get("model"),
            "revision": m.get("revision"),
            "init": m.get("init"),
            "seed": m.get("seed"),
            "architecture": m.get("architecture"),
            "mode": m.get("mode"),
            "n_layers": m.get("n_layers"),
            "d_model": m.get("d_model"),
            "n_samples": m.get("n_samples"),
            "stages_done": list(m.get("stages_done", [])),
            "missing_stages": registry.missing(m),
            "seconds": round(float(sum((m.get("timings") or {}).values())), 1),
            "created": m.get("created"),
        })
    return rows


def runs(root: str | os.PathLike | None = None, check: bool = False) -> pd.DataFrame:
    """One row per run (columns ``RUN_COLUMNS``; stages_done and missing_stages as "a,b" strings).

    ``root`` None reads the default runs directory (``$RESDYN_RUNS_DIR`` or ``data/runs``), which
    may not exist yet (nothing computed: no rows); a directory named explicitly must exist, so that
    a typo is an error rather than an empty list. ``check``: see ``run_rows``.
    """
    if root is not None:
        require_runs_dir(root)
    rows = run_rows(root or runs_dir(), check=check)
    for row in rows:
        for key in ("stages_done", "missing_stages"):
            row[key] = ",".join(row[key] or [])
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def extra_seeds(overview: pd.DataFrame) -> set[str]:
    """The run ids of ``overview`` (``runs()``'s rows) that are the extra members of a random-init
    ensemble: random-init runs with a random-init run of the same model and N at a lower seed
    (``smollm2-135m-random-seed1`` beside ``smollm2-135m-random``). Pages that draw one twin per
    model leave them out of their defaults; the Claims page reads them all."""
    if overview.empty or "seed" not in overview:
        return set()
    rnd = overview[overview["init"] == "random"].assign(seed=lambda t: t["seed"].fillna(0))
    lowest = rnd.groupby(["model", "n_samples"], dropna=False)["seed"].transform("min")
    return set(rnd.loc[rnd["seed"] > lowest, "run_id"])


# -- SQL over whole tables: resdyn.sql, Run.sql and `resdyn sql` ----------------------------------

def run_tables(store: RunStore) -> dict[str, Path]:
    """The run's tables: name -> ``NAME.parquet`` path, sorted by name (temporary files excluded)."""
    return {p.stem: p for p in sorted(store.path.glob("*.parquet")) if not p.name.startswith(".")}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def sql_over_runs(sql: str, stores: list[RunStore], run_id_column: bool = True,
                  extra: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Run ``sql`` on a fresh DuckDB connection where every table name is a view.

    With ``run_id_column`` each view is the union (by column name, so runs from older resdyn
    versions that lack a column contribute NULLs) of that table over ``stores``, with a first
    column ``run_id``; without it, the table of the single store as written. ``extra`` adds
    DataFrames as further views (e.g. ``runs``). A damaged file (``verify``) is left out: across
    runs with a warning naming it and its repair, for a single run as a one-line ResdynError
    when the query reads it. A failing query raises ResdynError with DuckDB's first line.
    """
    import warnings

    from resdyn import stages as registry
    from resdyn.core.verify import Problem, file_problem

    parts: dict[str, list[str]] = {}
    damaged: dict[str, list[Problem]] = {}
    for store in stores:
        try:
            manifest = store.manifest()
        except ResdynError:
            manifest = {}
        for name, path in run_tables(store).items():
            why = file_problem(path, manifest)
            if why is not None:
                done = set(manifest.get("stages_done") or ())
                redo = tuple(s for s in registry.writers(path.name) if s in done) or tuple(registry.writers(path.name))
                damaged.setdefault(name, []).append(Problem(store.run_id, path.name, why, redo, store.path.parent))
                continue
            src = f"read_parquet({_literal(path)})"
            parts.setdefault(name, []).append(
                f"SELECT {_literal(store.run_id)} AS run_id, COLUMNS(lambda c: c <> 'run_id') FROM {src}"
                if run_id_column else f"SELECT * FROM {src}")
    con = duckdb.connect(database=":memory:")
    try:
        for name, selects in parts.items():
            con.execute(f"CREATE VIEW {_ident(name)} AS " + " UNION ALL BY NAME ".join(selects))
        for name, df in (extra or {}).items():
            con.register(name, df)
        try:
            referenced = set(duckdb.get_table_names(sql))
        except duckdb.Error:  # the parser could not tell; the query itself reports its error below
            referenced = set(damaged)
        hit = [p for name in sorted(set(damaged) & referenced) for p in damaged[name]]
        if hit and not run_id_column:
            raise ResdynError(f"{hit[0].path} is damaged ({hit[0].reason}); repair: {hit[0].repair()}")
        for p in hit:
            warnings.warn(f"left out {p.path} ({p.reason}); repair: {p.repair()}", stacklevel=3)
        try:
            return con.execute(sql).df()
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            names = ", ".join(sorted(set(parts) | set(extra or {})))
            # A query that does not parse or names what is not there is the caller's to fix (exit
            # 2 on the command line); anything else (a file that fails to read) is a runtime error.
            wrong = isinstance(exc, (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException))
            raise (UsageError if wrong else ResdynError)(f"SQL failed: {first} (tables: {names or 'none'})") from exc
    finally:
        con.close()


def table_sql(store: RunStore, name: str) -> str:
    """A ``read_parquet(...)`` expression for one table of a run (path is escaped)."""
    path = store.table_path(name)
    if not path.is_file():
        raise ResdynError(f"run {store.run_id} has no table {name!r}; compute its stage first")
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def query(sql: str, params: list | None = None) -> pd.DataFrame:
    """Run SQL on a fresh cursor of the shared connection and return a DataFrame."""
    cur = connection().cursor()
    try:
        return cur.execute(sql, params or []).df()
    finally:
        cur.close()


def table(run_id: str, name: str, where: str = "", params: list | None = None,
          root: str | os.PathLike | None = None) -> pd.DataFrame:
    """``SELECT * FROM <run's NAME.parquet> [WHERE ...]``, with ``?`` parameters."""
    store = open_run(root or runs_dir(), run_id)
    sql = f"SELECT * FROM {table_sql(store, name)}"
    if where:
        sql += f" WHERE {where}"
    return query(sql, params)


# -- typed helpers for the dashboard ---------------------------------------------------------
# One function per question a page asks; parameters are bound with ``?`` and column lists are
# fixed, so nothing from a URL ever reaches SQL text.

def manifest(run_id: str, root: str | os.PathLike | None = None) -> dict:
    """The run's manifest.json as a dict (one-line ResdynError if the run does not exist)."""
    return open_run(root or runs_dir(), run_id).manifest()


def _select(run_id: str, name: str, columns: str, where: str, params: list, order: str,
            root: str | os.PathLike | None) -> pd.DataFrame:
    store = open_run(root or runs_dir(), run_id)
    return query(f"SELECT {columns} FROM {table_sql(store, name)} WHERE {where} ORDER BY {order}", params)


def layers(run_id: str, operator: str | None = None, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """``layers.parquet``: one row per (layer, operator), sorted by operator then layer, with the
    per-sample profiles (kappa_median, kappa_q25, kappa_q75, fro_median, pr_median) joined on
    ``layer`` from ``sample_profiles.parquet`` once the ``sample_stats`` stage has written it
    (``resdyn.core.sample_stats.with_profiles``; runs from before schema 3 have them in the table).
    Runs from before the null columns get frac_complex_null and the elliptic null's columns on read
    (``nulls.with_frac_complex_null``, ``nulls.with_elliptic_null``: τ from jacobians.npy).

    ``operator`` "J" or "R" keeps one operator; None keeps both.
    """
    where, params = ("operator = ?", [operator]) if operator else ("TRUE", [])
    store = open_run(root or runs_dir(), run_id)
    df = query(f"SELECT * FROM {table_sql(store, 'layers')} WHERE {where} ORDER BY operator, layer", params)
    if "frac_complex_null" not in df.columns or "frac_complex_null_elliptic" not in df.columns:
        d = store.manifest().get("d_model")  # runs from before the spectra stage wrote them
        if d:
            df = nulls.with_frac_complex_null(df, int(d))
            jacs = store.read_array("jacobians") if store.has_array("jacobians") else None
            df = nulls.with_elliptic_null(df, int(d), jacs)
    return sample_stats.with_profiles(store, df)


def eigenvalues(run_id: str, layers: list[int] | None = None, operator: str = "J",
                root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Eigenvalues (layer, operator, idx, re, im) of one operator, optionally of some layers only."""
    where, params = "operator = ?", [operator]
    if layers is not None:
        where += " AND list_contains(?, layer)"
        params.append([int(l) for l in layers])
    return _select(run_id, "eigenvalues", "layer, operator, idx, re, im", where, params, "layer, idx", root)


DENSITY_SQL = {"re": "re", "im": "im", "abs": "sqrt(re * re + im * im)"}


def eigenvalue_density(run_id: str, operator: str = "J", bins: int = 80, n_layers: int | None = None,
                       root: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-layer histograms of Re λ, Im λ and |λ| of one operator, binned in DuckDB.

    Returns quantity ("re", "im", "abs") -> (counts (L, bins) int64, edges (bins + 1,) float64):
    ``bins`` equal bins spanning the values over all layers (±0.5 around a single value), the last
    bin closed. The same counts as ``figures.spectrum.density_matrix`` on the whole table, without
    sending the L·d rows to Python (at d = 4096 that read alone took ~40 ms).
    """
    store = open_run(root or runs_dir(), run_id)
    src = f"(SELECT layer, re, im FROM {table_sql(store, 'eigenvalues')} WHERE operator = ?)"
    cols = ", ".join(f"min({e}), max({e})" for e in DENSITY_SQL.values())
    ext = query(f"SELECT {cols}, max(layer) FROM {src}", [operator]).iloc[0].to_numpy()
    n_layers = n_layers or (int(ext[-1]) + 1 if np.isfinite(ext[-1]) else 1)
    out = {}
    for i, (q, expr) in enumerate(DENSITY_SQL.items()):
        lo, hi = (float(ext[2 * i]), float(ext[2 * i + 1])) if np.isfinite(ext[2 * i]) else (0.0, 1.0)
        if hi - lo < 1e-9:  # a degenerate spectrum still gets a visible bin
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        step = (hi - lo) / bins  # np.linspace's edges are i·step + lo, the last one hi itself
        # A first guess of the bin, then moved by one where it disagrees with the edges, so that a
        # value on an edge lands where numpy's histogram puts it (edge_b ≤ x < edge_b+1).
        rows = query(
            f"SELECT layer, CASE WHEN x < b0 * ? + ? THEN b0 - 1 "
            f"WHEN b0 < ? AND x >= (b0 + 1) * ? + ? THEN b0 + 1 ELSE b0 END AS b, count(*) AS n FROM "
            f"(SELECT layer, x, least(greatest(CAST(floor((x - ?) / ?) AS BIGINT), 0), ?) AS b0 "
            f"FROM (SELECT layer, {expr} AS x FROM {src})) GROUP BY ALL",
            [step, lo, bins - 1, step, lo, lo, step, bins - 1, operator])
        counts = np.zeros((n_layers, bins), np.int64)
        ok = (rows["layer"] >= 0) & (rows["layer"] < n_layers)
        counts[rows["layer"][ok].to_numpy(int), rows["b"][ok].to_numpy(int)] = rows["n"][ok].to_numpy()
        out[q] = (counts, edges)
    return out


def samples(run_id: str, layer: int | None = None, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per-sample Jacobian statistics (layer, sample, sigma_max, sigma_min, kappa, fro, pr)."""
    where, params = ("layer = ?", [int(layer)]) if layer is not None else ("TRUE", [])
    return _select(run_id, "samples", "*", where, params, "layer, sample", root)


def run_overview(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run for the Runs page: the manifest facts plus k and per-stage timings.

    Columns: run_id, status, model, revision, init, seed, architecture, mode, d_model, n_layers,
    n_samples, k, stages_done, seconds (total), timings ("stage 1.2 s · ..."), and one
    ``seconds_<stage>`` column per stage seen in any run (NaN where a run lacks it).
    """
    rows = []
    for store in list_runs(root or runs_dir()):
        try:
            m = store.manifest()
        except ResdynError:
            rows.append({"run_id": store.run_id, "status": "corrupt"})
            continue
        timings = m.get("timings", {}) or {}
        rows.append({
            "run_id": store.run_id, "status": m.get("status"), "model": m.get("model"),
            "revision": m.get("revision"), "init": m.get("init"), "seed": m.get("seed"),
            "architecture": m.get("architecture"),
            "mode": m.get("mode"), "d_model": m.get("d_model"), "n_layers": m.get("n_layers"),
            "n_samples": m.get("n_samples"), "k": m.get("k"),
            "stages_done": ", ".join(m.get("stages_done", [])),
            "seconds": round(float(sum(timings.values())), 1),
            "timings": " · ".join(f"{name} {sec:.1f} s" for name, sec in timings.items()),
            **{f"seconds_{name}": float(sec) for name, sec in timings.items()},
        })
    return pd.DataFrame(rows)


# -- block coupling and trajectories (METHODS §9): what the Block coupling page asks ---------------
_QUANTILES_SQL = ("SELECT layer, quantile_cont({c}, 0.25) AS q25, median({c}) AS median, "
                  "quantile_cont({c}, 0.75) AS q75, count({c}) AS n FROM {t} WHERE {c} IS NOT NULL AND {w} "
                  "GROUP BY layer ORDER BY layer")
WINDOW_METRICS = ("lss_window", "ed_window", "norm")
"""The windowed trajectory metrics ``trajectory_windows`` accepts (columns of trajectories.parquet)."""


def _run_sql(run_id: str, name: str, template: str, params: list | None,
             root: str | os.PathLike | None) -> pd.DataFrame:
    """A fixed SQL ``template`` whose ``{t}`` is the run's table ``name``, with ``?`` parameters."""
    store = open_run(root or runs_dir(), run_id)
    return query(template.replace("{t}", table_sql(store, name)), params)


def summary(run_id: str, root: str | os.PathLike | None = None) -> dict[str, float]:
    """``summary.parquet`` as {name: value} (the stages' named scalars); {} for a run without it."""
    store = open_run(root or runs_dir(), run_id)
    if not store.has_table("summary"):
        return {}
    s = _run_sql(run_id, "summary", "SELECT name, value FROM {t}", None, root)
    return dict(zip(s["name"], s["value"].astype(float)))


def coupling_ks(run_id: str, root: str | os.PathLike | None = None) -> list[int]:
    """The K (number of top singular vectors) values of ``block_coupling.parquet``, ascending."""
    return [int(k) for k in _run_sql(run_id, "block_coupling", "SELECT DISTINCT K FROM {t} ORDER BY K",
                                     None, root)["K"]]


def depth_coupling(run_id: str, k: int, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """(layer_a, layer_b, miscoupling): depth-wise m̃ at ``k``, averaged over prompts (METHODS §9)."""
    return _run_sql(run_id, "block_coupling", "SELECT layer_a, layer_b, miscoupling FROM {t} "
                    "WHERE kind = 'depth' AND aggregate AND K = ?", [int(k)], root)


def coupling_prompts(run_id: str, root: str | os.PathLike | None = None) -> list[int]:
    """The prompts (sample ids) with token-wise coupling rows; [] for a depth-only run."""
    return [int(s) for s in _run_sql(run_id, "block_coupling", "SELECT DISTINCT sample FROM {t} WHERE "
                                     "kind = 'self' AND NOT aggregate ORDER BY sample", None, root)["sample"]]


def token_coupling(run_id: str, kind: str, k: int, layer: int, sample: int | None = None,
                   root: str | os.PathLike | None = None) -> pd.DataFrame:
    """(token_a, token_b, token_fixed, miscoupling) of one comparison ``kind`` ("self",
    "fixed_input", "fixed_output") at ``layer`` and ``k``: of one prompt, or the mean over prompts
    when ``sample`` is None."""
    where, params = "kind = ? AND K = ? AND layer_a = ? AND ", [kind, int(k), int(layer)]
    if sample is None:
        where += "aggregate"
    else:
        where += "sample = ? AND NOT aggregate"
        params.append(int(sample))
    return _run_sql(run_id, "block_coupling", "SELECT token_a, token_b, token_fixed, miscoupling FROM {t} "
                    "WHERE " + where, params, root)


def trajectory_windows(run_id: str, metric: str, last_only: bool,
                       root: str | os.PathLike | None = None) -> pd.DataFrame:
    """(layer, q25, median, q75, n) of a windowed trajectory metric over every token (or the last
    token only): stored by the trajectories stage, or (runs from before it stored them) aggregated
    from the trajectories table; empty when the run has neither."""
    if metric not in WINDOW_METRICS:
        raise ResdynError(f"unknown trajectory metric {metric!r}; one of {', '.join(WINDOW_METRICS)}")
    store = open_run(root or runs_dir(), run_id)
    if store.has_table("trajectory_windows"):
        return _run_sql(run_id, "trajectory_windows", "SELECT layer, q25, median, q75, n FROM {t} "
                        "WHERE scope = ? AND metric = ? ORDER BY layer", ["last" if last_only else "all", metric], root)
    if not store.has_table("trajectories"):
        return pd.DataFrame(columns=["layer", "q25", "median", "q75", "n"])
    # ``metric`` is one of WINDOW_METRICS (checked above), so it may be spelled into the SQL.
    sql = _QUANTILES_SQL.format(c=metric, t="{t}", w="token = -1" if last_only else "TRUE")
    return _run_sql(run_id, "trajectories", sql, None, root)


def trajectory_lss(run_id: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """(n_trajectories,) float64 whole-depth line-shape score of every token's trajectory."""
    return _run_sql(run_id, "trajectories", "SELECT lss FROM {t} WHERE layer = 0", None, root)["lss"].to_numpy(float)


def trajectory_pca_prompts(run_id: str, root: str | os.PathLike | None = None) -> list[int]:
    """The prompts (sample ids) with a stored 2-D trajectory PCA."""
    return [int(s) for s in _run_sql(run_id, "trajectory_pca", "SELECT DISTINCT sample FROM {t} ORDER BY sample",
                                     None, root)["sample"]]


def trajectory_pca(run_id: str, sample: int, fit: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The stored PCA rows of one prompt for one fit ("all" or "skip_first")."""
    return _run_sql(run_id, "trajectory_pca", "SELECT * FROM {t} WHERE sample = ? AND fit = ?",
                    [int(sample), fit], root)


def passage_text(run_id: str, sample: int, root: str | os.PathLike | None = None) -> str | None:
    """The text of one passage, or None when the run has no passages table or no such sample."""
    if not open_run(root or runs_dir(), run_id).has_table("passages"):
        return None
    rows = _run_sql(run_id, "passages", "SELECT text FROM {t} WHERE sample = ?", [int(sample)], root)
    return str(rows["text"].iloc[0]) if len(rows) else None


def coupling_table(summaries: dict[str, dict[str, float]], inits: dict[str, str | None], k: int) -> pd.DataFrame:
    """One row per run of the coupling and trajectory headline numbers, read from each run's
    ``summary`` ({name: value}): run, init, coupling score, mean m̃ at ``k``, median LSS (every
    token and the last token), median expodistance; NaN where a run lacks the stage."""
    rows = [{"run": r, "init": inits.get(r),
             "coupling score": s.get("block_coupling.coupling_score", np.nan),
             f"mean m̃ (K = {k})": s.get(f"block_coupling.mean_miscoupling.K{k}", np.nan),
             "median LSS": s.get("trajectories.lss_median", np.nan),
             "median LSS, last token": s.get("trajectories.lss_median_last", np.nan),
             "median ED": s.get("trajectories.ed_median", np.nan)} for r, s in summaries.items()]
    return pd.DataFrame(rows)
