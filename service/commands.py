"""What each ``lsr`` subcommand does; argument parsing lives in ``lsr.service.cli``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lsr import BM25Encoder, load_encoder, sample_dataset
from lsr.encoders import (
    ENCODER_OPTIONS,
    check_options,
    encoder_kind,
    option_flags,
    options_for,
)
from lsr.errors import InputError
from lsr.eval import evaluate, load_dataset
from lsr.eval.datasets import corpus_source
from lsr.pipeline import Searcher, encode_to_file, index_corpus, retrieve


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _encoder_options(args) -> dict:
    """The encoder options given on the command line (BM25's and the model options)."""
    return {o: getattr(args, o) for o in ENCODER_OPTIONS if getattr(args, o, None) is not None}


def _encoder_from_args(args):
    spec = args.encoder or "bm25"  # lsr index's default
    if isinstance(spec, list):
        if len(spec) > 1:
            raise InputError("give one --encoder here (several are for lsr index).")
        spec = spec[0]
    options = _encoder_options(args)
    check_options([spec], options)
    encoder = load_encoder(spec, **options_for(spec, options))
    from lsr.dense import is_dense

    if is_dense(encoder):
        raise InputError(
            f"--encoder {spec} is a dense encoder; here a sparse one is needed (dense vectors "
            "are indexed with lsr index --dense, evaluated with lsr eval --encoder dense:...)."
        )
    return encoder


def _names_dense(spec) -> bool:
    """Whether an encoder spec names a dense encoder (``dense:...`` or a saved dense one)."""
    return encoder_kind(str(spec))[0] == "dense"


def _encoders_from_args(args) -> tuple[str, object, dict]:
    """lsr index's encoders: the main one's name and encoder, and the extra ones by name
    (the further --encoder options and every --dense)."""
    from lsr.dense import is_dense
    from lsr.pipeline.hybrid import named_specs

    for _, spec in named_specs(args.dense or []):
        if not _names_dense(spec):
            raise InputError(
                f"--dense {spec}: give a dense encoder, dense:wordllama or dense:PATH."
            )
    given = args.encoder or ["bm25"]
    every = named_specs([*given, *(args.dense or [])])  # names unique across both
    sparse = every[: len(given)]
    options = _encoder_options(args)
    check_options([spec for _, spec in every], options)
    encoders = {name: load_encoder(spec, **options_for(spec, options)) for name, spec in every}
    for name, spec in sparse:
        if is_dense(encoders[name]):
            raise InputError(f"--encoder {spec} is a dense encoder; pass it with --dense.")
    main = sparse[0][0]
    return main, encoders.pop(main), encoders


def cmd_index(args) -> int:
    if args.reorder and (args.shards is not None or args.append):
        raise InputError(
            "--reorder renumbers the documents of a new single collection; drop it with "
            f"{'--shards' if args.shards is not None else '--append'}."
        )
    if args.shards is not None:
        summary = _index_sharded(args)
    elif len(args.corpus) > 1:
        raise InputError(
            f"{len(args.corpus)} corpora given; index one, or several as the shards of a "
            "cluster with --shards files."
        )
    elif args.append:
        if args.pretokenized:
            raise InputError(
                "--append encodes with the collection's encoder; --pretokenized cannot add to it."
            )
        if args.encoder is not None or args.dense or args.overwrite or _encoder_options(args):
            raise InputError(
                "--append adds to a collection with the encoders it was built with; "
                "drop --encoder, --dense, --overwrite and encoder options."
            )
        from lsr.pipeline.appending import append_corpus

        summary = append_corpus(
            corpus_source(args.corpus[0]), args.out, args.batch_size, progress=sys.stderr.isatty()
        )
    else:
        summary = _index_new(args)
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(summary.line())
    return 0


def _index_sharded(args):
    """``lsr index CORPUS --shards N`` (or ``--shards files`` over several corpora)."""
    from lsr.pipeline.sharding import index_sharded

    other = [flag for flag, given in (("--append", args.append), ("--pretokenized",
             args.pretokenized), ("--dense", args.dense)) if given]  # fmt: skip
    if other or (args.encoder and len(args.encoder) > 1):
        raise InputError(
            f"--shards builds a cluster of one sparse representation; drop "
            f"{', '.join(other) or 'the second --encoder'}."
        )
    _, encoder, _ = _encoders_from_args(args)
    return index_sharded(
        [corpus_source(c) for c in args.corpus],
        encoder,
        args.out,
        args.shards,
        quantization=args.quantization,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=_progress(),
        store=args.store,
    )


def _index_new(args):
    corpus = args.corpus[0]
    if args.pretokenized and args.dense:
        raise InputError(
            "--pretokenized indexes given term weights; --dense has no text to encode."
        )
    if args.pretokenized:
        from lsr.pipeline import index_pretokenized

        options = _encoder_options(args)
        if args.encoder is None and options:
            raise InputError(
                f"{option_flags(options)}: encoder options, and --pretokenized encodes nothing."
            )
        return index_pretokenized(
            corpus,
            args.out,
            encoder=None if args.encoder is None else _encoder_from_args(args),
            quantization=args.quantization,
            overwrite=args.overwrite,
            progress=sys.stderr.isatty(),
            store=args.store,
            reorder=args.reorder,
        )
    if args.dense_index != "flat" and not args.dense:
        raise InputError("--dense-index sets how --dense vectors are indexed; add --dense.")
    main, encoder, extras = _encoders_from_args(args)
    return index_corpus(
        corpus_source(corpus),
        encoder,
        args.out,
        quantization=args.quantization,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty() or None,
        store=args.store,
        extra_encoders=extras,
        dense_index=args.dense_index,
        main=main if extras else None,
        reorder=args.reorder,
    )


def _progress() -> bool:
    """Progress bars when stderr is a terminal (not in pipes, logs and tests)."""
    return sys.stderr.isatty()


def cmd_encode(args) -> int:
    out = Path(args.out)
    if args.ray is not None and args.queries:
        raise InputError("--queries encodes on this machine (queries are few); drop --ray.")
    if args.ray is not None:
        return _encode_on_ray(args, out)
    if args.concurrency != 2 or args.chunk != 8192:
        raise InputError("--concurrency and --chunk set how --ray encodes; add --ray.")
    if out.suffix != ".parquet":
        raise InputError(f"--out must be a .parquet file, got {out}.")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    if _names_dense(args.encoder):
        raise InputError(
            "lsr encode writes sparse vectors (term ids and weights); a dense encoder's vectors "
            "go into a collection: lsr index CORPUS --encoder bm25 --dense "
            f"{args.encoder} --out DIR."
        )
    encoder = _encoder_from_args(args)
    t = time.perf_counter()
    if args.queries:
        rows, stats = _encode_queries(args, encoder, out)
    else:
        rows, stats = encode_to_file(
            corpus_source(args.corpus),
            encoder,
            out,
            args.batch_size,
            _progress(),
            label=str(args.encoder),
        )
    what = "queries" if args.queries else "docs"
    summary = {
        "path": str(out),
        f"n_{what}": rows,
        "seconds": time.perf_counter() - t,
        "encode_docs_per_second": stats.docs_per_second,
        "bytes": out.stat().st_size,
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"encoded {rows:,} {what} in {summary['seconds']:.1f}s "
            f"({stats.docs_per_second:,.1f} {what}/s) -> {out} "
            f"({summary['bytes'] / 2**20:.1f} MiB)"
        )
    return 0


def _encode_queries(args, encoder, out: Path):
    """``lsr encode DATASET --queries``: the dataset's queries through the query side."""
    from lsr.encoding import needs_fit, prepare
    from lsr.eval.datasets import load_topics
    from lsr.pipeline import encode_queries_to_file, read_documents

    queries = load_topics(args.corpus)
    if needs_fit(encoder):
        if Path(args.corpus).is_file():
            raise InputError(
                f"{args.encoder} needs corpus statistics: give the dataset (a BEIR folder or an "
                "ir_datasets id), whose corpus it is fitted on, not a query file."
            )
        prepare(encoder, read_documents(corpus_source(args.corpus), _progress()), _progress())
    return encode_queries_to_file(
        queries, encoder, out, args.batch_size, _progress(), label=str(args.encoder)
    )


def _encode_on_ray(args, out: Path) -> int:
    """``lsr encode CORPUS --encoder E --out DIR --ray [ADDRESS]``."""
    from lsr.pipeline.ray_encoding import check_out, encode_on_ray

    check_out(out)
    if _names_dense(args.encoder):
        raise InputError("lsr encode writes sparse vectors; a dense encoder has none.")
    summary = encode_on_ray(
        corpus_source(args.corpus),
        _encoder_from_args(args),
        out,
        address=args.ray,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        chunk=args.chunk,
        label=str(args.encoder),
        progress=_progress(),
        overwrite=args.overwrite,
    )
    if args.json:
        _print_json(summary)
    else:
        resumed = summary["parts_resumed"]
        print(
            f"encoded {summary['n_docs']:,} docs in {summary['seconds']:.1f}s on Ray "
            f"({summary['concurrency']} actors, {summary['encode_docs_per_second']:,.1f} docs/s; "
            f"{summary['parts']} parts{f', {resumed} found done' if resumed else ''}) -> {out} "
            f"({summary['bytes'] / 2**20:.1f} MiB)"
        )
    return 0


def cmd_train(args) -> int:
    from lsr.eval.plots import training_curves
    from lsr.pipeline.training import run_training
    from lsr.training import TrainConfig

    config = TrainConfig.from_yaml(args.config)
    if args.resume:
        config.resume = True
    trainer, factors = run_training(config, progress=_progress())
    out = trainer.output
    last = trainer.history[-1] if trainer.history else {}
    # drawn once the query factors are learned too: their epochs get a panel of their own
    curves = str(training_curves(out)) if trainer.history else None  # logged steps to draw
    if args.json:
        _print_json(
            {
                "output": str(out),
                "steps": trainer.step,
                "last": last,
                "curves": curves,
                "query_factors": factors,
            }
        )
    else:
        learned = (
            f"; query factors: {len(factors)} epochs, loss {factors[0]['loss']:.3f} -> "
            f"{factors[-1]['loss']:.3f}, {factors[-1]['tokens_moved']} tokens moved"
            if factors
            else ""
        )
        print(
            f"trained {trainer.step} steps -> {out}; loss {last.get('loss', float('nan')):.4f}, "
            f"nnz q/d {last.get('nnz_q', 0):.0f}/{last.get('nnz_d', 0):.0f}, "
            f"FLOPS {last.get('flops_d', 0):.3f}; curves {curves}{learned}"
        )
    return 0


def cmd_eval(args) -> int:
    from lsr.eval.metrics import DEFAULT_MEASURES
    from lsr.eval.report import effectiveness_table, markdown_table
    from lsr.eval.runner import run_evaluation

    options = _encoder_options(args)
    measures = args.measures or list(DEFAULT_MEASURES)
    results = run_evaluation(
        args.datasets,
        args.encoder,
        args.out,
        split=args.split,
        k=args.k,
        measures=measures,
        cache_dir=args.cache_dir,
        index_dir=args.index,
        batch_size=args.batch_size,
        progress=_progress(),
        encoder_options=options,
        skip_self=args.skip_self,
        baseline=args.baseline,
        stage=lambda line: print(f"lsr eval: {line}", file=sys.stderr, flush=True),
        hybrids=args.hybrid,
        fusion=_eval_fusion(args),
        tune_on=args.tune_on,
        tune_measure=args.tune_measure,
    )
    if args.json:
        _print_json([r.to_dict() for r in results])
        return 0
    print(markdown_table(*effectiveness_table(results, measures)))
    print(
        f"report: {Path(args.out) / 'report.md'} (also report.html, report.tex, report.json, "
        "per_query.tsv, figures/, runs/)"
    )
    return 0


def _eval_fusion(args):
    """lsr eval's fusion settings (None: the default, equal weights at depth -k)."""
    from lsr.index.fusion import FusionSpec

    given = _fusion_given(args)
    if given and not args.hybrid:
        raise InputError("fusion options set how --hybrid rows fuse; give --hybrid too.")
    if not given:
        return None
    return FusionSpec(**{"depth": args.k, **given})


def cmd_tune_fusion(args) -> int:
    from lsr.eval.datasets import load_dataset
    from lsr.eval.fusion_tuning import tune_collection
    from lsr.index.fusion import write_fusion

    if args.split == "test":
        raise InputError(
            "--split test: refusing to tune on the test queries (every result reported on them "
            "would be overstated); tune on train or dev."
        )
    if not Path(args.index).is_dir():
        raise InputError(f"No collection at {args.index}.")
    dataset = load_dataset(args.dataset, args.split)
    spec, tried = tune_collection(
        args.index, dataset, args.retriever, args.measure, args.fusion, args.normalization,
        args.depth, args.step, progress=_progress(),
    )  # fmt: skip
    written = None if args.dry_run else str(write_fusion(args.index, spec))
    if args.json:
        _print_json({"fusion": spec.to_dict(), "tried": tried, "written": written})
        return 0
    names = ", ".join(spec.retrievers)
    for row in tried:
        setting = (
            f"k={row['k']}"
            if spec.method == "rrf"
            else "weights " + "/".join(f"{w:g}" for w in row["weights"])
        )
        print(f"  {setting:<24} {spec.tuned['measure']} {row['value']:.4f}")
    print(
        f"best: {spec.describe()} over {names}: {spec.tuned['measure']} "
        f"{spec.tuned['value']:.4f} on {dataset.name} ({args.split}, {len(dataset.qrels)} queries)"
        + (f" -> {written}" if written else " (dry run: nothing written)")
    )
    return 0


def _bench_queries(spec: str, encoder, limit: int | None):
    """Query vectors from a queries file or a dataset's queries, encoded by ``encoder``."""
    from lsr.corpus import read_queries
    from lsr.eval.datasets import load_dataset

    path = Path(spec)
    texts = (
        list(read_queries(path).values())
        if path.is_file()
        else list(load_dataset(spec).queries.values())
    )
    if limit:
        texts = texts[:limit]
    if not texts:
        raise InputError(f"No queries in {spec}.")
    return encoder.encode_queries(texts)


def _generator(args):
    """``lsr bench synthetic --like``: the generator fitted to real vectors (or saved) and
    the real ``(documents, queries)`` it was fitted to (None when loaded)."""
    from lsr.eval import faithful

    if args.like is None:
        if args.validate or args.save_generator:
            raise InputError("--validate and --save-generator need --like REAL_VECTORS.parquet.")
        return None, None
    if args.inference_free or args.doc_terms != 120 or args.query_terms != 40:
        raise InputError(
            "--like fits lengths, weights and query kind to the real vectors; drop "
            "--inference-free, --doc-terms and --query-terms (fit inference-free queries by "
            "encoding them with an inference-free encoder)."
        )
    path = Path(args.like)
    if path.suffix == ".npz":
        if args.queries or args.validate:
            raise InputError("A saved generator is already fitted: drop --queries and --validate.")
        model, real = faithful.FaithfulModel.load(path), None
    else:
        docs = _vector_matrix(path)
        queries = _vector_matrix(Path(args.queries)) if args.queries else None
        model, real = faithful.fit(docs, queries), (docs, queries)
    if args.save_generator:
        model.save(args.save_generator)
    return model, real


def _vector_matrix(path: Path):
    """All rows of a Parquet vector file as one CSR matrix."""
    import scipy.sparse as sp

    from lsr.vector_files import open_vectors

    if not path.exists():
        raise InputError(f"{path} not found: give a Parquet vector file from lsr encode.")
    return sp.vstack([m for m, _ in open_vectors(path).batches(8192)], format="csr")


def _validate_generator(args, model, real) -> int:
    from lsr.eval.faithful_validation import validate

    docs, queries = real
    if queries is None:
        raise InputError("--validate compares queries too: give the real ones with --queries.")
    result = validate(docs, queries, model)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.table())
    return 0


