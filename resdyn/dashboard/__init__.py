"""Where the dashboard's files are and how ``resdyn serve`` starts it, in a checkout or a wheel.

The Streamlit app is the repository's top-level ``app.py`` (the navigation) and ``pages/`` (one
file per page), with ``.streamlit/config.toml`` (safe server defaults). A wheel carries copies of
those files inside this package, made by ``setup.py`` at build time, so that ``resdyn serve``
works from any directory; in a checkout (or an editable install) they are read where they are.
The pages import everything else from ``resdyn``, so both copies run the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from resdyn.errors import ResdynError

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]  # resdyn/dashboard -> the repository root


def app_dir() -> Path:
    """The directory holding ``app.py``, ``pages/`` and ``.streamlit/``: this package's copy in
    an installed wheel, else the checkout's root."""
    for root in (HERE, CHECKOUT):
        if (root / "app.py").is_file() and (root / "pages").is_dir():
            return root
    raise ResdynError(f"the dashboard's app.py is neither in {HERE} nor in {CHECKOUT}; reinstall resdyn "
                      "with its dashboard extra: pip install 'resdyn[dashboard]'")


def app_path() -> Path:
    """``app.py``, the dashboard's entry (``streamlit run`` it, or ``AppTest.from_file`` it)."""
    return app_dir() / "app.py"


def command(address: str = "127.0.0.1", port: int = 8501, extra: tuple[str, ...] = ()) -> list[str]:
    """The ``streamlit run`` command line of the dashboard, run by this Python."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.address", address,
            "--server.port", str(port), "--server.headless", "true", *extra]


def serve(runs_dir: str | os.PathLike, address: str = "127.0.0.1", port: int = 8501,
          extra: tuple[str, ...] = (), replace_process: bool = False) -> int:
    """Serve the dashboard on ``runs_dir`` in the foreground; Streamlit's exit status.

    Streamlit reads ``.streamlit/config.toml`` from its working directory, so it runs in
    ``app_dir()``; ``RESDYN_RUNS_DIR`` is made absolute for that reason. With ``replace_process``
    (`resdyn serve`) this process becomes Streamlit (exec), so that a SIGTERM from a supervisor or
    ``docker stop`` reaches the server itself and leaves no orphan behind; otherwise Streamlit is
    a child process (``make demo`` stops its background computation when the server ends).
    """
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise ResdynError("the dashboard needs Streamlit: pip install 'resdyn[dashboard]'")
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        raise ResdynError(f"runs directory {root} does not exist; pass --runs-dir or set RESDYN_RUNS_DIR")
    env = dict(os.environ, RESDYN_RUNS_DIR=str(root.resolve()))
    cmd = command(address, port, extra)
    if replace_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(app_dir())
        os.execve(cmd[0], cmd, env)  # does not return
    return subprocess.call(cmd, env=env, cwd=app_dir())
