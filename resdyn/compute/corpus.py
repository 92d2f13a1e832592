"""Text corpora: the N passages whose last-token residual states a run analyses (METHODS §1).

``--corpus`` takes one of:

- ``wiki-sample`` (offline default): the 106 Wikipedia articles of the test file that gensim
  ships, cleaned of markup and cut at sentence ends into 300–600 character passages, in
  dataset order (4,455 passages). The parse takes a few seconds once and is cached as JSON.
- ``wikitext-2``: the WikiText-2 (raw) train split, lines of 300–600 characters, in dataset
  order, as the paper takes it. Needs the ``datasets`` package and the hub (or its cache).
- a path to a ``.txt`` file (one passage per line, blank lines skipped) or a ``.jsonl`` file
  (one object per line; its ``"text"`` field, else its only string field), in file order.

``--samples N`` takes the first N passages in that order; a corpus with fewer is an error,
never a silent shortfall.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from resdyn.errors import ResdynError, UsageError

WIKI_SAMPLE = "wiki-sample"
WIKITEXT_2 = "wikitext-2"
BUILTIN = (WIKI_SAMPLE, WIKITEXT_2)

MIN_CHARS = 300
"""Shortest passage kept, in characters (both built-in corpora)."""
MAX_CHARS = 600
"""Longest passage kept, in characters (both built-in corpora)."""

PARSER_VERSION = 1
"""Bump when the wiki-sample cleaning or cutting rules change: it is part of the cache key."""

_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_WIKITEXT_HINT = (
    "wikitext-2 needs network access and the `datasets` package; use --corpus wiki-sample offline"
)

# Markup that filter_wiki leaves behind in a minority of paragraphs (nested links, templates,
# tables, tags, headings). Such paragraphs are dropped whole rather than repaired.
_LEFTOVER_MARKUP = ("[[", "]]", "{{", "}}", "<", ">", "|", "==")
# Lines that are headings, list items, indentation or table rows, not prose.
_NON_PROSE_START = "=*#:;|!"
# Abbreviations whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc e.g i.e c ca cf no nos vol pp p fig gen col lt sgt capt prof rev "
    "mt ft approx al inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# A sentence boundary: terminal punctuation, optional closing quotes/brackets, whitespace, then
# something that can open a sentence (a capital or digit, possibly after an opening quote).
_BOUNDARY = re.compile(r"""(?<=[.!?])["')\]]*\s+(?=["'(\[]?[A-Z0-9])""")
_ACRONYM = re.compile(r"(?:[a-z]\.)+[a-z]")  # "u.s", "p.m" once the final period is cut
_SENTENCE_START = re.compile(r"""["'(\[]?[A-Z0-9]""")
_SENTENCE_END = re.compile(r"""[.!?]["')\]]*$""")


# --------------------------------------------------------------------------- public API


def load_corpus(spec: str, n: int) -> list[str]:
    """The first ``n`` passages of corpus ``spec``, in corpus order.

    Raises ResdynError (one line) for an unknown spec, a missing or empty file, ``n < 1``,
    or a corpus holding fewer than ``n`` passages.
    """
    if n < 1:
        raise UsageError(f"--samples must be at least 1, got {n}")
    texts = passages(spec)
    if len(texts) < n:
        raise ResdynError(f"corpus {spec} has only {len(texts)} passages, asked for {n}; lower --samples")
    return texts[:n]


def available(spec: str) -> int:
    """How many passages corpus ``spec`` holds (instant for wiki-sample once cached)."""
    return len(passages(spec))


def passages(spec: str) -> list[str]:
    """Every passage of corpus ``spec``, in corpus order."""
    if spec == WIKI_SAMPLE:
        return _wiki_sample()
    if spec == WIKITEXT_2:
        return _wikitext_2()
    if spec.startswith("texts:"):  # resdyn.analyze's passages (RunConfig.corpus records their hash)
        raise UsageError(f"this run's passages ({spec}) were given to resdyn.analyze; compute its stages "
                         "with resdyn.analyze(model, tokenizer, texts, run_id=..., stages=...)")
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UsageError(
            f"unknown corpus {spec!r}: use {WIKI_SAMPLE}, {WIKITEXT_2}, or a path to a .txt or .jsonl file"
        )
    if not path.is_file():
        raise ResdynError(f"corpus file {spec} not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ResdynError(f"corpus file {spec} is not UTF-8 text (byte {exc.start})") from exc
    texts = _read_txt(lines) if suffix == ".txt" else _read_jsonl(lines, spec)
    if not texts:
        raise ResdynError(f"corpus file {spec} holds no passages")
    return texts


def cache_dir() -> Path:
    """Where parsed corpora are cached: ``$RESDYN_CACHE``, else ``$XDG_CACHE_HOME/resdyn``,
    else ``~/.cache/resdyn``."""
    env = os.environ.get("RESDYN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "resdyn"


# --------------------------------------------------------------------------- files


def _read_txt(lines: list[str]) -> list[str]:
    return [s for s in (line.strip() for line in lines) if s]


def _read_jsonl(lines: list[str], spec: str) -> list[str]:
    texts = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResdynError(f"{spec} line {lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ResdynError(f"{spec} line {lineno}: expected a JSON object with a \"text\" field")
        if "text" in obj:
            text = obj["text"]
        else:
            strings = [v for v in obj.values() if isinstance(v, str)]
            if len(strings) != 1:
                raise ResdynError(
                    f"{spec} line {lineno}: no \"text\" field and {len(strings)} string fields; "
                    "name the passage field \"text\""
                )
            text = strings[0]
        if not isinstance(text, str) or not text.strip():
            raise ResdynError(f"{spec} line {lineno}: the passage must be a non-empty string")
        texts.append(text.strip())
    return texts


# --------------------------------------------------------------------------- wiki-sample


def wiki_sample_path() -> Path:
    """The bz2 Wikipedia dump that gensim ships in its test data (found without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ResdynError("wiki-sample needs the `gensim` package (see requirements.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / _WIKI_FILE
    if not path.is_file():
        raise ResdynError(f"gensim's test file {_WIKI_FILE} is missing; reinstall gensim==4.4.0")
    return path


def _cache_key(source: Path) -> str:
    """Hash of the source file's bytes, the gensim version (filter_wiki's rules) and PARSER_VERSION."""
    h = hashlib.sha256(source.read_bytes())
    h.update(f"|gensim={importlib.metadata.version('gensim')}|parser={PARSER_VERSION}".encode())
    return h.hexdigest()[:16]


def _wiki_sample() -> list[str]:
    source = wiki_sample_path()
    key = _cache_key(source)
    cache = cache_dir() / "corpus" / f"{WIKI_SAMPLE}-{key}.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key and isinstance(cached.get("passages"), list):
            return cached["passages"]
    except (OSError, ValueError, AttributeError):
        pass  # absent or damaged: parse again and overwrite
    texts = parse_wiki_sample(source)
    try:
        from resdyn.core.store import write_json  # atomic: temp file, then rename

        record = {"key": key, "source": _WIKI_FILE, "parser_version": PARSER_VERSION, "passages": texts}
        write_json(cache, record)
    except (OSError, ResdynError):
        pass  # an unwritable cache only costs the parse next time
    return texts


def parse_wiki_sample(path: Path) -> list[str]:
    """Parse the gensim Wikipedia dump at ``path`` into passages, in dataset order (slow: seconds)."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    texts: list[str] = []
    with bz2.BZ2File(path) as fh:
        for _title, wikitext, _pageid in extract_pages(fh):
            if wikitext.lstrip()[:9].lower() == "#redirect":
                continue
            for paragraph in clean_paragraphs(filter_wiki(wikitext)):
                texts.extend(pack_sentences(split_sentences(paragraph)))
    return texts


def clean_paragraphs(text: str) -> Iterator[str]:
    """Prose paragraphs of ``filter_wiki`` output, one per line, whitespace collapsed.

    Drops headings, list items, tables and any paragraph still holding link, template or tag
    markup; removes the ``''``/``'''`` emphasis quotes and the empty parentheses and orphan
    commas that removed templates leave behind.
    """
    text = re.sub(r"'{2,}", "", text)
    for line in text.split("\n"):
        par = line.strip()
        if not par or par[0] in _NON_PROSE_START or any(m in par for m in _LEFTOVER_MARKUP):
            continue
        par = re.sub(r"\s*\(\s*[,;:]*\s*\)", "", par)  # "Alabama () is" -> "Alabama is"
        par = re.sub(r"\s+([,;])", r"\1", par)  # "the Greek , i.e." -> "the Greek, i.e."
        par = re.sub(r"([,;])(?:\s*[,;])+", r"\1", par)  # "angle, , and" -> "angle, and"
        par = re.sub(r"\s+", " ", par).strip()
        if par:
            yield par


def split_sentences(paragraph: str) -> list[str]:
    """Split at '.', '!' or '?' (plus closing quotes) followed by a capital or digit,
    except after a known abbreviation, an initial ("J.") or a dotted acronym ("U.S.")."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(paragraph):
        head = paragraph[start:m.start()].rstrip("\"')]")
        if head.endswith(".") and _is_abbreviation(head[:-1]):
            continue
        out.append(paragraph[start:m.end()].strip())
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def _is_abbreviation(head: str) -> bool:
    """Whether the word ending ``head`` (its final period removed) is an abbreviation."""
    words = head.split()
    word = words[-1].lstrip("(\"'").lower() if words else ""
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or bool(_ACRONYM.fullmatch(word))


def pack_sentences(sentences: Iterable[str], lo: int = MIN_CHARS, hi: int = MAX_CHARS) -> Iterator[str]:
    """Greedily join consecutive sentences into passages of ``lo``–``hi`` characters.

    A passage grows while it stays within ``hi``; when the next sentence would overflow it, the
    passage is emitted if it has reached ``lo`` (else discarded) and a new one starts there. A
    sentence longer than ``hi``, or a fragment (a caption without terminal punctuation, or text
    starting mid-sentence where filter_wiki removed a template), breaks the run, so every
    passage starts and ends at a sentence boundary.
    """
    current = ""
    for sentence in sentences:
        whole = _SENTENCE_START.match(sentence) and _SENTENCE_END.search(sentence)
        if len(sentence) > hi or not whole:
            if len(current) >= lo:
                yield current
            current = ""
            continue
        joined = f"{current} {sentence}" if current else sentence
        if len(joined) <= hi:
            current = joined
            continue
        if len(current) >= lo:
            yield current
        current = sentence
    if len(current) >= lo:
        yield current


# --------------------------------------------------------------------------- wikitext-2


def _wikitext_2() -> list[str]:
    """WikiText-2 raw train lines of MIN_CHARS–MAX_CHARS characters, headings skipped, in
    dataset order (the paper's character-length filter, Appendix A.1)."""
    try:
        import datasets  # heavy and optional: never a dependency of the offline path

        rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
    except Exception as exc:  # ImportError, hub or network failures of every kind
        raise ResdynError(_WIKITEXT_HINT) from exc
    texts = []
    for row in rows:
        line = row["text"].strip()
        if line and not line.startswith("=") and MIN_CHARS <= len(line) <= MAX_CHARS:
            texts.append(line)
    return texts