def cmd_bench(args) -> int:
    from lsr.eval.bench import bench_index, bench_synthetic

    given = {
        "postings_per_term": args.cluster_postings,
        "pruning": args.cluster_pruning,
        "cluster_size": args.cluster_size,
        "summary_mass": args.summary_mass,
    }
    # options left out take ClusterSettings' defaults; {} skips the clustered index
    clustered = {k: v for k, v in given.items() if v is not None}
    common = {
        "k": args.k,
        "repeat": args.repeat,
        "peers": not args.no_peers,
        "approximate": not args.no_approximate,
        "clustered": {} if args.no_clustered else (clustered or None),
        "reorder": args.reorder,
    }
    from lsr.index.storage import is_index_dir

    is_index = is_index_dir(Path(args.target))
    if _encoder_options(args) and (is_index or args.target in ("ingest", "synthetic", "scale")):
        raise InputError(
            "Encoder options (BM25's, the model's) apply to a dataset target, which is "
            "encoded here; an index keeps its own encoder."
        )
    if (args.reads or args.modes) and not is_index:
        flag = "--reads" if args.reads else "--modes"
        raise InputError(f"{flag} benchmarks an index directory; build one with lsr index.")
    if args.reorder and (args.target in ("ingest", "cluster", "scale") or args.reads or args.modes):
        raise InputError("--reorder times search algorithms (synthetic, a dataset, an index).")
    if args.reads and args.modes:
        raise InputError("give --reads or --modes, not both.")
    if args.target == "ingest":
        from lsr.eval.ingest_bench import bench_ingest

        report = bench_ingest(
            args.like or sample_dataset(),
            n_docs=args.docs or 100_000,
            batch_sizes=args.batch_sizes,
            flush_threshold=args.flush_threshold,
            encode_workers=args.encode_workers,
            progress=_progress(),
        )
    elif args.target == "cluster":
        from lsr.eval.cluster_bench import bench_cluster

        report = bench_cluster(
            args.docs or 1_000_000,
            args.synthetic_queries,
            args.shards,
            address=args.ray,
            k=args.k,
            repeat=max(args.repeat, 2),
            doc_terms=args.doc_terms,
            query_terms=args.query_terms,
            encode_corpus=corpus_source(args.like) if args.like else sample_dataset(),
            encoder=_encoder_from_args(args) if args.encode_docs else None,
            encode_docs=args.encode_docs,
        )
    elif args.target == "scale":
        report = _bench_scale(args)
    elif args.target == "synthetic":
        like, real = _generator(args)
        if args.validate:
            return _validate_generator(args, like, real)
        query_terms = args.query_terms if args.query_terms != 40 or not args.inference_free else 6
        report = bench_synthetic(
            args.docs or 1_000_000,
            args.synthetic_queries,
            doc_terms=args.doc_terms,
            query_terms=query_terms,
            inference_free=args.inference_free,
            like=like,
            **common,
        )
    elif is_index:
        if not args.queries:
            raise InputError("Benchmarking an index needs --queries (a queries file or a dataset).")
        if args.modes:
            from lsr.eval.datasets import load_topics
            from lsr.eval.modes_bench import bench_modes

            texts = list(load_topics(args.queries).values())[: args.max_queries]
            report = bench_modes(args.target, texts, args.k, max(args.repeat, 3))
        elif args.reads:  # bench_reads opens the collection itself: only the encoder here
            from lsr.eval.reads_bench import bench_reads
            from lsr.pipeline import ENCODER_DIR

            encoder = load_encoder(Path(args.target) / ENCODER_DIR)
            queries = _bench_queries(args.queries, encoder, args.max_queries)
            report = bench_reads(args.target, queries)
        else:
            searcher = Searcher.open(args.target)
            queries = _bench_queries(args.queries, searcher.encoder, args.max_queries)
            report = bench_index(searcher.index, queries, Path(args.target).name, **common)
    else:
        report = _bench_dataset(args, common)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.table())
        extras = ", ".join(
            f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in getattr(report, "extra", {}).items()
        )
        if extras:
            print(extras)
    return 0


