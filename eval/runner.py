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

import numpy as np

from lsr import load_encoder
from lsr.checks import positive_int
from lsr.dense import is_dense
from lsr.encoders import ENCODERS, FRESH, check_options, encoder_kind, options_for
from lsr.encoding import EncodingStats, encode_corpus, prepare
from lsr.errors import InputError
from lsr.eval.cache import (
    DENSE_IDS,
    DENSE_VECTORS,
    EncodingCache,
    document_fingerprint,
    encoder_fingerprint,
)
from lsr.eval.datasets import Dataset, load_dataset, skips_self
from lsr.eval.efficiency import latency, sparsity, warm_up
from lsr.eval.fusion_tuning import fuse_runs, tune_fusion
from lsr.eval.metrics import DEFAULT_MEASURES, parse_measures, per_query
from lsr.eval.provenance import encoder_provenance
from lsr.eval.runs import write_trec_run
from lsr.index import LiveIndex
from lsr.index.dense import DenseIndex
from lsr.index.fusion import FusionSpec
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
        if is_dense(encoder):
            stats = encode_dense_to(tmp, dataset, encoder, batch_size, progress)
        else:
            _, stats = encode_to_file(
                dataset.documents(), encoder, tmp / "vectors.parquet", batch_size, progress,
                str(spec),
            )  # fmt: skip
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


def encode_dense_to(tmp: Path, dataset: Dataset, encoder, batch_size: int, progress: bool):
    """Encode a corpus with a dense encoder into a cache entry (``vectors.npy``, ids)."""
    docs = list(dataset.documents())
    stats = EncodingStats()
    parts, ids = [], []
    for vectors, batch_ids in encode_corpus(encoder, docs, max(batch_size, 64), progress, stats):
        parts.append(vectors)
        ids += batch_ids
    np.save(tmp / DENSE_VECTORS, np.concatenate(parts, axis=0) if parts else np.zeros((0, 1)))
    (tmp / DENSE_IDS).write_text(json.dumps(ids), encoding="utf-8")
    return stats


@dataclass
class Retriever:
    """One encoder's index of a dataset's corpus, ready to search (sparse or dense)."""

    spec: str
    label: str
    encoder: object
    index: object  # an Index, or a DenseIndex
    index_dir: str
    index_bytes: int
    enc_stats: dict
    cached: bool
    build_seconds: float | None

    @property
    def dense(self) -> bool:
        return is_dense(self.encoder)


def prepare_retriever(
    spec: str,
    dataset: Dataset,
    out: Path,
    cache: EncodingCache,
    batch_size: int = 32,
    index_dir: Path | None = None,
    progress: bool = False,
    encoder_options: dict | None = None,
    stage: Callable[[str], None] = logger.info,
) -> Retriever:
    """Encode (or reuse) the corpus and index it (or open the prebuilt ``index_dir``)."""
    label = encoder_label(spec)
    if index_dir is not None:
        searcher = Searcher.open(index_dir)
        index_bytes = sum(p.stat().st_size for p in Path(index_dir).rglob("*.arrow"))
        return Retriever(spec, f"{label} ({Path(index_dir).name})", searcher.encoder,
                         searcher.index, str(index_dir), index_bytes, {}, False, None)  # fmt: skip
    encoder, vectors, enc_stats, cached = encode_cached(
        spec, dataset, cache, batch_size, progress, encoder_options or {}, stage
    )
    t = time.perf_counter()
    if is_dense(encoder):
        index = DenseIndex(np.asarray(vectors.matrix), vectors.ids)
        return Retriever(spec, label, encoder, index, str(vectors.path),
                         int(vectors.matrix.nbytes), enc_stats, cached,
                         time.perf_counter() - t)  # fmt: skip
    target = out / "indexes" / _slug(label) / _slug(dataset.name)
    build_index(vectors.batches(), encoder, target, overwrite=True)
    build_seconds = time.perf_counter() - t
    with LiveIndex(target, read_only=True) as live:  # the segment, memory mapped
        index = live.as_index()
    index.check_vocab(encoder.vocab)
    index_bytes = sum(p.stat().st_size for p in target.rglob("*.arrow"))
    return Retriever(spec, label, encoder, index, str(target), index_bytes, enc_stats, cached,
                     build_seconds)  # fmt: skip


