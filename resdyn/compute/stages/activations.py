"""Stage "activations": one token's residual state at every sub-layer boundary (METHODS §1).

The token is each passage's last (``--position last``, the paper's) or a seeded random position
with at least 16 tokens before it (``--position random``; ``resdyn.core.samples.choose_positions``).

Writes ``activations.npy`` (N, 2L, d) float32 (snapshot 2l = pre-attention, 2l+1 = pre-MLP of
block l), ``final_state.npy`` (N, d) float32 (after the last block, before the final norm),
``passages.parquet`` (sample, n_tokens, position, token, token_text, text: position is the
0-based index of the analysed token, token its id), ``snapshots.parquet`` (snapshot, n_distinct,
rank, participation_ratio of the correlation matrix, pr_basis; snapshot 2L is the final state) and
the ``samples.*`` rows of ``summary.parquet`` (``resdyn.core.samples``).

When the ``trajectories`` stage is planned (``RunContext.planned``), its forward pass also builds
that stage's per-token tables and leaves them under ``.partial/trajectories/``
(``resdyn.compute.trajectory_tables``), so the passages run through the model once rather than twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from resdyn.compute import trajectory_tables
from resdyn.compute.blocks import traced_batches
from resdyn.compute.models import tokenize
from resdyn.compute.stages import stages_in
from resdyn.core import samples
from resdyn.errors import ResdynError

def extract(bundle, seqs: list[torch.Tensor], progress=None, positions: np.ndarray | None = None,
            on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """Snapshots (N, 2L, d) and final states (N, d), float32, at token ``positions[i]`` of passage i
    (default: its last token). Passages run in batches of similar length (``blocks.traced_batches``);
    ``on_batch(idx, chunk, trace)``, if given, also sees each batch's whole trace."""
    L, d = bundle.n_layers, bundle.d_model
    acts = np.zeros((len(seqs), 2 * L, d), dtype=np.float32)
    final = np.zeros((len(seqs), d), dtype=np.float32)
    for idx, chunk, trace in traced_batches(bundle, seqs, progress, desc="activations"):
        if positions is None:
            last = torch.tensor([len(s) - 1 for s in chunk], dtype=torch.long, device=bundle.device)
        else:
            last = torch.as_tensor(np.asarray(positions)[idx], dtype=torch.long, device=bundle.device)
        rows = torch.arange(len(chunk), device=bundle.device)
        for l in range(L):
            acts[idx, 2 * l] = trace.inputs[l][rows, last].float().cpu().numpy()
            acts[idx, 2 * l + 1] = trace.mids[l][rows, last].float().cpu().numpy()
        final[idx] = trace.final[rows, last].float().cpu().numpy()
        if on_batch is not None:
            on_batch(idx, chunk, trace)
    return acts, final


def token_texts(tokenizer, ids: np.ndarray) -> list[str]:
    """The tokenizer's own spelling of each id (e.g. 'Ġthe', '.'); '' where it has none."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:
        return [""] * len(ids)
    return ["" if t is None else str(t) for t in convert([int(i) for i in ids])]


def run(ctx) -> None:
    bundle = ctx.model()
    texts = ctx.texts()
    seqs = tokenize(bundle, texts)
    if any(len(s) == 0 for s in seqs):
        raise ResdynError("a corpus passage tokenized to zero tokens; remove empty lines from the corpus")
    n_tokens = np.array([len(s) for s in seqs], dtype=np.int64)
    positions = samples.choose_positions(n_tokens, ctx.cfg.position, ctx.cfg.seed)
    # The trajectories stage needs this same forward pass: build its tables on the way, once, when
    # that stage is to be computed (in this invocation, or next by the caller, as in the demo).
    tables = trajectory_tables.TableBuilder(*trajectory_tables.settings(ctx.cfg, bundle.n_layers)) \
        if trajectory_tables.STAGE in ctx.planned else None
    acts, final = extract(bundle, seqs, ctx.progress, positions, on_batch=None if tables is None else tables.add)
    if not (np.isfinite(acts).all() and np.isfinite(final).all()):
        raise ResdynError("activations contain NaN or Inf (an fp16 model?); rerun with --dtype float32 or float64")
    tokens = np.array([int(s[p]) for s, p in zip(seqs, positions)], dtype=np.int64)
    store = ctx.store
    store.write_array("activations", acts)
    store.write_array("final_state", final)
    if tables is not None:
        trajectory_tables.save(store, tables, final)
    store.write_table("passages", pd.DataFrame({
        "sample": np.arange(len(texts), dtype=np.int32),
        "n_tokens": n_tokens.astype(np.int32),
        "position": positions.astype(np.int32),
        "token": tokens,
        "token_text": token_texts(bundle.tokenizer, tokens),
        "text": texts,
    }))
    table = samples.snapshot_table(acts, final)
    store.write_table("snapshots", table)
    values = samples.summary_values(table, len(texts), tokens)
    if ctx.cfg.position == "random":
        values["samples.short_passages"] = float(samples.short_passages(n_tokens))
    store.update_summary(values)


STAGE, = stages_in(__name__)  # the record lives in resdyn/stages.py
