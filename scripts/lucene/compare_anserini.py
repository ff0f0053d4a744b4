"""BM25 of lsr against Anserini itself, on the same BEIR folders, queries and qrels.

For each dataset: Anserini (the fatjar the pyserini sdist bundles, Java 21+) indexes the
corpus as its BEIR "flat" regressions do (title and text in one field, default analyzer) and
searches the test queries with BM25 (k1 0.9, b 0.4, 1,000 hits); lsr indexes the same corpus
with its default BM25 encoder (float32 postings, so only the scoring differs) once with exact
document lengths and once with ``doc_length="lucene"``, and searches the same queries. Both
runs are scored with ir-measures, and compared hit by hit::

    python scripts/lucene/compare_anserini.py ../shared/data/scifact ../shared/data/cranfield \\
        --jar /tmp/pyserini/pyserini-1.6.0/pyserini/resources/jars/anserini-1.7.1-fatjar.jar \\
        --java /usr/lib/jvm/temurin-25-jdk-amd64/bin/java --work /tmp/anserini

Neither run drops a hit whose id equals the query id (Anserini's ``-removeQuery`` is off).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path

from lsr import BM25Encoder, read_qrels, read_queries
from lsr.eval.metrics import evaluate
from lsr.pipeline import Searcher, index_corpus, retrieve

MEASURES = ("nDCG@10", "R@100")


def anserini_run(folder: Path, topics: dict, jar: Path, java: str, work: Path) -> dict:
    """Anserini's BM25 run ``{qid: {docid: score}}`` for ``topics`` over ``folder``."""
    work.mkdir(parents=True, exist_ok=True)
    corpus_dir = work / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    link = corpus_dir / "corpus.jsonl"
    if not link.exists():
        link.symlink_to((folder / "corpus.jsonl").resolve())
    index = work / "anserini-index"
    main = ["-cp", str(jar)]
    if not index.exists():
        subprocess.run(
            [java, *main, "io.anserini.index.IndexCollection", "-collection",
             "BeirFlatCollection", "-input", str(corpus_dir), "-index", str(index),
             "-generator", "DefaultLuceneDocumentGenerator", "-threads", "2"],
            check=True, capture_output=True,
        )  # fmt: skip
    topic_file, run_file = work / "topics.tsv", work / "anserini.run"
    topic_file.write_text(
        "".join(f"{q}\t{' '.join(text.split())}\n" for q, text in topics.items()), "utf-8"
    )
    subprocess.run(
        [java, *main, "io.anserini.search.SearchCollection", "-index", str(index), "-topics",
         str(topic_file), "-topicReader", "TsvString", "-output", str(run_file), "-bm25",
         "-bm25.k1", "0.9", "-bm25.b", "0.4", "-hits", "1000", "-threads", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    run: dict[str, dict[str, float]] = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = _untied(float(score))
    return run


def _untied(score: float) -> float:
    """The score Anserini computed, to 4 decimals. Its run files round scores to 4 decimals
    (held in a float, so printed within 1e-6 of that) and then take 1e-6 off each further
    document of a group of equal scores, so that trec_eval keeps Anserini's order; rounding
    up to 4 decimals undoes both for groups of fewer than 98."""
    return math.ceil((score - 2e-6) * 1e4) / 1e4


def lsr_run(folder: Path, topics: dict, doc_length: str, work: Path) -> dict:
    out = work / f"lsr-{doc_length}"
    encoder = BM25Encoder(doc_length=doc_length)
    index_corpus(folder, encoder, out, "float32", overwrite=True, progress=False, store="none")
    with Searcher.open(out) as searcher:
        return retrieve(searcher, topics, k=1000, skip_self=False)


def agreement(ours: dict, theirs: dict, depth: int = 10) -> dict:
    """How far two runs agree: queries with the same top ``depth`` ids in the same order, and
    over every document both runs retrieve for a query, the share whose scores agree at the
    precision Anserini prints (4 decimals, give or take a float's last bit) and the largest
    difference."""
    same, pairs, equal, diff = 0, 0, 0, 0.0
    for q, hits in theirs.items():
        mine = ours.get(q, {})
        top_theirs = sorted(hits, key=lambda d: (-hits[d], d))[:depth]
        same += sorted(mine, key=lambda d: (-mine[d], d))[:depth] == top_theirs
        for d in hits.keys() & mine.keys():
            gap = abs(mine[d] - hits[d])
            pairs, equal, diff = pairs + 1, equal + (gap <= 0.5e-4 + 1e-6), max(diff, gap)
    return {
        f"same_top{depth}": same / max(len(theirs), 1),
        "equal_scores": equal / max(pairs, 1),
        "max_score_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="BEIR folders")
    parser.add_argument("--jar", required=True, type=Path, help="the Anserini fatjar")
    parser.add_argument("--java", default="java", help="a Java 21+ executable")
    parser.add_argument("--split", default="test")
    parser.add_argument("--work", type=Path, default=Path("anserini-work"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for folder in args.datasets:
        qrels = read_qrels(folder / "qrels" / f"{args.split}.tsv")
        queries = read_queries(folder / "queries.jsonl")
        topics = {q: queries[q] for q in qrels if q in queries}
        work = args.work / folder.name
        theirs = anserini_run(folder, topics, args.jar, args.java, work)
        row = {"dataset": folder.name, "queries": len(topics)}
        row["anserini"] = evaluate(theirs, qrels, MEASURES)
        for doc_length in ("exact", "lucene"):
            ours = lsr_run(folder, topics, doc_length, work)
            row[f"lsr {doc_length}"] = {
                **evaluate(ours, qrels, MEASURES),
                **agreement(ours, theirs),
            }
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        "| dataset | run | nDCG@10 | R@100 | same top 10 | scores equal at 4 decimals "
        "| max score diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for name in ("anserini", "lsr exact", "lsr lucene"):
            r = row[name]
            cells = [f"{r['nDCG@10']:.4f}", f"{r['R@100']:.4f}"]
            if "same_top10" in r:
                cells += [f"{r['same_top10']:.1%}", f"{r['equal_scores']:.2%}"]
                cells += [f"{r['max_score_diff']:.2g}"]
            else:
                cells += ["", "", ""]
            print(f"| {row['dataset']} ({row['queries']} q) | {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
