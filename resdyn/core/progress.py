"""Live progress of a computation, written by the pipeline and read by the dashboard.

While ``python -m resdyn.compute run`` computes a run it keeps ``progress.json`` in the run
directory (``resdyn.core.store.PROGRESS``), rewritten atomically at most once a second:

- ``pid``, ``started`` (Unix seconds), ``updated``: who writes it and when it last did;
- ``stages``: the stages this computation runs, in order; ``stage`` the one running now and
  ``stage_started``; ``stage_seconds`` the ones it finished, with their seconds;
- ``step``, ``done``, ``total``, ``unit``: the progress bar running now inside the stage (the
  stage's own tqdm bar, e.g. "dose grid" 40 of 126);
- ``step_eta_s``: seconds left in that bar at its mean rate so far; ``eta_s``: seconds until the
  whole computation ends, from ``reference`` (median seconds of each stage in earlier runs of the
  same shape: d, L, N and Jacobian mode) plus the running bar; None when a stage still to come
  has never been timed at this shape.

The file goes when the computation ends, whatever the outcome. Liveness is never read from it:
a run is live while the pid in its ``.lock`` is alive (``store.holder``), so a file left by a
killed process is ignored (its pid differs or is gone). ``verify`` and ``list`` do not check it.
No Streamlit, no torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from resdyn.core.store import RunStore, holder, list_runs
from resdyn.errors import ResdynError

MIN_INTERVAL_S = 1.0
"""The least time between two writes of progress.json (start and end of a stage are always written)."""
SHAPE_KEYS = ("d_model", "n_layers", "n_samples", "mode")
"""Manifest keys two runs must share for one's stage seconds to estimate the other's."""


def reference_timings(store: RunStore) -> dict[str, float]:
    """Seconds each stage took in runs of the same shape (``SHAPE_KEYS``) in the same runs directory,
    the median over those runs; the run's own earlier timings count too (a ``--redo``)."""
    try:
        m = store.manifest()
    except ResdynError:
        return {}
    shape = tuple(m.get(k) for k in SHAPE_KEYS)
    seen: dict[str, list[float]] = {}
    for other in list_runs(store.path.parent):
        try:
            om = other.manifest()
        except ResdynError:
            continue
        if tuple(om.get(k) for k in SHAPE_KEYS) != shape:
            continue
        for name, sec in (om.get("timings") or {}).items():
            if isinstance(sec, (int, float)) and math.isfinite(sec) and sec >= 0:
                seen.setdefault(name, []).append(float(sec))
    return {name: float(statistics.median(v)) for name, v in seen.items()}


@dataclass
class Progress:
    """The parsed progress.json (see the module docstring for each field; times in Unix seconds)."""

    pid: int
    started: float
    updated: float
    stages: list[str]
    stage: str | None = None
    stage_started: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    step: str = ""
    done: int = 0
    total: int | None = None
    unit: str = ""
    step_eta_s: float | None = None
    eta_s: float | None = None
    reference: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Progress":
        """Parse the JSON object; raises ValueError (or KeyError/TypeError) when it is not one."""
        total = d.get("total")
        return cls(pid=int(d["pid"]), started=float(d["started"]), updated=float(d["updated"]),
                   stages=[str(s) for s in d["stages"]], stage=d.get("stage"),
                   stage_started=None if d.get("stage_started") is None else float(d["stage_started"]),
                   stage_seconds={str(k): float(v) for k, v in (d.get("stage_seconds") or {}).items()},
                   step=str(d.get("step") or ""), done=int(d.get("done") or 0),
                   total=None if total is None else int(total), unit=str(d.get("unit") or ""),
                   step_eta_s=_opt_float(d.get("step_eta_s")), eta_s=_opt_float(d.get("eta_s")),
                   reference={str(k): float(v) for k, v in (d.get("reference") or {}).items()})

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def pending(self) -> list[str]:
        """Stages of this computation not finished yet (the running one first)."""
        return [s for s in self.stages if s not in self.stage_seconds]

    def left_s(self, now: float | None = None) -> tuple[float | None, float | None]:
        """(seconds left in the running bar, seconds left in the whole computation), counted down
        from the last write to ``now``; None where unknown."""
        lag = max(0.0, (time.time() if now is None else now) - self.updated)
        return tuple(None if v is None else max(0.0, v - lag) for v in (self.step_eta_s, self.eta_s))


def _opt_float(v) -> float | None:
    return None if v is None else float(v)


def read(store: RunStore) -> Progress | None:
    """The run's progress.json, or None when there is none or it cannot be parsed."""
    raw = store.read_progress()
    if raw is None:
        return None
    try:
        return Progress.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Live:
    """A run being computed now: the pid holding its lock and, when that process writes one, its
    progress (None for a computation by an older resdyn, or one still starting)."""

    pid: int
    progress: Progress | None

    def computes(self, stage: str) -> bool:
        """Whether this computation is going to write ``stage`` (True when its plan is unknown:
        a page must not suggest computing what may already be on its way)."""
        return self.progress is None or stage in self.progress.pending()


def live(store: RunStore) -> Live | None:
    """The live computation of the run, or None when no live process holds its lock."""
    pid = holder(store.path)
    if pid is None:
        return None
    p = read(store)
    return Live(pid, p if p is not None and p.pid == pid else None)


