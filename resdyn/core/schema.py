"""The declared schema of every Parquet table of a run: column names and dtypes, in one place.

``RunStore.write_table`` casts each DataFrame to its table's schema here before writing it (so the
stages never spell a dtype), refuses a table that is not declared or whose columns differ, and
stamps the file's key-value metadata with the resdyn version, the schema version and the table
name. ``verify`` and ``upgrade`` compare files against the same declarations, and the README's
"Table schemas" block is generated from them (``python -m resdyn.core.schema --readme README.md``).

Dtypes are pyarrow's, by short name: ``int32`` (every integer column), ``float64``, ``float32``
(the bulky per-token and per-edge values), ``string`` and ``bool``. Float columns use NaN for "not
measured"; an integer column may hold nulls only where it is declared nullable (``int32?`` below,
e.g. ``token_fixed`` of block_coupling, which only some kinds of row have).

``SCHEMA_VERSION`` counts changes of the run store's format; it goes up whenever a table or file is
added or a column changes, and ``resdyn.core.upgrade`` brings older runs up to it:

- 0: manifests without ``schema_version``, ``stages_all`` or ``files`` (the tables are as in 1);
- 1: tables written by pandas' defaults: ``layer`` int64 in layers.parquet, ``token`` int64 in
  passages.parquet, the integer columns of coupling, mesoscale and trajectory_windows int64,
  strings as ``large_string``, no resdyn metadata;
- 2: every table cast to the declarations below, every file stamped with ``METADATA_KEYS``;
- 3: the per-sample statistics are a stage of their own (``sample_stats``): it writes
  samples.parquet (formerly the jacobians stage's) and the new sample_profiles.parquet, and
  layers.parquet no longer holds kappa_median, kappa_q25, kappa_q75, fro_median, pr_median
  (``resdyn.core.sample_stats.with_profiles`` joins them back for every reader).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resdyn.errors import ResdynError

if TYPE_CHECKING:  # pyarrow and pandas are imported where they are used: this module is cheap
    import pandas as pd
    import pyarrow as pa

SCHEMA_VERSION = 3

# Parquet key-value metadata every table carries (bytes keys, as pyarrow stores them).
VERSION_KEY = b"resdyn.version"
SCHEMA_KEY = b"resdyn.schema_version"
TABLE_KEY = b"resdyn.table"
METADATA_KEYS = (VERSION_KEY, SCHEMA_KEY, TABLE_KEY)

DTYPES = ("int32", "float64", "float32", "string", "bool")


class SchemaError(ResdynError):
    """A DataFrame or file that does not match its table's declared schema (or no such table)."""


