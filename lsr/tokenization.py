"""Tokenizers that map text to term ids of a fixed vocabulary.

Two kinds share one small interface (``vocab``, ``tokenize``, ``encode``):

- :class:`WordTokenizer`: analyzed words, the terms of classic BM25. Its default analyzer,
  ``lucene``, gives exactly the terms of Lucene's English analysis as Anserini and Pyserini
  index them (:mod:`lsr.lucene_analyzer`); ``regex``, this project's first analyzer (word
  characters, English stopwords, Snowball's Porter stemmer from PyStemmer), stays for the
  encoders saved with it. Its vocabulary is built from the corpus (``grow=True``) and saved
  with the encoder.
- :class:`HFTokenizer`: any Hugging Face ``tokenizers`` tokenizer (``tokenizer.json``), the
  vocabulary learned sparse encoders use; special tokens are never emitted as terms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from lsr.errors import EncoderError
from lsr.lucene_analyzer import ENGLISH_STOPWORDS, analyze

ANALYZERS = ("lucene", "regex")
_WORD = re.compile(r"\w+", re.UNICODE)
_POSSESSIVE = re.compile(r"(\w)['’]s\b")


class Tokenizer(Protocol):
    """What encoders need from a tokenizer."""

    vocab: list[str]

    def tokenize(self, text: str) -> list[str]: ...

    def encode(self, texts: Sequence[str], grow: bool = False) -> list[np.ndarray]: ...

    def to_config(self) -> dict: ...


class WordTokenizer:
    """Words analyzed for BM25: Lucene's English analysis (``analyzer="lucene"``, the
    default) or the older regex analysis (``"regex"``); lowercasing, the English stop set
    and Porter stemming can each be turned off. Never emits an empty term."""

    def __init__(
        self,
        lowercase: bool = True,
        stopwords: str | None = "english",
        stemmer: str | None = "porter",
        vocab: Sequence[str] = (),
        analyzer: str = "lucene",
    ) -> None:
        if analyzer not in ANALYZERS:
            raise EncoderError(f"Unknown analyzer {analyzer!r}; use one of {', '.join(ANALYZERS)}.")
        if stopwords not in (None, "english"):
            raise EncoderError(f"Unknown stopword list {stopwords!r}; use 'english' or None.")
        self.analyzer = analyzer
        self.lowercase = lowercase
        self.stopwords = stopwords
        self.stemmer_name = stemmer
        self._stop = ENGLISH_STOPWORDS if stopwords else frozenset()
        self._stemmer = None
        if stemmer and analyzer == "lucene":
            if stemmer != "porter":
                raise EncoderError(
                    f"The lucene analyzer stems with Lucene's Porter stemmer ('porter') or "
                    f"not at all (None), not {stemmer!r}."
                )
        elif stemmer:
            import Stemmer

            if stemmer not in Stemmer.algorithms():
                raise EncoderError(
                    f"Unknown stemmer {stemmer!r}; use one of {Stemmer.algorithms()}."
                )
            self._stemmer = Stemmer.Stemmer(stemmer)
        self.vocab: list[str] = list(vocab)
        self._ids = {t: i for i, t in enumerate(self.vocab)}

    def tokenize(self, text: str) -> list[str]:
        """The analyzed terms of ``text`` in order (stopwords removed, stems when enabled)."""
        if self.analyzer == "lucene":
            return analyze(
                text,
                self._stop if self.stopwords else None,
                stem=self.stemmer_name is not None,
                lowercase=self.lowercase,
            )
        if self.lowercase:
            text = text.lower()
        words = [w for w in _WORD.findall(_POSSESSIVE.sub(r"\1", text)) if w not in self._stop]
        if self._stemmer:
            words = self._stemmer.stemWords(words)
        return [w for w in words if w]  # Snowball's Porter makes "" of a lone "s"

    def encode(
        self, texts: Sequence[str], grow: bool = False, dropped: list | None = None
    ) -> list[np.ndarray]:
        """Term ids of each text; unknown terms are dropped (and, when ``dropped`` is a list,
        appended to it per text, each once), or added to the vocab if ``grow``."""
        ids, vocab = self._ids, self.vocab
        out = []
        for text in texts:
            row, gone = [], []
            for term in self.tokenize(text):
                i = ids.get(term)
                if i is None:
                    if not grow:
                        gone.append(term)
                        continue
                    i = ids[term] = len(vocab)
                    vocab.append(term)
                row.append(i)
            out.append(np.asarray(row, dtype=np.int32))
            if dropped is not None:
                dropped.append(list(dict.fromkeys(gone)))
        return out

    def to_config(self) -> dict:
        return {
            "type": "word",
            "analyzer": self.analyzer,
            "lowercase": self.lowercase,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer_name,
            "vocab": self.vocab,
        }


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` with special tokens kept out of the terms."""

    def __init__(self, tokenizer, source: str = "") -> None:
        self.tokenizer = tokenizer
        self.source = source
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab = [""] * (max(vocab.values()) + 1)
        for term, i in vocab.items():
            self.vocab[i] = term
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = np.array(
            sorted(i for i, t in added.items() if t.special), dtype=np.int32
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> HFTokenizer:
        """Load ``tokenizer.json`` from a local folder or file, or from the Hugging Face Hub."""
        from tokenizers import Tokenizer as _Tok

        path = Path(name_or_path)
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            if file.is_file():
                tok = _Tok.from_file(str(file))
            elif path.exists():
                raise EncoderError(f"{path} has no tokenizer.json; save the tokenizer there first.")
            else:
                tok = _Tok.from_pretrained(str(name_or_path))
        except EncoderError:
            raise
        except Exception as e:
            raise EncoderError(f"Cannot load a tokenizer from {name_or_path!s}: {e}") from e
        tok.no_truncation()
        tok.no_padding()
        return cls(tok, source=str(name_or_path))

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(
        self, texts: Sequence[str], grow: bool = False, dropped: list | None = None
    ) -> list[np.ndarray]:
        """Token ids of each text (special tokens left out); every token has an id, so
        ``dropped`` (a list) gets an empty list per text."""
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        if dropped is not None:
            dropped.extend([] for _ in encs)
        out = []
        for e in encs:
            ids = np.asarray(e.ids, dtype=np.int32)
            if self.special_ids.size:
                ids = ids[~np.isin(ids, self.special_ids)]
            out.append(ids)
        return out

    def to_config(self) -> dict:
        return {"type": "huggingface", "file": "tokenizer.json"}

    def save(self, folder: Path) -> None:
        self.tokenizer.save(str(Path(folder) / "tokenizer.json"))


def tokenizer_by_name(name: str) -> Tokenizer:
    """A fresh tokenizer for BM25 from its command-line name: ``lucene`` (Lucene's English
    analysis), ``regex`` (the earlier word analysis; ``word`` is its old name) or a Hugging
    Face tokenizer (a folder, a ``tokenizer.json`` or a Hub id)."""
    if name == "lucene":
        return WordTokenizer(analyzer="lucene")
    if name in ("regex", "word"):
        return WordTokenizer(analyzer="regex")
    return HFTokenizer.from_pretrained(name)


def tokenizer_from_config(config: dict, folder: Path) -> Tokenizer:
    """Rebuild a tokenizer saved with an encoder (``to_config`` + files in ``folder``)."""
    kind = config.get("type")
    if kind == "word":
        return WordTokenizer(
            lowercase=config.get("lowercase", True),
            stopwords=config.get("stopwords"),
            stemmer=config.get("stemmer"),
            vocab=config.get("vocab", []),
            analyzer=config.get("analyzer", "regex"),  # saved before there was a choice
        )
    if kind == "huggingface":
        return HFTokenizer.from_pretrained(Path(folder) / config.get("file", "tokenizer.json"))
    raise EncoderError(f"Unknown tokenizer type {kind!r} in {folder}; re-save the encoder.")


def save_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as UTF-8 JSON (the format of every encoder config we save)."""
    Path(path).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
