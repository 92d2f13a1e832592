"""The page files that app.py's navigation declares, read from its ``SECTIONS`` literal.

Tests parametrise over this list, so a page added to the navigation is tested without anyone
listing it again.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def app_pages() -> list[str]:
    """Page files (relative to the repository root) in navigation order."""
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SECTIONS" for t in node.targets):
            sections = ast.literal_eval(node.value)
            return [path for pages in sections.values() for path, _title, _icon in pages]
    raise AssertionError("app.py declares no SECTIONS")


SINGLE_RUN_PAGES = [p for p in app_pages() if p != "pages/compare.py"]
