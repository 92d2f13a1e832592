"""``resdyn.compute.models``: the one-time GGUF conversion parses each file once."""

from __future__ import annotations

import gguf

from resdyn.compute import models


def test_gguf_parsed_once_shares_one_reader_per_file_and_restores_the_class(monkeypatch):
    made = []

    class CountingReader:
        def __init__(self, path, mode="r"):
            made.append((path, mode))

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    with models.gguf_parsed_once():
        # transformers looks the class up on the module at each call, as here.
        first = gguf.GGUFReader("a.gguf")
        again = gguf.GGUFReader("a.gguf")
        other = gguf.GGUFReader("b.gguf")
    assert first is again and other is not first
    assert made == [("a.gguf", "r"), ("b.gguf", "r")]
    assert gguf.GGUFReader is CountingReader  # restored
    gguf.GGUFReader("a.gguf")
    assert len(made) == 3  # no sharing outside the block


# -- forward batches -------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from resdyn.compute.blocks import traced_forward  # noqa: E402
from resdyn.compute.stages import activations  # noqa: E402

from .tiny import ARCHS, tiny_bundle  # noqa: E402


def test_length_batches_group_by_length_and_cover_every_passage_once():
    seqs = [torch.zeros(n, dtype=torch.long) for n in (7, 3, 9, 3, 5, 1, 8)]
    groups = models.length_batches(seqs, batch=3)
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert [len(g) for g in groups] == [3, 3, 1]
    assert groups[0] == [5, 1, 3]  # shortest first; ties (1 and 3, both 3 tokens) in corpus order
    lengths = [[len(seqs[i]) for i in g] for g in groups]
    assert all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:]))


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_states_are_each_passages_own(arch):
    """Passages of different lengths go through the model in length-sorted, right-padded batches:
    every passage's stored states equal those of a forward of that passage alone, in its own row
    (a mix-up of the batch order, or padding leaking into real tokens, would fail here)."""
    bundle = tiny_bundle(arch)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 64, (n,), generator=gen) for n in (6, 2, 9, 4, 9, 3)]
    acts, final = activations.extract(bundle, seqs)
    n_layers = bundle.n_layers
    for i, s in enumerate(seqs):
        trace = traced_forward(bundle, s[None])
        own = np.stack([t[0, -1].numpy() for pair in zip(trace.inputs, trace.mids) for t in pair])
        assert own.shape == (2 * n_layers, bundle.d_model)
        np.testing.assert_allclose(acts[i], own, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(final[i], trace.final[0, -1].numpy(), rtol=1e-5, atol=1e-6)
