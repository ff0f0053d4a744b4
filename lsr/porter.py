"""Lucene's Porter stemmer (``org.apache.lucene.analysis.en.PorterStemmer``), term for term.

Lucene stems with Martin Porter's own reference implementation of his 1980 algorithm, with
the two departures he made in it ("bli" -> "ble" where the paper has "abli" -> "able", and
"logi" -> "log"), and words of one or two characters left alone. Snowball's ``porter`` (what
PyStemmer offers) differs on words such as "anthropology" and "anthropological", so BM25
terms built with it do not match an Anserini or Pyserini index. This module follows the
reference steps exactly: every character other than a, e, i, o, u is a consonant, and "y" is
one at the start of a word or after a vowel. ``tests/lsr/test_lucene_analyzer.py`` checks it
against tokens produced by Lucene itself.
"""

from __future__ import annotations

from functools import lru_cache

_VOWELS = frozenset("aeiou")

# Porter's steps 2-4 as (suffix, replacement) rules tried in order; the first suffix that
# matches ends the step whether or not its condition (measure > 0, > 1) held.
_STEP2 = (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"),
    ("izer", "ize"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"),
    ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"), ("ator", "ate"),
    ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
    ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"),
)  # fmt: skip
_STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"),
    ("ful", ""), ("ness", ""),
)  # fmt: skip
_STEP4 = (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
    "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize",
)  # fmt: skip


def _by_letter(rules, letter_of) -> dict:
    """The reference implementation dispatches each step on one letter of the word and tries
    only the rules for that letter; grouped the same way (in order), the first rule whose
    suffix matches wins."""
    groups: dict = {}
    for rule in rules:
        groups.setdefault(letter_of(rule), []).append(rule)
    return groups


_STEP2_BY = _by_letter(_STEP2, lambda rule: rule[0][-2])  # on the last letter but one
_STEP3_BY = _by_letter(_STEP3, lambda rule: rule[0][-1])  # on the last letter
_STEP4_BY = _by_letter(_STEP4, lambda suffix: suffix[-2])


def _consonant(word: str, i: int) -> bool:
    c = word[i]
    if c in _VOWELS:
        return False
    if c == "y":
        return i == 0 or not _consonant(word, i - 1)
    return True


def _measure(word: str, end: int) -> int:
    """Porter's m: the number of vowel-consonant sequences in ``word[:end]``."""
    n, i = 0, 0
    while i < end and _consonant(word, i):
        i += 1
    while i < end:
        while i < end and not _consonant(word, i):
            i += 1
        if i >= end:
            return n
        n += 1
        while i < end and _consonant(word, i):
            i += 1
    return n


def _has_vowel(word: str, end: int) -> bool:
    return any(not _consonant(word, i) for i in range(end))


def _double_consonant(word: str, i: int) -> bool:
    return i >= 1 and word[i] == word[i - 1] and _consonant(word, i)


def _cvc(word: str, i: int) -> bool:
    """Consonant-vowel-consonant ending at ``i``, the last not w, x or y."""
    return (
        i >= 2
        and _consonant(word, i)
        and not _consonant(word, i - 1)
        and _consonant(word, i - 2)
        and word[i] not in "wxy"
    )


def _step1ab(w: str) -> str:
    if w.endswith("s"):
        if w.endswith("sses"):
            w = w[:-2]
        elif w.endswith("ies"):
            w = w[:-3] + "i"
        elif len(w) >= 2 and w[-2] != "s":
            w = w[:-1]
    if w.endswith("eed"):
        if _measure(w, len(w) - 3) > 0:
            w = w[:-1]
        return w
    for suffix in ("ed", "ing"):
        if w.endswith(suffix) and _has_vowel(w, len(w) - len(suffix)):
            w = w[: -len(suffix)]
            if w.endswith(("at", "bl", "iz")):
                return w + "e"
            if _double_consonant(w, len(w) - 1):
                return w if w[-1] in "lsz" else w[:-1]
            if _measure(w, len(w)) == 1 and _cvc(w, len(w) - 1):
                return w + "e"
            return w
    return w


def _step1c(w: str) -> str:
    if w.endswith("y") and _has_vowel(w, len(w) - 1):
        return w[:-1] + "i"
    return w


def _replace(w: str, rules: list[tuple[str, str]] | None, min_measure: int) -> str:
    for suffix, to in rules or ():
        if w.endswith(suffix):
            stem = len(w) - len(suffix)
            return w[:stem] + to if _measure(w, stem) > min_measure else w
    return w


def _step4(w: str) -> str:
    for suffix in _STEP4_BY.get(w[-2], ()):
        if w.endswith(suffix):
            stem = len(w) - len(suffix)
            if suffix == "ion" and not (stem >= 1 and w[stem - 1] in "st"):
                continue  # "ion" only after s or t; "ou" is tried next
            return w[:stem] if _measure(w, stem) > 1 else w
    return w


def _step5(word: str) -> str:
    w = word
    if w[-1] == "e":
        m = _measure(word, len(word))
        if m > 1 or (m == 1 and not _cvc(word, len(word) - 2)):
            w = w[:-1]
    if w[-1] == "l" and _double_consonant(w, len(w) - 1) and _measure(word, len(word)) > 1:
        w = w[:-1]  # the measure is the word's before this step, as in the reference
    return w


@lru_cache(maxsize=1 << 18)
def porter_stem(word: str) -> str:
    """The stem Lucene's ``PorterStemFilter`` gives a lowercased ``word``."""
    if len(word) <= 2 and len(word.encode("utf-16-le")) <= 4:  # Lucene counts UTF-16 units
        return word
    w = _step1c(_step1ab(word))
    if len(w) > 1:
        w = _replace(w, _STEP2_BY.get(w[-2]), 0)
    w = _replace(w, _STEP3_BY.get(w[-1]), 0)
    if len(w) > 1:
        w = _step4(w)
    return _step5(w)
