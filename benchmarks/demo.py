"""Seconds of ``make demo`` from an empty runs directory: first picture, first chart, each of the four runs, each stage.

    python benchmarks/demo.py                  # what `make bench-demo` runs (fresh model cache too)
    python benchmarks/demo.py --keep-cache     # reuse ~/.cache/resdyn (no GGUF conversion)
    python benchmarks/demo.py --samples 16     # a quicker, smaller demo

It starts ``python -m resdyn.demo`` as a user would, on a temporary runs directory and (unless
``--keep-cache``) a temporary ``RESDYN_CACHE``, so the one-time GGUF → safetensors conversion of
the model is included, like on a fresh machine. Then it watches, every half second:

- the dashboard: the first time ``/_stcore/health`` answers, and (with Playwright and Debian's
  ``chromium``, as the browser tests use) the first time the Runs page has finished drawing in a
  headless browser: the **first picture**;
- the model cache: when the converted copy appears (the conversion's end);
- each run's ``manifest.json``: when each stage lands and when the run has its demo stages (every
  stage for the trained run and the seed-0 twin, ``CLAIM_STAGES`` for twin seeds 1 and 2);
- the **first chart**: once the trained run's ``spectra`` stage is done, the Spectrum page is
  opened in the browser and timed until plotly has drawn its first chart (without a browser: the
  moment the stage is done, when the page can draw).

When every run has its demo stages it stops the demo as Ctrl-C would and prints the times from the
start, each stage's seconds from the manifests, the CPU seconds of the whole process tree and the
load average before and after (the machine may be shared: compare like with like).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resdyn import demo, stages  # noqa: E402

READY = "[data-testid='stApp'][data-test-script-state='notRunning']"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def manifest(runs: Path, run_id: str) -> dict:
    try:
        return json.loads((runs / run_id / "manifest.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return {}


def computing(pid: int) -> bool:
    """Whether a descendant of ``pid`` is a ``resdyn.demo`` process (the background or its children)."""
    parent, cmd = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
            cmd[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in seen]
        seen.update(kids)
        todo.extend(kids)
    return any(b"resdyn.demo" in cmd.get(c, b"") for c in seen)


class Browser:
    """A headless chromium page (Playwright), or nothing when either is missing."""

    def __init__(self):
        self.page = None
        chromium = shutil.which("chromium")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            return
        if chromium is None:
            return
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        self.page = self._browser.new_page(viewport={"width": 1400, "height": 1600})

    def drawn(self, url: str, selector: str, timeout_s: float) -> bool:
        """Open ``url`` and wait until the script run has ended and ``selector`` is in the DOM;
        False when that takes longer than ``timeout_s``."""
        from playwright.sync_api import Error

        try:
            self.page.goto(url, timeout=timeout_s * 1000)
            self.page.wait_for_timeout(300)
            self.page.wait_for_selector(READY, timeout=timeout_s * 1000)
            self.page.wait_for_selector(selector, timeout=timeout_s * 1000)
        except Error as exc:
            print(f"browser: {url}: {str(exc).splitlines()[0]}", flush=True)
            return False
        return True

    def close(self) -> None:
        if self.page is not None:
            self._browser.close()
            self._pw.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--model", default=None, help="another model for the demo runs (a smoke test; default the demo's)")
    ap.add_argument("--corpus", default=None, help="another corpus (default the demo's)")
    ap.add_argument("--keep-cache", action="store_true", help="reuse the model cache (no GGUF conversion)")
    ap.add_argument("--work-dir", type=Path, default=None, help="keep the runs and the log here (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    ap.add_argument("--no-browser", action="store_true", help="time from the manifests only")
    ns = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="resdyn-bench-demo-")
    work = ns.work_dir or Path(tmp.name)
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if not ns.keep_cache:
        env["RESDYN_CACHE"] = str(work / "cache")
    cache = Path(env.get("RESDYN_CACHE", Path.home() / ".cache" / "resdyn"))
    converted = cache / "models" / "smollm2-135m" / "config.json"
    had_model = converted.is_file()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_ids = [r.run_id for r in demo.RUNS]
    trained = run_ids[0]
    browser = None if ns.no_browser else Browser()
    if browser is not None and browser.page is None:
        browser = None

    load_before = os.getloadavg()
    log = open(work / "demo.log", "w")
    t0 = time.perf_counter()
    extra = [*(["--model", ns.model] if ns.model else []), *(["--corpus", ns.corpus] if ns.corpus else [])]
    proc = subprocess.Popen([sys.executable, "-m", "resdyn.demo", "--runs-dir", str(runs), "--samples", str(ns.samples),
                             "--port", str(port), *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    marks: dict[str, float] = {}
    stage_done: dict[tuple[str, str], float] = {}

    def mark(name: str) -> None:
        if name not in marks:
            marks[name] = time.perf_counter() - t0
            print(f"{marks[name]:8.1f} s  {name}", flush=True)

    try:
        while time.perf_counter() - t0 < ns.timeout:
            if proc.poll() is not None:
                raise SystemExit(f"the demo ended early (exit {proc.returncode}); log: {work / 'demo.log'}")
            if "dashboard answers" not in marks and healthy(url):
                mark("dashboard answers")
            if "dashboard answers" in marks and "first picture" not in marks:
                if browser is None or browser.drawn(f"{url}/", "[data-testid='stMain']", 300):
                    mark("first picture")  # the Runs page has run to its end in the browser
                else:
                    browser = None
            if not had_model and converted.is_file():
                mark("model converted")
            for r in demo.RUNS:
                m = manifest(runs, r.run_id)
                for name in m.get("stages_done", []):
                    if (r.run_id, name) not in stage_done:
                        stage_done[r.run_id, name] = time.perf_counter() - t0
                        mark(f"{r.run_id}: {name} done")
                if set(r.stages) <= set(m.get("stages_done", [])):
                    mark(f"{r.run_id} done")
            if (trained, "spectra") in stage_done and "first chart" not in marks:
                if browser is None or browser.drawn(f"{url}/spectrum?run={trained}", ".js-plotly-plot .main-svg", 600):
                    mark("first chart")
                else:
                    raise SystemExit("the Spectrum page drew no chart after the spectra stage; see the log")
            if all(f"{r} done" in marks for r in run_ids):
                mark("whole demo")
                # Let the background processes end on their own, so that their CPU time is counted.
                deadline = time.perf_counter() + 120
                while computing(proc.pid) and time.perf_counter() < deadline:
                    time.sleep(0.5)
                break
            time.sleep(0.5)
        else:
            print(f"gave up after {ns.timeout:.0f} s", flush=True)
    finally:
        if proc.poll() is None:  # stop it as Ctrl-C in its terminal would: its whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        # Reaped children only so far: the demo's tree, not the browser's (closed after).
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        if browser is not None:
            browser.close()
    load_after = os.getloadavg()

    print()
    print(f"make demo from an empty runs directory ({ns.samples} samples; model cache "
          f"{'kept' if ns.keep_cache else 'empty: GGUF conversion included'}; {os.cpu_count()} CPUs; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after)")
    for name in ("dashboard answers", "first picture", "model converted", "first chart",
                 *(f"{r} done" for r in run_ids), "whole demo"):
        if name in marks:
            print(f"  {name:34s} {marks[name]:8.1f} s")
    print(f"  {'CPU seconds of the demo (all processes)':34s} {cpu.ru_utime + cpu.ru_stime:8.1f} s")
    print()
    print("| stage | " + " | ".join(f"{r} (s)" for r in run_ids) + " |")
    print("|---|" + "---:|" * len(run_ids))
    timings = {r: manifest(runs, r).get("timings", {}) for r in run_ids}
    for name in stages.names():
        cells = [f"{timings[r][name]:.0f}" if name in timings[r] else "–" for r in run_ids]
        print(f"| {name} | " + " | ".join(cells) + " |")
    totals = [sum(timings[r].values()) for r in run_ids]
    print("| **sum** | " + " | ".join(f"**{t:.0f}**" for t in totals) + " |")
    tmp.cleanup()
    return 0 if "whole demo" in marks else 1


if __name__ == "__main__":
    raise SystemExit(main())
