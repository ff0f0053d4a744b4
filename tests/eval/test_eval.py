"""``lsr eval`` on a tiny BEIR folder written here and on Cranfield through ir_datasets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ir_measures
import pytest

from lsr import CorpusError
from lsr.errors import InputError
from lsr.eval import evaluate, load_dataset
from lsr.eval.runner import run_evaluation
from lsr.service.cli import main
from tests.conftest import shared_path

DOCS = {
    "d1": ("Bees", "honey bees make honey from flower nectar"),
    "d2": ("Volcanoes", "lava flows from a volcano during an eruption"),
    "d3": ("Chess", "the king and queen move on the chess board"),
    "d4": ("Whales", "whales are large mammals that live in the ocean"),
    "d5": ("Coffee", "coffee is a drink brewed from roasted beans"),
    "d6": ("Tea", "tea is a drink made by steeping leaves in hot water"),
    "q3": ("Self", "what does the queen do in chess"),  # same id as query q3 and same words
}
QUERIES = {
    "q1": "how do bees make honey",
    "q2": "volcano eruption lava",
    "q3": "what does the queen do in chess",
    "q4": "hot drink from leaves",
}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 2}, "q3": {"d3": 1}, "q4": {"d6": 1, "d5": 0}}


@pytest.fixture
def beir_folder(tmp_path):
    folder = tmp_path / "tinybeir"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text in {**QUERIES, "q9": "an unjudged query"}.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in QRELS.items():
            for doc, rel in rels.items():
                f.write(f"{qid}\t{doc}\t{rel}\n")
    return folder


def test_local_beir_folder(beir_folder):
    ds = load_dataset(beir_folder)
    assert set(ds.queries) == set(QRELS) and ds.qrels == QRELS
    assert [d.id for d in ds.documents()] == list(DOCS)
    with pytest.raises(CorpusError, match="no qrels for split 'dev'; available: test"):
        load_dataset(beir_folder, split="dev")


def test_report_end_to_end(beir_folder, tmp_path, tiny_mlm):
    out = tmp_path / "report"
    results = run_evaluation(
        [str(beir_folder)], ["bm25", str(tiny_mlm)], out, k=5, cache_dir=tmp_path / "cache"
    )
    assert [r.encoder for r in results] == ["bm25", "mlm"]
    bm25 = results[0]
    run = {}
    for line in Path(bm25.run_file).read_text().splitlines():
        qid, _, doc, rank, score, tag = line.split()
        run.setdefault(qid, {})[doc] = float(score)
        assert tag == "bm25"
    assert "q3" in run["q3"]  # kept: BEIR's identical-id rule is for ArguAna, Quora, CQADupStack
    assert not bm25.skip_self
    assert run["q1"] and max(run["q1"], key=run["q1"].get) == "d1"
    # the report's numbers are ir-measures' numbers on the written run file
    qrels = [ir_measures.Qrel(q, d, r) for q, rels in QRELS.items() for d, r in rels.items()]
    trec = list(ir_measures.read_trec_run(bm25.run_file))
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, trec)[ir_measures.nDCG @ 10]
    assert bm25.metrics["nDCG@10"] == pytest.approx(ndcg)
    assert bm25.metrics == evaluate(run, QRELS)
    eff = bm25.efficiency
    for key in (
        "index_bytes",
        "latency_ms_p50",
        "latency_ms_p99",
        "qps_single",
        "qps_batch",
        "avg_nnz_query",
        "avg_nnz_doc",
        "flops",
        "postings_per_query",
        "encode_docs_per_second",
    ):
        assert eff[key] is not None and eff[key] >= 0, key
    report = json.loads((out / "report.json").read_text())
    assert len(report["results"]) == 2
    md = (out / "report.md").read_text()
    assert "| encoder | tinybeir |" in md and "## nDCG@10" in md and "| mlm |" in md
    page = (out / "report.html").read_text()
    assert "<svg" in page and "<table>" in page and "quality_vs_cost" in page

    assert "were kept on tinybeir" in md and "were kept on tinybeir" in page
    again = run_evaluation(
        [str(beir_folder)], ["bm25"], tmp_path / "r2", k=5, cache_dir=tmp_path / "cache"
    )
    assert again[0].cached_encoding and again[0].metrics == bm25.metrics


def _run_of(result) -> dict:
    run = {}
    for line in Path(result.run_file).read_text().splitlines():
        qid, _, doc, *_ = line.split()
        run.setdefault(qid, []).append(doc)
    return run


def test_identical_ids_are_dropped_only_where_beir_says(beir_folder, tmp_path):
    arguana = beir_folder.rename(beir_folder.with_name("arguana-mini"))
    [auto] = run_evaluation([str(arguana)], ["bm25"], tmp_path / "a", k=5)
    assert auto.skip_self and "q3" not in _run_of(auto)["q3"]
    assert "dropped on arguana-mini" in (tmp_path / "a" / "report.md").read_text()
    [off] = run_evaluation([str(arguana)], ["bm25"], tmp_path / "b", k=5, skip_self="off")
    assert not off.skip_self and _run_of(off)["q3"][0] == "q3"
    without_self = [d for d in _run_of(off)["q3"] if d != "q3"]
    assert _run_of(auto)["q3"][: len(without_self)] == without_self
    with pytest.raises(InputError, match="auto, on or off"):
        run_evaluation([str(arguana)], ["bm25"], tmp_path / "c", skip_self="yes")


def test_cranfield_keeps_its_relevant_self_hit(tmp_path):
    """Cranfield's query and document ids are unrelated numbers: query 1's hit on document 1
    is kept, and with --skip-self on it is gone."""
    folder = shared_path("data", "cranfield")
    [kept] = run_evaluation([str(folder)], ["bm25"], tmp_path / "a", k=100)
    [dropped] = run_evaluation([str(folder)], ["bm25"], tmp_path / "b", k=100, skip_self="on")
    kept_run, dropped_run = _run_of(kept), _run_of(dropped)
    self_hits = [q for q, docs in kept_run.items() if q in docs]
    assert self_hits and not kept.skip_self
    assert not any(q in docs for q, docs in dropped_run.items())


def test_prebuilt_index(beir_folder, tmp_path):
    assert main(["index", str(beir_folder), "--out", str(tmp_path / "idx")]) == 0
    results = run_evaluation(
        [str(beir_folder)], ["bm25"], tmp_path / "r", index_dir=tmp_path / "idx"
    )
    assert results[0].metrics["RR@10"] > 0.5
    with pytest.raises(ValueError, match="exactly one dataset and encoder"):
        run_evaluation([str(beir_folder)] * 2, ["bm25"], tmp_path / "r", index_dir=tmp_path / "idx")


def test_cli_eval(beir_folder, tmp_path, capsys):
    argv = [
        "eval",
        str(beir_folder),
        "--encoder",
        "bm25",
        "--out",
        str(tmp_path / "rep"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--measures",
        "nDCG@10",
        "P@1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| bm25 |" in printed and "P@1 tinybeir" in printed
    assert main(argv + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["metrics"].keys() == {"nDCG@10", "P@1"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "no/such-dataset", "--encoder", "bm25"], "Unknown dataset 'no/such-dataset'"),
        (["eval", "./missing-folder", "--encoder", "bm25"], "not found"),
        (["eval", "{beir}", "--encoder", "nonsense.bin"], "Unknown encoder"),
        (["eval", "{beir}", "--encoder", "bm25", "--split", "dev"], "no qrels for split 'dev'"),
        (["eval", "{beir}", "--encoder", "bm25", "-k", "0"], "-k: must be a positive integer"),
        (["eval", "{beir}", "--encoder", "bm25", "--measures", "nDCG@@3"], "Unknown measure"),
    ],
)
def test_cli_eval_errors(beir_folder, tmp_path, capsys, argv, message):
    argv = [a.format(beir=beir_folder) for a in argv] + [
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.fixture
def irds_home(tmp_path):
    """An IR_DATASETS_HOME linking to ../shared's archives; ir_datasets extracts into tmp."""
    shared = shared_path("data", "irds-home")
    home = tmp_path / "irds"
    for rel in ("cranfield/cran.tar.gz", "beir/scifact/source.zip"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).symlink_to(shared / rel)
    return home


