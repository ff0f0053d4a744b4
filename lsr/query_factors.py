"""Query-token factors for inference-free models, learned from relevance judgements.

An inference-free model weights each query token by a table, the IDF of the corpus. IDF
says how rare a token is, not how much it says about relevance: in scientific claims
"associated", "increased" or "reduces" are rare enough to weigh a lot and match many
documents that do not support the claim. A factor c_t per token corrects this: the query
weight is idf_t * c_t, still a table lookup, so queries still need no model.

The factors are learned after the document encoder, with its document vectors frozen: for
each training query, a softmax over its judged documents and the ``depth`` other documents
the model ranks highest, and the loss is the cross-entropy of the judged ones (the listwise
loss of learning to rank). The parameters are log c_t, started at 0 (c = 1, plain IDF), with
an L2 penalty that keeps every token the judgements say little about near 1. Only tokens of
training queries move. Because the factors multiply IDF, a model refitted on another corpus
(``--fit-idf``) keeps them over that corpus's IDF.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import EncoderError

logger = logging.getLogger(__name__)
SCORE_BLOCK = 2**25  # query x document scores held at once while picking candidates


@dataclass
class QueryFactorConfig:
    """The ``query_factors:`` settings of a training config."""

    epochs: int = 10
    learning_rate: float = 0.01
    l2: float = 1e-4  # on the sum of squared log factors
    depth: int = 100  # unjudged candidates per query: the model's top hits
    batch_size: int = 32  # queries per Adam step

    @classmethod
    def from_dict(cls, raw: object) -> QueryFactorConfig:
        if raw is True:
            return cls()
        if not isinstance(raw, dict):
            raise EncoderError(f"query_factors must be true or a mapping of settings, got {raw!r}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EncoderError(f"Unknown query_factors settings: {', '.join(unknown)}.")
        cfg = cls(**raw)
        for name in ("epochs", "depth", "batch_size"):
            positive_int(getattr(cfg, name), f"query_factors.{name}", error=EncoderError)
        for name, positive in (("learning_rate", True), ("l2", False)):
            value = getattr(cfg, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0 or (positive and value == 0):
                kind = "a positive number" if positive else "a number >= 0"
                raise EncoderError(f"query_factors.{name} must be {kind}, got {value!r}.")
        return cfg


def learn_query_factors(
    queries: sp.csr_array,
    documents: sp.csr_array,
    positives: list[list[int]],
    config: QueryFactorConfig,
    seed: int = 13,
    progress: bool = False,
) -> tuple[np.ndarray, list[dict]]:
    """Factors over the vocabulary (float32, 1 where nothing was learned) and one history row
    per epoch (mean loss, tokens moved by more than 5%).

    ``queries``: one row per training query, its tokens weighted by the model's table;
    ``documents``: the corpus's frozen vectors; ``positives[i]``: the rows of ``documents``
    judged relevant to query i (a query without any is left out)."""
    import torch
    from tqdm.auto import tqdm

    queries, documents = sp.csr_array(queries), sp.csr_array(documents)
    if queries.shape[0] != len(positives):
        raise EncoderError(f"{queries.shape[0]} queries but {len(positives)} lists of positives.")
    if queries.shape[1] != documents.shape[1]:
        raise EncoderError("Queries and documents must share one vocabulary.")
    lists = _candidate_lists(queries, documents, positives, config.depth)
    if not lists:
        raise EncoderError("No training query has a judged document.")
    log_c = torch.zeros(documents.shape[1], dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([log_c], lr=config.learning_rate)
    history = []
    bar = tqdm(total=config.epochs, desc="query factors", unit="epoch", disable=not progress)
    for epoch in range(config.epochs):
        order = np.random.default_rng(seed + epoch).permutation(len(lists))
        losses = []
        for lo in range(0, len(order), config.batch_size):
            rank = 0.0
            batch = order[lo : lo + config.batch_size]
            for i in batch:
                tokens, features, n_pos = lists[i]
                scores = features @ torch.exp(log_c[tokens])
                rank = rank + torch.logsumexp(scores, 0) - scores[:n_pos].mean()
            loss = rank / len(batch) + config.l2 * (log_c**2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        moved = int((log_c.detach().abs() > math.log(1.05)).sum())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "tokens_moved": moved})
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", moved=moved)
        logger.info("query factors epoch %d: %s", epoch + 1, history[-1])
    bar.close()
    return torch.exp(log_c.detach()).numpy().astype(np.float32), history


def _candidate_lists(queries, documents, positives, depth: int) -> list[tuple]:
    """Per query with a judged document: its tokens, the (candidates x tokens) matrix of
    query weight times document weight (judged candidates first), and how many are judged.
    The unjudged candidates are the ``depth`` best by the untouched model's score. A judged
    document that shares no term with its query stays: it cannot rise, but its share of the
    softmax still asks the factors to lower the documents that outrank it."""
    import torch

    out = []
    doc_t = documents.T.tocsr()
    rows = max(1, min(64, SCORE_BLOCK // max(documents.shape[0], 1)))
    for lo in range(0, queries.shape[0], rows):  # a block of queries x the whole corpus
        block = queries[lo : lo + rows]
        scores = (block @ doc_t).toarray()
        for row in range(block.shape[0]):
            judged = list(dict.fromkeys(positives[lo + row]))  # a judged doc may not match
            if not judged:
                continue
            s = scores[row].copy()
            s[judged] = -np.inf
            take = min(depth, int(np.isfinite(s).sum()))
            top = np.argpartition(-s, take - 1)[:take] if take else np.array([], dtype=int)
            top = top[np.argsort(-s[top], kind="stable")]
            q = block[[row]]
            tokens = q.indices.astype(np.int64)
            features = documents[judged + top.tolist()][:, tokens].toarray() * q.data
            out.append(
                (
                    torch.as_tensor(tokens),
                    torch.as_tensor(features, dtype=torch.float32),
                    len(judged),
                )
            )
    return out