@dataclass(frozen=True)
class Table:
    """One table: its name (the file is ``NAME.parquet``) and its columns in file order."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, dtype) with dtype in DTYPES
    nullable: frozenset[str] = frozenset()  # integer columns that may hold nulls

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def dtypes(self) -> dict[str, str]:
        return dict(self.columns)

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    def arrow(self, subset: list[str] | tuple[str, ...] | None = None) -> "pa.Schema":
        """The pyarrow schema of the columns in ``subset`` (default all), in declared order."""
        import pyarrow as pa

        keep = self.names if subset is None else [c for c in self.names if c in set(subset)]
        return pa.schema([(c, _arrow_type(self.dtypes[c])) for c in keep])


def _t(name: str, spec: str) -> Table:
    """Table ``name`` from "col:dtype col:dtype? ..." (a compact spelling for the list below; a
    trailing ``?`` marks a nullable integer column)."""
    cols = tuple(tuple(item.split(":")) for item in spec.split())
    nullable = frozenset(c for c, dt in cols if dt.endswith("?"))
    cols = tuple((c, dt.rstrip("?")) for c, dt in cols)
    for c, dt in cols:
        assert dt in DTYPES, (name, c, dt)
    return Table(name, cols, nullable)  # type: ignore[arg-type]


TABLES: dict[str, Table] = {t.name: t for t in (
    # activations (METHODS §1)
    _t("passages", "sample:int32 n_tokens:int32 position:int32 token:int32 token_text:string text:string"),
    _t("snapshots", "snapshot:int32 n_distinct:int32 rank:int32 participation_ratio:float64 pr_basis:string"),
    # named scalars of every stage
    _t("summary", "name:string value:float64"),
    # spectra (METHODS §3–§4)
    _t("layers", "layer:int32 operator:string self_alignment:float64 forward_alignment:float64 henrici:float64 "
                 "frac_expanding:float64 frac_complex:float64 mean_abs_eig:float64 spectral_radius:float64 "
                 "residual_norm_ratio:float64 frac_complex_null:float64 tau:float64 frac_complex_null_elliptic:float64 "
                 "frac_complex_null_elliptic_sd:float64"),
    _t("eigenvalues", "layer:int32 operator:string idx:int32 re:float64 im:float64"),
    # sample_stats (METHODS §2)
    _t("samples", "layer:int32 sample:int32 sigma_max:float64 sigma_min:float64 kappa:float64 fro:float64 "
                  "pr:float64"),
    _t("sample_profiles", "layer:int32 kappa_median:float64 kappa_q25:float64 kappa_q75:float64 "
                          "fro_median:float64 pr_median:float64"),
    # cumulative, schur, pseudospectra (METHODS §5, §6, §11)
    _t("cumulative", "layer:int32 erank:float64 log10_fro:float64"),
    _t("cumulative_spectra", "layer:int32 idx:int32 sigma:float64 log10_sigma:float64"),
    _t("noise", "statistic:string surrogate:string c:float64 layer:int32 value:float64"),
    _t("schur_dose", "mode:string construction:string draw:int32 c:float64 beta:float64 erank:float64 "
                     "log10_fro:float64 henrici:float64"),
    _t("pseudospectra", "layer:int32 c:float64 x:float64 y:float64 log10_sigma_min:float64"),
    _t("numerical_range", "layer:int32 c:float64 idx:int32 x:float64 y:float64"),
    _t("transient_growth", "layer:int32 k:int32 log10_norm:float64"),
    _t("layer_sigma", "layer:int32 c:float64 i:int32 sigma:float64"),
    # communities, topology_coupling (METHODS §7, §8)
    _t("units", "snapshot:int32 method:string unit:int32 community:int32 participation:float64 "
                "column_norm:float64"),
    _t("communities", "snapshot:int32 method:string community:int32 size:int32"),
    _t("nmi", "method:string snapshot_a:int32 snapshot_b:int32 nmi:float64"),
    _t("graph_edges", "snapshot:int32 i:int32 j:int32 weight:float32"),
    _t("community_null", "snapshot:int32 method:string n_communities:int32 n_multi:int32 quality:float64 "
                         "null_n_communities:int32 null_n_multi:int32 null_quality:float64 null_kind:string "
                         "participation_ratio:float64 null_participation_ratio:float64"),
    _t("corr_blocks", "panel:int32 order:string f:int32"),
    _t("mesoscale", "layer:int32 method:string null:string operator:string snapshot_in:int32 snapshot_out:int32 "
                    "n_comm_in:int32 n_comm_out:int32 variance_captured:float64 sigma_max_K:float64 "
                    "null_mean:float64 null_std:float64 null_q05:float64 null_q95:float64 z:float64 p_z:float64 "
                    "p_empirical:float64 disruption:float64 d_sigma_max:float64 d_variance_captured:float64 "
                    "q_bh:float64 bh_significant:bool"),
    _t("coupling", "layer:int32 method:string snapshot:int32 cohens_d:float64 p_perm:float64 q_bh:float64 "
                   "fdr_significant:bool n_top:int32 n_bottom:int32 spearman_rho:float64 spearman_p:float64 "
                   "self_alignment:float64"),
    # block_coupling, trajectories (METHODS §9)
    _t("block_coupling", "kind:string K:int32 layer_a:int32 layer_b:int32 token_a:int32 token_b:int32 "
                         "token_fixed:int32? sample:int32 aggregate:bool n:int32 miscoupling:float64"),
    _t("trajectories", "sample:int32 token:int32 position:int32 layer:int32 norm:float32 alpha:float32 "
                       "lss_window:float32 ed_window:float32 lss:float32 ed:float32"),
    _t("trajectory_pca", "sample:int32 fit:string token:int32 position:int32 layer:int32 pc1:float64 pc2:float64 "
                         "var1:float64 var2:float64"),
    _t("trajectory_windows", "scope:string metric:string layer:int32 q25:float64 median:float64 q75:float64 "
                             "n:int32"),
)}


def _arrow_type(dtype: str) -> "pa.DataType":
    import pyarrow as pa

    return {"int32": pa.int32(), "float64": pa.float64(), "float32": pa.float32(),
            "string": pa.string(), "bool": pa.bool_()}[dtype]


def dtype_name(t: "pa.DataType") -> str:
    """A pyarrow type by the short names of ``DTYPES`` (other types by pyarrow's own name)."""
    import pyarrow as pa

    for name in DTYPES:
        if t == _arrow_type(name):
            return name
    return "large_string" if t == pa.large_string() else str(t)


def get(name: str) -> Table:
    """The declared table ``name``; a SchemaError naming the declared tables otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaError(f"table {name!r} is not declared in resdyn.core.schema "
                          f"(tables: {', '.join(sorted(TABLES))})") from None


def metadata(name: str) -> dict[bytes, bytes]:
    """The resdyn key-value metadata of table ``name`` written by this resdyn."""
    from resdyn import __version__

    return {VERSION_KEY: __version__.encode(), SCHEMA_KEY: str(SCHEMA_VERSION).encode(),
            TABLE_KEY: name.encode()}


def _check_kind(table: str, col: str, dtype: str, series: "pd.Series") -> None:
    """Refuse a value kind that a cast would silently turn into something else (text parsed as
    numbers, floats truncated to integers, NaN turned into integer nulls)."""
    import pandas as pd

    kind = series.dtype.kind
    if dtype == "int32":
        ok = kind in "iu" or (kind == "f" and len(series) == 0)
        if series.dtype == object and len(series):
            ok = pd.api.types.infer_dtype(series, skipna=True) in ("integer", "empty")
    elif dtype in ("float64", "float32"):
        ok = kind in "iuf" or (series.dtype == object and pd.api.types.infer_dtype(series, skipna=True)
                              in ("floating", "integer", "mixed-integer-float", "empty"))
    elif dtype == "bool":
        ok = kind == "b" or (series.dtype == object and pd.api.types.infer_dtype(series, skipna=False)
                            in ("boolean", "empty"))
    else:  # string
        ok = pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")
    if not ok:
        raise SchemaError(f"table {table!r}: column {col!r} holds {series.dtype} values where the schema "
                          f"declares {dtype}")


def to_arrow(name: str, df: "pd.DataFrame", *, partial: bool = False) -> "pa.Table":
    """``df`` as a pyarrow Table with table ``name``'s declared columns, dtypes and metadata.

    The columns must be exactly the declared ones (any order; the file gets the declared order);
    with ``partial`` a subset is accepted (an older run's table, for ``upgrade``). Values are cast
    safely: an integer outside int32, a fractional or missing value in an integer column, or text
    in a numeric column raises SchemaError, as does an undeclared table or column. The index is
    dropped (tables are written with ``index=False``).
    """
    import pyarrow as pa

    table = get(name)
    have = [str(c) for c in df.columns]
    extra = [c for c in have if c not in table.dtypes]
    missing = [c for c in table.names if c not in have]
    if len(set(have)) != len(have):
        raise SchemaError(f"table {name!r}: duplicate column names {have}")
    if extra or (missing and not partial):
        parts = ([f"undeclared column(s) {', '.join(extra)}"] if extra else []) + \
                ([f"missing column(s) {', '.join(missing)}"] if missing and not partial else [])
        raise SchemaError(f"table {name!r} does not match its declared schema: {'; '.join(parts)} "
                          "(declare a change in resdyn/core/schema.py and raise SCHEMA_VERSION)")
    target = table.arrow(have)
    for field in target:
        _check_kind(name, field.name, dtype_name(field.type), df[field.name])
        if pa.types.is_integer(field.type) and field.name not in table.nullable and df[field.name].isna().any():
            raise SchemaError(f"table {name!r}: integer column {field.name!r} has missing values")
    try:
        out = pa.Table.from_pandas(df[list(target.names)], schema=target, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(f"table {name!r}: {str(exc).splitlines()[0]}") from exc
    return out.replace_schema_metadata({**(out.schema.metadata or {}), **metadata(name)})


def file_version(meta: dict[bytes, bytes] | None) -> int | None:
    """The schema version a file's key-value metadata records (None: written before version 2)."""
    raw = (meta or {}).get(SCHEMA_KEY)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def mismatches(name: str, arrow_schema: "pa.Schema", *, allow_missing: bool = False) -> list[str]:
    """How a file's pyarrow schema differs from table ``name``'s declaration, as short phrases
    (empty when it conforms): undeclared or missing columns, other dtypes, and metadata that is
    absent or from another schema version. ``allow_missing`` accepts a subset of the columns (an
    output an older resdyn wrote without the columns added since)."""
    if name not in TABLES:
        return [f"undeclared table {name!r}"]
    table = TABLES[name]
    out = []
    extra = [c for c in arrow_schema.names if c not in table.dtypes]
    if extra:
        out.append(f"undeclared column(s) {', '.join(extra)}")
    missing = [c for c in table.names if c not in arrow_schema.names]
    if missing and not allow_missing:
        out.append(f"missing column(s) {', '.join(missing)}")
    wrong = [f"{f.name} is {dtype_name(f.type)}, not {table.dtypes[f.name]}" for f in arrow_schema
             if f.name in table.dtypes and dtype_name(f.type) != table.dtypes[f.name]]
    out += wrong
    version = file_version(arrow_schema.metadata)
    if version != SCHEMA_VERSION:
        out.append("no resdyn metadata" if version is None else f"schema_version {version} in its metadata")
    return out


# -- the README block ---------------------------------------------------------------------------
README_BEGIN = "<!-- schema:begin (generated by `python -m resdyn.core.schema --readme README.md`) -->"
README_END = "<!-- schema:end -->"


def markdown() -> str:
    """The README's table of every table: the stage(s) that write it and its columns with dtypes."""
    from resdyn import stages as registry

    lines = [f"Schema version {SCHEMA_VERSION}. Every file's Parquet key-value metadata holds "
             "`resdyn.version`, `resdyn.schema_version` and `resdyn.table`. `int32?`: an integer "
             "column that is null on some rows.", "",
             "| table | written by | columns (dtype) |", "|---|---|---|"]
    for s in registry.STAGES:  # tables in stage order, then as declared
        for f in s.files:
            name = f.removesuffix(".parquet")
            if f.endswith(".parquet") and registry.writers(f)[0] == s.name:
                t = TABLES[name]
                cols = ", ".join(f"`{c}` {dt}{'?' if c in t.nullable else ''}" for c, dt in t.columns)
                lines.append(f"| `{f}` | {', '.join(registry.writers(f))} | {cols} |")
    return "\n".join(lines)


def readme_block() -> str:
    return f"{README_BEGIN}\n{markdown()}\n{README_END}"


def replace_readme_block(text: str) -> str:
    """``text`` (a README) with its generated block replaced by the current one."""
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    return text[:start] + readme_block() + text[end:]


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m resdyn.core.schema",
                                     description="Print the declared table schemas as Markdown, or "
                                                 "rewrite the generated block of a README.")
    parser.add_argument("--readme", type=Path, help="rewrite the block between the schema markers of this file")
    ns = parser.parse_args(argv)
    if ns.readme is None:
        print(markdown())
    else:
        ns.readme.write_text(replace_readme_block(ns.readme.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
