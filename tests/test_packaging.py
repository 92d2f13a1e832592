"""The wheel: dependencies and extras declared, one `resdyn` console script, and a dashboard that
serves from an installed copy in any directory.

The wheel is built from a copy of the sources (the build writes build/ and *.egg-info next to
them), installed with no dependencies into a fresh virtualenv whose only link to this one is a
``.pth`` line naming this environment's site-packages (so the dependencies are reused, and
nothing of this checkout is importable there), and driven from a directory outside the checkout.
About 30 s on the 2-core machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from resdyn import __version__
from tests.conftest import RANDOM_RUN, TRAINED_RUN
from tests.e2e.serve import free_port

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("resdyn", "app.py", "pages", ".streamlit", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, virtualenv directory, a working directory outside the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True)
    wheel, = (tmp / "dist").glob("resdyn-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "reuse-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, venv, work


def _run(venv: Path, work: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(work), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(args, cwd=work, env=environ, capture_output=True, text=True, timeout=180)


def test_wheel_declares_dependencies_extras_and_the_console_script(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    requires = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    core = sorted(r.split(">=")[0] for r in requires if ";" not in r)
    assert core == ["duckdb", "numpy", "pandas", "pyarrow", "scipy"]
    extras = {line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Provides-Extra: ")}
    assert extras == {"compute", "dashboard", "ray", "infomap", "export", "test", "all"}
    assert any(r.startswith("torch>=") and 'extra == "compute"' in r for r in requires)
    assert any(r.startswith("streamlit>=") and 'extra == "dashboard"' in r for r in requires)
    # Lower bounds are the lock's pins.
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for r in requires:
        name, _, rest = r.partition(">=")
        if rest:
            assert rest.split(";")[0].strip() == pins[name], r
    assert "resdyn = resdyn.compute.cli:main" in entry
    pages = sorted(p.name for p in (ROOT / "pages").glob("*.py"))
    assert "resdyn/dashboard/app.py" in names and "resdyn/dashboard/.streamlit/config.toml" in names
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("resdyn/dashboard/pages/")) == pages


def test_installed_command_runs_outside_the_checkout(installed, synthetic_runs_dir):
    _, venv, work = installed
    out = _run(venv, work, "resdyn", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"resdyn {__version__}", out.stderr
    out = _run(venv, work, "python", "-c", "import resdyn; print(resdyn.__file__)")
    assert out.stdout.strip().startswith(str(venv)), "the installed copy must be the one imported"
    out = _run(venv, work, "resdyn", "list", "--runs-dir", str(synthetic_runs_dir))
    assert out.returncode == 0 and TRAINED_RUN in out.stdout and RANDOM_RUN in out.stdout, out.stderr
    out = _run(venv, work, "resdyn", "list", "--runs-dir", "nowhere")
    assert out.returncode == 1 and out.stderr.startswith("resdyn: error: runs directory nowhere does not exist")


def test_installed_dashboard_renders_under_apptest(installed, synthetic_runs_dir):
    _, venv, work = installed
    script = (
        "from streamlit.testing.v1 import AppTest\n"
        "from resdyn import dashboard\n"
        "print(dashboard.app_path())\n"
        "at = AppTest.from_file(str(dashboard.app_path()), default_timeout=120).run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print([t.value for t in at.title], at.sidebar.selectbox[0].options)\n"
        "at.switch_page('pages/spectrum.py').run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print([t.value for t in at.title], len(at.get('plotly_chart')))\n")
    out = _run(venv, work, "python", "-c", script, RESDYN_RUNS_DIR=str(synthetic_runs_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    app, runs_page, spectrum = out.stdout.strip().splitlines()
    assert app.startswith(str(venv)) and app.endswith("resdyn/dashboard/app.py")
    assert runs_page == f"['Runs'] ['{RANDOM_RUN}', '{TRAINED_RUN}']"
    title, n_charts = spectrum.rsplit(" ", 1)
    assert "Spectrum" in title and int(n_charts) >= 1


def test_installed_serve_starts_the_dashboard(installed, synthetic_runs_dir):
    _, venv, work = installed
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(work), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(["resdyn", "serve", "--runs-dir", str(synthetic_runs_dir), "--port", str(port)],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        # `resdyn serve` became Streamlit (exec): a SIGTERM stops the server itself, no orphan.
        assert b"streamlit\x00run" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        proc.terminate()
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
