"""What a stage sees: settings, the run store, the model (loaded lazily, once) and progress bars.

A progress bar also reports each step to ``report`` when the pipeline sets it (the run's
progress.json, ``resdyn.core.progress``), so stage modules only ever call ``ctx.progress``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from resdyn.config import RunConfig, resolve_k
from resdyn.core.store import RunStore


@dataclass
class RunContext:
    cfg: RunConfig
    store: RunStore
    quiet: bool = False
    report: Callable[[str, int, int | None, str], None] | None = field(default=None, repr=False)
    """Called as report(desc, done, total, unit) whenever a progress bar moves (None: nobody listens)."""
    _bundle: Any = field(default=None, repr=False)
    _texts: list | None = field(default=None, repr=False)
    origin: dict | None = None  # where an injected model came from (resdyn.analyze), for the manifest
    planned: frozenset = frozenset()
    """Stages this invocation computes, and those its caller computes next (``pipeline.run``'s
    ``ahead``): a stage may prepare work for a later one only when that one is planned."""

    @property
    def manifest(self) -> dict:
        return self.store.manifest()

    @property
    def k(self) -> int:
        return resolve_k(self.cfg.k, self.manifest["d_model"])

    def model(self):
        """The loaded ``ModelBundle`` (model, tokenizer, adapter), loaded on first use."""
        if self._bundle is None:
            from resdyn.compute.models import load_bundle

            self._bundle = load_bundle(self.cfg)
        return self._bundle

    def texts(self) -> list[str]:
        if self._texts is None:
            from resdyn.compute.corpus import load_corpus

            self._texts = load_corpus(self.cfg.corpus, self.cfg.samples)
        return self._texts

    def progress(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None, unit: str = "it"):
        """A tqdm bar over ``iterable`` (or a manual one, ``.update(n)``), hidden when quiet."""
        if self.report is None:
            return tqdm(iterable, desc=desc, total=total, unit=unit, disable=self.quiet, dynamic_ncols=True, leave=True)
        return _ReportingBar(iterable, desc, total, unit, self.quiet, self.report)


class _ReportingBar:
    """A tqdm bar whose every step is also passed to ``report(desc, done, total, unit)``.

    Counts on its own, so it reports under ``--quiet`` too (a disabled tqdm counts nothing).
    Iterating counts an item once the loop body has finished with it, as tqdm does.
    """

    def __init__(self, iterable, desc: str, total: int | None, unit: str, quiet: bool, report):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit, self.n = iterable, desc, total, unit, 0
        self._report = report
        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=quiet, dynamic_ncols=True, leave=True)
        report(desc, 0, total, unit)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._bar.update(n)
        self._report(self.desc, self.n, self.total, self.unit)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):  # anything else a stage may use (set_postfix, ...) is tqdm's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._bar, name)