def _bench_scale(args):
    """``lsr bench scale``: a --like corpus built into a compressed index, then searched."""
    from lsr.eval.scale_bench import bench_scale

    if args.like is None or args.scale_index is None:
        raise InputError(
            "lsr bench scale needs --like (a fitted generator .npz, or real vectors with "
            "--queries) and --index DIR (where the collection is built)."
        )
    if args.validate:
        raise InputError("--validate belongs to lsr bench synthetic --like.")
    model, _ = _generator(args)
    return bench_scale(
        model,
        args.docs or 8_800_000,
        args.scale_index,
        n_queries=args.synthetic_queries,
        k=args.k,
        rebuild=args.overwrite,
        progress=_progress(),
    )


def _bench_dataset(args, common):
    """Encode (cached) and index a dataset in memory, then benchmark with its queries."""
    from lsr.eval.bench import bench_index
    from lsr.eval.cache import EncodingCache
    from lsr.eval.datasets import load_dataset
    from lsr.eval.runner import encode_cached
    from lsr.index import IndexBuilder

    dataset = load_dataset(args.target)
    options = _encoder_options(args)
    check_options([args.encoder], options)
    if _names_dense(args.encoder):
        raise InputError(
            "lsr bench compares sparse search algorithms and engines; time dense and hybrid "
            "search with lsr bench COLLECTION --queries Q --modes."
        )
    encoder, vectors, _, _ = encode_cached(
        args.encoder, dataset, EncodingCache(args.cache_dir), encoder_options=options
    )
    index = IndexBuilder(encoder.vocab).extend(vectors.batches()).finish()
    texts = list(dataset.queries.values())[: args.max_queries or None]
    return bench_index(index, encoder.encode_queries(texts), dataset.name, **common)