def retrieve_run(
    retriever: Retriever, queries: dict[str, str], k: int, drop_self: bool
) -> tuple[dict[str, dict[str, float]], object, float]:
    """The run of ``queries`` (top ``k``), their vectors and the seconds encoding took."""
    qids = list(queries)
    t = time.perf_counter()
    query_vectors = retriever.encoder.encode_queries([queries[q] for q in qids])
    query_seconds = time.perf_counter() - t
    run = rank(retriever.index, qids, query_vectors, k=k, skip_self=drop_self)
    return run, query_vectors, query_seconds


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
) -> tuple[EvalResult, Retriever, dict]:
    """Encode (or reuse), index, retrieve top-``k`` and score ``spec`` on ``dataset``;
    ``skip_self`` (auto, on, off) says whether a query's hit on its own id is dropped (see
    :func:`~lsr.eval.datasets.skips_self`). Returns the report row, the retriever (to search
    more queries: tuning a fusion) and the run."""
    drop_self = skips_self(dataset.name, skip_self)
    retriever = prepare_retriever(
        spec, dataset, out, cache, batch_size, index_dir, progress, encoder_options, stage
    )
    index = retriever.index
    qids = list(dataset.queries)
    run, query_vectors, query_seconds = retrieve_run(retriever, dataset.queries, k, drop_self)
    compile_seconds = warm_up(index, query_vectors)
    enc_stats = retriever.enc_stats
    efficiency = {
        "index_bytes": retriever.index_bytes,
        "build_seconds": retriever.build_seconds,
        "encode_docs_per_second": enc_stats.get("docs_per_second"),
        "encode_seconds": enc_stats.get("encode_seconds"),
        "query_encode_ms": query_seconds / max(len(qids), 1) * 1e3,
        "numba_warmup_seconds": compile_seconds,
        **latency(index, query_vectors, k=10),
        **({} if retriever.dense else sparsity(index, query_vectors)),
    }
    result = score_run(retriever.label, dataset, run, out, k, measures, efficiency,
                       index.n_docs, drop_self)  # fmt: skip
    result.index_dir = retriever.index_dir
    result.cached_encoding = retriever.cached
    result.encoder_info = encoder_provenance(spec, retriever.encoder)
    stage(
        f"  searched {len(qids):,} queries: "
        + ", ".join(f"{m} {v:.4f}" for m, v in list(result.metrics.items())[:2])
    )
    return result, retriever, run


def score_run(
    label: str,
    dataset: Dataset,
    run: dict[str, dict[str, float]],
    out: Path,
    k: int,
    measures: Sequence[str],
    efficiency: dict,
    n_docs: int,
    drop_self: bool,
) -> EvalResult:
    """Write ``run`` as a TREC file and score it (every measure and the recall curve in one
    ir-measures pass): the report row of one retriever on one dataset."""
    qids = list(dataset.queries)
    run_file = out / "runs" / f"{_slug(label)}__{_slug(dataset.name)}.trec"
    run_file.parent.mkdir(parents=True, exist_ok=True)
    write_trec_run(run_file, run, _slug(label))
    depths = [d for d in RECALL_DEPTHS if d <= k]
    scored = per_query(run, dataset.qrels, [*measures, *(f"R@{d}" for d in depths)])
    means = {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in scored.items()}
    names = [str(m) for m in parse_measures(measures)]  # as ir-measures names them
    return EvalResult(
        encoder=label,
        dataset=dataset.name,
        n_queries=len(qids),
        n_docs=n_docs,
        metrics={m: means[m] for m in names},
        efficiency=efficiency,
        run_file=str(run_file),
        index_dir="",
        skip_self=drop_self,
        per_query={m: scored[m] for m in names},
        recall_curve={str(d): means[f"R@{d}"] for d in depths},
        dataset_info={
            "dataset": dataset.name,
            "source": str(dataset.corpus_path.parent) if dataset.corpus_path else dataset.name,
            "split": dataset.split,
            "judged_queries": len(dataset.qrels),
            "k": k,
        },
    )


def parse_hybrid(text: str) -> list[str]:
    """The encoder specs of a ``--hybrid`` value: ``bm25+splade-tiny``, ``bm25+dense:PATH``."""
    parts = [p.strip() for p in str(text).split("+")]
    if len(parts) < 2 or not all(parts):
        raise InputError(
            f"--hybrid {text!r}: give two or more encoders joined by '+', "
            "e.g. bm25+dense:wordllama."
        )
    labels = [encoder_label(p) for p in parts]
    if len(set(labels)) != len(labels):
        raise InputError(f"--hybrid {text!r} names the same retriever twice.")
    for part in parts:
        encoder_kind(part)
    return parts


