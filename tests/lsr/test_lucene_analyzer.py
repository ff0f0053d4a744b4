"""The default BM25 analysis against Lucene itself.

``data/lucene_tokens.json`` holds 2,209 tricky strings and the terms Anserini's default
analyzer (Lucene's StandardTokenizer, EnglishPossessiveFilter, LowerCaseFilter, English stop
set, PorterStemFilter) gives them, plus the document lengths Lucene's BM25 scores with; it
was produced by Lucene, through ``scripts/lucene/make_fixture.py`` and the Anserini jar.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from lsr import BM25Encoder, WordTokenizer, load_encoder
from lsr.bm25 import lucene_length
from lsr.lucene_analyzer import _ASCII_TOKEN, _TOKEN, analyze, standard_tokens
from lsr.porter import porter_stem
from lsr.tokenization import tokenizer_by_name

FIXTURE = json.loads((Path(__file__).parent / "data" / "lucene_tokens.json").read_text("utf-8"))
CASES = list(zip(FIXTURE["strings"], FIXTURE["tokens"], strict=True))


def test_the_fixture_covers_what_it_should():
    joined = " ".join(FIXTURE["strings"])
    for needle in ("don't", "U.S.", "1.5", "http://", "@", "東京", "ไทย", "😀", "İ", "’s"):
        assert needle in joined
    assert len(CASES) > 2000 and sum(map(len, FIXTURE["tokens"])) > 10000


@pytest.mark.parametrize("start", range(0, len(CASES), 250))
def test_terms_equal_lucenes(start):
    tokenizer = WordTokenizer()  # the default analysis of a BM25 encoder
    for text, expected in CASES[start : start + 250]:
        assert analyze(text) == expected, text
        assert tokenizer.tokenize(text) == expected, text


def test_the_ascii_fast_path_equals_the_unicode_rules():
    ascii_texts = [t for t, _ in CASES if t.isascii()]
    assert len(ascii_texts) > 500
    for text in ascii_texts:
        assert _ASCII_TOKEN.findall(text) == _TOKEN.findall(text), text


def test_what_lucene_keeps_whole():
    assert standard_tokens("I'd don't e.g. U.S. h.c 1.5 3,000 a_b foo@bar.com") == [
        "I'd", "don't", "e.g", "U.S", "h.c", "1.5", "3,000", "a_b", "foo", "bar.com",
    ]  # fmt: skip
    assert analyze("a lone s, John's İstanbul ΣΑΣ") == ["lone", "s", "john", "istanbul", "σασ"]
    long_word = "x" * 600
    assert standard_tokens(long_word) == ["x" * 255, "x" * 255, "x" * 90]


def test_lucenes_porter_is_not_snowballs():
    import Stemmer

    snowball = Stemmer.Stemmer("porter")
    assert porter_stem("anthropology") == porter_stem("anthropological") == "anthropolog"
    assert snowball.stemWord("anthropology") != snowball.stemWord("anthropological")
    assert porter_stem("is") == "is" and porter_stem("ies") == "i"  # 1-2 letters kept


def test_no_analysis_emits_an_empty_term():
    texts = [t for t, _ in CASES] + ["s", "a lone s", "'s", "s's"]
    for tokenizer in (WordTokenizer(), WordTokenizer(analyzer="regex")):
        for text in texts:
            assert "" not in tokenizer.tokenize(text), (tokenizer.analyzer, text)


def test_options_turn_steps_off():
    assert WordTokenizer(stopwords=None, stemmer=None).tokenize("The Cats' runs") == [
        "the", "cats", "runs",
    ]  # fmt: skip
    assert WordTokenizer(lowercase=False, stemmer=None).tokenize("The Cats") == ["The", "Cats"]


def test_lucene_document_lengths():
    expected = np.asarray(FIXTURE["lengths"])
    assert np.array_equal(lucene_length(np.arange(expected.size)), expected)
    assert lucene_length(np.array([2**31 - 1]))[0] == 2013265944


def test_lucene_doc_length_scores_as_lucene_does():
    docs = ["cat " * n + "dog" for n in (1, 5, 30, 100)] + ["", "bird"]
    exact = BM25Encoder(doc_length="exact").fit(docs)
    lucene = BM25Encoder(doc_length="lucene").fit(docs)
    assert exact.n_docs == 6 and lucene.n_docs == 5  # Lucene counts documents with terms
    w = lucene.encode_documents(docs).toarray()
    assert w.dtype == np.float32
    idf = np.float32(np.log(1 + (5 - 4 + 0.5) / (4 + 0.5)))
    lengths = np.array([2, 6, 31, 101])
    assert list(lucene_length(lengths)) == [2, 6, 31, 96]
    f32 = np.float32
    avgdl = f32(lengths.sum() / 5 + 1 / 5)  # the "bird" document has one term
    tf = np.array([1, 5, 30, 100], dtype=f32)
    inv = f32(1) / (
        f32(0.9) * ((f32(1) - f32(0.4)) + f32(0.4) * lucene_length(lengths).astype(f32) / avgdl)
    )
    expected = idf - idf / (f32(1) + tf * inv)
    cat = lucene.vocab.index("cat")
    assert np.array_equal(w[:4, cat], expected)  # bit for bit


def test_saved_encoders_keep_their_analysis(tmp_path):
    enc = BM25Encoder(doc_length="lucene").fit(["Don't stop", "U.S. policy"])
    enc.save_pretrained(tmp_path / "new")
    again = load_encoder(tmp_path / "new")
    assert again.tokenizer.analyzer == "lucene" and again.doc_length == "lucene"
    assert again.vocab == enc.vocab and "don't" in enc.vocab
    config = json.loads((tmp_path / "new" / "encoder.json").read_text())
    del config["tokenizer"]["analyzer"], config["doc_length"]  # as saved by lsr 0.1
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "encoder.json").write_text(json.dumps(config))
    old = load_encoder(tmp_path / "old")
    assert old.tokenizer.analyzer == "regex" and old.doc_length == "exact"


def test_tokenizer_names():
    assert tokenizer_by_name("lucene").analyzer == "lucene"
    assert tokenizer_by_name("regex").analyzer == tokenizer_by_name("word").analyzer == "regex"
