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