def cmd_serve(args) -> int:
    from lsr.service import server
    from lsr.service.app import Limits, create_app
    from lsr.service.auth import load_key_ring
    from lsr.service.http_protocol import default_parser

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise InputError("HTTPS needs both --ssl-certfile and --ssl-keyfile.")
    _check_serve_target(args)
    # what can be refused cheaply is refused before the collection and the encoder load
    server.check_collection(args.index)
    keys = load_key_ring(args.api_key, args.api_keys_file, args.protect_reads, args.anonymous_rate)
    sock = server.bind(args.host, args.port)
    try:
        limits = Limits(
            max_body_bytes=args.max_body_bytes,
            max_k=args.max_k,
            max_batch=args.max_batch,
            max_explain=args.max_explain,
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            timeout_ms=args.timeout_ms,
        )
        app_options = {
            "index_dir": args.index,
            "ray_address": args.ray,
            "shard_timeout": args.shard_timeout,
            "encoder": args.encoder,
            "limits": limits,
            "flush_threshold": args.flush_threshold,
            "read_only": args.read_only,
            "refresh_seconds": args.refresh_seconds,
            "encode_workers": args.encode_workers,
            "unknown_words": args.unknown_words,
            "access_log": None if args.access_log == "off" else args.access_log,
            "cors_origins": args.cors_origin or [],
            "search_threads": args.threads,
        }
        run_options = {
            "parser": default_parser() if args.http == "auto" else args.http,
            "header_timeout": args.header_timeout,
            "graceful_timeout": args.graceful_timeout,
            "ssl_certfile": args.ssl_certfile,
            "ssl_keyfile": args.ssl_keyfile,
        }
        host, port = sock.getsockname()[:2]
        scheme = "https" if args.ssl_certfile else "http"
        url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        if args.workers > 1:
            code = _serve_workers(args, sock, app_options, run_options, keys, url)
        else:
            app = create_app(keys=keys, **app_options)
            server.configure_access_log(args.access_log)
            line = server.startup_line(server.server_facts(app), url, args.access_log)
            print(line, file=sys.stderr, flush=True)
            server.run(app, sock, **run_options)
            code = 0
    finally:
        sock.close()
    if code:
        return code
    print("lsr serve: stopped; the collection is closed", file=sys.stderr, flush=True)
    return 0


