"""``lsr eval``: encode (cached), index, retrieve and score each encoder on each dataset."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lsr import load_encoder
from lsr.checks import positive_int
from lsr.encoders import ENCODERS, FRESH, check_options, encoder_kind, options_for
from lsr.encoding import prepare
from lsr.errors import InputError
from lsr.eval.cache import EncodingCache, document_fingerprint, encoder_fingerprint
from lsr.eval.datasets import Dataset, load_dataset, skips_self
from lsr.eval.efficiency import latency, sparsity, warm_up
from lsr.eval.metrics import DEFAULT_MEASURES, parse_measures, per_query
from lsr.eval.provenance import encoder_provenance
from lsr.eval.runs import write_trec_run
from lsr.index import LiveIndex
from lsr.pipeline import Searcher, build_index, encode_to_file, rank

logger = logging.getLogger(__name__)
RECALL_DEPTHS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)  # the report's recall@k curve


@dataclass
class EvalResult:
    """The effectiveness and efficiency of one encoder on one dataset."""

    encoder: str
    dataset: str
    n_queries: int
    n_docs: int
    metrics: dict[str, float]
    efficiency: dict[str, float]
    run_file: str
    index_dir: str
    cached_encoding: bool = False
    skip_self: bool = False  # whether hits on the query's own id were dropped (BEIR's rule)
    notes: list[str] = field(default_factory=list)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # measure -> qid -> v
    recall_curve: dict[str, float] = field(default_factory=dict)  # "k" -> mean recall@k
    dataset_info: dict = field(default_factory=dict)  # id / path, split, judged queries
    encoder_info: dict = field(default_factory=dict)  # lsr.eval.provenance.encoder_provenance

    def to_dict(self) -> dict:
        return asdict(self)


def encoder_label(spec: str) -> str:
    """A short name for an encoder spec: ``bm25``, the model folder / Hub id's last part, with
    an explicit ``kind:`` prefix kept (``inference-free:splade-tiny`` is not ``splade-tiny``)."""
    text = str(spec).rstrip("/")
    prefixes = tuple(f"{k}:" for k in ENCODERS if k not in FRESH)
    kind, sep, location = text.rpartition(":") if text.startswith(prefixes) else ("", "", text)
    name = location if location.lower() == "bm25" else Path(location).name or location
    return f"{kind}{sep}{name}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def encode_cached(
    spec: str,
    dataset: Dataset,
    cache: EncodingCache,
    batch_size: int = 32,
    progress: bool = False,
    encoder_options: dict | None = None,
    stage: Callable[[str], None] = logger.info,
):
    """(encoder, vector file, stats, was cached) for a dataset, encoding it on a cache miss;
    ``stage`` hears which of the three happens.

    Encoders whose documents go through the same model with the same settings (a SPLADE
    model and its inference-free variant) share one encoding of the corpus: it is cached
    under the document side's fingerprint, and an encoder that needs corpus statistics for
    its queries (an IDF table) is fitted on the documents' text."""
    encoder = load_encoder(spec, **options_for(spec, encoder_options or {}))
    key = encoder_fingerprint(spec, encoder)
    entry = cache.get(key, dataset.fingerprint)
    if entry is not None:
        stage(f"  using the cached encoding {entry.path}")
        return entry.encoder(), entry.vectors, entry.stats, True
    shared_key = document_fingerprint(spec, encoder)
    if shared_key is not None:
        key = shared_key
        entry = cache.get(key, dataset.fingerprint)
        if entry is not None:
            stage(f"  using the cached document encoding {entry.path}")
            prepare(encoder, list(dataset.documents()), progress)
            return encoder, entry.vectors, entry.stats, True

    stage(f"  encoding the documents of {dataset.name} with {encoder_label(spec)}")

    def write(tmp: Path) -> None:
        _, stats = encode_to_file(
            dataset.documents(), encoder, tmp / "vectors.parquet", batch_size, progress, str(spec)
        )
        encoder.save_pretrained(tmp / "encoder")
        (tmp / "stats.json").write_text(
            json.dumps(
                {
                    "n_docs": stats.n_docs,
                    "encode_seconds": stats.seconds,
                    "fit_seconds": stats.fit_seconds,
                    "docs_per_second": stats.docs_per_second,
                }
            )
        )

    entry = cache.put(key, dataset.fingerprint, write)
    return encoder, entry.vectors, entry.stats, False


