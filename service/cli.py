"""The ``lsr`` command line: index a corpus, search an index, run the bundled demo.

Errors: what lsr raises on purpose (:class:`lsr.errors.LSRError`) and what the operating
system reports (a missing file, a full disk) end the command with one line on stderr and exit
status 2; ``-v`` / ``--debug`` (before or after the subcommand) add the traceback. Anything
else is a bug and surfaces as one, with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path

from lsr import __version__
from lsr.errors import LSRError
from lsr.model_export import FORMATS as MODEL_FORMATS
from lsr.pipeline.exporting import EXPORT_FORMATS
from lsr.service import commands


def _number(convert, accepts, what: str):
    """An argparse ``type``: ``convert(text)``, refused with "must be ``what``" unless it
    converts and ``accepts`` it."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


POSITIVE_INT = _number(int, lambda v: v > 0, "a positive integer")


def _shards(text: str) -> int | str:
    """``--shards``: a positive number, or ``files``."""
    if text == "files":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"give a number of shards or 'files', got {text}")
    return int(text)


NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, "an integer >= 0")
POSITIVE_FLOAT = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
NON_NEGATIVE_FLOAT = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
UNIT_FLOAT = _number(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="encode a corpus and build an index")
    p.add_argument(
        "corpus",
        nargs="+",
        help="BEIR folder, .jsonl ({_id,title,text}), .tsv, .parquet from lsr encode, or an "
        "ir_datasets id (beir/scifact, cranfield); several with --shards files",
    )
    p.add_argument(
        "--shards",
        type=_shards,
        default=None,
        metavar="N|files",
        help="write a cluster of N collections, documents placed by the hash of their id "
        "(or 'files': one shard per corpus given), with global statistics, to serve with "
        "lsr serve --ray",
    )
    p.add_argument(
        "--encoder",
        action="append",
        default=None,
        help="'bm25' (default), a SPLADE / inference-free model folder or Hub id, a saved "
        "encoder; repeat it for several sparse representations in one collection (the first "
        "is the main one; NAME=SPEC names one, else it is named after the spec); with "
        "--append the collection's own encoders are used",
    )
    p.add_argument(
        "--dense",
        action="append",
        default=None,
        metavar="dense:SPEC",
        help="also index dense vectors for hybrid search: dense:wordllama (the static model "
        "shipped in the wordllama package, offline), dense:PATH or dense:OWNER/NAME (a "
        "transformer or sentence-transformers model); NAME=dense:... names it",
    )
    p.add_argument(
        "--dense-index",
        default="flat",
        metavar="flat|hnsw:...|ivf:...",
        help="the faiss index of each segment's dense vectors: flat (exact, default), "
        "hnsw:m=32,ef_construction=200,ef_search=128 or ivf:nlist=1024,nprobe=16",
    )
    p.add_argument("--out", required=True, help="index directory to write")
    p.add_argument(
        "--append",
        action="store_true",
        help="add the corpus to the existing collection --out (ids it holds are replaced), "
        "as its writer: refused while lsr serve writes to it",
    )
    p.add_argument(
        "--pretokenized",
        action="store_true",
        help="the corpus carries its own term weights (Pyserini's JsonVectorCollection: "
        '{"id", "contents", "vector": {term: weight}} per line, a file or a folder of '
        ".jsonl); indexed as they are; queries are white-space separated terms unless "
        "--encoder gives the query encoder (whose vocabulary must hold every term)",
    )
    _add_bm25_options(p)
    p.add_argument(
        "--quantization",
        choices=["uint8", "float32"],
        default="uint8",
        help="how postings store weights: one byte per weight, or exact floats",
    )
    p.add_argument(
        "--reorder",
        choices=["bp"],
        default=None,
        help="renumber the documents so that similar ones sit together: bp, recursive graph "
        "bisection (as PISA and BMP do); same results, faster block-max pruning, smaller "
        "gaps; documents added later go after them",
    )
    p.add_argument(
        "--store",
        default="all",
        metavar="all|fields:a,b|none",
        help="which fields of each document to store for results and filters (default all: "
        "_id, title, text and every other field of the record, metadata included)",
    )
    _add_model_options(p)
    _add_threads(p, "encoding threads")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=commands.cmd_index)


