"""Ranking losses for training sparse encoders (scores are query-document dot products).

- :func:`info_nce`: cross-entropy of the positive against in-batch and hard negatives.
- :func:`margin_mse`: MSE between student and teacher margins s(q, d+) - s(q, d-)
  (Hofstätter et al., 2020).
- :func:`kl_distillation`: KL(teacher || student) over each query's candidate list, both
  softened by a temperature and scaled by T^2.
- :func:`minmax_normalize` / :func:`combine_teachers`: per-query min-max scaling so several
  teachers with different score ranges can be averaged (``teachers:`` in a training config).

The trainer uses them through :data:`LOSSES` (name -> :class:`RankingLoss`), so a new loss
is one class and one entry there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lsr.errors import InputError


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 1.0,
    in_batch: bool = True,
) -> torch.Tensor:
    """Contrastive loss; ``negatives`` is (batch, n_neg, vocab) hard negatives or None.

    With ``in_batch`` each query also competes against every other query's positive and hard
    negatives; without, only against its own hard negatives.
    """
    b = queries.shape[0]
    if in_batch:
        docs = positives if negatives is None else torch.cat([positives, negatives.flatten(0, 1)])
        scores = queries @ docs.T
        target = torch.arange(b, device=queries.device)
    else:
        if negatives is None:
            raise InputError("info_nce without in-batch negatives needs hard negatives.")
        cands = torch.cat([positives.unsqueeze(1), negatives], dim=1)
        scores = torch.einsum("bv,bnv->bn", queries, cands)
        target = torch.zeros(b, dtype=torch.long, device=queries.device)
    return F.cross_entropy(scores / temperature, target)


def margin_mse(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    teacher_pos: torch.Tensor,
    teacher_neg: torch.Tensor,
) -> torch.Tensor:
    """MSE of score margins; ``neg_scores`` may be (batch,) or (batch, n_neg)."""
    if neg_scores.ndim == 2 and pos_scores.ndim == 1:
        pos_scores, teacher_pos = pos_scores.unsqueeze(1), teacher_pos.unsqueeze(1)
    return F.mse_loss(pos_scores - neg_scores, teacher_pos - teacher_neg)


def kl_distillation(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL divergence from teacher to student over (batch, candidates) score matrices."""
    t = temperature
    log_p_student = F.log_softmax(student / t, dim=-1)
    p_teacher = F.softmax(teacher / t, dim=-1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * (t * t)


def minmax_normalize(scores: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Scale each row of (batch, candidates) scores to [0, 1] (a constant row becomes 0)."""
    lo = scores.min(dim=-1, keepdim=True).values
    hi = scores.max(dim=-1, keepdim=True).values
    return (scores - lo) / (hi - lo).clamp_min(eps)


def combine_teachers(
    teacher_scores: Sequence[torch.Tensor], weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Weighted mean of per-query min-max normalized scores of several teachers."""
    if not teacher_scores:
        raise InputError("combine_teachers needs at least one teacher's scores.")
    weights = list(weights) if weights is not None else [1.0] * len(teacher_scores)
    if len(weights) != len(teacher_scores):
        raise InputError("Give one weight per teacher.")
    total = sum(weights)
    return (
        sum(w * minmax_normalize(s) for w, s in zip(weights, teacher_scores, strict=True)) / total
    )


def pairwise_scores(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Scores of each query against its own candidates: (b, V) x (b, n, V) -> (b, n)."""
    return torch.einsum("bv,bnv->bn", queries, docs)


class RankingLoss:
    """A training loss over a batch: query vectors ``q`` (b, V), positives (b, V), hard
    negatives (b, n, V) or None, and, for distillation, teacher scores (b, 1 + n) of
    ``[positive, *negatives]``. Losses are looked up by name in :data:`LOSSES`."""

    name = "loss"
    needs_teacher = False

    def __init__(self, temperature: float = 1.0, in_batch_negatives: bool = True) -> None:
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives

    def __call__(self, q, positives, negatives, teacher) -> torch.Tensor:
        raise NotImplementedError


class InfoNCE(RankingLoss):
    name = "infonce"

    def __call__(self, q, positives, negatives, teacher) -> torch.Tensor:
        return info_nce(q, positives, negatives, self.temperature, self.in_batch_negatives)


class MarginMSE(RankingLoss):
    name = "margin_mse"
    needs_teacher = True

    def __call__(self, q, positives, negatives, teacher) -> torch.Tensor:
        student = pairwise_scores(q, torch.cat([positives.unsqueeze(1), negatives], dim=1))
        return margin_mse(student[:, 0], student[:, 1:], teacher[:, 0], teacher[:, 1:])


class KLDistillation(RankingLoss):
    name = "kl"
    needs_teacher = True

    def __call__(self, q, positives, negatives, teacher) -> torch.Tensor:
        student = pairwise_scores(q, torch.cat([positives.unsqueeze(1), negatives], dim=1))
        return kl_distillation(student, teacher, self.temperature)


LOSSES: dict[str, type[RankingLoss]] = {c.name: c for c in (InfoNCE, MarginMSE, KLDistillation)}
