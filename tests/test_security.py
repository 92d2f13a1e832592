"""Security properties: no pickle, remote code only on request, URL parameters never reach paths."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from resdyn.config import RunConfig
from resdyn.errors import ResdynError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [p for d in ("resdyn", "pages", "benchmarks") for p in (ROOT / d).rglob("*.py")] + \
    [p for p in [ROOT / "app.py"] if p.exists()]
# Anything that deserialises with pickle (or wraps it) has no place in code that reads run files.
FORBIDDEN = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|cloudpickle)\b|pickle\.loads?\(|"
                       r"allow_pickle\s*=\s*True|torch\.load\(|read_pickle\(|np\.load\(\s*[^)]*\)\s*\.item\(",
                       re.M)


def _calls(source: str, name: str) -> list[str]:
    """The argument text of every ``name(`` call in ``source`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", source):
        depth, i = 1, m.end()
        while depth and i < len(source):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        out.append(source[m.end():i - 1])
    return out


def test_no_pickle_in_shipped_code():
    assert SHIPPED
    hits = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}" for p in SHIPPED
            for m in FORBIDDEN.finditer(p.read_text(encoding="utf-8"))]
    assert hits == []


def test_every_np_load_refuses_pickles_explicitly():
    missing = [f"{p.relative_to(ROOT)}: np.load({args[:60]}...)" for p in SHIPPED
               for args in _calls(p.read_text(encoding="utf-8"), "np.load")
               if "allow_pickle=False" not in args.replace(" ", "")]
    assert missing == []


def test_the_store_refuses_a_pickled_array(tmp_path):
    import numpy as np

    from resdyn.core.store import CorruptFileError, RunStore

    run = tmp_path / "r"
    run.mkdir()
    np.save(run / "evil.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match="evil.npy"):
        RunStore(run).read_array("evil")


def test_trust_remote_code_is_off_by_default_and_warns_when_on(tmp_path, monkeypatch):
    import transformers

    from resdyn.compute.models import load_bundle
    from tests.compute.test_cli import _save_tiny_llama

    _save_tiny_llama(tmp_path / "m")
    assert RunConfig(run_id="x").trust_remote_code is False
    seen = []
    real = transformers.AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_bundle(RunConfig(model=str(tmp_path / "m"), run_id="x", device="cpu"))
    assert seen and set(seen) == {False}  # every config load, the tokenizer's too
    seen.clear()
    assert not [w for w in caught if "trust-remote-code" in str(w.message)]
    with pytest.warns(UserWarning, match="--trust-remote-code runs the model repository's own Python code"):
        load_bundle(RunConfig(model=str(tmp_path / "m"), run_id="x", device="cpu", trust_remote_code=True))
    assert seen and set(seen) == {True}


@pytest.mark.parametrize("run_id", ["../x", "..", "a/b", "/etc", "x/../../y", "%2e%2e", "a\x00b"])
def test_run_ids_from_a_url_never_become_paths(synthetic_runs_dir, run_id):
    from resdyn.core import queries
    from resdyn.core.store import open_run

    with pytest.raises(ResdynError):
        open_run(synthetic_runs_dir, run_id)
    with pytest.raises(ResdynError):
        queries.table(run_id, "layers", root=synthetic_runs_dir)
    with pytest.raises(ResdynError):
        queries.manifest(run_id, root=synthetic_runs_dir)


def test_a_hostile_run_parameter_falls_back_to_a_real_run(synthetic_runs_env):
    """The page reads ?run= through ui.select_run, which only accepts ids listed in the runs dir."""
    from streamlit.testing.v1 import AppTest

    page = ROOT / "pages" / "spectrum.py"
    at = AppTest.from_file(str(page), default_timeout=60)
    at.query_params["run"] = "../../etc/passwd"
    at.run()
    assert not at.exception
    assert any("does not exist" in w.value for w in at.sidebar.warning)
    assert at.query_params["run"] != ["../../etc/passwd"]
