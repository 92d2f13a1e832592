"""``resdyn.analyze``: a run of an already-loaded transformers model on a list of strings.

The run goes through the CLI's pipeline (``pipeline.run``) with the model and the passages put
into the ``RunContext`` in place of the ones ``RunConfig.model``/``corpus`` would load, so it
writes the same files, resumes the same way (finished stages are skipped) and, with the same
weights and texts, gives the same Jacobians as ``resdyn run`` (tests/compute/test_analyze.py).

The model is borrowed: for the computation it is put in eval mode with frozen weights, in the
run's device and precision, with the attention kernel the CLI uses (``models.attention_for``);
afterwards every parameter and buffer gets its own device, dtype and ``requires_grad`` back,
every module its training flag, and the model its attention implementation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import torch

from resdyn.api import Run
from resdyn.config import RunConfig
from resdyn.errors import ResdynError, UsageError

# RunConfig fields that analyze sets itself or that name what the caller already passes in.
_NOT_SETTINGS = {"model", "revision", "init", "corpus", "samples", "trust_remote_code", "run_id", "runs_dir",
                 "stages", "mode", "device", "dtype", "executor", "address", "workers"}
CORPUS_PREFIX = "texts:"
"""``RunConfig.corpus`` of an analyze run: ``texts:`` + the first 16 hex digits of the texts' SHA-256,
so that resuming with other texts is refused like resuming with another corpus."""


def settings() -> list[str]:
    """The ``**settings`` analyze accepts: RunConfig fields (the CLI's flags, underscored)."""
    return sorted(f.name for f in dataclasses.fields(RunConfig) if f.name not in _NOT_SETTINGS)


def texts_digest(texts: list[str]) -> str:
    """SHA-256 (hex) of the passages, each length-prefixed so that no two lists collide."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def analyze(model, tokenizer, texts: list[str], *, run_id: str, runs_dir: str | os.PathLike | None = None,
            stages: str | list[str] | None = None, mode: str = "isolated", device: str | None = None,
            dtype: str | None = None, quiet: bool = False, **settings_) -> Run:
    """Compute (or resume) run ``run_id`` of ``model`` on ``texts`` and return it as a ``Run``.

    Args:
        model: a loaded transformers ``PreTrainedModel`` of a supported family, as the CLI loads
            it: ``AutoModelForCausalLM`` for decoders, ``AutoModel`` for encoders (BERT).
        tokenizer: its tokenizer (called as ``tokenizer(texts, truncation=True, max_length=...)``).
        texts: the N passages, in order; the analysed token of each is its last (or a seeded one:
            ``position="random"``). N = len(texts).
        run_id: the run's name, ``[A-Za-z0-9_.-]+``.
        runs_dir: where the run is written (created if needed); default ``$RESDYN_RUNS_DIR`` or
            ``./data/runs``.
        stages: stages to compute, e.g. "activations,jacobians,spectra" or a list (default: all).
        mode: "isolated" (the paper's one-token block) or "in-context".
        device: torch device of the computation, e.g. "cpu", "cuda:0"; default the model's own.
        dtype: "float32" (default) or "float64", the precision of activations and Jacobians.
        quiet: no progress bars.
        **settings: any other run setting (``resdyn.compute.analyze.settings()``): seed, k,
            cumulative_rank, batch_size, position, communities, coupling_samples, ...

    The manifest records the model's origin: ``origin = {"via": "resdyn.analyze", "name_or_path",
    "class", "dtype" (the model's own), "texts_sha256"}``; ``model`` is its ``name_or_path``
    (the class name when empty). Calling analyze again with the same run_id resumes: finished
    stages are skipped; other texts or settings are refused (UsageError).
    """
    from resdyn.compute import pipeline
    from resdyn.compute.adapters import adapter_for
    from resdyn.compute.models import attention_for, prepare, resolve_device

    texts = _check_texts(texts)
    unknown = sorted(set(settings_) - set(settings()))
    if unknown:
        raise UsageError(f"analyze got unknown setting(s) {', '.join(unknown)}; settings: {', '.join(settings())}")
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None:
        raise UsageError(f"analyze needs a loaded transformers model (a PreTrainedModel), not {type(model).__name__}")
    adapter = adapter_for(config)
    try:
        adapter.layers(model)
    except AttributeError:
        kind = "AutoModelForCausalLM" if adapter.causal else "AutoModel"
        raise UsageError(f"{type(model).__name__} has no {adapter.layers_path}: pass the model as "
                         f"{kind}.from_pretrained(...) loads it") from None
    own = _own_placement(model)
    name = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "") or type(model).__name__
    digest = texts_digest(texts)
    if isinstance(stages, (list, tuple)):
        stages = ",".join(stages)
    cfg = RunConfig(model=str(name), corpus=CORPUS_PREFIX + digest[:16], samples=len(texts), mode=mode,
                    dtype=dtype or "float32", device=device or str(own[0]), stages=stages or None,
                    runs_dir=Path(runs_dir).expanduser() if runs_dir is not None else None, run_id=run_id,
                    **settings_)
    origin = {"via": "resdyn.analyze", "name_or_path": str(name),
              "class": f"{type(model).__module__}.{type(model).__qualname__}", "dtype": str(own[1]),
              "texts_sha256": digest}
    tdtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    with _borrowed(model, attention_for(tdtype)) as handles:
        bundle = prepare(model, tokenizer, adapter, resolve_device(cfg.device), tdtype, handles)
        store = pipeline.run(cfg, quiet=quiet, bundle=bundle, texts=texts, origin=origin)
    return Run(store)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise UsageError("texts must be a list of strings (one passage each), not a single string")
    texts = list(texts)
    if not texts:
        raise UsageError("texts is empty: give at least one passage")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise UsageError(f"texts[{i}] must be a non-empty string, got {t!r:.40}")
    return texts


def _own_placement(model) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's parameters; one device only."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        raise UsageError(f"{type(model).__name__} has no floating-point parameters")
    devices = {p.device for p in params}
    if len(devices) > 1 or len(set((getattr(model, "hf_device_map", None) or {}).values())) > 1:
        raise UsageError("the model is spread over several devices; load it on one device (no device_map) "
                         "and pass device= to choose where resdyn computes")
    return params[0].device, params[0].dtype


class _borrowed:
    """Context manager: remember the model's state, hand back a list for hook handles, restore all.

    Restored on exit: each parameter's and buffer's device and dtype (exact: float32 -> float64
    -> float32 and bfloat16 -> float32 -> bfloat16 are lossless), ``requires_grad``, each module's
    training flag, the attention implementation; the hooks whose handles were collected go.
    """

    def __init__(self, model, attention: str):
        self.model, self.attention = model, attention

    def __enter__(self) -> list:
        m = self.model
        self.training = [(mod, mod.training) for mod in m.modules()]
        self.params = [(mod, n, p.device, p.dtype, p.requires_grad)
                       for mod in m.modules() for n, p in mod._parameters.items() if p is not None]
        self.buffers = [(mod, n, b.device, b.dtype)
                        for mod in m.modules() for n, b in mod._buffers.items() if b is not None]
        self.attn = getattr(m.config, "_attn_implementation", None)
        self.handles: list = []
        if self.attn is not None and self.attn != self.attention:
            try:
                m.set_attn_implementation(self.attention)
            except (AttributeError, ValueError, ImportError) as exc:
                raise ResdynError(f"cannot switch {type(m).__name__} to {self.attention} attention, which resdyn's "
                                  f"Jacobians need: {str(exc).splitlines()[0]}") from exc
        return self.handles

    def __exit__(self, *exc) -> None:
        m = self.model
        for h in self.handles:
            h.remove()
        with torch.no_grad():
            for mod, n, device, dtype, grad in self.params:
                p = mod._parameters[n]
                if p.device != device or p.dtype != dtype:
                    p.data = p.data.to(device=device, dtype=dtype)
                p.requires_grad_(grad)
            for mod, n, device, dtype in self.buffers:
                b = mod._buffers.get(n)
                if b is not None and (b.device != device or b.dtype != dtype):
                    mod._buffers[n] = b.to(device=device, dtype=dtype)
        for mod, flag in self.training:
            mod.training = flag  # per module: a caller may have frozen some in eval mode
        if self.attn is not None and getattr(m.config, "_attn_implementation", None) != self.attn:
            m.set_attn_implementation(self.attn)
