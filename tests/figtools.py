"""Helpers for testing plotly figures without a browser.

Plotly ≥ 6 serialises numpy arrays in ``fig.to_dict()`` as base64 typed arrays
(``{"dtype": "f8", "bdata": ..., "shape": "4, 30"}``, int64 narrowed to the smallest int type);
``plain(fig)`` returns the dict with every such array decoded back to numpy.
"""

from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go


def decode(value):
    """A plotly typed-array spec -> np.ndarray; anything else unchanged (lists -> np.ndarray)."""
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            arr = arr.reshape([int(s) for s in str(value["shape"]).split(",")])
        return arr
    return value


def _walk(obj):
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            return decode(obj)
        return {k: _walk(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v) for v in obj]
    return obj


def plain(fig: go.Figure | dict) -> dict:
    """``fig.to_dict()`` with typed arrays decoded to numpy arrays."""
    return _walk(fig.to_dict() if isinstance(fig, go.Figure) else fig)
