"""The README's flag table and ``RunConfig`` (the one source of CLI flags) name the same flags."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from resdyn.config import RunConfig

README = Path(__file__).resolve().parents[1] / "README.md"
RUN_ONLY = {"--redo", "--seeds"}  # flags of `run` itself, not settings


def _table_flags() -> set[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| flag | default | meaning |")
    flags = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        flags |= set(re.findall(r"`(--[a-z0-9-]+)`", line.split("|")[1]))
    return flags


def test_readme_flag_table_matches_runconfig():
    config_flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(RunConfig) if f.metadata.get("flag")}
    table = _table_flags()
    assert config_flags - table == set(), "RunConfig flags missing from the README table"
    assert table - config_flags - RUN_ONLY == set(), "README table rows that are not RunConfig flags"