def _check_serve_target(args) -> None:
    """``lsr serve DIR``, or ``lsr serve --ray ADDRESS --cluster DIR`` (then ``args.index``
    is the cluster directory)."""
    if args.ray is None:
        if args.cluster is not None:
            raise InputError("--cluster serves a cluster from Ray actors; add --ray ADDRESS.")
        if args.index is None:
            raise InputError("Give the index directory to serve (or --ray ADDRESS --cluster DIR).")
        return
    if args.cluster is None or args.index is not None:
        raise InputError("--ray serves a cluster: lsr serve --ray ADDRESS --cluster DIR.")
    if args.workers > 1 or args.read_only:
        raise InputError(
            "--ray: the shards' actors are the writers, shared by every front end; drop "
            "--workers and --read-only (start several front ends instead)."
        )
    from lsr.index.cluster import read_manifest

    read_manifest(args.cluster)
    args.index = args.cluster


def _serve_workers(args, sock, app_options, run_options, keys, url) -> int:
    """``lsr serve --workers N``: this process supervises N worker processes."""
    from lsr.service import server
    from lsr.service.workers import Supervisor

    launch = {"sock": sock, "app_options": app_options, "run_options": run_options,
              "access_log": args.access_log}  # fmt: skip
    supervisor = Supervisor(launch, keys, args.workers, args.read_only)
    facts = supervisor.start()
    line = server.startup_line(facts, url, args.access_log, supervisor.description)
    print(line, file=sys.stderr, flush=True)
    return supervisor.watch()


