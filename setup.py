"""Build hook: the wheel carries the dashboard (app.py, pages/, .streamlit/config.toml).

Everything else about the package is in pyproject.toml. The dashboard's files stay at the
repository's top level, where `streamlit run app.py` and the tests use them; ``build_py`` copies
them into ``resdyn/dashboard/`` of the build, where ``resdyn.dashboard.app_dir`` finds them in an
installed wheel, so that `resdyn serve` works from any directory.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def dashboard_files() -> list[Path]:
    """The files the installed dashboard needs, relative to the repository root."""
    files = [Path("app.py"), Path(".streamlit/config.toml")]
    files += sorted(p.relative_to(ROOT) for p in (ROOT / "pages").glob("*.py"))
    return files


class BuildPyWithDashboard(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "resdyn" / "dashboard"
        for rel in dashboard_files():
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, dest)


setup(cmdclass={"build_py": BuildPyWithDashboard})
