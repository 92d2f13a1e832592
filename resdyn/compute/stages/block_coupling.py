"""Stage "block_coupling" (METHODS §9, the second paper): block coupling across depth and tokens.

It computes residual in-context Jacobians
J^l_{t1 t2} = ∂f^l(X)_{t2} / ∂x_{t1} (the block's output at token t2 as a function of its input at
token t1, the rest of the sequence held at its true values, the skip's identity removed) on a
subset of prompts (``--coupling-samples``: the first S passages, each cut to its first
``--coupling-tokens`` P tokens, which for a causal model are exactly the passage's own states), by
default for the last token's own trajectory (t1 = t2 = last); with ``--coupling-window w ≥ 2``
for every t1 ≤ t2 among the last w tokens as well. From them, ``resdyn.core.trajectory`` gives the
normalised miscoupling of the coupling matrices A = U_bᵀ J_a V_b for K ∈ {10, 30, 50} (K < d):

- depth-wise: J^l_{tt} against J^{l'}_{tt} for every layer pair (t = last token);
- token-wise (window only, same layer): self (J_{tt} vs J_{t't'}), fixed input (J_{t1 t2} vs
  J_{t1 t2'}) and fixed output (J_{t1 t2} vs J_{t1' t2}).

Writes ``block_coupling.parquet`` (kind, K, layer_a, layer_b, token_a, token_b, token_fixed,
sample, aggregate, n, miscoupling): one row per sample and, with ``aggregate`` true and sample −1,
the mean over samples. Tokens are counted from the end of the prompt (−1 = last token), so rows
of prompts of different lengths line up. ``layer_a``/``token_a`` name the Jacobian J_a that is
measured, ``layer_b``/``token_b`` the one whose singular basis is used; ``token_fixed`` is the
shared input (fixed_input) or output (fixed_output) token, null otherwise. Summary rows
``block_coupling.*``: the mean miscoupling over layer pairs l ≠ l' per K and the run's coupling
score 1 − mean m̃ (K = 30, or the largest K < d). ``block_coupling_A.npy`` (L, L, K_max, K_max)
float32 holds the first prompt's depth-wise coupling matrices, [l, l'] = U_{l'}ᵀ J^l V_{l'}.

Cost. A generic in-context Jacobian costs d backward passes through the block over all T tokens.
For decoders we feed the block only the suffix from token t1 on and hand it the other tokens'
keys and values of that layer as a read-only cache (the model's own KV cache from a forward over
the prefix): the same function of x_{t1}, exact (tests hold it equal to the full-sequence
``in_context_fn``), at a fraction of the cost. Encoders (BERT) use the full sequence. Each finished
sample is checkpointed under ``.partial/block_coupling/``.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pandas as pd
import scipy.linalg as sl
import torch
from threadpoolctl import threadpool_limits
from torch.func import jacrev

from resdyn.compute.blocks import BlockCall, traced_forward
from resdyn.compute.models import tokenize
from resdyn.compute.stages import stages_in
from resdyn.core import block_coupling as bc
from resdyn.core import trajectory as tj
from resdyn.core.store import RunStore
from resdyn.errors import ResdynError

# Names under which decoder blocks take their KV cache, across the supported families.
_CACHE_ARGS = ("past_key_values", "layer_past", "past_key_value")


# ------------------------------------------------------------------------------------------------
# In-context Jacobians with a read-only prefix cache
# ------------------------------------------------------------------------------------------------

class FrozenPrefix:
    """A read-only stand-in for one layer of a KV cache: ``update`` returns the stored prefix keys
    and values with the new ones appended, and stores nothing (a replayed block may run many
    times, under vmap, and must not grow a real cache)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class _WithCache(torch.nn.Module):
    """The model, called with a given ``past_key_values`` (so that ``traced_forward`` records the
    block calls of a suffix step: its positions, rotary tables and mask)."""

    def __init__(self, model: torch.nn.Module, cache):
        super().__init__()
        self.inner = model
        self._cache = cache

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:  # adapter paths such as "model.layers" resolve on the real model
            return getattr(self.inner, name)

    def forward(self, **kwargs):
        return self.inner(**kwargs, past_key_values=self._cache)


def _cache_arg(block: torch.nn.Module) -> str | None:
    params = inspect.signature(block.forward).parameters
    return next((n for n in _CACHE_ARGS if n in params), None)


def _with_cache(call: BlockCall, frozen: FrozenPrefix) -> BlockCall:
    """The recorded call with its (stripped) cache argument replaced by ``frozen``, all by keyword."""
    sig = inspect.signature(call.block.forward)
    first = next(iter(sig.parameters))
    bound = sig.bind_partial(None, *call.args, **call.kwargs)
    kwargs = {}
    for name, value in bound.arguments.items():
        if name == first:
            continue
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    kwargs[_cache_arg(call.block)] = frozen
    return BlockCall(call.block, (), kwargs)


