"""The evaluation report a paper can use: BEIR-layout tables with the best in bold and
significance marks, per-query scores, provenance, figures, LaTeX, and an HTML page that a real
headless Chromium renders."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from lsr.eval.plots import pareto_frontier
from lsr.eval.report import Cell, latex_escape, measure_table
from lsr.eval.runner import run_evaluation
from lsr.service.cli import main
from tests.eval.test_eval import QRELS, beir_folder  # noqa: F401 (a fixture)


@pytest.fixture
def report(beir_folder, tmp_path, tiny_mlm):  # noqa: F811
    """bm25, a SPLADE model and its inference-free variant on two datasets."""
    second = tmp_path / "second"
    shutil.copytree(beir_folder, second)
    out = tmp_path / "report"
    encoders = ["bm25", str(tiny_mlm), f"inference-free:{tiny_mlm}"]
    results = run_evaluation(
        [str(beir_folder), str(second)], encoders, out, k=5, cache_dir=tmp_path / "cache"
    )
    return out, results


def test_tables_are_the_beir_layout(report):
    out, results = report
    md = (out / "report.md").read_text()
    table = md.split("## nDCG@10")[1].split("##")[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0] == "| encoder | tinybeir | second | average |"
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "bm25", "mlm", "inference-free:mlm",
    ]  # fmt: skip
    by = {(r.encoder, r.dataset): r.metrics["nDCG@10"] for r in results}
    best = max(by[(e, "tinybeir")] for e in ("bm25", "mlm", "inference-free:mlm"))
    assert f"**{best:.4f}**" in table
    bm25_row = next(line for line in lines if line.startswith("| bm25 |"))
    average = (by[("bm25", "tinybeir")] + by[("bm25", "second")]) / 2
    assert f"{average:.4f}" in bm25_row


def test_best_and_marks_by_hand():
    class R:
        def __init__(self, encoder, dataset, value):
            self.encoder, self.dataset, self.metrics = encoder, dataset, {"m": value}

    class C:
        measure, encoder, dataset = "m", "x", "d1"

        def significant(self, test):
            return test == "randomization"

    results = [R("b", "d1", 0.5), R("x", "d1", 0.7), R("b", "d2", 0.4), R("x", "d2", 0.3)]
    columns, rows, grid = measure_table(results, "m", [C()])
    assert columns == ["d1", "d2", "average"] and rows == ["b", "x"]
    assert [c.best for c in grid[0]] == [False, True, False]
    assert [c.best for c in grid[1]] == [True, False, True]
    assert (
        grid[1][0].markdown() == "**0.7000**‡" and grid[1][0].html() == "<b>0.7000</b><sup>‡</sup>"
    )
    assert grid[1][0].latex() == r"\textbf{0.7000}$^{\ddagger}$"
    assert Cell(None).markdown() == "–"


def test_per_query_scores_and_significance(report):
    out, results = report
    data = json.loads((out / "report.json").read_text())
    assert data["baseline"] == "bm25"
    assert {c["encoder"] for c in data["significance"]} == {"mlm", "inference-free:mlm"}
    assert {c["dataset"] for c in data["significance"]} == {"tinybeir", "second"}
    first = data["results"][0]
    assert set(first["per_query"]["nDCG@10"]) == set(QRELS)
    mean = sum(first["per_query"]["nDCG@10"].values()) / len(QRELS)
    assert first["metrics"]["nDCG@10"] == pytest.approx(mean)
    assert first["recall_curve"]["5"] == pytest.approx(
        np.mean([first["per_query"]["R@1000"][q] for q in QRELS]), abs=1.0
    )
    lines = (out / "per_query.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["encoder", "dataset", "query_id", "nDCG@10"]
    assert len(lines) == 1 + 3 * 2 * len(QRELS)


def test_provenance(report):
    out, _ = report
    data = json.loads((out / "report.json").read_text())
    prov = data["provenance"]
    assert prov["packages"]["numpy"] and prov["hardware"]["cores"] >= 1 and prov["date"]
    infos = {r["encoder"]: r["encoder_info"] for r in data["results"]}
    assert infos["bm25"]["settings"]["k1"] == 0.9
    assert infos["bm25"]["settings"]["tokenizer"]["analyzer"] == "lucene"
    assert len(infos["mlm"]["model_sha256"]) == 64
    assert infos["mlm"]["model_sha256"] == infos["inference-free:mlm"]["model_sha256"]
    dataset = data["results"][0]["dataset_info"]
    assert dataset["split"] == "test" and dataset["judged_queries"] == len(QRELS)
    md = (out / "report.md").read_text()
    assert "## Provenance" in md and "sha256" in md and "judged queries" in md


def test_a_model_and_its_inference_free_variant_share_one_document_encoding(report):
    _, results = report
    by = {(r.encoder, r.dataset): r for r in results}
    assert not by[("mlm", "tinybeir")].cached_encoding
    assert by[("inference-free:mlm", "tinybeir")].cached_encoding  # documents not re-encoded
    assert by[("inference-free:mlm", "tinybeir")].efficiency["avg_nnz_doc"] == pytest.approx(
        by[("mlm", "tinybeir")].efficiency["avg_nnz_doc"]
    )
    assert (
        by[("inference-free:mlm", "tinybeir")].efficiency["avg_nnz_query"]
        != by[("mlm", "tinybeir")].efficiency["avg_nnz_query"]
    )


def test_figures_and_latex(report):
    out, _ = report
    for name in ("quality_vs_cost", "per_query_differences", "recall_curves"):
        svg = (out / "figures" / f"{name}.svg").read_text()
        assert "<svg" in svg and "mlm" in svg  # the legend names the encoders
        assert (out / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    tex = (out / "report.tex").read_text()
    assert tex.count("{") == tex.count("}")
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    assert r"\includegraphics[width=\textwidth]{figures/recall_curves.pdf}" in tex
    assert "inference-free:mlm" in tex and r"\toprule" in tex
    if shutil.which("pdflatex"):  # compile it where LaTeX is installed
        done = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
            cwd=out, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:]


def test_latex_escape():
    assert latex_escape("a_b & 50% #1 $x {y} ~") == r"a\_b \& 50\% \#1 \$x \{y\} \textasciitilde{}"


def test_pareto_frontier():
    points = [(10, 0.5), (20, 0.4), (30, 0.7), (5, 0.3), (30, 0.6)]
    assert pareto_frontier(points) == [(5, 0.3), (10, 0.5), (30, 0.7)]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_the_html_report_renders_in_headless_chromium(report, tmp_path):
    out, _ = report
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,2400", f"--screenshot={shot}", (out / "report.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert image.shape[:2] == (2400, 1200)
    rows_with_ink = (image < 200).any(axis=1).mean()
    assert rows_with_ink > 0.3  # tables and figures, not a blank or broken page


def test_stage_messages_and_baseline_option(beir_folder, tmp_path, capsys):  # noqa: F811
    capsys.readouterr()
    argv = ["eval", str(beir_folder), "--encoder", "bm25", "--out", str(tmp_path / "r")]
    assert main([*argv, "--baseline", "bm25", "-k", "5"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"lsr eval: \[1/1\] bm25 on tinybeir", err) and "lsr eval: report:" in err
    assert "encoding the documents of tinybeir with bm25" in err
    assert re.search(r"searched 4 queries: nDCG@10 0\.\d{4}", err)
    assert main([*argv, "--baseline", "splade"]) == 2
    assert "--baseline 'splade' is not among the encoders" in capsys.readouterr().err
