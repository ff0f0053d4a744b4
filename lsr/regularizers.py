"""Sparsity regularizers on a batch of term-weight vectors ``w`` of shape (batch, vocab).

- FLOPS (Paria et al., 2020; SPLADE): sum_j (mean_b |w_bj|)^2, a smooth proxy for the
  expected number of multiply-adds of a query-document dot product.
- L1: mean_b sum_j |w_bj|.
- IDF-aware FLOPS (Geng et al., 2024, "Towards Competitive Search Relevance For Inference-Free
  Learned Sparse Retrievers"): see :class:`IDFAwareFLOPS`.
- L0-masked FLOPS (Shen et al., 2025, "Exploring L0 Sparsification for Inference-free Sparse
  Retrievers"): FLOPS over only those vectors of the batch with more than ``tau`` non-zeros,
  so vectors that are already sparse enough are left alone.

Each regularizer's weight follows :class:`QuadraticWarmup`, set separately for queries and
documents by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lsr.errors import EncoderError


class Regularizer:
    """A penalty on a (batch, vocab) weight tensor; call it to get a scalar."""

    name = "regularizer"

    @classmethod
    def from_settings(cls, idf: np.ndarray | None, tau: int) -> Regularizer:
        """Build from a training config's settings (most regularizers take none)."""
        return cls()

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FLOPS(Regularizer):
    name = "flops"

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return (weights.abs().mean(dim=0) ** 2).sum()


class L1(Regularizer):
    name = "l1"

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return weights.abs().sum(dim=1).mean()


class IDFAwareFLOPS(Regularizer):
    """FLOPS with each term's penalty divided by its IDF: sum_j (mean_b |w_bj|)^2 / idf_j.

    Inference-free matching scores a document by s(q, d) = sum_{j in q} idf_j * w_dj, so a
    term's effective contribution is v_j = idf_j * w_j. Geng et al. (2024) make FLOPS
    "IDF-aware" by penalizing the raw weights while matching with IDF: in terms of the
    contributions that is sum_j (mean v_j / idf_j)^2, i.e. low-IDF terms pay ~1/idf_j^2 more
    (their reference code applies plain FLOPS to w under IDF matching: use ``flops`` with an
    inference-free model for exactly that). This class goes one step further and divides
    the penalty on w by idf_j as well, suppressing frequent terms, and their long postings
    lists, harder. IDF values are floored at ``min_idf`` to keep the factor bounded.
    """

    name = "idf_flops"

    @classmethod
    def from_settings(cls, idf: np.ndarray | None, tau: int) -> IDFAwareFLOPS:
        if idf is None:
            raise EncoderError(
                "idf_flops needs IDF values (an inference-free encoder's idf table)."
            )
        return cls(idf)

    def __init__(self, idf: np.ndarray | torch.Tensor, min_idf: float = 0.1) -> None:
        idf = torch.as_tensor(np.asarray(idf, dtype=np.float32))
        if idf.ndim != 1:
            raise EncoderError("IDF-aware FLOPS needs a 1-D IDF vector over the vocabulary.")
        self.inv_idf = 1.0 / idf.clamp_min(min_idf)

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        factor = self.inv_idf.to(weights.device)
        return ((weights.abs().mean(dim=0) ** 2) * factor).sum()


class L0MaskedFLOPS(Regularizer):
    """FLOPS restricted to the vectors whose number of non-zeros exceeds ``tau``."""

    name = "l0_flops"

    @classmethod
    def from_settings(cls, idf: np.ndarray | None, tau: int) -> L0MaskedFLOPS:
        return cls(tau)

    def __init__(self, tau: int = 200) -> None:
        if tau < 0:
            raise EncoderError(f"tau must be >= 0, got {tau}.")
        self.tau = tau

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        nnz = (weights > 0).sum(dim=1)
        mask = (nnz > self.tau).to(weights.dtype).unsqueeze(1)
        return ((weights.abs() * mask).mean(dim=0) ** 2).sum()


@dataclass
class QuadraticWarmup:
    """lambda_t = lambda * min(1, t / warmup_steps)^2, SPLADE's schedule for the FLOPS weight."""

    value: float
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.value
        return self.value * min(1.0, step / self.warmup_steps) ** 2


REGULARIZERS: dict[str, type[Regularizer]] = {
    c.name: c for c in (FLOPS, IDFAwareFLOPS, L0MaskedFLOPS, L1)
}


def make_regularizer(kind: str, idf: np.ndarray | None = None, tau: int = 200) -> Regularizer:
    """A regularizer by name (a key of :data:`REGULARIZERS`); ``idf_flops`` needs ``idf``."""
    cls = REGULARIZERS.get(kind)
    if cls is None:
        raise EncoderError(f"Unknown regularizer {kind!r}; use {', '.join(REGULARIZERS)}.")
    return cls.from_settings(idf, tau)
