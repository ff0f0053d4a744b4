"""SPLADE over a decoder-only language model, as in Mistral-SPLADE (Doshi et al., 2024): the
causal LM's vocabulary head gives logits at each position, and a term's weight is
log(1 + ReLU) of its largest logit, as SPLADE does with a masked LM.

A causal model's token sees only the tokens before it. Mistral-SPLADE therefore uses echo
embeddings (Springer et al., 2024): the text is given twice, and only the positions of the
second copy are pooled, each of which has read the whole text once. With ``echo=False`` every
position of the text is pooled. Optional prompts go before the first copy (``prompt``) and
between the copies (``echo_prompt``); the model's BOS token, if it has one, starts the input.
Loaded with ``AutoModelForCausalLM`` (Llama, Mistral, ...); one window per text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lsr.errors import EncoderError
from lsr.mlm import MLMSparseModel, activate, pick_device
from lsr.splade import SpladeEncoder


class CausalSparseModel(MLMSparseModel):
    """A ``*ForCausalLM`` model + tokenizer producing one sparse vector per text."""

    settings = ("echo", "prompt", "echo_prompt")

    def __init__(
        self,
        model,
        tokenizer,
        echo: bool = True,
        prompt: str = "",
        echo_prompt: str = "",
        **kwargs,
    ) -> None:
        if kwargs.get("max_chunks", 1) != 1:
            raise EncoderError("A causal SPLADE model reads one window per text (max_chunks 1).")
        if not isinstance(echo, bool) or not isinstance(prompt, str):
            raise EncoderError("echo must be true or false, and the prompts text.")
        self.echo = echo
        self.prompt = prompt
        self.echo_prompt = echo_prompt if isinstance(echo_prompt, str) else ""
        super().__init__(model, tokenizer, **kwargs)
        self._prompt_ids = self._plain_ids(prompt)
        self._echo_prompt_ids = self._plain_ids(self.echo_prompt)

    def _plain_ids(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> CausalSparseModel:
        """Load a ``*ForCausalLM`` checkpoint and its tokenizer (local folder or Hub id)."""
        from lsr.hf import load_pretrained

        kwargs["device"] = pick_device(kwargs.get("device"))  # before the weights load
        tokenizer, model = load_pretrained(name_or_path, "AutoModelForCausalLM", "a causal LM")
        return cls(model, tokenizer, **kwargs)

    def _sequences(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list]:
        """Each text's input ids and the first position pooled: [BOS] prompt text
        echo_prompt text (echo), or [BOS] prompt text; the text cut to fit ``max_length``."""
        bos = self.tokenizer.bos_token_id
        head = ([bos] if bos is not None else []) + self._prompt_ids
        middle = self._echo_prompt_ids if self.echo else []
        copies = 2 if self.echo else 1
        room = (max_length - len(head) - len(middle)) // copies
        if room < 1:
            raise EncoderError(f"max_length {max_length} leaves no room for text after prompts.")
        sequences, starts = [], []
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            ids = ids[:room]
            first = head + ids + middle if self.echo else head
            sequences.append(first + ids)
            starts.append(len(first))
        return sequences, starts

    def forward(self, texts: Sequence[str], max_length: int | None = None):
        """Dense (len(texts), vocab) tensor of term weights, differentiable (for training)."""
        import torch

        sequences, starts = self._sequences(texts, max_length or self.max_length)
        if not any(sequences):  # only empty texts, and no BOS: nothing to run
            return torch.zeros((len(texts), self.vocab_size), device=self.device)
        input_ids, mask = self._tensors(sequences)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        start = torch.tensor(starts, device=input_ids.device).unsqueeze(1)
        pooled_at = mask.bool() & (positions.unsqueeze(0) >= start)
        with self._autocast():
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
        logits = logits.float()
        if self.pooling == "max":
            top = logits.masked_fill(~pooled_at.unsqueeze(-1), float("-inf")).amax(dim=1)
            pooled = activate(top, self.activation)
            pooled = torch.nan_to_num(pooled, neginf=0.0)  # a text with no tokens
        else:
            pooled = (activate(logits, self.activation) * pooled_at.unsqueeze(-1)).sum(dim=1)
        if self.zero_special and self.special_ids.numel():
            pooled = pooled.index_fill(1, self.special_ids.to(pooled.device), 0.0)
        return pooled


class CausalSpladeEncoder(SpladeEncoder):
    """SPLADE with a decoder-only LM (Mistral-SPLADE) for queries and documents; everything
    else as :class:`SpladeEncoder` (options, saving, training)."""

    name = "causal-splade"
    model_class = CausalSparseModel
