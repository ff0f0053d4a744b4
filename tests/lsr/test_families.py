"""The encoder families of the unified LSR framework beside SPLADE's masked LM: MLP term
weighting (uniCOIL, from castorini's checkpoint layout) and a decoder-only LM's vocabulary
head (Mistral-SPLADE, with echo), each built tiny and random here and checked against a
position-by-position computation written apart from the encoder; each trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsr import EncoderError, load_encoder
from lsr.causal_splade import CausalSpladeEncoder
from lsr.hf import import_transformers
from lsr.term_weighting import UniCOILEncoder
from lsr.training import TrainConfig, Trainer
from tests.lsr.test_training import base_config

TEXTS = [
    "the cat sat on the mat",
    "what is the capital city of france",
    "whales and fish swim in the ocean the ocean",
    "coffee",
    "",
]


def _tokenizer(tiny_mlm):
    return import_transformers().AutoTokenizer.from_pretrained(str(tiny_mlm))


@pytest.fixture(scope="module")
def unicoil(tiny_mlm, tmp_path_factory):
    """A uniCOIL checkpoint as castorini publishes one: ``bert.*`` (no pooler) and
    ``tok_proj`` in pytorch_model.bin, config.json naming UniCoilEncoder."""
    import torch

    tf = import_transformers()
    torch.manual_seed(5)
    config = tf.BertConfig(
        vocab_size=len(_tokenizer(tiny_mlm)), hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    bert = tf.BertModel(config, add_pooling_layer=False).eval()
    proj = torch.nn.Linear(32, 1)
    with torch.no_grad():
        proj.bias.fill_(0.3)  # most tokens get a positive weight
    state = {f"bert.{k}": v for k, v in bert.state_dict().items()}
    state.update({f"tok_proj.{k}": v for k, v in proj.state_dict().items()})
    folder = tmp_path_factory.mktemp("unicoil") / "unicoil"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    config.architectures = ["UniCoilEncoder"]
    config.save_pretrained(str(folder))
    _tokenizer(tiny_mlm).save_pretrained(str(folder))
    return folder, bert, proj


def _reference_unicoil(bert, proj, tokenizer, text: str) -> dict[int, float]:
    """Pyserini's recipe, token by token: ReLU(tok_proj(h_i)) per position, the largest per
    token id, special tokens left out."""
    import torch

    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        hidden = bert(input_ids=torch.tensor([ids])).last_hidden_state[0]
        weights = torch.relu(proj(hidden)).squeeze(-1).tolist()
    special = set(tokenizer.all_special_ids)
    out: dict[int, float] = {}
    for token, weight in zip(ids, weights, strict=True):
        if token not in special and weight > 0:
            out[token] = max(out.get(token, 0.0), weight)
    return out


def _as_dicts(rows) -> list[dict[int, float]]:
    return [
        dict(zip(rows.indices[a:b].tolist(), rows.data[a:b].tolist(), strict=True))
        for a, b in zip(rows.indptr[:-1], rows.indptr[1:], strict=True)
    ]


def _assert_close(ours: list[dict], reference: list[dict]) -> None:
    for got, want in zip(ours, reference, strict=True):
        assert got.keys() == want.keys()
        for term, weight in want.items():
            assert got[term] == pytest.approx(weight, abs=1e-5)


def test_a_castorini_unicoil_checkpoint_weighs_each_input_token(unicoil, tiny_mlm, tmp_path):
    folder, bert, proj = unicoil
    enc = load_encoder(folder)  # found by its config: no type needed
    assert isinstance(enc, UniCOILEncoder)
    tokenizer = _tokenizer(tiny_mlm)
    reference = [_reference_unicoil(bert, proj, tokenizer, t) for t in TEXTS]
    _assert_close(_as_dicts(enc.encode_documents(TEXTS)), reference)
    queries = enc.encode_queries(TEXTS)
    _assert_close(_as_dicts(queries), reference)  # the same model on both sides
    for row, text in zip(_as_dicts(queries), TEXTS, strict=True):  # no expansion
        assert set(row) <= set(tokenizer(text)["input_ids"])
    enc.save_pretrained(tmp_path / "saved")  # lsr's save keeps the layout and the type
    again = load_encoder(tmp_path / "saved")
    assert isinstance(again, UniCOILEncoder)
    _assert_close(_as_dicts(again.encode_documents(TEXTS)), reference)
    assert _as_dicts(load_encoder(f"unicoil:{folder}").encode_documents(TEXTS[:1])) == _as_dicts(
        enc.encode_documents(TEXTS[:1])
    )


def test_a_unicoil_model_is_not_exported_as_a_masked_lm(unicoil, tmp_path, capsys):
    from lsr.service.cli import main

    out = tmp_path / "st"
    args = ["export-model", str(unicoil[0]), "--format", "sentence-transformers", "--out", str(out)]
    assert main(args) == 2
    assert "has no masked-LM head" in capsys.readouterr().err and not out.exists()


def test_a_unicoil_folder_with_foreign_weights_is_refused(unicoil, tmp_path):
    import torch

    folder, _, _ = unicoil
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((folder / name).read_bytes())
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["tok_proj.weight"]
    torch.save(state, broken / "pytorch_model.bin")
    with pytest.raises(EncoderError, match="tok_proj.weight"):
        load_encoder(broken)
    (broken / "pytorch_model.bin").write_bytes(b"not a torch file")  # a damaged download
    with pytest.raises(EncoderError, match="Cannot read the weights in .*pytorch_model.bin"):
        load_encoder(broken)


def _causal_folder(tiny_mlm, folder, family: str, bos: bool):
    import torch

    tf = import_transformers()
    tokenizer = _tokenizer(tiny_mlm)
    if bos:
        tokenizer.bos_token = "[CLS]"
    torch.manual_seed(7)
    config_class = tf.LlamaConfig if family == "llama" else tf.MistralConfig
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0,
    )  # fmt: skip
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model, tokenizer


def _reference_causal(model, tokenizer, text, echo, prompt="", echo_prompt=""):
    """Mistral-SPLADE's recipe, position by position: [BOS] prompt text echo_prompt text, the
    logits of each position of the second copy (all of the text without echo), the term's
    largest, log(1 + ReLU), special tokens left out."""
    import torch

    def plain(s):
        return tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

    ids = plain(text)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    first = bos + plain(prompt) + (ids + plain(echo_prompt) if echo else [])
    sequence = first + ids
    if not ids:
        return {}
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([sequence])).logits[0]
    special = set(tokenizer.all_special_ids)
    out: dict[int, float] = {}
    for position in range(len(first), len(sequence)):
        for term, logit in enumerate(logits[position].tolist()):
            weight = float(np.log1p(max(logit, 0.0)))
            if term not in special and weight > out.get(term, 0.0):
                out[term] = weight
    return out


@pytest.mark.parametrize(
    "family, echo, bos, prompts",
    [
        ("mistral", True, False, ("", "")),
        ("llama", True, True, ("what is", "the")),
        ("llama", False, True, ("", "")),
    ],
)
def test_a_causal_lm_gives_mistral_splade_vectors(tiny_mlm, tmp_path, family, echo, bos,
                                                   prompts):  # fmt: skip
    folder = tmp_path / family
    model, tokenizer = _causal_folder(tiny_mlm, folder, family, bos)
    prompt, echo_prompt = prompts
    enc = load_encoder(folder, echo=echo, prompt=prompt, echo_prompt=echo_prompt)
    assert isinstance(enc, CausalSpladeEncoder)
    reference = [_reference_causal(model, tokenizer, t, echo, prompt, echo_prompt) for t in TEXTS]
    _assert_close(_as_dicts(enc.encode_documents(TEXTS)), reference)
    _assert_close(_as_dicts(enc.encode_queries(TEXTS)), reference)
    enc.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "encoder.json").read_text())
    assert (config["type"], config["echo"], config["prompt"]) == ("causal-splade", echo, prompt)
    again = load_encoder(tmp_path / "saved")
    _assert_close(_as_dicts(again.encode_documents(TEXTS)), reference)


def test_echo_makes_early_tokens_see_the_whole_text(tiny_mlm, tmp_path):
    """Without echo a causal model's positions see only what came before: a text's vector is
    at most its continuation's (the same positions, the same logits, more of them pooled).
    With echo every pooled position has read the whole text, so that no longer holds."""
    folder = tmp_path / "llama"
    _causal_folder(tiny_mlm, folder, "llama", bos=False)
    texts = ["coffee", "coffee tea drink", "the cat", "the cat sat on the mat"]
    plain = load_encoder(f"causal-splade:{folder}", echo=False).encode_documents(texts)
    echo = load_encoder(f"causal-splade:{folder}", echo=True).encode_documents(texts)

    def prefix_bounded(rows) -> bool:
        dense = rows.toarray()
        return all(np.all(dense[i + 1] >= dense[i] - 1e-6) for i in (0, 2))

    assert prefix_bounded(plain)
    assert not prefix_bounded(echo)


@pytest.mark.parametrize("kind", ["unicoil", "causal-splade"])
def test_each_family_trains_with_the_same_losses_and_regularizers(
    kind, unicoil, tiny_mlm, tmp_path
):
    if kind == "unicoil":
        model = unicoil[0]
    else:
        model = tmp_path / "llama"
        _causal_folder(tiny_mlm, model, "llama", bos=False)
    cfg = base_config(tiny_mlm, tmp_path, model=str(model), kind=kind, steps=30,
                      learning_rate=3e-3)  # fmt: skip
    trainer = Trainer(TrainConfig.from_dict(cfg))
    before = [p.detach().clone() for p in trainer.doc_model.model.parameters()]
    out = trainer.train(progress=False)
    first, last = trainer.history[0], trainer.history[-1]
    assert np.isfinite(last["rank_loss"]) and last["rank_loss"] < first["rank_loss"]
    assert last["lambda_d"] > 0 and last["loss"] > last["rank_loss"]  # FLOPS on both sides
    after = list(trainer.doc_model.model.parameters())
    assert any(not np.allclose(a.detach(), b) for a, b in zip(after, before, strict=True))
    trained = load_encoder(out)
    assert trained.name == kind
    assert trained.encode_documents(["the cat sat", "volcano lava"]).nnz > 0
