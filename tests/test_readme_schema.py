"""The README's data contract and the declared table schemas (``resdyn.core.schema``) agree: the
generated "table schemas" block is current, and the rows that explain each table name every one
of its columns."""

from __future__ import annotations

import re
from pathlib import Path

from resdyn.core import schema

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_generated_schema_block_is_current():
    text = README.read_text(encoding="utf-8")
    assert text.count(schema.README_BEGIN) == 1 and text.count(schema.README_END) == 1
    assert schema.replace_readme_block(text) == text, \
        "README's table schemas are stale: run `python -m resdyn.core.schema --readme README.md`"


def _explaining_rows() -> dict[str, str]:
    """table name -> the text of the README table rows (outside the generated block) whose first
    cell names ``NAME.parquet``."""
    text = README.read_text(encoding="utf-8")
    start, end = text.index(schema.README_BEGIN), text.index(schema.README_END)
    out: dict[str, str] = {}
    for line in (text[:start] + text[end:]).splitlines():
        if not line.startswith("| `"):
            continue
        first, _, rest = line[1:].partition("|")
        for name in re.findall(r"`([a-z_]+)\.parquet`", first):
            out[name] = out.get(name, "") + " " + rest
    return out


def test_every_column_is_explained_in_the_readme():
    rows = _explaining_rows()
    assert set(schema.TABLES) - set(rows) == set(), "tables without a README row"
    unexplained = {name: [c for c in t.names if not re.search(rf"(?<![\w.]){re.escape(c)}(?!\w)", rows[name])]
                   for name, t in schema.TABLES.items()}
    assert {k: v for k, v in unexplained.items() if v} == {}, "columns the README rows do not name"