def _eval_cranfield(irds_home, tmp_path, *options):
    """``lsr eval cranfield --encoder bm25`` in a new process (ir_datasets reads
    IR_DATASETS_HOME when it is imported), exactly as a user would run it."""
    env = {**os.environ, "IR_DATASETS_HOME": str(irds_home)}
    argv = [sys.executable, "-m", "lsr.service.cli", "eval", "cranfield", "--encoder", "bm25"]
    argv += ["--out", str(tmp_path / "r"), *options]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def test_cranfield_via_ir_datasets(irds_home, tmp_path):
    # ir_datasets reads IR_DATASETS_HOME when it is imported, so run the CLI in a new process,
    # exactly as a user would: IR_DATASETS_HOME=... lsr eval cranfield --encoder bm25 ...
    proc = _eval_cranfield(irds_home, tmp_path, "--cache-dir", str(tmp_path / "c"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [result] = json.loads(proc.stdout)
    assert result["n_queries"] == 225 and result["n_docs"] == 1400
    assert 0.28 <= result["metrics"]["nDCG@10"] <= 0.36  # BM25 on Cranfield is ~0.30-0.32


def test_unreachable_ir_dataset_is_one_clear_line(tmp_path):
    proc = _eval_cranfield(tmp_path / "empty-home", tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lsr eval: error: Cannot load 'cranfield'") and len(last) < 400