def needs_redraw(seen_done: tuple[str, ...], now_done: tuple[str, ...], now_live: Live | None) -> bool:
    """Whether a page drawn when ``seen_done`` were the finished stages must be drawn again: a stage
    landed (or was invalidated), or the computation ended."""
    return now_live is None or tuple(now_done) != tuple(seen_done)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s < 600 else f"{round(s / 60)} min"
    return f"{s // 3600} h {round((s % 3600) / 60):02d} min"


def describe(lv: Live, now: float | None = None) -> tuple[str, float | None]:
    """(one Markdown line saying what the computation is doing and how long it has left, fraction
    of the running bar or stage done in [0, 1] or None) for a page to show."""
    now = time.time() if now is None else now
    p = lv.progress
    if p is None:
        return f"A computation (pid {lv.pid}) is writing this run; it does not report its progress.", None
    if p.stage is None:
        return f"A computation (pid {lv.pid}) is starting: {', '.join(p.stages)} to compute.", None
    i = p.stages.index(p.stage) + 1 if p.stage in p.stages else 0
    running = now - (p.stage_started or p.started)
    parts = [f"Computing **{p.stage}** (stage {i} of {len(p.stages)}), running for {_duration(running)}"]
    frac = None
    if p.step:
        count = f"{p.done:,}" + (f" of {p.total:,}" if p.total else "") + (f" {p.unit}" if p.unit else "")
        parts.append(f"{p.step}: {count}")
        if p.total:
            frac = min(1.0, p.done / p.total)
    step_left, left = p.left_s(now)
    ref = p.reference.get(p.stage)
    if frac is None and ref:  # no bar with a total: the stage's share of its usual time
        frac = min(1.0, running / ref)
    if left is not None:
        parts.append(f"about {_duration(left)} left in this computation")
    elif step_left is not None:
        parts.append(f"about {_duration(step_left)} left in this step")
    return "; ".join(parts) + ".", frac


class ProgressWriter:
    """Keeps a run's progress.json while the pipeline computes ``stages`` (names, in order).

    The pipeline calls ``start_stage``/``end_stage``; the stages' progress bars call ``step``
    (through ``RunContext.progress``), so no stage module knows about the file. ``close`` removes it.
    ``clock`` is injectable for tests.
    """

    def __init__(self, store: RunStore, stages: list[str], reference: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.time, min_interval: float = MIN_INTERVAL_S):
        self.store, self.clock, self.min_interval = store, clock, min_interval
        now = clock()
        self.state = Progress(pid=os.getpid(), started=now, updated=now, stages=list(stages),
                              reference=dict(reference or {}))
        self._last_write = -math.inf
        self._step_t0 = now
        self._step_done0 = 0
        self._write(force=True)

    def start_stage(self, name: str) -> None:
        s = self.state
        s.stage, s.stage_started = name, self.clock()
        s.step, s.done, s.total, s.unit = "", 0, None, ""
        self._write(force=True)

    def step(self, desc: str, done: int, total: int | None, unit: str = "") -> None:
        """A progress bar of the running stage moved: ``done`` of ``total`` ``unit`` (``desc`` names it)."""
        s = self.state
        if desc != s.step or done < s.done:  # a new bar: its rate is measured from here
            self._step_t0, self._step_done0 = self.clock(), int(done)
        s.step, s.done, s.total, s.unit = str(desc), int(done), None if total is None else int(total), str(unit)
        self._write()

    def end_stage(self, name: str, seconds: float) -> None:
        s = self.state
        s.stage_seconds[name] = round(float(seconds), 3)
        s.stage, s.stage_started, s.step, s.done, s.total, s.unit = None, None, "", 0, None, ""
        self._write(force=True)

    def close(self) -> None:
        """Remove progress.json (the computation ended, finished or not)."""
        with contextlib.suppress(OSError):
            self.store.clear_progress()

    # -- estimates ----------------------------------------------------------------------------
    def _estimate(self, now: float) -> None:
        """The running bar's time left at its mean rate since it began,
        and the computation's: the running stage's (its reference seconds minus its time so far,
        at least the bar's) plus the reference seconds of every stage still to come."""
        s = self.state
        s.step_eta_s = None
        progressed = s.done - self._step_done0
        if s.total and progressed > 0 and now > self._step_t0:
            s.step_eta_s = (s.total - s.done) * (now - self._step_t0) / progressed
        if s.stage is None:
            current = 0.0
        else:
            ref = s.reference.get(s.stage)
            elapsed = now - (s.stage_started or now)
            current = (max(ref - elapsed, s.step_eta_s or 0.0) if ref is not None else s.step_eta_s)
        later = [s.reference.get(n) for n in s.pending() if n != s.stage]
        s.eta_s = None if current is None or None in later else max(0.0, current + sum(later))

    def _write(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_write < self.min_interval:
            return
        self.state.updated = now
        self._estimate(now)
        self._last_write = now
        try:
            self.store.write_progress(self.state.to_dict())
        except (OSError, ResdynError):  # a full or read-only disk must fail on a result file, not here
            pass

