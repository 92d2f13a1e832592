"""Open a dashboard page under streamlit's AppTest, as every tests/app file does."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.figtools import plain

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60  # seconds; first imports are slow on a busy 2-core machine


def open_page(page: str | Path, **params: str) -> AppTest:
    """Run ``page`` (a path, relative to the repository root unless absolute) once with the URL
    query parameters ``params``; returns the finished AppTest (exceptions are left to the caller)."""
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def charts(at: AppTest, decoded: bool = True) -> list[dict]:
    """The page's Plotly figures as dicts; typed arrays decoded to numpy unless ``decoded`` is False."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [plain(s) for s in specs] if decoded else specs
