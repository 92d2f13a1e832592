"""Run whole models with hooks, and call one block alone, for every architecture alike.

A block's call signature differs between families (rotary tables, masks, positional args). We do
not rebuild those by hand: a forward pre-hook records the exact arguments the model itself passed
to each block, and ``BlockCall`` replays them with a new hidden state. Isolated mode records them
from a one-token forward (position 0, so RoPE cancels in q·k); in-context mode from the sample's
own forward.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from resdyn.compute.models import ModelBundle, length_batches, pad_batch


@dataclass
class BlockCall:
    """A block plus the non-hidden arguments the model passed to it."""

    block: torch.nn.Module
    args: tuple
    kwargs: dict

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d): the block's output residual state (skip included)."""
        out = self.block(hidden, *self.args, **self.kwargs)
        return out[0] if isinstance(out, tuple) else out


def _strip(value):
    # Caches are per-forward state; a replayed block call must not read or extend one.
    from transformers.cache_utils import Cache

    return None if isinstance(value, Cache) else value


@dataclass
class Trace:
    """What one hooked forward pass saw.

    Attributes:
        calls: per block, the recorded ``BlockCall``.
        inputs: per block, its input residual state (B, T, d).
        mids: per block, the pre-MLP residual state (B, T, d).
        final: output of the last block (B, T, d) (before any final norm).
    """

    calls: list[BlockCall]
    inputs: list[torch.Tensor]
    mids: list[torch.Tensor]
    final: torch.Tensor


def traced_batches(bundle: ModelBundle, seqs: list[torch.Tensor], progress=None, desc: str = "forward"):
    """Yield (idx, chunk, Trace): every passage of ``seqs`` through ``traced_forward`` in
    length-sorted batches (``models.length_batches``), right-padded with the tokenizer's pad (else
    end-of-text) token; ``chunk`` holds the batch's unpadded token ids, whose first len(chunk[b])
    positions of row b are real. The one way the activations and trajectories stages run passages,
    so the tables the first leaves for the second are those the second would compute."""
    tok = bundle.tokenizer
    pad = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
    groups = length_batches(seqs)
    for idx in (progress(groups, desc=desc, unit="batch") if progress else groups):
        chunk = [seqs[i] for i in idx]
        ids, mask = pad_batch(chunk, pad)
        yield idx, chunk, traced_forward(bundle, ids, mask.to(bundle.device))


def traced_forward(bundle: ModelBundle, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Trace:
    """Run the model once and record each block's call, input, pre-MLP state and the final state."""
    layers = bundle.adapter.layers(bundle.model)
    n = len(layers)
    calls: list = [None] * n
    inputs: list = [None] * n
    mids: list = [None] * n
    final: dict = {}
    handles = []
    for i, block in enumerate(layers):
        def pre(mod, args, kwargs, i=i):
            hidden = args[0] if args else kwargs["hidden_states"]
            rest = args[1:] if args else ()
            kw = {k: _strip(v) for k, v in kwargs.items() if k != "hidden_states"}
            calls[i] = BlockCall(mod, tuple(_strip(a) for a in rest), kw)
            inputs[i] = hidden

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles += bundle.adapter.register_mid_hook(block, lambda s, i=i: mids.__setitem__(i, s))
    last = layers[n - 1]
    handles.append(last.register_forward_hook(
        lambda m, a, out: final.__setitem__("h", out[0] if isinstance(out, tuple) else out)))
    try:
        kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
        if bundle.adapter.causal:
            kwargs["use_cache"] = False
        if _takes_logits_to_keep(type(bundle.model)):
            # Only the blocks' states are read: the LM head over the whole vocabulary at every
            # position (49,152 × 576 per token for SmolLM2, a fifth of its forward) is skipped.
            kwargs["logits_to_keep"] = 1
        with torch.no_grad():
            bundle.model(input_ids=input_ids.to(bundle.device), **kwargs)
    finally:
        for h in handles:
            h.remove()
    return Trace(calls, inputs, mids, final["h"])


@functools.lru_cache(maxsize=None)
def _takes_logits_to_keep(cls: type) -> bool:
    """Whether ``cls.forward`` accepts transformers' ``logits_to_keep`` (causal-LM heads do)."""
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def isolated_calls(bundle: ModelBundle) -> list[BlockCall]:
    """Block calls recorded from a one-token input at position 0 (valid for any one-token state)."""
    tok = bundle.tokenizer
    tid = next((t for t in (getattr(tok, "bos_token_id", None), getattr(tok, "cls_token_id", None)) if t is not None), 0)
    return traced_forward(bundle, torch.tensor([[tid]])).calls


def isolated_fn(call: BlockCall) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(h (d,)) -> (d,): block l applied to a one-token sequence holding h (METHODS §2, isolated)."""
    def f(h: torch.Tensor) -> torch.Tensor:
        d = h.shape[-1]
        return call(h.reshape(1, 1, d)).reshape(d)

    return f


def in_context_fn(call: BlockCall, context: torch.Tensor, t_in: int = -1, t_out: int = -1) -> Callable:
    """f(x (d,)) -> (d,): block output at token ``t_out`` as a function of its input at ``t_in``,
    with every other token's input held at ``context`` (1, T, d) (METHODS §2, in-context)."""
    T = context.shape[1]
    t_in %= T
    t_out %= T

    def f(x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([context[:, :t_in], x.reshape(1, 1, -1), context[:, t_in + 1:]], dim=1)
        return call(h)[0, t_out]

    return f


def isolated_mid_fn(adapter, call: BlockCall) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(h (d,)) -> (d,): the pre-MLP state of block l on a one-token input (the attention half)."""
    def f(h: torch.Tensor) -> torch.Tensor:
        box = {}
        handles = adapter.register_mid_hook(call.block, lambda s: box.__setitem__("m", s))
        try:
            call(h.reshape(1, 1, -1))
        finally:
            for hd in handles:
                hd.remove()
        return box["m"].reshape(-1)

    return f