def _add_bm25_options(p) -> None:
    """Options of a fresh BM25 encoder (refused with a model encoder)."""
    p.add_argument("--k1", type=NON_NEGATIVE_FLOAT, default=None, help="BM25 k1 (default 0.9)")
    p.add_argument("--b", type=UNIT_FLOAT, default=None, help="BM25 b (default 0.4)")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="BM25 analysis: 'lucene' (default: Lucene's English analyzer, the terms of an "
        "Anserini / Pyserini index), 'regex' (lsr's earlier word analysis, Snowball Porter; "
        "also 'word') or a Hugging Face tokenizer (folder, tokenizer.json or Hub id)",
    )
    p.add_argument(
        "--doc-length",
        choices=["exact", "lucene"],
        default=None,
        help="BM25 document lengths: 'exact' (default) or 'lucene' (Lucene's one-byte norm "
        "and single-precision arithmetic, so scores match Anserini's to the last digit)",
    )


def _add_cache_dir(p) -> None:
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where encoded corpora are cached (default $LSR_CACHE or ~/.cache/lsr)",
    )


def _add_threads(p, what: str = "search and encoding threads") -> None:
    p.add_argument(
        "--threads", type=POSITIVE_INT, default=None, help=f"{what} (default: all cores)"
    )


def _add_model_options(p, batch_size: bool = True) -> None:
    if batch_size:
        p.add_argument(
            "--batch-size", type=POSITIVE_INT, default=32, help="documents per encoder batch"
        )
    p.add_argument(
        "--max-length",
        type=POSITIVE_INT,
        default=None,
        help="max tokens per document window (default: the model's setting, else 256)",
    )
    p.add_argument(
        "--max-chunks",
        type=POSITIVE_INT,
        default=None,
        help="encode long documents as up to N windows, max-pooled (default 1: truncate)",
    )
    p.add_argument(
        "--max-active-dims",
        type=POSITIVE_INT,
        default=None,
        help="keep only the N largest weights per vector (default: the model's setting, else all)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--fit-idf",
        action="store_true",
        default=None,
        help="inference-free encoders: compute the query weights (IDF) on this corpus instead "
        "of using the table the model ships (a model trained on one corpus, used on another)",
    )


def _add_encode(sub) -> None:
    p = sub.add_parser("encode", help="encode a corpus to a Parquet file of sparse vectors")
    p.add_argument(
        "corpus", help="BEIR folder, .jsonl or .tsv file, or an ir_datasets id (cranfield)"
    )
    p.add_argument("--encoder", required=True, help="model folder, Hub id, saved encoder or bm25")
    p.add_argument(
        "--out", required=True, help="the .parquet file to write (with --ray: a folder of parts)"
    )
    p.add_argument(
        "--queries",
        action="store_true",
        help="encode the queries instead (CORPUS: a dataset or a query file), with the "
        "encoder's query side; BM25 is fitted on the dataset's corpus first",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="encode on the Ray cluster at ADDRESS (host:port; default auto: the cluster this "
        "machine belongs to) with a pool of actors, one model each (a GPU each when the "
        "cluster has GPUs), into Parquet parts; run it again to resume after a crash",
    )
    p.add_argument(
        "--concurrency",
        type=POSITIVE_INT,
        default=2,
        help="with --ray: encoding actors (default 2)",
    )
    p.add_argument(
        "--chunk",
        type=POSITIVE_INT,
        default=8192,
        help="with --ray: documents per part, the unit of work and of resumption (rounded up "
        "to whole batches; default 8192)",
    )
    _add_bm25_options(p)
    _add_model_options(p)
    _add_threads(p, "encoding threads")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=commands.cmd_encode)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a SPLADE or inference-free encoder from a YAML config")
    p.add_argument("config", help="training config (YAML); see examples/")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=commands.cmd_train)


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search",
        help="search an index with query text, or a query file into a run file",
        description="Search with query text given as arguments (a table, or --json), or "
        "search every query of --queries and write a run file (--output): TREC "
        "('qid Q0 docid rank score tag') or JSON lines.",
    )
    p.add_argument("index", nargs="?", default=None, help="index directory (or --index)")
    p.add_argument("query", nargs="*", help="query text (several queries: several arguments)")
    p.add_argument(
        "--index", dest="index_option", default=None, help="the index directory, Pyserini style"
    )
    p.add_argument(
        "-k",
        "--hits",
        dest="k",
        type=POSITIVE_INT,
        default=None,
        help="hits per query (default 10 for query text, 1000 for --queries)",
    )
    p.add_argument(
        "--queries",
        "--topics",
        default=None,
        metavar="FILE|DATASET",
        help="search these queries instead: queries.jsonl, a qid<TAB>text file, a BEIR folder "
        "or an ir_datasets id (beir/scifact/test); needs --output",
    )
    p.add_argument(
        "--output", "-o", default=None, help="the run file to write for --queries ('-': stdout)"
    )
    p.add_argument(
        "--format",
        choices=["trec", "jsonl"],
        default=None,
        help="run file format (default: jsonl for a .jsonl/.json --output, else trec)",
    )
    p.add_argument("--run-tag", default="lsr", help="the run's tag in TREC lines (default lsr)")
    p.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=256,
        help="queries encoded and searched together with --queries (default 256)",
    )
    _add_threads(p, "search threads for a batch of queries")
    p.add_argument(
        "--filter",
        default=None,
        metavar="JSON",
        help='only documents whose stored fields match, e.g. \'{"field": "metadata.year", '
        '"gte": 2015}\' (eq, in, gte/gt/lte/lt, exists, and/or/not); @FILE reads it from a file',
    )
    p.add_argument(
        "--fields",
        default=None,
        metavar="A,B",
        help="stored fields to return with each hit in --json ('*': all; default: none there, "
        "title and a text snippet in the table)",
    )
    _add_hybrid_options(p)
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.set_defaults(func=commands.cmd_search)


