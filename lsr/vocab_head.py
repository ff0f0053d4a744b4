"""A vocabulary head's max-pooled logits, screened in int8 and finished exactly in float32.

SPLADE keeps, per text, the terms whose largest logit over the text's tokens is positive
(log(1 + ReLU(x)) is 0 for x <= 0): a few hundred of BERT's 30,522. The head's last layer
(hidden size -> vocabulary, one row per token) is most of a small model's work on a CPU: 30 of
38 ms for 8 SciFact queries with splade-tiny. So :class:`ScreenedDecoder` first bounds every
term's largest logit from above with an int8 product, computed exactly in int32 by
``torch._int_mm`` (VNNI on current CPUs, about 6x faster than the float product), plus a
rigorous bound on the quantization error; only terms whose bound is positive (about twice the
terms that end up non-zero) are then computed in float32, the same product the whole head
computes. No term with a positive logit can be missed, so the vectors are the float model's.

The error bound, for a text's rows x_i quantized with one step r (x_i ~ r * q_i, |x_i - r q_i|
<= r/2 per component) and a term's row w quantized with its own step s (w ~ s * v):
    |x_i . w - r s (q_i . v)| <= r/2 * ||w||_1 + r * ||q_i||_1 * s/2.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

MAX_ROWS = 256  # rows per int8 product: (256, vocabulary) int32 stays in cache; 1024 is 4x slower
_SLACK = 1e-3  # added to every bound: covers float32 rounding in the bound's own arithmetic


def int8_products_available() -> bool:
    """Whether this torch multiplies int8 matrices into int32 on the CPU."""
    import torch

    if not hasattr(torch, "_int_mm"):
        return False
    try:
        a = torch.ones((3, 8), dtype=torch.int8)
        b = torch.ones((8, 16), dtype=torch.int8)
        return bool((torch._int_mm(a, b) == 8).all())
    except (RuntimeError, NotImplementedError, TypeError):
        return False


class ScreenedDecoder:
    """The logits of a ``torch.nn.Linear`` vocabulary layer that can be positive, per text.

    The int8 copy of the weights is made on first use and again whenever the layer's weights
    change (training updates them in place, which bumps their version)."""

    def __init__(self, decoder) -> None:
        self.decoder = decoder
        self._cache: tuple | None = None  # (weights' identity and version, prepared tensors)

    def _prepared(self) -> tuple:
        """``(weights, bias, int8 weights, their steps, L1 norms of the rows)``, one tuple
        replaced at once (a search thread may read it while another encodes)."""
        import torch

        weight, bias = self.decoder.weight, self.decoder.bias
        key = (weight.data_ptr(), weight._version, None if bias is None else bias._version)
        cache = self._cache
        if cache is None or cache[0] != key:
            w = weight.detach().float()
            step = w.abs().amax(dim=1) / 127.0
            step = torch.where(step > 0, step, torch.ones_like(step))
            b = torch.zeros(w.shape[0]) if bias is None else bias.detach().float()
            q = torch.round(w / step[:, None]).to(torch.int8)
            cache = self._cache = (key, (w, b, q, step, w.abs().sum(dim=1)))
        return cache[1]

    def candidates(self, x, lengths: list[int]) -> list[tuple]:
        """For each text (``lengths`` consecutive rows of ``x``, the head's input for its
        tokens): the ids of the terms that can have a positive logit on one of its tokens,
        ascending (a superset of those that do), and the float32 logits of its tokens for
        them, ``(tokens, candidates)``, as ``decoder(x)`` computes them. Every other term's
        logits are <= 0 on every token, so max or sum pooling of log(1 + ReLU) gives it 0."""
        import torch
        import torch.nn.functional as F

        w, b, q, step, l1 = self._prepared()
        out = []
        for rows in torch.split(x.float(), lengths):
            bound = None
            for lo in range(0, rows.shape[0], MAX_ROWS):
                part = rows[lo : lo + MAX_ROWS]
                r = float(part.abs().max()) / 127.0 or 1.0
                qx = torch.round(part / r).to(torch.int8)
                spread = float(qx.abs().sum(dim=1, dtype=torch.int32).max())
                top = torch._int_mm(qx, q.t()).amax(dim=0).float()
                upper = top * (r * step) + (r / 2 * 1.001) * (l1 + spread * step)
                bound = upper if bound is None else torch.maximum(bound, upper)
            upper = bound + b + _SLACK
            cand = torch.nonzero(upper > 0).squeeze(1)
            out.append((cand, F.linear(rows, w[cand], b[cand])))
        return out