def evaluate_hybrid(
    parts: Sequence[str],
    dataset: Dataset,
    kept: dict,
    out: Path,
    k: int,
    measures: Sequence[str],
    fusion: FusionSpec | None,
    dev: Dataset | None,
    tune_measure: str,
    skip_self: str,
    stage: Callable[[str], None] = logger.info,
) -> EvalResult:
    """The row of a fusion of evaluated retrievers' runs on ``dataset``: its quality, and its
    cost as the retrievers' (run one after the other) plus the fusion's. With ``dev`` (a
    development split of the same corpus) the weights are tuned on it first."""
    labels = [encoder_label(p) for p in parts]
    comps = [kept[(label, dataset.name)] for label in labels]
    spec = fusion or FusionSpec(depth=k)
    spec.weights_for(len(parts))  # a wrong number of weights fails before any tuning
    drop_self = skips_self(dataset.name, skip_self)
    if dev is not None:
        dev_runs = [retrieve_run(r, dev.queries, k, drop_self)[0] for _, r, _ in comps]
        spec, tried = tune_fusion(dev_runs, dev.qrels, tune_measure, spec.method,
                                  spec.normalization, spec.depth, labels)  # fmt: skip
        stage(
            f"  tuned on {dev.split} ({len(dev.qrels)} queries, {len(tried)} settings): "
            f"{spec.describe()}, {tune_measure} {spec.tuned['value']:.4f}"
        )
    fused, seconds = fuse_runs([run for _, _, run in comps], spec, k)
    singles = [result.efficiency for result, _, _ in comps]
    n = max(len(dataset.queries), 1)

    def total(key: str) -> float | None:
        values = [e.get(key) for e in singles]
        return None if any(v is None for v in values) else float(sum(values))

    def rate(key: str) -> float:  # retrievers one after the other, then the fusion
        per_query = sum(1 / e[key] for e in singles if e.get(key)) + seconds / n
        return 1 / per_query if per_query > 0 else 0.0

    efficiency = {
        "index_bytes": total("index_bytes"),
        "build_seconds": total("build_seconds"),
        "encode_seconds": total("encode_seconds"),
        "query_encode_ms": total("query_encode_ms"),
        "fusion_ms": seconds / n * 1e3,
        "latency_ms_p50": (total("latency_ms_p50") or 0.0) + seconds / n * 1e3,
        "latency_ms_p99": (total("latency_ms_p99") or 0.0) + seconds / n * 1e3,
        "qps_single": rate("qps_single"),
        "qps_batch": rate("qps_batch"),
    }
    label = "+".join(labels)
    n_docs = comps[0][0].n_docs
    result = score_run(label, dataset, fused, out, k, measures, efficiency, n_docs, drop_self)
    result.notes.append(
        f"fusion: {spec.describe()}"
        + (f", tuned on {dev.split} for {tune_measure}" if dev is not None else "")
    )
    settings = {"retrievers": "+".join(labels), "fusion": spec.describe()}
    if dev is not None:
        settings["tuned"] = f"on {dev.split}, {tune_measure} {spec.tuned['value']:.4f}"
    result.encoder_info = {
        "type": "hybrid",
        "settings": settings,
        "fusion": spec.to_dict(),
        "retrievers": [r.encoder_info for r, _, _ in comps],
    }
    stage(
        f"  fused {len(dataset.queries):,} queries: "
        + ", ".join(f"{m} {v:.4f}" for m, v in list(result.metrics.items())[:2])
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
    hybrids: Sequence[str] = (),
    fusion: FusionSpec | None = None,
    tune_on: str | None = None,
    tune_measure: str = "nDCG@10",
) -> list[EvalResult]:
    """Every encoder on every dataset; writes the runs and the report (``report.json``,
    ``.md``, ``.html``, ``.tex``, per-query scores, figures) to ``out``. ``baseline`` (an
    encoder's label; default ``bm25`` when evaluated, else the first) is what every other
    encoder is tested against; ``stage`` receives a line as each step starts.

    ``hybrids`` (``"bm25+dense:wordllama"``: encoder specs joined by ``+``) add a row per
    fusion of those retrievers' runs (each retriever is evaluated too): ``fusion`` says how
    (default: convex, min-max, equal weights, depth ``k``); ``tune_on`` a development split
    of each dataset (``train``) on which the weights (or RRF's k) are chosen for
    ``tune_measure``, never the split reported."""
    from lsr.eval.report import write_report

    if not datasets or not (encoders or hybrids):
        raise InputError("Give at least one dataset and one encoder.")
    if tune_on is not None and not hybrids:
        raise InputError("--tune-on chooses the weights of --hybrid rows; give --hybrid too.")
    if tune_on is not None and tune_on == split:
        raise InputError(
            f"--tune-on {tune_on} is the split being reported: tuning on the test queries "
            "would overstate the hybrid. Tune on another split (train, dev)."
        )
    hybrid_parts = [parse_hybrid(h) for h in hybrids]
    encoders = list(encoders)
    for parts in hybrid_parts:
        encoders += [p for p in parts if encoder_label(p) not in map(encoder_label, encoders)]
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
    sources = {d.name: spec for d, spec in zip(loaded, datasets, strict=True)}
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
    kept: dict[tuple[str, str], tuple] = {}
    steps = len(specs) * len(loaded)
    for i, (spec, dataset) in enumerate(itertools.product(specs, loaded), 1):
        say(f"[{i}/{steps}] {encoder_label(spec)} on {dataset.name}")
        result, retriever, run = evaluate_one(
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
        kept[(encoder_label(spec), dataset.name)] = (result, retriever, run)
    for dataset in loaded:
        for parts in hybrid_parts:
            say(f"hybrid {'+'.join(map(encoder_label, parts))} on {dataset.name}")
            dev = load_dataset(sources[dataset.name], tune_on) if tune_on else None
            results.append(
                evaluate_hybrid(
                    parts,
                    dataset,
                    kept,
                    out,
                    k,
                    measures,
                    fusion,
                    dev,
                    tune_measure,
                    skip_self,
                    say,
                )  # fmt: skip
            )
    say(f"report: {len(results)} runs, significance against {baseline} -> {out}")
    write_report(results, out, measures, baseline)
    return results
