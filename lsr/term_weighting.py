"""MLP term weighting (uniCOIL, DeepImpact): a linear layer over the encoder's contextual
embedding of each input token gives that token a weight; a term's weight is the largest (or,
with ``pooling="sum"``, the summed) weight of its occurrences. No expansion: a vector holds
only the text's own tokens.

Loads castorini's uniCOIL checkpoints as they are published (a BERT encoder under ``bert.``
without its pooler, and ``tok_proj``, a ``Linear(hidden, 1)``, in ``pytorch_model.bin`` or
``model.safetensors``), and saves the same layout. Special tokens ([CLS], [SEP], [PAD]) get no
weight, as in Pyserini's uniCOIL encoders.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lsr.errors import EncoderError
from lsr.hf import WEIGHT_FILES, load_state, weights_file
from lsr.mlm import MLMSparseModel, activate, pick_device
from lsr.splade import SpladeEncoder

PROJECTION = "tok_proj"  # castorini's name of the term-weight layer
ARCHITECTURE = "UniCoilEncoder"  # what config.json names (castorini's class)


@functools.cache
def _module_class():
    """The ``torch.nn.Module`` of an encoder and its term-weight layer (built on first use,
    so importing this module loads no torch)."""
    import torch

    class TermWeightModule(torch.nn.Module):
        """``body`` (a transformers encoder, e.g. ``BertModel``) under ``prefix`` and the
        term-weight layer; ``config`` is the encoder's."""

        def __init__(self, body, prefix: str) -> None:
            super().__init__()
            self.prefix = prefix
            self.add_module(prefix, body)
            self.tok_proj = torch.nn.Linear(body.config.hidden_size, 1)
            self.config = body.config

        @property
        def body(self):
            return getattr(self, self.prefix)

        def get_input_embeddings(self):
            """The body's token embeddings (what ``freeze_embeddings`` in training keeps)."""
            return self.body.get_input_embeddings()

        def scores(self, input_ids, attention_mask):
            """One raw weight per position: (batch, length)."""
            hidden = self.body(input_ids=input_ids, attention_mask=attention_mask)
            return self.tok_proj(hidden.last_hidden_state).squeeze(-1)

    return TermWeightModule


def _read_weights(folder: Path) -> dict:
    path = weights_file(folder)
    if path is None:
        raise EncoderError(f"{folder} has no model weights ({' or '.join(WEIGHT_FILES)}).")
    return load_state(path)


class TermWeightModel(MLMSparseModel):
    """An encoder with a term-weight layer, producing one sparse vector per text: the same
    batching, special-token handling and encoding as :class:`MLMSparseModel`, with the
    vocabulary head replaced by per-token weights scattered onto the tokens' ids."""

    def __init__(self, model, tokenizer, activation: str = "relu", **kwargs) -> None:
        super().__init__(model, tokenizer, activation=activation, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> TermWeightModel:
        """Load a local uniCOIL checkpoint folder (castorini's layout, or one saved here)."""
        import torch

        from lsr.hf import import_transformers

        transformers = import_transformers()
        folder = Path(name_or_path)
        if not folder.is_dir():
            raise EncoderError(f"{name_or_path}: uniCOIL checkpoints are read from a folder.")
        kwargs["device"] = pick_device(kwargs.get("device"))
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
            config = transformers.AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise EncoderError(f"Cannot load {folder}: {str(e).splitlines()[0]}") from e
        state = _read_weights(folder)
        prefixes = {k.split(".", 1)[0] for k in state if not k.startswith(PROJECTION + ".")}
        if len(prefixes) != 1 or f"{PROJECTION}.weight" not in state:
            raise EncoderError(
                f"{folder}: expected an encoder under one prefix and {PROJECTION}.weight, "
                f"found prefixes {sorted(prefixes)}."
            )
        (prefix,) = prefixes
        try:
            body = transformers.AutoModel.from_config(config, add_pooling_layer=False)
        except TypeError:  # encoders without a pooler take no such argument
            body = transformers.AutoModel.from_config(config)
        module = _module_class()(body, prefix)
        missing, unexpected = module.load_state_dict(
            {k: v.to(torch.float32) for k, v in state.items()}, strict=False
        )
        missing = [k for k in missing if "position_ids" not in k]
        if missing or unexpected:
            raise EncoderError(
                f"{folder}: the weights do not fit the encoder (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})."
            )
        module.eval()  # as transformers' from_pretrained leaves a model
        return cls(module, tokenizer, **kwargs)

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.model.config
        config.architectures = [ARCHITECTURE]
        config.save_pretrained(str(folder))
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        self.tokenizer.save_pretrained(str(folder))

    def _pooled(self, input_ids, mask, split):
        """Each window's term weights: its tokens' weights onto their ids (max or sum over a
        token's occurrences); padding gives nothing."""
        import torch

        with self._autocast():
            scores = self.model.scores(input_ids, mask)
        weights = activate(scores.float(), self.activation) * mask
        out = torch.zeros((input_ids.shape[0], self.vocab_size), device=weights.device)
        reduce = "amax" if self.pooling == "max" else "sum"
        return out.scatter_reduce(1, input_ids, weights, reduce=reduce, include_self=True)


class UniCOILEncoder(SpladeEncoder):
    """uniCOIL / DeepImpact-style term weighting for queries and documents (no expansion);
    everything else as :class:`SpladeEncoder` (options, saving, training)."""

    name = "unicoil"
    model_class = TermWeightModel
