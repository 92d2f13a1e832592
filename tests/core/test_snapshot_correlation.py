"""The Communities page's correlation data, against np.corrcoef of the stored states."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resdyn.core import snapshot_correlation as sc
from resdyn.core.store import RunStore

N, L, D = 40, 2, 12


@pytest.fixture
def store(tmp_path) -> RunStore:
    rng = np.random.default_rng(0)
    s = RunStore(tmp_path / "run")
    mix = rng.normal(size=(D, D))  # correlated units, so C is far from the identity
    s.write_array("activations", (rng.normal(size=(N, 2 * L, D)) @ mix).astype(np.float32))
    s.write_array("final_state", (rng.normal(size=(N, D)) @ mix).astype(np.float32))
    return s


def _blocks(c: np.ndarray, f: int) -> np.ndarray:
    """Means of c over f×f blocks (edge blocks average what they hold)."""
    m = -(-len(c) // f)
    return np.array([[c[i * f:(i + 1) * f, j * f:(j + 1) * f].mean() for j in range(m)] for i in range(m)])


@pytest.mark.parametrize("snapshot", [1, 2 * L])  # a pre-MLP snapshot, and 2L = the final state
def test_full_matrix_and_zoom_equal_corrcoef(store, snapshot):
    x = store.read_array("final_state") if snapshot == 2 * L else store.read_array("activations")[:, snapshot]
    want = np.corrcoef(np.asarray(x, np.float64).T)
    corr, blocks = sc.overview(store, snapshot, L, "cpm", np.zeros(D, int))
    assert blocks is None
    np.testing.assert_allclose(corr, want, atol=2e-6)
    rows, cols = np.array([5, 0, 7]), np.array([11, 3])
    np.testing.assert_allclose(sc.submatrix(store, snapshot, L, rows, cols), want[np.ix_(rows, cols)], atol=2e-6)
    assert sc.source_path(store, snapshot, L).name == ("final_state.npy" if snapshot == 2 * L else "activations.npy")


def test_wide_snapshot_gives_block_means_in_both_orders(store):
    labels = np.array([1, 0, 2, 0, 1, 0, 2, 2, 0, 1, 0, 1])
    want = np.corrcoef(np.asarray(store.read_array("activations")[:, 0], np.float64).T)
    corr, (left, right, f) = sc.overview(store, 0, L, "cpm", labels, heatmap_max=4, max_px=4)
    assert corr is None and f == 3
    order = np.lexsort((np.arange(D), labels))  # communities by label, units ascending inside
    np.testing.assert_allclose(left, _blocks(want, 3), atol=2e-6)
    np.testing.assert_allclose(right, _blocks(want[np.ix_(order, order)], 3), atol=2e-6)


def test_stored_panels_are_used_when_present(store):
    panels = np.random.default_rng(1).uniform(-1, 1, size=(2 * L + 1, 2, 3, 3)).astype(np.float16)
    store.write_array("corr_blocks", panels)
    store.write_table("corr_blocks", pd.DataFrame({"order": ["cpm"], "panel": [1], "f": [4]}))
    left, right, f = sc.stored_panels(store, 2, "cpm")
    np.testing.assert_array_equal(left, panels[2, 0].astype(np.float32))
    np.testing.assert_array_equal(right, panels[2, 1].astype(np.float32))
    assert f == 4
    assert sc.stored_panels(store, 2, "louvain") is None  # a method without a stored panel
    _, blocks = sc.overview(store, 2, L, "cpm", np.zeros(D, int), heatmap_max=4)
    assert blocks[2] == 4