def _add_hybrid_options(p) -> None:
    """How a search uses a collection's representations (lsr search, lsr tune-fusion)."""
    p.add_argument(
        "--mode",
        choices=["sparse", "dense", "hybrid"],
        default="sparse",
        help="sparse: the main representation (or --retriever); dense: the dense one; hybrid: "
        "several fused (default all of the collection's, or those tuned by lsr tune-fusion)",
    )
    p.add_argument(
        "--retriever",
        action="append",
        default=None,
        metavar="NAME",
        help="a representation to search (its name: bm25, splade-tiny, wordllama...); repeat "
        "for hybrid, in the order weights are given",
    )
    _add_fusion_options(p)


def _add_fusion_options(p, default: str = "the collection's tuned fusion (lsr tune-fusion)"):
    """How rankings are fused (lsr search --mode hybrid, lsr eval --hybrid, lsr tune-fusion)."""
    p.add_argument(
        "--fusion",
        choices=["convex", "rrf"],
        default=None,
        help="hybrid: convex combination of normalized scores or reciprocal rank fusion "
        f"(default: {default}, else convex)",
    )
    p.add_argument(
        "--alpha",
        type=UNIT_FLOAT,
        default=None,
        help="hybrid of two retrievers: weight of the first (the second gets 1 - alpha)",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="W1,W2,...",
        help="hybrid: one weight per retriever, in order (default equal)",
    )
    p.add_argument(
        "--normalization",
        choices=["minmax", "zscore", "none"],
        default=None,
        help="convex fusion: per-query score normalization (default minmax)",
    )
    p.add_argument("--rrf-k", type=POSITIVE_INT, default=None, help="RRF's k (default 60)")
    p.add_argument(
        "--depth",
        type=POSITIVE_INT,
        default=None,
        help="hybrid: hits each retriever contributes before fusing (default 100; lsr eval: "
        "its -k)",
    )


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate encoders on BEIR datasets and write a report")
    p.add_argument(
        "datasets", nargs="+", help="BEIR folders or ir_datasets ids (beir/scifact/test)"
    )
    p.add_argument(
        "--encoder",
        action="append",
        default=[],
        help="encoder to evaluate; repeat the option to compare several (dense:wordllama "
        "and dense:PATH evaluate a dense retriever)",
    )
    p.add_argument(
        "--hybrid",
        action="append",
        default=[],
        metavar="A+B[+C]",
        help="also evaluate a fusion of encoders' rankings, e.g. bm25+splade-tiny or "
        "bm25+dense:wordllama (each retriever gets its own row too); repeat for several",
    )
    p.add_argument(
        "--tune-on",
        default=None,
        metavar="SPLIT",
        help="choose each --hybrid's weights (or RRF's k) on this split's queries (e.g. train); "
        "never the split reported",
    )
    p.add_argument(
        "--tune-measure", default="nDCG@10", help="what --tune-on maximizes (default nDCG@10)"
    )
    _add_fusion_options(p, "equal weights")
    p.add_argument("--out", required=True, help="report directory (runs, report.json/md/html)")
    p.add_argument(
        "--index", default=None, help="evaluate this prebuilt index instead of building one"
    )
    p.add_argument(
        "--split", default="test", help="qrels split of local BEIR folders (default test)"
    )
    p.add_argument(
        "-k", type=POSITIVE_INT, default=1000, help="hits retrieved per query (default 1000)"
    )
    p.add_argument(
        "--measures",
        nargs="+",
        default=None,
        help="ir-measures names (default nDCG@10 R@100 R@1000 RR@10 AP@100)",
    )
    _add_cache_dir(p)
    p.add_argument(
        "--baseline",
        default=None,
        help="the encoder every other is tested against (its report name, e.g. bm25; "
        "default: bm25 when evaluated, else the first --encoder)",
    )
    p.add_argument(
        "--skip-self",
        choices=["auto", "on", "off"],
        default="auto",
        help="drop each query's hit on its own id, BEIR's rule for sets whose queries are "
        "documents (default auto: only on ArguAna, Quora and CQADupStack)",
    )
    _add_bm25_options(p)
    _add_model_options(p)
    _add_threads(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=commands.cmd_eval)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmark search algorithms and peer engines")
    p.add_argument(
        "target",
        help="an index directory, a dataset (BEIR folder / ir_datasets id), 'synthetic', "
        "'ingest' (documents written over REST to a real lsr serve while it is searched), "
        "'cluster' (the synthetic corpus in 1, 2, 4 shards on Ray against one in-process "
        "collection, and lsr encode --ray with 1 and 2 actors), or 'scale' (a --like corpus of "
        "--docs documents, default 8,800,000, built in bounded memory into a compressed index "
        "at --index and searched memory-mapped)",
    )
    p.add_argument(
        "--index",
        dest="scale_index",
        default=None,
        metavar="DIR",
        help="scale: where the compressed collection is built (reused when it is already there)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="scale: rebuild the collection at --index"
    )
    p.add_argument(
        "--shards",
        type=POSITIVE_INT,
        nargs="+",
        default=[1, 2, 4],
        help="cluster: the shard counts to time (default 1 2 4)",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="cluster: the Ray cluster to run on (default: a local one started for the run)",
    )
    p.add_argument(
        "--encode-docs",
        type=NON_NEGATIVE_INT,
        default=2000,
        help="cluster: documents of --like encoded with --encoder by 1 and 2 actors (0: skip)",
    )
    p.add_argument("--encoder", default="bm25", help="encoder for a dataset target (default bm25)")
    p.add_argument(
        "--queries",
        default=None,
        help="queries for an index target: a queries.jsonl / tsv file or a dataset; "
        "synthetic --like: the real queries' vectors (lsr encode --queries)",
    )
    p.add_argument("-k", type=POSITIVE_INT, default=10, help="hits per query")
    p.add_argument(
        "--repeat",
        type=POSITIVE_INT,
        default=1,
        help="timed single-query passes (the median counts; batches: at least 3 rounds)",
    )
    p.add_argument(
        "--max-queries", type=POSITIVE_INT, default=None, help="use only the first N queries"
    )
    p.add_argument(
        "--docs",
        type=POSITIVE_INT,
        default=None,
        help="synthetic: number of documents (default 1,000,000); ingest: documents written "
        "(default 100,000)",
    )
    p.add_argument(
        "--like",
        default=None,
        help="synthetic: real document vectors (a Parquet file from lsr encode) to fit the "
        "generator to, with their queries' from --queries (lsr encode --queries), or a "
        "fitted generator (.npz from --save-generator); ingest: the corpus the collection is "
        "built from and new documents are drawn from (default: the bundled sample)",
    )
    p.add_argument(
        "--reorder",
        choices=["bp"],
        default=None,
        help="synthetic, dataset: also reorder the index (bp: recursive graph bisection, "
        "timed) and time the algorithms on both; the clustered index and peers get the "
        "reordered one",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="synthetic --like: compare a fitted sample the size of the real vectors with "
        "them (and with independent terms) instead of benchmarking: statistics and the "
        "recall-vs-speed of Seismic and the clustered index",
    )
    p.add_argument(
        "--save-generator",
        default=None,
        metavar="NPZ",
        help="synthetic --like: also write the fitted generator here, for later --like runs",
    )
    p.add_argument(
        "--batch-sizes",
        type=POSITIVE_INT,
        nargs="+",
        default=[1, 10, 100],
        help="ingest: documents per POST /documents, one run each (default 1 10 100)",
    )
    p.add_argument(
        "--flush-threshold",
        "--merge-threshold",
        dest="flush_threshold",
        type=POSITIVE_INT,
        default=10_000,
        help="ingest: the server's --flush-threshold (default 10,000)",
    )
    p.add_argument(
        "--encode-workers",
        type=NON_NEGATIVE_INT,
        default=1,
        help="ingest: the server's --encode-workers (default 1)",
    )
    p.add_argument(
        "--doc-terms", type=POSITIVE_INT, default=120, help="synthetic: non-zeros per document"
    )
    p.add_argument(
        "--query-terms", type=POSITIVE_INT, default=40, help="synthetic: non-zeros per query"
    )
    p.add_argument(
        "--synthetic-queries", type=POSITIVE_INT, default=1000, help="synthetic: number of queries"
    )
    p.add_argument(
        "--inference-free",
        action="store_true",
        help="synthetic: short IDF-weighted queries (~6 terms unless --query-terms)",
    )
    p.add_argument(
        "--no-peers", action="store_true", help="skip the peers (splade-index, bm25s, Seismic, BMP)"
    )
    p.add_argument("--no-approximate", action="store_true", help="skip approximate settings")
    p.add_argument(
        "--no-clustered", action="store_true", help="skip the clustered (Seismic-style) index"
    )
    p.add_argument(
        "--cluster-postings",
        type=POSITIVE_INT,
        help="clustered index: postings kept per term, on average over the vocabulary "
        "(static pruning, default 3500)",
    )
    p.add_argument(
        "--cluster-pruning",
        choices=("global", "fixed"),
        help="clustered index: keep postings above one global impact floor, at most 1.5x "
        "--cluster-postings per list (global, the default), or each list's highest (fixed)",
    )
    p.add_argument(
        "--cluster-size",
        type=POSITIVE_INT,
        help="clustered index: postings per sampled centroid, about the documents per block "
        "(default 10)",
    )
    p.add_argument(
        "--summary-mass",
        type=float,
        help="clustered index: fraction of a block summary's mass kept (default 0.4)",
    )
    p.add_argument(
        "--reads",
        action="store_true",
        help="index target: time GET /documents and explain (the service's reads) instead",
    )
    p.add_argument(
        "--modes",
        action="store_true",
        help="index target with several representations: time sparse, dense and hybrid "
        "search, text to hits, one query at a time (rounds: --repeat, default 3)",
    )
    _add_bm25_options(p)
    _add_model_options(p, batch_size=False)
    _add_threads(p, "threads of the batched runs and of encoding")
    _add_cache_dir(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=commands.cmd_bench)


