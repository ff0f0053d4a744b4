"""Lucene's English analysis, as Anserini and Pyserini build their BM25 indexes with it.

Anserini's default analyzer is Lucene's ``StandardTokenizer`` followed by
``EnglishPossessiveFilter``, ``LowerCaseFilter``, a ``StopFilter`` with Lucene's English stop
set and ``PorterStemFilter``. :func:`analyze` gives the same terms:

- **StandardTokenizer** splits text at the word boundaries of Unicode's UAX #29 and keeps the
  segments that are words, numbers, Hangul or Katakana runs, runs of South-East Asian
  scripts (Thai, Lao, Myanmar, Khmer: no dictionary, one token per run), single Han or
  Hiragana characters, and emoji. So "don't", "I'd", "e.g", "U.S", "1.5", "a_b" and
  "bar.com" stay whole, where a split on word characters makes one-letter fragments. The
  word rules are expressed here with the Unicode ``Word_Break`` classes of the ``regex``
  package; a token longer than 255 characters is cut into pieces of 255, as Lucene does.
- **EnglishPossessiveFilter** drops a trailing 's (also with ’ or ＇, and 'S).
- **LowerCaseFilter** lowercases each character on its own, as Java's
  ``Character.toLowerCase`` does (no final sigma, "İ" -> "i").
- the **English stop set** of Lucene (33 words), then **Lucene's Porter stemmer**
  (:mod:`lsr.porter`).

``tests/lsr/test_lucene_analyzer.py`` checks every term against a fixture of tokens produced
by Lucene itself (``scripts/lucene/make_fixture.py`` regenerates it from the Anserini jar).
"""

from __future__ import annotations

import re

import regex

from lsr.porter import porter_stem

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which Anserini's default analyzer uses.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)
MAX_TOKEN_LENGTH = 255  # StandardTokenizer's default maxTokenLength

# UAX #29 word-break classes; "Ex" forms absorb the Format, Extend and ZWJ characters that
# follow (rule WB4).
_FE = r"[\p{WB=Format}\p{WB=Extend}\p{WB=ZWJ}]*"


def _ex(chars: str) -> str:
    return rf"(?:{chars}{_FE})"


_ALETTER = _ex(r"[\p{WB=ALetter}\p{WB=Hebrew_Letter}]")
_HEBREW = _ex(r"\p{WB=Hebrew_Letter}")
_NUMERIC = _ex(r"[\p{WB=Numeric}\uFF10-\uFF19]")  # Lucene counts fullwidth digits as digits
_KATAKANA = _ex(r"[\p{WB=Katakana}\uFF66-\uFF9F]")  # and halfwidth Katakana as Katakana
_MID_LETTER = _ex(r"[\p{WB=MidLetter}\p{WB=MidNumLet}\p{WB=Single_Quote}]")
_MID_NUMBER = _ex(r"[\p{WB=MidNum}\p{WB=MidNumLet}\p{WB=Single_Quote}]")
_EXTEND_NUMLET = _ex(r"\p{WB=ExtendNumLet}")
_SINGLE_QUOTE = _ex(r"\p{WB=Single_Quote}")
_DOUBLE_QUOTE = _ex(r"\p{WB=Double_Quote}")

# A word: letters and digits joined as UAX #29 joins them (WB5-WB13b): letters across a
# MidLetter ("don't", "e.g"), digits across a MidNum ("1.5", "3,000"), anything across "_".
# Hebrew letters also join across '"' and keep a final "'" (WB7a-c).
_LETTERS = (
    rf"{_ALETTER}(?:(?:{_EXTEND_NUMLET}*|{_MID_LETTER}){_ALETTER}"
    rf"|(?<={_HEBREW}){_DOUBLE_QUOTE}{_HEBREW})*(?:(?<={_HEBREW}){_SINGLE_QUOTE})?"
)
_CORE = (
    rf"(?:{_KATAKANA}(?:{_EXTEND_NUMLET}*{_KATAKANA})*"
    rf"|(?:{_NUMERIC}(?:(?:{_EXTEND_NUMLET}*|{_MID_NUMBER}){_NUMERIC})*|{_LETTERS})+)"
)
_WORD = rf"{_EXTEND_NUMLET}*{_CORE}(?:{_EXTEND_NUMLET}+{_CORE})*{_EXTEND_NUMLET}*"
_SOUTH_EAST_ASIAN = _ex(r"\p{LB=SA}") + "+"
_IDEOGRAPH = _ex(r"[\p{Script=Han}\p{Script=Hiragana}]")  # one character per token

