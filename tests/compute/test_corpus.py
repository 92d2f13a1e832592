"""Corpus loading (issue 2, "Corpus"): wiki-sample parsing and cache, files, wikitext-2, errors."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest

from resdyn.compute import corpus
from resdyn.compute.corpus import MAX_CHARS, MIN_CHARS, load_corpus
from resdyn.errors import ResdynError

SENTENCE_END = re.compile(r"""[.!?]["')\]]*$""")
SENTENCE_START = re.compile(r"""["'(\[]?[A-Z0-9]""")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("resdyn-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_root, monkeypatch):
    monkeypatch.setenv("RESDYN_CACHE", str(cache_root))


@pytest.fixture(scope="module")
def wiki(cache_root):
    """All wiki-sample passages, parsed once for the module (the slow path, ~5 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESDYN_CACHE", str(cache_root))
        return corpus.passages(corpus.WIKI_SAMPLE)


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- wiki-sample


def test_wiki_sample_passages_are_clean_sentence_windows(wiki):
    assert len(wiki) >= 1000
    for p in wiki:
        assert MIN_CHARS <= len(p) <= MAX_CHARS, p
        assert SENTENCE_END.search(p), p
        assert SENTENCE_START.match(p), p
        for markup in ("[[", "]]", "{{", "}}", "<", ">", "''", "==", "|", "()", " ,"):
            assert markup not in p, (markup, p)
        assert "  " not in p and p == p.strip()


def test_wiki_sample_keeps_dataset_order(wiki):
    # The dump's first non-redirect article is "Anarchism"; its lead paragraph comes first.
    assert wiki[0].startswith("Anarchism is a political philosophy")
    assert load_corpus("wiki-sample", 10) == wiki[:10]
    assert load_corpus("wiki-sample", 5) == load_corpus("wiki-sample", 10)[:5]
    # A fresh parse reproduces the cached list exactly, order included.
    assert corpus.parse_wiki_sample(corpus.wiki_sample_path()) == wiki
    assert corpus.available("wiki-sample") == len(wiki)


def test_wiki_sample_second_load_reads_cache(wiki, monkeypatch):
    def boom(path):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(corpus, "parse_wiki_sample", boom)
    assert load_corpus("wiki-sample", 50) == wiki[:50]
    files = list((corpus.cache_dir() / "corpus").iterdir())
    assert [f.suffix for f in files] == [".json"]  # one cache file, no temporaries left over
    assert json.loads(files[0].read_text())["passages"] == wiki


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("RESDYN_CACHE", str(tmp_path))
    key = corpus._cache_key(corpus.wiki_sample_path())
    path = tmp_path / "corpus" / f"wiki-sample-{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"key": "trunc')
    fake = ["First sentence here.", "Second one."]
    monkeypatch.setattr(corpus, "parse_wiki_sample", lambda p: list(fake))
    assert load_corpus("wiki-sample", 2) == fake
    assert json.loads(path.read_text())["passages"] == fake
    monkeypatch.setattr(corpus, "parse_wiki_sample", lambda p: pytest.fail("cache not used"))
    assert load_corpus("wiki-sample", 2) == fake


def test_cache_key_changes_with_parser_version(monkeypatch):
    source = corpus.wiki_sample_path()
    before = corpus._cache_key(source)
    monkeypatch.setattr(corpus, "PARSER_VERSION", corpus.PARSER_VERSION + 1)
    assert corpus._cache_key(source) != before


# --------------------------------------------------------------------------- cutting rules


def test_clean_paragraphs_drops_markup_and_non_prose():
    text = (
        "==History==\n"
        "* a list item.\n"
        "'''Bold''' name () is here , and there, , too.\n"
        "A paragraph with a [[leftover link]] inside.\n"
        "A table | cell.\n"
        "  Plain   text stays.  \n"
    )
    assert list(corpus.clean_paragraphs(text)) == ["Bold name is here, and there, too.", "Plain text stays."]


def test_split_sentences_respects_abbreviations_initials_and_acronyms():
    text = 'Dr. Smith met J. Doe in the U.S. Army. He left! "Why?" She asked e.g. twice. 1999 came.'
    assert corpus.split_sentences(text) == [
        "Dr. Smith met J. Doe in the U.S. Army.",
        "He left!",
        '"Why?"',
        "She asked e.g. twice.",
        "1999 came.",
    ]


def test_pack_sentences_fills_greedily_within_window():
    assert list(corpus.pack_sentences(["Aa.", "Bb.", "Cc.", "Dd."], lo=5, hi=8)) == ["Aa. Bb.", "Cc. Dd."]
    # A fragment (no terminal punctuation, or starting mid-sentence) breaks the run.
    with_fragment = ["Aa.", "Bb.", "caption", "Cc.", "Dd."]
    assert list(corpus.pack_sentences(with_fragment, lo=5, hi=8)) == ["Aa. Bb.", "Cc. Dd."]
    assert list(corpus.pack_sentences(["Aa. Bb.", "Cc."], lo=5, hi=8)) == ["Aa. Bb."]
    # A run that cannot reach lo before overflowing is dropped; an overlong sentence is skipped.
    assert list(corpus.pack_sentences(["Aa.", "Bbbbbbb."], lo=5, hi=8)) == ["Bbbbbbb."]
    assert list(corpus.pack_sentences(["Aaaaaaaaa.", "Bb. Cc."], lo=5, hi=8)) == ["Bb. Cc."]


# --------------------------------------------------------------------------- files


def test_txt_one_passage_per_line_in_file_order(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first passage\n\n  second passage  \n\nthird\n", encoding="utf-8")
    assert load_corpus(str(path), 3) == ["first passage", "second passage", "third"]
    assert load_corpus(str(path), 2) == ["first passage", "second passage"]
    assert corpus.available(str(path)) == 3


def test_jsonl_text_field_or_only_string_field(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"id": 1, "text": "alpha", "source": "x"}, {"id": 2, "body": "beta"}, {"text": "gamma"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert load_corpus(str(path), 3) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"a": "x", "b": "y"}', "2 string fields"),
        ('{"id": 3}', "0 string fields"),
        ('{"text": 5}', "non-empty string"),
        ('{"text": "  "}', "non-empty string"),
        ('["text"]', "JSON object"),
        ('{"text": "x"', "not valid JSON"),
    ],
)
def test_jsonl_bad_lines_name_the_line(tmp_path, line, needle):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ResdynError) as excinfo:
        load_corpus(str(path), 1)
    msg = _one_line_error(excinfo)
    assert "line 2" in msg and needle in msg


# --------------------------------------------------------------------------- errors


def test_unknown_spec_and_missing_file(tmp_path):
    with pytest.raises(ResdynError) as excinfo:
        load_corpus("wikipedia", 1)
    assert "unknown corpus 'wikipedia'" in _one_line_error(excinfo)
    with pytest.raises(ResdynError) as excinfo:
        load_corpus(str(tmp_path / "nope.txt"), 1)
    assert "not found" in _one_line_error(excinfo)


def test_too_few_passages_says_how_many(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(ResdynError) as excinfo:
        load_corpus(str(path), 4)
    assert _one_line_error(excinfo) == f"corpus {path} has only 3 passages, asked for 4; lower --samples"


def test_n_below_one_and_empty_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\n", encoding="utf-8")
    with pytest.raises(ResdynError, match="at least 1"):
        load_corpus(str(path), 0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ResdynError) as excinfo:
        load_corpus(str(empty), 1)
    assert "holds no passages" in _one_line_error(excinfo)


# --------------------------------------------------------------------------- wikitext-2


def test_wikitext_2_without_datasets_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ResdynError) as excinfo:
        load_corpus("wikitext-2", 1)
    assert "use --corpus wiki-sample offline" in _one_line_error(excinfo)


def test_wikitext_2_download_failure_is_one_clear_line(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ResdynError, match="needs network access"):
        load_corpus("wikitext-2", 1)


def test_wikitext_2_length_filter_in_dataset_order(monkeypatch):
    lines = [
        " = Heading " + "x" * 330 + " = \n",  # a heading, long enough, still skipped
        " " + "a" * 299 + " \n",  # one short of the window
        " " + "b" * 300 + " \n",
        "\n",
        "c" * 601,  # one over
        "d" * 600,
        "e" * 450,
    ]
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"text": t} for t in lines]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert load_corpus("wikitext-2", 3) == ["b" * 300, "d" * 600, "e" * 450]
    assert calls == [("wikitext", "wikitext-2-raw-v1", "train")]
