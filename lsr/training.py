"""Training SPLADE-style and inference-free encoders: ``lsr train CONFIG.yaml``.

The config (YAML) names the starting model, the data, the loss, one regularizer for
documents and one for queries (each with its own lambda and quadratic warm-up), and the
schedule. Checkpoints (model + optimizer + scheduler + step) are written every
``save_every`` steps under ``output/checkpoints`` and ``resume: true`` continues from the
latest one. The final encoder is saved to ``output`` and loads with ``lsr.load_encoder``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lsr.checks import positive_int
from lsr.encoders import encoder_class
from lsr.errors import EncoderError
from lsr.losses import LOSSES, combine_teachers
from lsr.query_factors import QueryFactorConfig
from lsr.regularizers import FLOPS, QuadraticWarmup, make_regularizer
from lsr.training_data import TrainingExample, read_triples

logger = logging.getLogger(__name__)
KINDS = ("splade", "unicoil", "causal-splade", "inference-free")  # what a model trains as
SIAMESE = ("splade", "unicoil", "causal-splade")  # queries through the model too


@dataclass
class RegularizerConfig:
    type: str = "flops"
    weight: float = 0.0
    warmup_steps: int = 0
    tau: int = 200


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``examples/train-*.yaml`` for annotated configs."""

    model: str
    output: str
    kind: str = "splade"
    activation: str = "log1p_relu"
    triples: str | None = None
    beir: str | None = None
    split: str = "train"
    negatives: int = 4  # hard negatives per example in each step
    negative_depth: int = 50
    # hard negatives mined per example (from the top negative_depth) when the examples come
    # from a BEIR split; each step draws `negatives` of them afresh. Default: `negatives`.
    negative_pool: int | None = None
    # the retriever whose top hits the negatives are mined from: bm25, or a sparse encoder
    # spec (e.g. inference-free:PATH of the model being trained: its own mistakes)
    mine_with: str = "bm25"
    # examples without judgements added to a beir: split's (a sentence taken out of a
    # document the split's queries reached is the query, the rest of it the positive; see
    # lsr.pipeline.training): more queries of the domain for the teachers to score
    pseudo_queries: int = 0
    loss: str = "infonce"
    temperature: float = 1.0
    in_batch_negatives: bool = True
    teachers: dict[str, float] | None = None  # distillation: teacher name -> weight
    teacher_scale: float = 1.0  # the teachers' combined [0, 1] scores times this
    # the judgements correct the teachers: a positive's teacher score is raised to its
    # candidates' highest, so no negative is taught to outrank it (their order is kept)
    positives_first: bool = False
    documents: RegularizerConfig = field(default_factory=RegularizerConfig)
    queries: RegularizerConfig = field(default_factory=RegularizerConfig)
    learn_query_weights: bool = False
    # inference-free: after training, learn a factor per query token over IDF from the
    # split's judgements, documents frozen (lsr.query_factors): true, or its settings
    query_factors: QueryFactorConfig | None = None
    # keep the token embeddings (and the vocabulary head tied to them) as they are, training
    # the layers above them: most of a small model's weights, left out of a small training set
    freeze_embeddings: bool = False
    steps: int = 1000
    # save an exponential moving average of the weights over the steps (Polyak averaging)
    # instead of the last weights: each step moves the average (1 - ema_decay) of the way
    # to the new weights, starting from the model's own. None: the last weights.
    ema_decay: float | None = None
    batch_size: int = 8
    grad_accumulation: int = 1
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256
    query_max_length: int = 64
    log_every: int = 10
    save_every: int = 0
    resume: bool = False
    seed: int = 13
    device: str | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        if not isinstance(raw, dict):
            raise EncoderError("A training config must be a mapping of settings.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EncoderError(f"Unknown training settings: {', '.join(unknown)}.")
        missing = [k for k in ("model", "output") if not raw.get(k)]
        if missing:
            raise EncoderError(f"The training config needs {' and '.join(missing)}.")
        raw = dict(raw)
        for side in ("documents", "queries"):
            sub = raw.get(side) or {}
            bad = sorted(set(sub) - {f.name for f in dataclasses.fields(RegularizerConfig)})
            if bad:
                raise EncoderError(f"Unknown {side} regularizer settings: {', '.join(bad)}.")
            raw[side] = RegularizerConfig(**sub)
        factors = raw.get("query_factors")
        if factors is False or factors is None:
            raw["query_factors"] = None
        else:
            raw["query_factors"] = QueryFactorConfig.from_dict(factors)
        cfg = cls(**raw)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise EncoderError(f"Cannot read training config {path}: {e}") from e
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or type(e).__name__
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise EncoderError(f"{path} is not valid YAML: {problem}{where}.") from e
        return cls.from_dict(raw)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise EncoderError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        if self.loss not in LOSSES:
            raise EncoderError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        self._validate_teachers()
        if (self.triples is None) == (self.beir is None):
            raise EncoderError("Give exactly one training data source: triples or beir.")
        for name in ("steps", "batch_size", "grad_accumulation", "log_every"):
            positive_int(getattr(self, name), name, error=EncoderError)
        for name in (
            "in_batch_negatives", "learn_query_weights", "freeze_embeddings", "positives_first",
            "resume",
        ):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise EncoderError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("learning_rate", "temperature", "teacher_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise EncoderError(f"{name} must be a positive number, got {value!r}.")
        if self.ema_decay is not None and (
            isinstance(self.ema_decay, bool)
            or not isinstance(self.ema_decay, (int, float))
            or not 0 < self.ema_decay < 1
        ):
            raise EncoderError(
                f"ema_decay must lie strictly between 0 and 1, got {self.ema_decay!r}."
            )
        if self.loss != "infonce" and self.negatives < 1:
            raise EncoderError(f"loss {self.loss} needs at least one negative per example.")
        positive_int(self.negative_depth, "negative_depth", error=EncoderError)
        if self.pseudo_queries != 0:
            positive_int(self.pseudo_queries, "pseudo_queries", error=EncoderError)
            if self.beir is None:
                raise EncoderError(
                    "pseudo_queries are drawn from a beir: split's documents; triples have none."
                )
        if not isinstance(self.mine_with, str) or not self.mine_with.strip():
            raise EncoderError(
                f"mine_with must be bm25 or an encoder spec, got {self.mine_with!r}."
            )
        if self.negative_pool is not None:
            positive_int(self.negative_pool, "negative_pool", error=EncoderError)
            if self.negative_pool < self.negatives:
                raise EncoderError(
                    f"negative_pool ({self.negative_pool}) must hold at least the "
                    f"{self.negatives} negatives each step draws."
                )
        if self.query_factors is not None and (self.kind != "inference-free" or not self.beir):
            raise EncoderError(
                "query_factors are learned for an inference-free model from a beir: split's "
                "judgements (kind: inference-free, beir: FOLDER)."
            )
        if (
            self.kind == "inference-free"
            and self.queries.weight > 0
            and not self.learn_query_weights
        ):
            raise EncoderError(
                "Inference-free queries have no model to regularize; set queries.weight to 0 "
                "(or learn_query_weights: true)."
            )

    def _validate_teachers(self) -> None:
        t = self.teachers
        if self.positives_first is True and not LOSSES[self.loss].needs_teacher:
            raise EncoderError(
                f"positives_first corrects teacher scores: it needs a distillation loss "
                f"(margin_mse, kl), not {self.loss}."
            )
        if t is None:
            return
        if not LOSSES[self.loss].needs_teacher:
            raise EncoderError(
                f"teachers need a distillation loss (margin_mse, kl), not {self.loss}."
            )
        if (
            not isinstance(t, dict)
            or not t
            or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0
                for w in t.values()
            )
        ):
            raise EncoderError(
                "teachers must map each teacher's name to a weight > 0, e.g. {ce: 0.7, bm25: 0.3}."
            )


class Trainer:
    """Runs a :class:`TrainConfig`; ``train()`` returns the folder of the saved encoder."""

    def __init__(self, config: TrainConfig, examples: list[TrainingExample] | None = None):
        self.config = config
        self.output = Path(config.output)
        self.examples = examples if examples is not None else self._load_examples()
        self.loss = LOSSES[config.loss](config.temperature, config.in_batch_negatives)
        if self.loss.needs_teacher:
            self._check_teacher_scores()
        self.encoder = self._load_encoder()
        self.doc_model = self.encoder.doc_model
        self.query_model = getattr(self.encoder, "query_model", None)
        if config.freeze_embeddings:
            for model in (self.doc_model, self.query_model):
                if model is not None:
                    model.model.get_input_embeddings().weight.requires_grad_(False)
        self.idf = self._idf()
        self.query_weights = None
        if config.kind == "inference-free" and config.learn_query_weights:
            self.query_weights = torch.nn.Parameter(torch.as_tensor(self.idf).clone())
        self.reg_docs = make_regularizer(config.documents.type, self.idf, config.documents.tau)
        self.reg_queries = make_regularizer(config.queries.type, self.idf, config.queries.tau)
        self.lambda_docs = QuadraticWarmup(config.documents.weight, config.documents.warmup_steps)
        self.lambda_queries = QuadraticWarmup(config.queries.weight, config.queries.warmup_steps)
        self.step = 0
        self.history: list[dict] = []
        self.ema = (
            [p.detach().clone() for p in self._parameters()]
            if config.ema_decay is not None
            else None
        )

    # ---- set-up --------------------------------------------------------------------------

    def _check_teacher_scores(self) -> None:
        """Every example has the scores the loss needs: one list, or one per named teacher."""
        loss, teachers = self.config.loss, self.config.teachers
        for e in self.examples:
            if e.scores is None:
                raise EncoderError(f"loss {loss} needs teacher 'scores' in every example.")
            if teachers is None and isinstance(e.scores, dict):
                raise EncoderError(
                    f"The examples hold scores of several teachers ({', '.join(e.scores)}); "
                    "name the ones to use, with weights, under teachers:."
                )
            if teachers is not None:
                missing = [
                    t for t in teachers if not isinstance(e.scores, dict) or t not in e.scores
                ]
                if missing:
                    raise EncoderError(
                        f"Every example needs scores of the teachers {', '.join(teachers)}; "
                        f"one lacks {', '.join(missing)}."
                    )

    def _load_examples(self) -> list[TrainingExample]:
        """The config's triples; examples mined from a BEIR split (``beir:``) need an index,
        so :func:`lsr.pipeline.training.trainer_for` loads those and passes them in."""
        if self.config.triples:
            return read_triples(self.config.triples)
        raise EncoderError(
            "A beir: training source mines its negatives through an index: build the trainer "
            "with lsr.pipeline.training.trainer_for(config) (as lsr train does)."
        )

    def _latest_checkpoint(self) -> Path | None:
        ckpts = sorted(
            (self.output / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])
        )
        return ckpts[-1] if ckpts else None

    def _load_encoder(self):
        c = self.config
        source = c.model
        if c.resume and self._latest_checkpoint() is not None:
            source = str(self._latest_checkpoint())
        opts = {"max_length": c.max_length, "device": c.device}
        cls = encoder_class(c.kind)
        if c.kind in SIAMESE:
            return cls.from_pretrained(source, query_max_length=c.query_max_length, **opts)
        enc = cls.from_pretrained(source, activation=c.activation, **opts)
        if not enc.fitted:
            enc.fit(self._idf_texts())
        return enc

    def _idf_texts(self) -> list[str]:
        """The documents IDF is computed from: the whole BEIR corpus, else the training texts."""
        if self.config.beir:
            from lsr.corpus import read_corpus

            return [d.contents for d in read_corpus(self.config.beir)]
        texts = {e.positive for e in self.examples} | {
            n for e in self.examples for n in e.negatives
        }
        return sorted(texts)

    def _idf(self) -> np.ndarray | None:
        if self.config.kind == "inference-free":
            return self.encoder.query_weights
        needs_idf = "idf_flops" in (self.config.documents.type, self.config.queries.type)
        if not needs_idf:
            return None
        from lsr.inference_free import idf_from_corpus

        return idf_from_corpus(self.doc_model, self._idf_texts())

    def _parameters(self):
        models = [m for m in (self.doc_model, self.query_model) if m is not None]
        params = [p for m in models for p in m.model.parameters() if p.requires_grad]
        if self.query_weights is not None:
            params.append(self.query_weights)
        return params

    # ---- one step ------------------------------------------------------------------------

    def _batch(self, step: int, micro: int) -> list[TrainingExample]:
        """Deterministic batches: epoch e visits a seed-dependent permutation of the examples."""
        c = self.config
        per_step = c.batch_size * c.grad_accumulation
        start = step * per_step + micro * c.batch_size
        n = len(self.examples)
        out = []
        for pos in range(start, start + c.batch_size):
            epoch, i = divmod(pos, n)
            order = np.random.default_rng(c.seed + epoch).permutation(n)
            out.append(self.examples[order[i]])
        return out

    def _encode_queries(self, texts: list[str]) -> torch.Tensor:
        c = self.config
        if c.kind in SIAMESE:
            model = self.query_model or self.doc_model
            return model.forward(self.encoder.query_texts(texts), c.query_max_length)
        vectors = self.encoder.encode_queries(texts)
        device = self.doc_model.device
        if self.query_weights is None:
            table = torch.as_tensor(self.encoder.query_weights, device=device)
        else:
            table = torch.relu(self.query_weights.to(device))
        rows = torch.as_tensor(np.repeat(np.arange(vectors.shape[0]), np.diff(vectors.indptr)))
        cols = torch.as_tensor(vectors.indices.astype(np.int64))
        dense = torch.zeros(vectors.shape, device=device, dtype=table.dtype)
        dense[rows.to(device), cols.to(device)] = table[cols.to(device)]
        return dense

    def _loss(self, batch: list[TrainingExample]) -> tuple[torch.Tensor, dict]:
        c = self.config
        n_neg = c.negatives if any(e.negatives for e in batch) else 0
        rng = random.Random(c.seed + self.step)
        negs = []
        for e in batch:
            if n_neg:
                if not e.negatives:
                    raise EncoderError("Every example needs negatives when others have them.")
                idx = list(range(len(e.negatives)))
                picked = rng.sample(idx, n_neg) if len(idx) >= n_neg else rng.choices(idx, k=n_neg)
                negs.append(picked)
        q = self._encode_queries([e.query for e in batch])
        docs_text = [e.positive for e in batch] + [
            batch[b].negatives[i] for b in range(len(batch)) for i in (negs[b] if n_neg else [])
        ]
        d = self.doc_model.forward(self.encoder.document_texts(docs_text), c.max_length)
        pos, neg = (
            d[: len(batch)],
            d[len(batch) :].reshape(len(batch), n_neg, -1) if n_neg else None,
        )
        teacher = self._teacher_scores(batch, negs, d) if self.loss.needs_teacher else None
        rank_loss = self.loss(q, pos, neg, teacher)
        reg_d = self.reg_docs(d)
        loss = rank_loss + self.lambda_docs(self.step) * reg_d
        if c.kind in SIAMESE or self.query_weights is not None:
            loss = loss + self.lambda_queries(self.step) * self.reg_queries(q)
        with torch.no_grad():
            stats = {
                "loss": float(loss),
                "rank_loss": float(rank_loss),
                "nnz_q": float((q > 0).sum(1).float().mean()),
                "nnz_d": float((d > 0).sum(1).float().mean()),
                "flops_d": float(FLOPS()(d)),
                "lambda_d": self.lambda_docs(self.step),
            }
        return loss, stats

    def _teacher_scores(self, batch, negs, like: torch.Tensor) -> torch.Tensor:
        """(batch, 1 + negatives) teacher scores of each example's positive and picked
        negatives; with ``teachers`` the weighted mean of their min-max normalized scores,
        normalized over all of an example's candidates (its whole pool of mined negatives), so
        a negative's target does not depend on which others the step drew beside it."""
        teachers = self.config.teachers
        rows = []
        for b, e in enumerate(batch):
            if teachers is None:
                full = torch.tensor([e.scores], dtype=like.dtype)
            else:
                per_teacher = [
                    torch.tensor([e.scores[name]], dtype=like.dtype) for name in teachers
                ]
                full = combine_teachers(per_teacher, list(teachers.values()))
                full = full * self.config.teacher_scale
            rows.append(full[0, [0] + [1 + i for i in negs[b]]])
        scores = torch.stack(rows).to(like.device)
        if self.config.positives_first:
            scores[:, 0] = scores.max(dim=1).values
        return scores

    # ---- the loop ------------------------------------------------------------------------

    def train(self, progress: bool = True) -> Path:
        from tqdm.auto import tqdm

        from lsr.hf import import_transformers

        get_linear_schedule_with_warmup = import_transformers().get_linear_schedule_with_warmup

        c = self.config
        torch.manual_seed(c.seed)
        self.output.mkdir(parents=True, exist_ok=True)
        optimizer = torch.optim.AdamW(
            self._parameters(), lr=c.learning_rate, weight_decay=c.weight_decay
        )
        scheduler = get_linear_schedule_with_warmup(
            optimizer, math.ceil(c.warmup_ratio * c.steps), c.steps
        )
        ckpt = self._latest_checkpoint() if c.resume else None
        if ckpt is not None and (ckpt / "trainer_state.pt").is_file():
            state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            self.step = state["step"]
            if self.query_weights is not None and "query_weights" in state:
                self.query_weights.data.copy_(state["query_weights"])
            if self.ema is not None and "ema" in state:
                for average, saved in zip(self.ema, state["ema"], strict=True):
                    average.copy_(saved)
            logger.info("resumed from %s at step %d", ckpt, self.step)
        self.doc_model.model.train()
        if self.query_model is not None:
            self.query_model.model.train()
        log_path = self.output / "train_log.jsonl"
        t0 = time.perf_counter()
        bar = tqdm(
            total=c.steps, initial=self.step, desc="train", unit="step", disable=not progress
        )
        window: list[dict] = []
        while self.step < c.steps:
            optimizer.zero_grad(set_to_none=True)
            for micro in range(c.grad_accumulation):
                loss, stats = self._loss(self._batch(self.step, micro))
                (loss / c.grad_accumulation).backward()
                window.append(stats)
            torch.nn.utils.clip_grad_norm_(self._parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            self._update_average()
            self.step += 1
            bar.update(1)
            if self.step % c.log_every == 0 or self.step == c.steps:
                row = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                row["step"] = self.step
                self.history.append(row)
                window = []
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    nnz_q=f"{row['nnz_q']:.0f}",
                    nnz_d=f"{row['nnz_d']:.0f}",
                    flops=f"{row['flops_d']:.2f}",
                )
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                logger.info("step %d %s", self.step, row)
            if c.save_every and self.step % c.save_every == 0 and self.step < c.steps:
                self._checkpoint(optimizer, scheduler)
        bar.close()
        self._save_encoder(self.output)
        last = self.history[-1] if self.history else {}
        logger.info("trained %d steps in %.0fs: %s", self.step, time.perf_counter() - t0, last)
        return self.output

    def _update_average(self) -> None:
        if self.ema is None:
            return
        decay = self.config.ema_decay
        with torch.no_grad():
            for average, p in zip(self.ema, self._parameters(), strict=True):
                average.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @contextlib.contextmanager
    def _averaged_weights(self):
        """The moving average in the model's parameters for the duration (with ema_decay)."""
        if self.ema is None:
            yield
            return
        params = self._parameters()
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, average in zip(params, self.ema, strict=True):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(params, live, strict=True):
                    p.copy_(weights)

    def _save_encoder(self, folder: Path, averaged: bool = True) -> None:
        """The encoder with the moving average of the weights (with ema_decay), or with the
        live weights (``averaged=False``: a checkpoint, so that a resumed run goes on exactly
        where it stopped; the average is in its trainer state)."""
        with self._averaged_weights() if averaged else contextlib.nullcontext():
            if self.query_weights is not None:
                self.encoder.query_weights = torch.relu(self.query_weights.detach()).cpu().numpy()
            self.encoder.save_pretrained(folder)

    def _checkpoint(self, optimizer, scheduler) -> Path:
        folder = self.output / "checkpoints" / f"step-{self.step}"
        self._save_encoder(folder, averaged=False)
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": self.step,
        }
        if self.query_weights is not None:
            state["query_weights"] = self.query_weights.detach().cpu()
        if self.ema is not None:
            state["ema"] = [average.cpu() for average in self.ema]
        torch.save(state, folder / "trainer_state.pt")
        return folder