def _add_serve(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="serve an index over HTTP (FastAPI + uvicorn)",
        description="Serve a collection over HTTP. Every option can also come from the "
        "environment (LSR_<OPTION>: LSR_PORT, LSR_API_KEY, ...) or a --config file; a flag "
        "wins over the environment, which wins over the file.",
    )
    p.add_argument("index", nargs="?", default=None, help="index directory (built by lsr index)")
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML or JSON file of option values ({port: 8080, access_log: json, ...})",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="serve a cluster of collections (--cluster, from lsr index --shards) from Ray "
        "actors, one per shard, on the Ray cluster at ADDRESS (host:port, or auto)",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="DIR",
        help="with --ray: the cluster directory (on a filesystem every Ray node sees)",
    )
    p.add_argument(
        "--shard-timeout",
        type=POSITIVE_FLOAT,
        default=5.0,
        help="with --ray: seconds a shard may take to answer before it counts as down (a "
        "search then answers 503 naming it, or partial hits with allow_partial)",
    )
    p.add_argument("--encoder", default=None, help="query/document encoder (default: the index's)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=POSITIVE_INT, default=8000, help="port to listen on")
    p.add_argument(
        "--api-key",
        default=None,
        help="one API key with every scope (read, write, admin); writes need it",
    )
    p.add_argument(
        "--api-keys-file",
        default=None,
        metavar="FILE",
        help="API keys with names, scopes and rate limits (YAML or JSON; see "
        "lsr.service.auth); $LSR_API_KEYS may hold the same JSON. Several keys may be valid "
        "at once, to rotate them without downtime",
    )
    p.add_argument(
        "--protect-reads", action="store_true", help="require a key with the read scope for reads"
    )
    p.add_argument(
        "--anonymous-rate",
        type=POSITIVE_FLOAT,
        default=None,
        help="requests per second allowed to requests without a key, together (default: "
        "no limit); over it they get 429 with Retry-After",
    )
    _add_threads(p, "search threads of each server process")
    p.add_argument(
        "--max-k", type=POSITIVE_INT, default=1000, help="largest k a search may ask for"
    )
    p.add_argument(
        "--max-batch", type=POSITIVE_INT, default=256, help="most queries in one /search/batch"
    )
    p.add_argument(
        "--max-body-bytes",
        type=POSITIVE_INT,
        default=8 * 2**20,
        help="largest request body accepted (then 413)",
    )
    p.add_argument(
        "--max-explain",
        type=POSITIVE_INT,
        default=100,
        help="hits explained per query (the first ones)",
    )
    p.add_argument(
        "--timeout-ms",
        type=POSITIVE_INT,
        default=10_000,
        help="deadline of a search or encoding, in milliseconds (then 504); a request may ask "
        "for less with timeout_ms",
    )
    p.add_argument(
        "--header-timeout",
        type=POSITIVE_FLOAT,
        default=10.0,
        help="seconds a client has to send a request's headers (then 408)",
    )
    p.add_argument(
        "--body-timeout",
        type=POSITIVE_FLOAT,
        default=30.0,
        help="seconds a client may pause while sending a request's body (then 408)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=POSITIVE_FLOAT,
        default=30.0,
        help="on SIGTERM or Ctrl-C: seconds to let requests in flight finish before closing "
        "(a merge in progress stops at its next safe point; the log is closed)",
    )
    p.add_argument(
        "--access-log",
        nargs="?",
        const="text",
        default="off",
        choices=["off", "text", "json"],
        help="log each request on stderr (request id, client, method, path, status, "
        "latency, key name, k and hits): text, or json lines (default off)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a browser origin allowed to call the API (CORS; repeat for several; default "
        "none; * for any)",
    )
    p.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate")
    p.add_argument("--ssl-keyfile", default=None, help="the certificate's private key")
    p.add_argument(
        "--http",
        choices=["auto", "httptools", "h11"],
        default="auto",
        help="HTTP parser: httptools (C; uvicorn[standard]) when installed, else h11",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="serve the collection beside its writer, without the writer lock (writes get "
        "403), seeing the writer's commits and log as of its last refresh",
    )
    p.add_argument(
        "--refresh-seconds",
        type=NON_NEGATIVE_FLOAT,
        default=1.0,
        help="--read-only and the readers of --workers: how often to look for the writer's "
        "new commits and log records (default 1; 0: never, serve the collection as it was "
        "at start)",
    )
    p.add_argument(
        "--flush-threshold",
        "--merge-threshold",
        dest="flush_threshold",
        type=POSITIVE_INT,
        default=10_000,
        help="write buffered documents into a new segment once this many are buffered "
        "(segments are merged in the background by a tiered merge policy)",
    )
    p.add_argument(
        "--workers",
        type=POSITIVE_INT,
        default=1,
        help="server processes (default 1): with N > 1, one writer and N-1 readers share the "
        "port and memory-map the same collection; readers relay writes to the writer and "
        "see them at their next refresh (--refresh-seconds)",
    )
    p.add_argument(
        "--encode-workers",
        type=NON_NEGATIVE_INT,
        default=1,
        help="processes that encode the documents of writes at a lower CPU priority, so "
        "searches stay fast while documents are ingested (default 1; 0: in the server)",
    )
    p.add_argument(
        "--unknown-words",
        choices=["accept", "refuse"],
        default="accept",
        help="documents added over REST with words the collection's fitted BM25 vocabulary "
        "lacks: accept them (the response lists the words, which cannot find the document) "
        "or refuse the request with 422; a document with no known word is always refused",
    )
    p.set_defaults(func=commands.cmd_serve)
    return p


def _add_loadtest(sub) -> None:
    p = sub.add_parser(
        "loadtest",
        help="bounded loopback load test of running lsr servers (wrk, with the raw ASGI "
        "reference), or a soak test",
    )
    p.add_argument(
        "url", nargs="+", help="e.g. http://127.0.0.1:8000 (loopback only); several to compare"
    )
    p.add_argument("--queries", required=True, help="queries.jsonl / tsv file or a dataset")
    p.add_argument(
        "--concurrency",
        type=POSITIVE_INT,
        nargs="+",
        default=[8, 32],
        help="open connections, one run each",
    )
    p.add_argument(
        "--duration",
        type=POSITIVE_FLOAT,
        default=None,
        help="seconds per run (per concurrency level, target and round; default 10), or the "
        "soak's length (default 600)",
    )
    p.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="wrk (C, measures the server; Debian's wrk package) when installed, else the "
        "Python client",
    )
    p.add_argument(
        "--rounds", type=POSITIVE_INT, default=3, help="wrk: interleaved rounds (medians)"
    )
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="wrk: skip the raw ASGI reference (the HTTP limit of the stack)",
    )
    p.add_argument(
        "--reference-workers",
        type=POSITIVE_INT,
        default=1,
        help="wrk: processes of the raw ASGI reference (default 1; give the --workers of the "
        "servers measured, so the share of raw compares like with like)",
    )
    p.add_argument(
        "--max-requests", type=POSITIVE_INT, default=20_000, help="Python client: per run"
    )
    p.add_argument("-k", type=POSITIVE_INT, default=10, help="hits per search request")
    p.add_argument(
        "--soak",
        action="store_true",
        help="mixed searches and writes at --rate for --duration seconds (default 600): "
        "throughput, p50/p99 over time, errors, server memory at start and end",
    )
    p.add_argument("--rate", type=POSITIVE_FLOAT, default=100.0, help="soak: requests/s")
    p.add_argument(
        "--write-fraction",
        type=float,
        default=0.1,
        help="soak: share of writes (documents soak-N added, then the oldest deleted)",
    )
    p.add_argument(
        "--interval", type=POSITIVE_FLOAT, default=30.0, help="soak: seconds per report line"
    )
    p.add_argument("--api-key", default=None, help="soak: the key for writes ($LSR_API_KEY)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=commands.cmd_loadtest)


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check", help="verify a collection's files and write-ahead log; repair a damaged log"
    )
    p.add_argument("index", help="index directory")
    p.add_argument(
        "--repair",
        action="store_true",
        help="keep the log records before the damage, drop the rest (the damaged log is kept "
        "beside it); needs the writer lock",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=commands.cmd_check)


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a collection for another engine: CIFF (PISA, Anserini, BMP), OpenSearch, "
        "Elasticsearch or Qdrant bulk files",
        description="Export the live documents of a collection. ciff: one .ciff file whose "
        "postings are the collection's 8-bit impacts. opensearch, elasticsearch, qdrant: a "
        "folder with the index mapping or collection settings, bulk files of the documents' "
        "vectors and stored fields, a query example and a README.txt with the commands that "
        "load them.",
    )
    p.add_argument("index", help="collection directory")
    _export_target(p, EXPORT_FORMATS, "the .ciff file, or a new folder for the others")
    p.add_argument("--name", default="lsr", help="the index or collection name in the files")
    p.add_argument("--field", default="lsr", help="the name of the sparse vector field")
    p.add_argument(
        "--values",
        choices=["impacts", "weights"],
        default=None,
        help="what the vectors hold: the 8-bit impacts (default for opensearch and "
        "elasticsearch: exact under their 9-bit precision) or the weights (default for qdrant)",
    )
    p.add_argument(
        "--example-query",
        default=None,
        help="the query of query-example.json (default: the first words of the first document)",
    )
    p.set_defaults(func=commands.cmd_export)