@dataclasses.dataclass
class InputSite:
    """What the Jacobians with respect to one input token t1 need, for every layer.

    Attributes:
        t1: absolute position of the perturbed input token.
        offset: absolute position of index 0 of ``inputs`` (t1 with a prefix cache, else 0).
        calls: per block, the call to replay (with the prefix cache bound when offset > 0).
        inputs: per block, its input states at positions offset..T−1, (1, T − offset, d).
    """

    t1: int
    offset: int
    calls: list[BlockCall]
    inputs: list[torch.Tensor]


def prefix_site(bundle, ids: torch.Tensor, t1: int) -> InputSite | None:
    """The site of token t1 using the model's KV cache of tokens < t1, or None when the
    architecture cannot (encoder, no cache argument, or t1 = 0)."""
    layers = bundle.adapter.layers(bundle.model)
    if not bundle.adapter.causal or t1 == 0 or _cache_arg(layers[0]) is None:
        return None
    ids = ids.reshape(1, -1).to(bundle.device)
    with torch.no_grad():
        cache = bundle.model(input_ids=ids[:, :t1], use_cache=True).past_key_values
    cache_layers = getattr(cache, "layers", None)
    if cache_layers is None or len(cache_layers) != len(layers):
        return None
    frozen = [FrozenPrefix(c.keys.clone(), c.values.clone()) for c in cache_layers]
    trace = traced_forward(dataclasses.replace(bundle, model=_WithCache(bundle.model, cache)), ids[:, t1:])
    calls = [_with_cache(c, f) for c, f in zip(trace.calls, frozen)]
    return InputSite(t1, t1, calls, trace.inputs)


def full_site(bundle, ids: torch.Tensor, t1: int, trace=None) -> InputSite:
    """The site of token t1 replaying the block over the whole sequence (any architecture)."""
    if trace is None:
        trace = traced_forward(bundle, ids.reshape(1, -1))
    return InputSite(t1, 0, trace.calls, trace.inputs)


def input_site(bundle, ids: torch.Tensor, t1: int, trace=None) -> InputSite:
    """The cheapest exact site for token t1: a prefix cache where possible, else the full sequence."""
    return prefix_site(bundle, ids, t1) or full_site(bundle, ids, t1, trace)