def cmd_loadtest(args) -> int:
    import os

    from lsr.corpus import read_queries
    from lsr.eval.datasets import load_dataset
    from lsr.service import loadtest

    for url in args.url:
        loadtest.check_loopback(url)
    path = Path(args.queries)
    texts = list(
        (read_queries(path) if path.is_file() else load_dataset(args.queries).queries).values()
    )
    if args.soak:
        from lsr.service.soak import run_soak

        if len(args.url) != 1:
            raise InputError("--soak runs against one server; give one URL.")
        report = run_soak(
            args.url[0], texts, args.duration or 600.0, args.rate, args.write_fraction,
            args.api_key or os.environ.get("LSR_API_KEY"), args.interval, k=args.k,
        )  # fmt: skip
        _print_json(report.to_dict()) if args.json else print("\n".join(report.lines()))
        return 0
    duration = args.duration or 10.0
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if loadtest.wrk_available() else "python"
    if generator == "wrk":
        bodies = [json.dumps({"query": q, "k": args.k}).encode() for q in texts]
        comparisons = [
            loadtest.compare(
                args.url,
                bodies,
                c,
                duration,
                args.rounds,
                not args.no_reference,
                reference_workers=args.reference_workers,
            )
            for c in args.concurrency
        ]
        if args.json:
            _print_json([c.to_dict() for c in comparisons])
        else:
            print("\n".join(line for c in comparisons for line in c.lines()))
        return 0
    results = [
        (url, loadtest.run_load(url, texts, c, duration, args.max_requests, args.k))
        for c in args.concurrency
        for url in args.url
    ]
    if args.json:
        _print_json([{"url": url, **r.to_dict()} for url, r in results])
        return 0
    for url, r in results:
        print(
            f"{url} {r.concurrency:>3} clients (Python client): {r.requests:,} requests in "
            f"{r.seconds:.1f}s, {r.qps:,.0f} QPS, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
            f"{r.errors} errors"
        )
    return 0


SNIPPET_CHARS = 72  # of a hit's text in the search table


def _hits_table(query: str, hits: list[tuple[str, float]], documents=None) -> str:
    """One query's hits as a table; with stored ``documents``, their titles and a snippet."""
    lines = [f"query: {query}"]
    if not hits:
        lines.append("  (no matching documents)")
        return "\n".join(lines)
    width = max(6, *(len(d) for d, _ in hits))
    head = f"  {'rank':>4}  {'doc id':<{width}}  {'score':>9}"
    lines.append(head + ("  title / text" if documents else ""))
    for rank, (doc, score) in enumerate(hits, 1):
        line = f"  {rank:>4}  {doc:<{width}}  {score:>9.4f}"
        if documents:
            line += f"  {_snippet(documents[rank - 1])}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _snippet(document: dict) -> str:
    title = " ".join(str(document.get("title") or "").split())
    text = " ".join(str(document.get("text") or "").split())
    if len(text) > SNIPPET_CHARS:
        text = text[: SNIPPET_CHARS - 3].rsplit(" ", 1)[0] + "..."
    return f"{title} | {text}" if title and text else title or text


def _filter_arg(text: str | None):
    """``--filter``: JSON text, or ``@FILE`` holding it."""
    if text is None or not text.startswith("@"):
        return text
    path = Path(text[1:])
    if not path.is_file():
        raise InputError(f"--filter {text}: no file {path}.")
    return path.read_text(encoding="utf-8")