def _export_target(p, formats, out_help: str) -> None:
    """The options every export takes: what to write, where, and JSON output."""
    p.add_argument(
        "--format", required=True, choices=list(formats), help=f"one of {', '.join(formats)}"
    )
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_export_model(sub) -> None:
    p = sub.add_parser(
        "export-model",
        help="write an encoder as a sentence-transformers SparseEncoder or in OpenSearch's "
        "neural sparse layout",
        description="Export a SPLADE or inference-free encoder (a model folder, a saved lsr "
        "encoder, or a collection's encoder/ folder). sentence-transformers: a SparseEncoder "
        "folder (a Router for inference-free models) that gives lsr's vectors. opensearch: the "
        "masked-LM model with idf.json and query_token_weights.txt for inference-free models.",
    )
    p.add_argument("model", help="the encoder to export")
    _export_target(p, MODEL_FORMATS, "a new folder")
    p.set_defaults(func=commands.cmd_export_model)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="index and search the bundled sample corpus")
    p.add_argument(
        "--out", default=None, help="where to keep the sample index (default: a temp dir)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=commands.cmd_demo)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the command, what was wrong, where to look), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """``-v`` and ``--debug``, for the top level and (``suppress``: without defaults, so
    they do not reset what was given before the subcommand) for every subcommand."""
    default = argparse.SUPPRESS if suppress else False
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log progress details"
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error (as -v does)",
    )
    return common


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default: "(default: X)" is added where the text does
    not say it already and the default is a value (not unset, not a flag's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _SubcommandParsers(argparse._SubParsersAction):
    """Subparsers that all take the common options and show their defaults."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("parents", [_common_options(suppress=True)])
        kwargs.setdefault("formatter_class", _HelpFormatter)
        return super().add_parser(name, **kwargs)


def _add_tune_fusion(sub) -> None:
    p = sub.add_parser(
        "tune-fusion",
        help="choose a collection's hybrid fusion on a development split",
        description="Search a development split's queries with each of the collection's "
        "representations, try every weighting (or RRF k) and record the best for --measure in "
        "the collection's fusion.json, which lsr search --mode hybrid and lsr serve use. The "
        "test split is refused: tune on train or dev.",
    )
    p.add_argument("index", help="a collection built with several representations")
    p.add_argument(
        "dataset", help="a BEIR folder or ir_datasets id whose --split judges the corpus"
    )
    p.add_argument("--split", default="train", help="the development split (default train)")
    p.add_argument(
        "--retriever",
        action="append",
        default=None,
        metavar="NAME",
        help="a representation to fuse (repeat; default: all of the collection's)",
    )
    p.add_argument("--measure", default="nDCG@10", help="what to maximize (default nDCG@10)")
    p.add_argument(
        "--fusion",
        choices=["convex", "rrf"],
        default="convex",
        help="what to tune (default convex)",
    )
    p.add_argument(
        "--normalization",
        choices=["minmax", "zscore", "none"],
        default="minmax",
        help="convex: per-query score normalization (default minmax)",
    )
    p.add_argument(
        "--depth", type=POSITIVE_INT, default=100, help="hits per retriever (default 100)"
    )
    p.add_argument(
        "--step", type=POSITIVE_FLOAT, default=0.1, help="weight grid step (default 0.1)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the best setting, write nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=commands.cmd_tune_fusion)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lsr", description="Learned sparse retrieval engine.", parents=[_common_options(False)]
    )
    parser.add_argument("--version", action="version", version=f"lsr {__version__}")
    parser.register("action", "parsers", _SubcommandParsers)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_index(sub)
    _add_encode(sub)
    _add_search(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_tune_fusion(sub)
    _add_bench(sub)
    parser.serve_parser = _add_serve(sub)
    _add_loadtest(sub)
    _add_check(sub)
    _add_export(sub)
    _add_export_model(sub)
    _add_demo(sub)
    return parser


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the enclosed command's kernels and model on at most ``n`` threads (None: as
    configured): Numba's pool, torch's when it is loaded, and the OpenMP and MKL pools of a
    torch loaded inside. Restored afterwards, for callers of :func:`main` in one process."""
    if n is None:
        yield
        return
    import numba

    saved_env = {var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    saved_numba = numba.get_num_threads()
    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    os.environ.update(dict.fromkeys(saved_env, str(n)))
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(saved_numba)
        if saved_torch is not None:
            torch.set_num_threads(saved_torch)
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (status 2), --help or --version (0)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":  # options from the environment and --config
            from lsr.service import serve_config

            serve_config.apply(
                parser.serve_parser, args, sys.argv[1:] if argv is None else argv, os.environ
            )
        with (
            _threads(getattr(args, "threads", None)),
            tempfile.TemporaryDirectory(prefix="lsr-") as scratch,
        ):
            args.scratch = Path(scratch)
            return args.func(args) or 0
    except BrokenPipeError:  # the reader of stdout went away (lsr search ... | head): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (LSRError, OSError) as e:
        if args.verbose or args.debug:
            traceback.print_exc()
        print(f"lsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