# Emoji (Unicode TS #51): flags, keycaps, modifier and tag sequences, joined by ZWJ.
_EMOJI_ELEMENT = (
    r"(?:\p{Regional_Indicator}\p{Regional_Indicator}|[#*0-9]\uFE0F?\u20E3"
    r"|\p{Emoji_Modifier_Base}\p{Emoji_Modifier}"
    r"|[\p{Extended_Pictographic}\p{Emoji_Presentation}]\uFE0F?\p{Emoji_Modifier}?"
    r"[\U000E0020-\U000E007E]*\U000E007F?)"
)
_EMOJI = rf"{_EMOJI_ELEMENT}(?:\u200D{_EMOJI_ELEMENT})*{_FE}"

_TOKEN = regex.compile(
    rf"{_WORD}|{_SOUTH_EAST_ASIAN}|{_IDEOGRAPH}|{_EMOJI}",
    regex.VERSION1,
)
# The same rules for ASCII text, where the classes are plain characters (letters, digits,
# ":" between letters, "," and ";" between digits, "." and "'" between either, "_"
# anywhere): the standard ``re`` module runs them several times faster, and most text is
# ASCII. Leftmost-first matching finds Lucene's longest match here, as no Hebrew letter
# makes two readings possible.
_ASCII_LETTERS = r"[A-Za-z](?:(?:_*|[:.'])[A-Za-z])*"
_ASCII_CORE = rf"(?:[0-9](?:(?:_*|[,;.'])[0-9])*|{_ASCII_LETTERS})+"
_ASCII_TOKEN = re.compile(rf"_*{_ASCII_CORE}(?:_+{_ASCII_CORE})*_*")
_POSSESSIVE_END = ("'s", "'S", "\u2019s", "\u2019S", "\uff07s", "\uff07S")
_JAVA_LOWER = {"\u0130": "i"}  # where Java's one-character lowercase differs from Python's


def standard_tokens(text: str) -> list[str]:
    """The tokens Lucene's ``StandardTokenizer`` gives ``text`` (case kept)."""
    if text.isascii():
        tokens = _ASCII_TOKEN.findall(text)
    else:  # no token spans white space: the ASCII chunks of the text take the fast path
        tokens = []
        for chunk in text.split():
            tokens += (_ASCII_TOKEN if chunk.isascii() else _TOKEN).findall(chunk)
    if any(len(t) > MAX_TOKEN_LENGTH for t in tokens):
        tokens = [
            t[i : i + MAX_TOKEN_LENGTH] for t in tokens for i in range(0, len(t), MAX_TOKEN_LENGTH)
        ]
    return tokens


def java_lower(token: str) -> str:
    """``token`` lowercased character by character, as Lucene's ``LowerCaseFilter`` does."""
    if token.isascii():
        return token.lower()
    return "".join(_JAVA_LOWER.get(c) or c.lower() for c in token)


def analyze(
    text: str,
    stopwords: frozenset[str] | None = ENGLISH_STOPWORDS,
    stem: bool = True,
    lowercase: bool = True,
) -> list[str]:
    """The terms Anserini's default analyzer indexes for ``text``, in order.

    ``stopwords=None`` keeps every token, ``stem=False`` leaves out the Porter stemmer and
    ``lowercase=False`` the lowercasing (the stemmer then leaves capitals as they are).
    """
    terms = []
    for token in standard_tokens(text):
        if token.endswith(_POSSESSIVE_END):
            token = token[:-2]
        if lowercase:
            token = java_lower(token)
        if stopwords is not None and token in stopwords:
            continue
        terms.append(porter_stem(token) if stem else token)
    return terms