def _search_index_arg(args) -> str:
    if args.index_option is not None:
        if args.index is not None:  # then the first positional was query text
            args.query.insert(0, args.index)
        args.index = args.index_option
    if args.index is None:
        raise InputError(
            "Give the index directory: lsr search INDEX ... or --index INDEX "
            "(see lsr search --help)."
        )
    return args.index


def cmd_search(args) -> int:
    index = _search_index_arg(args)
    if args.queries is not None:
        return _search_run(args, index)
    if not args.query:
        raise InputError("Give query text, or a query file with --queries FILE --output RUN.")
    for name in ("output", "format"):
        if getattr(args, name) is not None:
            raise InputError(f"--{name} is for run files: use it with --queries.")
    searcher = Searcher.open(index)
    fields = None if args.fields is None else [f.strip() for f in args.fields.split(",")]
    if fields is not None and not all(fields):
        raise InputError("--fields takes field names separated by commas, e.g. title,text.")
    shown = fields if args.json else ["title", "text"]
    hybrid = _hybrid_args(args, searcher)
    results = searcher.search(
        args.query, k=args.k or 10, filter=_filter_arg(args.filter), fields=shown, **hybrid
    )
    if args.json:
        out = []
        names = _fused_names(searcher, hybrid)
        for i, (q, hits) in enumerate(zip(args.query, results, strict=True)):
            rows = []
            for r, hit in enumerate(hits.hits, 1):
                row = {"rank": r, "id": hit.id, "score": hit.score}
                if results.contributions is not None:
                    row["retrievers"] = dict(zip(names, results.contributions[i][r - 1],
                                                 strict=True))  # fmt: skip
                if hit.document is not None:
                    row["document"] = hit.document
                rows.append(row)
            out.append({"query": q, "hits": rows})
        _print_json(out)
    else:
        tables = [  # titles and snippets where the collection stores them
            _hits_table(q, h.items(), h.documents if any(len(d) > 1 for d in h.documents) else None)
            for q, h in zip(args.query, results, strict=True)
        ]
        print("\n\n".join(tables))
    return 0


def _fusion_given(args) -> dict:
    """The fusion settings given on the command line (only those given)."""
    given = {
        "method": args.fusion, "normalization": args.normalization, "k": args.rrf_k,
        "depth": args.depth,
    }  # fmt: skip
    given = {key: value for key, value in given.items() if value is not None}
    if args.alpha is not None and args.weights is not None:
        raise InputError("give --alpha (two retrievers) or --weights, not both.")
    if args.weights is not None:
        try:
            given["weights"] = tuple(float(w) for w in args.weights.split(","))
        except ValueError:
            raise InputError(
                f"--weights takes numbers separated by commas, got {args.weights!r}."
            ) from None
    elif args.alpha is not None:
        given["weights"] = (args.alpha, 1.0 - args.alpha)
    return given


def _hybrid_args(args, searcher) -> dict:
    """``mode``, ``retrievers`` and ``fusion`` of a search, from the hybrid options."""
    from lsr.index.fusion import FusionSpec

    given = _fusion_given(args)
    if given and args.mode != "hybrid":
        raise InputError("--fusion, --alpha, --weights, --normalization, --rrf-k and --depth are "
                         "for --mode hybrid.")  # fmt: skip
    fusion = None
    if given:
        base = searcher.fusion.to_dict() if searcher.fusion is not None else {}
        if args.retriever:
            base["retrievers"] = []
            base.pop("weights", None)
        if "weights" in given:
            base["retrievers"] = []
        base.pop("tuned", None)
        fusion = FusionSpec.from_dict({**base, **given})
    return {"mode": args.mode, "retrievers": args.retriever, "fusion": fusion}


def _fused_names(searcher, hybrid: dict) -> list[str]:
    """The representations a hybrid search with ``hybrid`` (:func:`_hybrid_args`) fuses, in
    order: what --json labels each contribution with."""
    from lsr.pipeline.hybrid import retrievers_for

    if hybrid["mode"] != "hybrid":
        return []
    fusion = hybrid["fusion"] or searcher.fusion
    return retrievers_for(searcher.live, "hybrid", hybrid["retrievers"], fusion)


