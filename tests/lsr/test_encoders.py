"""The encoder registry: a type name resolves to its class, and a new type is one entry."""

import pytest

from lsr import BM25Encoder, EncoderError, load_encoder
from lsr.encoder import Encoder
from lsr.encoders import ENCODERS, encoder_class, encoder_kind, register_encoder


@pytest.fixture
def registry():
    saved = dict(ENCODERS)
    yield ENCODERS
    ENCODERS.clear()
    ENCODERS.update(saved)


def test_registered_types_resolve_to_encoder_classes():
    for name in ENCODERS:
        cls = encoder_class(name)
        assert cls.name == name
    assert isinstance(BM25Encoder(), Encoder)
    with pytest.raises(EncoderError, match="Unknown encoder type 'nope'"):
        encoder_class("nope")


def test_a_new_type_is_one_registration(registry, tmp_path):
    fitted = BM25Encoder().fit(["bees make honey", "lava flows"])
    fitted.save_pretrained(tmp_path / "enc")
    register_encoder("words", "lsr.bm25:BM25Encoder")
    assert encoder_kind(f"words:{tmp_path / 'enc'}") == ("words", str(tmp_path / "enc"))
    loaded = load_encoder(f"words:{tmp_path / 'enc'}")
    assert isinstance(loaded, BM25Encoder) and loaded.vocab == fitted.vocab
    with pytest.raises(EncoderError, match="names no model"):
        encoder_kind("words:")
    with pytest.raises(EncoderError, match="module:Class"):
        register_encoder("bad", "lsr.bm25.BM25Encoder")


def test_config_is_what_the_cache_fingerprints():
    a, b = BM25Encoder(k1=0.9), BM25Encoder(k1=1.2)
    assert a.config["type"] == "bm25" and a.config != b.config
    assert a.fit(["x y"]).config == BM25Encoder(k1=0.9).config  # fitting changes no setting
