"""BM25 as sparse vectors: exact Lucene-style scores through the index, save/load, tokenizers."""

import math
from collections import Counter

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from lsr import BM25Encoder, EncoderError, HFTokenizer, WordTokenizer, load_encoder
from lsr.index import Index

DOCS = [
    "The cat sat on the mat.",
    "Dogs and cats are pets; a dog's life is good.",
    "Sparse retrieval with inverted indexes is fast.",
    "Cats chase mice, mice chase cheese.",
    "An index of documents for retrieval experiments.",
]


def reference_bm25(docs_terms, query_terms, k1, b):
    """Textbook BM25 (Lucene idf, no (k1+1) factor), computed term by term in Python."""
    n = len(docs_terms)
    avgdl = sum(len(d) for d in docs_terms) / n
    df = Counter(t for d in docs_terms for t in set(d))
    scores = []
    for d in docs_terms:
        tf = Counter(d)
        s = 0.0
        for t in query_terms:
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return scores


@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.2, 0.75), (0.0, 0.0)])
def test_index_scores_equal_reference_bm25(k1, b):
    enc = BM25Encoder(k1=k1, b=b).fit(DOCS)
    idx = Index.build(
        enc.encode_documents(DOCS),
        [str(i) for i in range(len(DOCS))],
        enc.vocab,
        quantization="float32",
    )
    tok = enc.tokenizer
    for query in ["cat mice", "retrieval index", "dogs", "cheese cheese chase"]:
        ref = reference_bm25([tok.tokenize(d) for d in DOCS], tok.tokenize(query), k1, b)
        hits = dict(idx.search(enc.encode_queries([query]), 10)[0].items())
        for i, s in enumerate(ref):
            assert hits.get(str(i), 0.0) == pytest.approx(s, rel=1e-5)


def test_word_tokenizer_analysis():
    tok = WordTokenizer()
    assert tok.tokenize("The Cats' running, a dog's LIFE") == ["cat", "run", "dog", "life"]
    assert WordTokenizer(stemmer=None, stopwords=None).tokenize("The Cats") == ["the", "cats"]
    with pytest.raises(EncoderError, match="Unknown stemmer"):
        WordTokenizer(stemmer="klingon", analyzer="regex")
    with pytest.raises(EncoderError, match="Lucene's Porter stemmer"):
        WordTokenizer(stemmer="english")
    with pytest.raises(EncoderError, match="Unknown analyzer"):
        WordTokenizer(analyzer="whitespace")


def test_query_side_is_term_counts_and_drops_unknown_terms():
    enc = BM25Encoder().fit(DOCS)
    q = enc.encode_queries(["cheese cheese zebra"])
    assert enc.decode(q) == [("chees", 2.0)]
    assert enc.encode_queries(["zebra"]).nnz == 0


def test_save_and_load_round_trip(tmp_path):
    enc = BM25Encoder(k1=1.1, b=0.6).fit(DOCS)
    enc.save_pretrained(tmp_path / "enc")
    again = load_encoder(tmp_path / "enc")
    assert isinstance(again, BM25Encoder) and again.k1 == 1.1 and again.vocab == enc.vocab
    a, b = enc.encode_documents(DOCS), again.encode_documents(DOCS)
    assert (a != b).nnz == 0


def _tiny_hf_tokenizer(folder):
    words = ["[UNK]", "[CLS]", "[SEP]", "cat", "cats", "mice", "retrieval", "the", "index"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]"])
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_bm25_over_a_hugging_face_tokenizer(tmp_path):
    tok = HFTokenizer.from_pretrained(_tiny_hf_tokenizer(tmp_path / "tok"))
    assert tok.vocab[3] == "cat" and set(tok.special_ids.tolist()) == {0, 1, 2}
    enc = BM25Encoder(tok).fit(["cat mice", "the index", "zebra cat"])
    q = enc.encode_queries(["zebra cat [CLS]"])
    assert enc.decode(q) == [("cat", 1.0)]  # unknown word maps to [UNK], a special token: dropped
    enc.save_pretrained(tmp_path / "enc")
    assert load_encoder(tmp_path / "enc").vocab == tok.vocab


