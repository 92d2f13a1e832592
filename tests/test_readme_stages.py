"""The README's stage table is the registry's (``resdyn.stages.markdown_table``), line for line."""

from __future__ import annotations

from pathlib import Path

from resdyn import stages

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_table() -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| stage | reads (stages) | writes | code |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_readme_stage_table_is_generated_from_the_registry():
    assert _readme_table() == stages.markdown_table().splitlines(), \
        "README stage table is stale: regenerate it with `python -m resdyn.stages`"


def test_every_stage_module_is_named_after_its_stage_and_declares_it():
    import importlib

    root = Path(stages.__file__).parent / "compute" / "stages"
    modules = {p.stem for p in root.glob("*.py")} - {"__init__"}
    assert modules == set(stages.names()), "one module per stage, named after it"
    for s in stages.STAGES:
        module, fn = s.function.split(":")
        assert module == f"resdyn.compute.stages.{s.name}" and fn == "run"
        mod = importlib.import_module(module)
        assert mod.STAGE.name == s.name and callable(mod.run)


def test_no_stage_imports_another_stage():
    import ast

    root = Path(stages.__file__).parent / "compute" / "stages"
    for s in stages.STAGES:
        tree = ast.parse((root / f"{s.name}.py").read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        others = {f"resdyn.compute.stages.{n}" for n in stages.names() if n != s.name}
        assert not imported & others, f"stage {s.name} imports {sorted(imported & others)}"


def test_upstream_is_the_transitive_inputs_in_order():
    assert stages.upstream("spectra") == ["activations", "jacobians", "spectra"]
    # The per-sample statistics read only the activations (and the model): the spectra, and with
    # them the demo's first views, do not wait for them, and they come after the spectra in a run.
    assert stages.upstream("sample_stats") == ["activations", "sample_stats"]
    assert stages.names().index("sample_stats") == stages.names().index("spectra") + 1
    assert stages.upstream("pseudospectra") == ["activations", "jacobians", "schur", "pseudospectra"]
    assert stages.upstream("topology_coupling") == ["activations", "jacobians", "spectra", "communities",
                                                    "topology_coupling"]