def evaluate_one(
    spec: str,
    dataset: Dataset,
    out: Path,
    cache: EncodingCache,
    k: int = 1000,
    measures: Sequence[str] = DEFAULT_MEASURES,
    batch_size: int = 32,
    index_dir: Path | None = None,
    progress: bool = False,
    encoder_options: dict | None = None,
    skip_self: str = "auto",
    stage: Callable[[str], None] = logger.info,
) -> EvalResult:
    """Encode (or reuse), index, retrieve top-``k`` and score ``spec`` on ``dataset``;
    ``skip_self`` (auto, on, off) says whether a query's hit on its own id is dropped (see
    :func:`~lsr.eval.datasets.skips_self`)."""
    drop_self = skips_self(dataset.name, skip_self)
    label = encoder_label(spec)
    cached = False
    if index_dir is not None:
        searcher = Searcher.open(index_dir)
        index, encoder = searcher.index, searcher.encoder
        label = f"{label} ({Path(index_dir).name})"
        enc_stats: dict = {}
        build_seconds = None
    else:
        encoder, vectors, enc_stats, cached = encode_cached(
            spec, dataset, cache, batch_size, progress, encoder_options or {}, stage
        )
        index_dir = out / "indexes" / _slug(label) / _slug(dataset.name)
        t = time.perf_counter()
        build_index(vectors.batches(), encoder, index_dir, overwrite=True)
        build_seconds = time.perf_counter() - t
        with LiveIndex(index_dir, read_only=True) as live:  # the segment, memory mapped
            index = live.as_index()
        index.check_vocab(encoder.vocab)
    qids = list(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    t = time.perf_counter()
    query_vectors = encoder.encode_queries(texts)
    query_seconds = time.perf_counter() - t
    compile_seconds = warm_up(index, query_vectors)
    run = rank(index, qids, query_vectors, k=k, skip_self=drop_self)
    run_file = out / "runs" / f"{_slug(label)}__{_slug(dataset.name)}.trec"
    run_file.parent.mkdir(parents=True, exist_ok=True)
    write_trec_run(run_file, run, _slug(label))
    depths = [d for d in RECALL_DEPTHS if d <= k]
    scored = per_query(run, dataset.qrels, [*measures, *(f"R@{d}" for d in depths)])
    means = {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in scored.items()}
    names = [str(m) for m in parse_measures(measures)]  # as ir-measures names them
    scores = {m: scored[m] for m in names}  # one ir-measures pass for both
    metrics = {m: means[m] for m in names}
    efficiency = {
        "index_bytes": sum(p.stat().st_size for p in Path(index_dir).rglob("*.arrow")),
        "build_seconds": build_seconds,
        "encode_docs_per_second": enc_stats.get("docs_per_second"),
        "encode_seconds": enc_stats.get("encode_seconds"),
        "query_encode_ms": query_seconds / max(len(qids), 1) * 1e3,
        "numba_warmup_seconds": compile_seconds,
        **latency(index, query_vectors, k=10),
        **sparsity(index, query_vectors),
    }
    result = EvalResult(
        encoder=label,
        dataset=dataset.name,
        n_queries=len(qids),
        n_docs=index.n_docs,
        metrics=metrics,
        efficiency=efficiency,
        run_file=str(run_file),
        index_dir=str(index_dir),
        cached_encoding=cached,
        skip_self=drop_self,
        per_query=scores,
        recall_curve={str(d): means[f"R@{d}"] for d in depths},
        dataset_info={
            "dataset": dataset.name,
            "source": str(dataset.corpus_path.parent) if dataset.corpus_path else dataset.name,
            "split": dataset.split,
            "judged_queries": len(dataset.qrels),
            "k": k,
        },
        encoder_info=encoder_provenance(spec, encoder),
    )
    stage(
        f"  searched {len(qids):,} queries: "
        + ", ".join(f"{m} {v:.4f}" for m, v in list(metrics.items())[:2])
    )
    return result


def run_evaluation(
    datasets: Sequence[str],
    encoders: Sequence[str],
    out: str | Path,
    split: str = "test",
    k: int = 1000,
    measures: Sequence[str] = DEFAULT_MEASURES,
    cache_dir: str | Path | None = None,
    index_dir: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = False,
    encoder_options: dict | None = None,
    skip_self: str = "auto",
    baseline: str | None = None,
    stage: Callable[[str], None] | None = None,
) -> list[EvalResult]:
    """Every encoder on every dataset; writes the runs and the report (``report.json``,
    ``.md``, ``.html``, ``.tex``, per-query scores, figures) to ``out``. ``baseline`` (an
    encoder's label; default ``bm25`` when evaluated, else the first) is what every other
    encoder is tested against; ``stage`` receives a line as each step starts."""
    from lsr.eval.report import write_report

    if not datasets or not encoders:
        raise InputError("Give at least one dataset and one encoder.")
    if index_dir is not None and (len(datasets) != 1 or len(encoders) != 1):
        raise InputError(
            "--index evaluates one prebuilt index: give exactly one dataset and encoder."
        )
    if index_dir is not None and encoder_options:
        raise InputError(
            "--index evaluates a prebuilt index with its own encoder: encoder options "
            f"({', '.join(encoder_options)}) cannot apply."
        )
    positive_int(k, "k")
    parse_measures(measures)
    skips_self("", skip_self)  # a bad setting fails before any work
    out = Path(out)
    loaded = [load_dataset(d, split) for d in datasets]  # fail early on a bad dataset name
    specs = [str(e) for e in encoders]
    labels = [encoder_label(s) for s in specs]
    if len(set(labels)) != len(labels):
        raise InputError(f"Two encoders would share a report name ({labels}); give each once.")
    if baseline is None:
        baseline = "bm25" if "bm25" in labels else labels[0]
    elif baseline not in labels:
        raise InputError(
            f"--baseline {baseline!r} is not among the encoders evaluated ({', '.join(labels)})."
        )
    say = stage or logger.info
    for spec in specs:  # and on an unknown encoder, before hours of encoding
        encoder_kind(spec)
    check_options(specs, encoder_options or {})  # and on an option no encoder takes
    out.mkdir(parents=True, exist_ok=True)
    cache = EncodingCache(cache_dir)
    results = []
    steps = len(specs) * len(loaded)
    for i, (spec, dataset) in enumerate(itertools.product(specs, loaded), 1):
        say(f"[{i}/{steps}] {encoder_label(spec)} on {dataset.name}")
        result = evaluate_one(
            spec,
            dataset,
            out,
            cache,
            k=k,
            measures=measures,
            batch_size=batch_size,
            index_dir=Path(index_dir) if index_dir else None,
            progress=progress,
            encoder_options=encoder_options,
            skip_self=skip_self,
            stage=say,
        )
        results.append(result)
    say(f"report: {len(results)} runs, significance against {baseline} -> {out}")
    write_report(results, out, measures, baseline)
    return results