def test_errors():
    with pytest.raises(EncoderError, match="not fitted"):
        BM25Encoder().encode_documents(["x"])
    with pytest.raises(EncoderError, match="empty corpus"):
        BM25Encoder().fit([])
    with pytest.raises(EncoderError, match="k1 >= 0"):
        BM25Encoder(k1=-1)
    with pytest.raises(EncoderError, match="Unknown encoder 'nope'"):
        load_encoder("nope")
    with pytest.raises(EncoderError, match="Cannot load a tokenizer"):
        HFTokenizer.from_pretrained("no/such-model-offline")


def test_empty_text_gives_empty_vector():
    enc = BM25Encoder().fit(DOCS)
    v = enc.encode_documents(["", "the and of"])
    assert v.shape == (2, len(enc.vocab)) and v.nnz == 0
    assert np.all(enc.idf() >= 0)


def test_one_analysis_gives_the_vectors_and_the_words_the_vocabulary_lacks(tmp_path):
    texts = ["The cat drinks coffee with a quokka", "quokka zyzzyva quokka", "cats drink"]
    enc = BM25Encoder(WordTokenizer()).fit(["the cat sat on the mat", "coffee is a drink"])
    vectors, unknown = enc.encode_documents_with_unknown(texts)
    assert (vectors != enc.encode_documents(texts)).nnz == 0
    assert unknown == enc.unknown_terms(texts) == [["quokka"], ["quokka", "zyzzyva"], []]
    tok = HFTokenizer.from_pretrained(_tiny_hf_tokenizer(tmp_path / "tok"))
    enc = BM25Encoder(tok).fit(["cat mice", "the index", "zebra cat"])
    texts = ["cats retrieval cat", "zebra mice"]
    vectors, unknown = enc.encode_documents_with_unknown(texts)
    assert (vectors != enc.encode_documents(texts)).nnz == 0
    assert unknown == [["cats", "retrieval"], []]  # tokens of the vocabulary no document had


def test_term_counts_are_canonical_and_exact_for_few_and_many_tokens():
    """The dict path (a few tokens) and the sort path (many) count alike, and the arrays
    they build without scipy's checks equal what scipy builds with them."""
    import numpy as np
    import scipy.sparse as sp

    from lsr.sparse import SMALL_COUNTS, canonical_csr, term_counts

    rng = np.random.default_rng(3)
    for n, length, vocab in [(1, 9, 30), (3, 40, 50), (40, 30, 50), (0, 0, 7), (2, 0, 7)]:
        tokens = [rng.integers(0, vocab, length).astype(np.int32) for _ in range(n)]
        counts = term_counts(tokens, vocab)
        expected = np.zeros((n, vocab))
        for i, row in enumerate(tokens):
            np.add.at(expected[i], row, 1)
        assert counts.shape == (n, vocab) and np.array_equal(counts.toarray(), expected)
        checked = sp.csr_array(
            (counts.data, counts.indices, counts.indptr), shape=counts.shape
        )  # scipy's own constructor, with its checks
        checked.sum_duplicates()
        assert np.array_equal(checked.indices, counts.indices)
        assert counts.has_canonical_format and counts.indices.dtype == np.int32
    assert 40 * 30 > SMALL_COUNTS >= 9  # both paths ran
    made = canonical_csr(np.ones(2, np.float32), np.array([1, 4], np.int32),
                         np.array([0, 2], np.int32), (1, 6))  # fmt: skip
    assert made.toarray().tolist() == [[0, 1, 0, 0, 1, 0]] and made.nnz == 2
    assert (made @ made.T).toarray().tolist() == [[2.0]]