def _search_run(args, index: str) -> int:
    """``lsr search --queries FILE --output RUN``: every query, one run file."""
    from lsr.eval.datasets import load_topics
    from lsr.eval.runs import RunWriter, run_format
    from lsr.pipeline import search_topics

    if args.query:
        raise InputError("Give query text or --queries, not both.")
    if args.output is None:
        raise InputError("--queries writes a run file: give it with --output FILE ('-': stdout).")
    if args.fields is not None:
        raise InputError("--fields is for query text; a run file holds ids and scores.")
    fmt = run_format(args.output, args.format)
    topics = load_topics(args.queries)
    if not topics:
        raise InputError(f"{args.queries} holds no queries.")
    t = time.perf_counter()
    with Searcher.open(index) as searcher:
        hits = search_topics(
            searcher,
            topics,
            k=args.k or 1000,
            batch_size=args.batch_size,
            filter=_filter_arg(args.filter),
            progress=_progress(),
            threads=args.threads,
            **_hybrid_args(args, searcher),
        )
        if args.output == "-":
            writer = RunWriter(sys.stdout, fmt, args.run_tag).write_all(hits)
        else:
            writer = _write_run_file(Path(args.output), fmt, args.run_tag, hits)
    seconds = time.perf_counter() - t
    summary = {
        "output": args.output,
        "format": fmt,
        "queries": writer.queries,
        "hits": writer.hits,
        "seconds": seconds,
        "queries_per_second": writer.queries / seconds if seconds > 0 else 0.0,
    }
    if args.json:
        _print_json(summary)
    elif args.output != "-":
        print(
            f"searched {writer.queries:,} queries ({writer.hits:,} hits) in {seconds:.1f}s "
            f"({summary['queries_per_second']:,.0f} queries/s) -> {args.output} ({fmt})"
        )
    return 0


def _write_run_file(path: Path, fmt: str, tag: str, hits):
    """Write the run next to ``path`` and rename it into place when complete, so an
    interrupted search never leaves a truncated run that looks whole."""
    from lsr.eval.runs import RunWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8") as f:
            writer = RunWriter(f, fmt, tag).write_all(hits)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return writer


def cmd_check(args) -> int:
    """Exit 0 when the collection is sound (or was repaired), 1 when damage remains."""
    from lsr.index.check import check_collection

    report = check_collection(args.index, repair=args.repair)
    if args.json:
        _print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_export(args) -> int:
    """Write the collection for another engine; one summary line (or JSON)."""
    from lsr.pipeline.exporting import export_collection

    t0 = time.perf_counter()
    result = export_collection(
        args.index, args.out, args.format, name=args.name, field=args.field,
        values=args.values, example_query=args.example_query,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if args.json:
        _print_json({**result.to_json(), "seconds": round(seconds, 3)})
        return 0
    if args.format == "ciff":
        print(
            f"exported {result.n_docs:,} docs ({result.n_postings:,} postings, "
            f"{result.n_lists:,} terms) as CIFF in {seconds:.1f}s -> {result.path} "
            f"({result.bytes / 2**20:.1f} MiB; weight = impact * {result.scale:.6g})"
        )
        return 0
    notes = []
    if result.renamed_tokens:
        notes.append(f"{len(result.renamed_tokens)} tokens with dots renamed")
    if result.dropped_postings:
        notes.append(f"{result.dropped_postings} postings below the smallest float left out")
    extra = f"; {', '.join(notes)}" if notes else ""
    print(
        f"exported {result.n_docs:,} docs ({result.n_postings:,} postings, {result.values}) "
        f"for {args.format} in {len(result.files)} files in {seconds:.1f}s -> {result.path}"
        f"{extra}; see {result.path}/README.txt"
    )
    return 0


def cmd_export_model(args) -> int:
    """Write the encoder for another tool; one summary line (or JSON)."""
    from lsr.model_export import export_model

    t0 = time.perf_counter()
    result = export_model(load_encoder(args.model), args.out, args.format)
    seconds = time.perf_counter() - t0
    if args.json:
        _print_json({**result.to_json(), "seconds": round(seconds, 3)})
        return 0
    notes = "".join(f"\n  note: {n}" for n in result.notes)
    print(f"exported {args.model} for {args.format} ({result.architecture}) in {seconds:.1f}s "
          f"-> {result.path}{notes}")  # fmt: skip
    return 0


def cmd_demo(args) -> int:
    """Index the bundled sample with BM25, show a few queries, score all of them."""
    dataset = load_dataset(sample_dataset())
    out = Path(args.out) if args.out else args.scratch / "sample-index"
    summary = index_corpus(dataset.corpus_path, BM25Encoder(), out, overwrite=True, progress=False)
    searcher = Searcher.open(out)
    examples = list(dataset.queries.items())[:3]
    run = retrieve(searcher, dataset.queries, k=100)
    scores = evaluate(run, dataset.qrels, ["nDCG@10", "R@100"])
    if args.json:
        _print_json(
            {
                "index": summary.to_dict(),
                "examples": {q: list(run[qid].items())[:5] for qid, q in examples},
                "metrics": scores,
            }
        )
        return 0
    print(summary.line())
    for _, text in examples:
        hits = searcher.search(text, k=5, fields=["title", "text"])[0]
        print()
        print(_hits_table(text, hits.items(), hits.documents))
    print()
    print(
        f"sample: {len(dataset.queries)} queries, nDCG@10 {scores['nDCG@10']:.3f}, "
        f"R@100 {scores['R@100']:.3f}" + (f"; index kept at {out}" if args.out else "")
    )
    return 0
