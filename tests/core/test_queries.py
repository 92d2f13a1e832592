"""Typed queries the pages ask: parameters are bound, and names that reach SQL text are checked."""

from __future__ import annotations

import pytest

from resdyn.core import queries
from resdyn.errors import ResdynError
from tests.conftest import TRAINED_RUN


def test_summary_is_a_dict_of_the_stages_scalars(synthetic_runs_dir):
    s = queries.summary(TRAINED_RUN, synthetic_runs_dir)
    stored = queries.table(TRAINED_RUN, "summary", root=synthetic_runs_dir)
    assert s == dict(zip(stored["name"], stored["value"])) and s


def test_trajectory_windows_refuses_a_metric_that_is_not_a_column(synthetic_runs_dir):
    with pytest.raises(ResdynError, match="unknown trajectory metric"):
        queries.trajectory_windows(TRAINED_RUN, "lss); DROP TABLE x; --", False, synthetic_runs_dir)


def test_coupling_table_leaves_nan_where_a_run_lacks_the_stage():
    t = queries.coupling_table({"a": {"block_coupling.coupling_score": 0.7, "block_coupling.mean_miscoupling.K30": 0.3},
                                "b": {}}, {"a": "pretrained", "b": "random"}, 30).set_index("run")
    assert t.loc["a", "coupling score"] == 0.7 and t.loc["a", "mean m̃ (K = 30)"] == 0.3
    assert t.loc["b"].drop("init").isna().all() and t.loc["b", "init"] == "random"
