"""What a stage sees: settings, the run store, the model (loaded lazily, once) and progress bars."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tqdm.auto import tqdm

from resdyn.config import RunConfig, resolve_k
from resdyn.core.store import RunStore


@dataclass
class RunContext:
    cfg: RunConfig
    store: RunStore
    quiet: bool = False
    _bundle: Any = field(default=None, repr=False)
    _texts: list | None = field(default=None, repr=False)
    origin: dict | None = None  # where an injected model came from (resdyn.analyze), for the manifest

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
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=self.quiet, dynamic_ncols=True, leave=True)