def residual_jacobians(site: InputSite, layer: int, t2s: list[int], row_chunk: int | None = None) -> torch.Tensor:
    """J^l_{t1 t2} for the outputs t2 in ``t2s`` (absolute positions, each ≥ t1 for decoders):
    (len(t2s), d, d) with rows = outputs, columns = inputs, the identity of the skip removed at
    t2 = t1 (the paper's residual Jacobian, METHODS §9)."""
    context = site.inputs[layer]
    call = site.calls[layer]
    i = site.t1 - site.offset
    rows = [t - site.offset for t in t2s]
    if min(rows) < 0:  # tokens before a prefix cache are not in the replayed suffix (and J = 0 there)
        raise ValueError(f"output tokens {t2s} start before the site's first token {site.offset}")

    def f(x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([context[:, :i], x.reshape(1, 1, -1), context[:, i + 1:]], dim=1)
        return call(h)[0, rows]

    with torch.enable_grad():
        jac = jacrev(f, chunk_size=row_chunk)(context[0, i])
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    same = torch.tensor([t == site.t1 for t in t2s], device=jac.device)
    return jac - same[:, None, None] * eye


# ------------------------------------------------------------------------------------------------
# Stage "block_coupling"
# ------------------------------------------------------------------------------------------------

def svd_factors(jac: torch.Tensor, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-kmax singular vectors u, v (..., d, kmax) of jac (..., d, d), float32 numpy, columns in
    descending σ.

    From the top kmax eigenpairs of each Gram matrix JᵀJ (v, σ²; LAPACK ssyevr on that index range
    only, one BLAS thread) and u = J v / σ. At d = 576, kmax = 50 a batch of 30 took 0.53
    CPU-seconds this way against 9.9 for torch's batched full ``eigh`` (and a batched LAPACK SVD
    was slower still on the shared 2-core machine). Float32 is ample for m̃, a ratio of norms;
    tests hold it to the float64 SVD of ``trajectory``.
    """
    j = jac.detach().float().cpu().numpy()
    d = j.shape[-1]
    flat = j.reshape(-1, d, d)
    v = np.empty((len(flat), d, kmax), np.float32)
    s = np.empty((len(flat), kmax), np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        for n, m in enumerate(flat):
            evals, evecs = sl.eigh(m.T @ m, subset_by_index=[d - kmax, d - 1], driver="evr",
                                   check_finite=False)  # ascending
            v[n], s[n] = evecs[:, ::-1], np.sqrt(np.clip(evals[::-1], 0.0, None))
        u = (flat @ v) / np.where(s > 0, s, 1.0)[:, None, :]
    shape = j.shape[:-2] + (d, kmax)
    return u.reshape(shape), v.reshape(shape)


def sample_coupling(bundle, ids: torch.Tensor, window: int, ks: list[int], sample: int = 0,
                    progress=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Every coupling row of one prompt ``ids`` (T,): depth-wise for the last token and, for
    window ≥ 2, token-wise over its last ``window`` tokens (same layer). ``progress`` is called
    once per finished layer.

    Returns the rows and the depth-wise coupling matrices A (L, L, K_max, K_max) float32,
    [l, l'] = U_{l'}ᵀ J^l V_{l'} of the last token (K_max = max(ks)).
    """
    T = len(ids)
    n_layers = bundle.n_layers
    toks = list(range(max(0, T - max(window, 1)), T))
    w = len(toks)
    need_full = not bundle.adapter.causal or toks[0] == 0
    trace = traced_forward(bundle, ids.reshape(1, -1)) if need_full else None
    sites = [input_site(bundle, ids, t1, trace) for t1 in toks]
    rel = np.asarray(toks) - T  # offsets from the end: −1 = last token
    kmax = max(ks)
    last = []
    frames = []
    for l in range(n_layers):
        jac = {}
        for a, site in enumerate(sites):
            t2s = toks[a:] if w > 1 else [toks[-1]]
            for t2, j in zip(t2s, residual_jacobians(site, l, t2s)):
                jac[(site.t1, t2)] = j
        last.append(jac[(toks[-1], toks[-1])].float().cpu())
        if w > 1:
            d = last[-1].shape[-1]
            full = np.zeros((w, w, d, d), np.float32)
            u = np.zeros((w, w, d, kmax), np.float32)
            v = np.zeros_like(u)
            idx = [(a, b) for a in range(w) for b in range(a, w)]
            stack = torch.stack([jac[(toks[a], toks[b])] for a, b in idx])
            uu, vv = svd_factors(stack, kmax)
            for n, (a, b) in enumerate(idx):
                full[a, b] = stack[n].float().cpu().numpy()
                u[a, b], v[a, b] = uu[n], vv[n]
            tw = tj.token_coupling(full, ks, (u, v))
            ta, tb = rel[:, None], rel[None, :]
            frames.append(bc.coupling_rows("self", ks, tw["self"], l, l, ta, tb, np.nan, sample))
            fixed, x, y = rel[:, None, None], rel[None, :, None], rel[None, None, :]
            frames.append(bc.coupling_rows("fixed_input", ks, tw["fixed_input"], l, l, x, y, fixed, sample))
            frames.append(bc.coupling_rows("fixed_output", ks, tw["fixed_output"], l, l, x, y, fixed, sample))
        if progress is not None:
            progress()
    stack = torch.stack(last)
    a = tj.coupling_matrices(stack.numpy(), kmax, svd_factors(stack, kmax))
    m = np.stack([tj.miscoupling(a[..., :k, :k]) for k in ks])  # (nK, L, L), METHODS §9 depth-wise
    la, lb = np.arange(n_layers)[:, None], np.arange(n_layers)[None, :]
    frames.insert(0, bc.coupling_rows("depth", ks, m, la, lb, -1, -1, np.nan, sample))
    return pd.concat(frames, ignore_index=True), a.astype(np.float32)


def run(ctx) -> None:
    cfg = ctx.cfg  # RunConfig checked the three settings
    n_samples, window, n_tokens = int(cfg.coupling_samples), int(cfg.coupling_window), int(cfg.coupling_tokens)
    bundle = ctx.model()
    store = ctx.store
    ks = tj.valid_ks(bundle.d_model)
    if not ks:
        raise ResdynError(f"d_model = {bundle.d_model} is too small for block coupling (needs K = 10 < d)")
    texts = ctx.texts()[:n_samples]
    # A decoder's prompt cut after P tokens has exactly the passage's own states for those tokens.
    seqs = [s[:n_tokens] if n_tokens else s for s in tokenize(bundle, texts)]
    part = store.partial_dir("block_coupling")
    cache = RunStore(part)
    bar = ctx.progress(total=len(seqs) * bundle.n_layers, desc="block coupling", unit="layer")
    frames = []
    for i, ids in enumerate(seqs):
        name = f"sample_{i:05d}"
        if cache.has_table(name):
            bar.update(bundle.n_layers)
        else:
            rows, a = sample_coupling(bundle, ids, window, ks, sample=i, progress=lambda: bar.update(1))
            if i == 0:  # the |A| images of the page: the first prompt's matrices
                cache.write_array("A", a)
            # Atomic, and the table last: a kill mid-sample leaves no checkpoint for it.
            cache.write_table(name, rows)
        frames.append(cache.read_table(name))
    bar.close()
    rows = bc.aggregate_rows(pd.concat(frames, ignore_index=True))
    store.write_array("block_coupling_A", cache.read_array("A", mmap=False))
    store.write_table("block_coupling", rows)
    store.update_summary(bc.coupling_summary(rows, ks))
    store.clear_partial("block_coupling")


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
