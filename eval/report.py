"""Evaluation reports a researcher can put in a paper.

``lsr eval`` writes, beside its run files:

- ``report.md``, ``report.html`` and ``report.tex`` (LaTeX, booktabs): for each measure a
  table with encoders as rows and datasets as columns plus their average, the BEIR way, the
  best of each column in bold and marks where an encoder differs significantly from the
  baseline (``†`` paired t-test, ``‡`` randomization test, p < 0.05 after Holm-Bonferroni over
  the measure's comparisons); the significance tests in full; the efficiency figures; the
  provenance (data, settings, model hashes, software, hardware, date); the figures of
  :mod:`lsr.eval.plots` (embedded SVG in the HTML, PDF files for LaTeX);
- ``report.json``: all of it, with every query's scores;
- ``per_query.tsv``: one line per encoder, dataset and query, a column per measure.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from lsr.eval.plots import all_figures
from lsr.eval.provenance import run_provenance
from lsr.eval.significance import Comparison, compare_to_baseline

EFFICIENCY_COLUMNS = [
    ("index_bytes", "index MiB", lambda v: f"{v / 2**20:.1f}"),
    ("build_seconds", "build s", lambda v: f"{v:.2f}"),
    ("encode_docs_per_second", "enc docs/s", lambda v: f"{v:,.1f}"),
    ("query_encode_ms", "q enc ms", lambda v: f"{v:.2f}"),
    ("latency_ms_p50", "p50 ms", lambda v: f"{v:.3f}"),
    ("latency_ms_p99", "p99 ms", lambda v: f"{v:.3f}"),
    ("qps_single", "QPS 1", lambda v: f"{v:,.0f}"),
    ("qps_batch", "QPS batch", lambda v: f"{v:,.0f}"),
    ("avg_nnz_query", "nnz q", lambda v: f"{v:.1f}"),
    ("avg_nnz_doc", "nnz d", lambda v: f"{v:.1f}"),
    ("flops", "FLOPS", lambda v: f"{v:.3f}"),
    ("postings_per_query", "postings/q", lambda v: f"{v:,.0f}"),
]
MARKS = (("t", "†"), ("randomization", "‡"))
LEGEND = (
    "Bold: the best of each column. † / ‡: significantly different from the baseline "
    "{baseline} by the paired t-test / the paired randomization test (p < 0.05 after "
    "Holm-Bonferroni correction over every comparison of the measure)."
)


def _fmt(value, fmt) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt(value)


class Cell:
    """One figure of a results table: value, whether it is the column's best, and marks."""

    def __init__(self, value: float | None, best: bool = False, marks: str = "") -> None:
        self.value, self.best, self.marks = value, best, marks

    def text(self) -> str:
        return "–" if self.value is None else f"{self.value:.4f}"

    def markdown(self) -> str:
        core = f"**{self.text()}**" if self.best and self.value is not None else self.text()
        return core + self.marks

    def html(self) -> str:
        core = f"<b>{self.text()}</b>" if self.best and self.value is not None else self.text()
        return core + (f"<sup>{self.marks}</sup>" if self.marks else "")

    def latex(self) -> str:
        core = rf"\textbf{{{self.text()}}}" if self.best and self.value is not None else self.text()
        marks = self.marks.replace("†", r"\dagger").replace("‡", r"\ddagger")
        return core + (f"$^{{{marks}}}$" if marks else "")


def measure_table(
    results, measure: str, comparisons: Sequence[Comparison] = ()
) -> tuple[list[str], list[str], list[list[Cell]]]:
    """``(columns, row labels, cells)`` of one measure: encoders as rows, datasets as
    columns plus their average (when there are several), best per column flagged, the
    significance marks of ``comparisons`` attached."""
    encoders = list(dict.fromkeys(r.encoder for r in results))
    datasets = list(dict.fromkeys(r.dataset for r in results))
    value = {(r.encoder, r.dataset): r.metrics.get(measure) for r in results}
    marks = {}
    for c in comparisons:
        if c.measure == measure:
            marks[(c.encoder, c.dataset)] = "".join(s for t, s in MARKS if c.significant(t))
    columns = datasets + (["average"] if len(datasets) > 1 else [])
    grid: list[list[Cell]] = []
    for e in encoders:
        row = [Cell(value.get((e, d)), marks=marks.get((e, d), "")) for d in datasets]
        if len(datasets) > 1:
            known = [value[(e, d)] for d in datasets if value.get((e, d)) is not None]
            row.append(Cell(sum(known) / len(known) if len(known) == len(datasets) else None))
        grid.append(row)
    for j in range(len(columns)):
        present = [row[j].value for row in grid if row[j].value is not None]
        for row in grid:
            row[j].best = bool(present) and row[j].value == max(present) and len(grid) > 1
    return columns, encoders, grid


def effectiveness_table(results, measures: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """All measures as one plain table (encoders as rows, measure x dataset columns), for
    the terminal."""
    header, rows = ["encoder"], [[e] for e in dict.fromkeys(r.encoder for r in results)]
    for m in measures:
        columns, _, grid = measure_table(results, m)
        header += [f"{m} {c}" for c in columns]
        for row, cells in zip(rows, grid, strict=True):
            row += [c.text() for c in cells]
    return header, rows


def efficiency_table(results) -> tuple[list[str], list[list[str]]]:
    header = ["encoder", "dataset"] + [label for _, label, _ in EFFICIENCY_COLUMNS]
    rows = [
        [r.encoder, r.dataset] + [_fmt(r.efficiency.get(k), f) for k, _, f in EFFICIENCY_COLUMNS]
        for r in results
    ]
    return header, rows


def significance_table(comparisons: Sequence[Comparison]) -> tuple[list[str], list[list[str]]]:
    header = ["measure", "dataset", "encoder", "mean", "baseline", "difference",
              "t-test p", "Holm", "randomization p", "Holm"]  # fmt: skip
    rows = [
        [
            c.measure,
            c.dataset,
            c.encoder,
            f"{c.mean:.4f}",
            f"{c.baseline_mean:.4f}",
            f"{c.difference:+.4f}",
            f"{c.t_p:.2g}",
            f"{c.t_p_holm:.2g}",
            f"{c.randomization_p:.2g}",
            f"{c.randomization_p_holm:.2g}",
        ]  # fmt: skip
        for c in comparisons
    ]
    return header, rows


def provenance_rows(results, measures: Sequence[str], provenance: dict) -> list[list[str]]:
    """``[what, value]`` lines: the run, each dataset, each encoder."""
    packages = ", ".join(f"{k} {v}" for k, v in provenance["packages"].items())
    hw = provenance["hardware"]
    rows = [
        ["date", provenance["date"]],
        ["command", provenance["command"]],
        ["measures", ", ".join(measures)],
        ["software", packages],
        ["hardware", f"{hw['cpu']}, {hw['cores']} cores, {hw['memory_gib']} GiB, {hw['os']}"],
    ]
    seen = set()
    for r in results:
        d = r.dataset_info
        if d and r.dataset not in seen:
            seen.add(r.dataset)
            self_hits = "dropped" if r.skip_self else "kept"
            rows.append([f"dataset {r.dataset}", f"{d['source']}, split {d['split']}, "
                         f"{d['judged_queries']} judged queries, {r.n_docs:,} documents, "
                         f"k={d['k']}, identical-id hits {self_hits}"])  # fmt: skip
    for r in results:
        e = r.encoder_info
        if e and r.encoder not in seen:
            seen.add(r.encoder)
            settings = ", ".join(f"{k}={v}" for k, v in e.get("settings", {}).items())
            model = ""
            if "model_path" in e:
                model = f"; model {e['model_path']}"
                model += f" (sha256 {e['model_sha256'][:16]}…)" if "model_sha256" in e else ""
            rows.append([f"encoder {r.encoder}", f"{e['type']} ({settings}){model}"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]], escape: bool = True) -> str:
    cell = html.escape if escape else str
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX's text mode."""
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
             "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
             "^": r"\textasciicircum{}", "…": r"\ldots{}", "–": "--"}  # fmt: skip
    return "".join(table.get(ch, ch) for ch in text)


def latex_table(header: list[str], rows: list[list[str]], caption: str, escape: bool = True) -> str:
    fix = latex_escape if escape else str
    spec = "l" + "r" * (len(header) - 1)
    lines = [
        r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule",
    ]  # fmt: skip
    lines += [" & ".join(fix(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def self_hit_note(results) -> str:
    """Which datasets' runs left out each query's hit on its own id (BEIR's rule)."""
    dropped = sorted({r.dataset for r in results if r.skip_self})
    kept = sorted({r.dataset for r in results if not r.skip_self})
    parts = []
    if dropped:
        parts.append(f"A hit whose id equals the query id was dropped on {', '.join(dropped)}")
    if kept:
        parts.append(
            f"kept on {', '.join(kept)}"
            if dropped
            else f"Hits whose id equals the query id were kept on {', '.join(kept)}"
        )
    return "; ".join(parts) + " (lsr eval --skip-self auto|on|off)."


def write_per_query(results, measures: Sequence[str], path: Path) -> None:
    """``encoder<TAB>dataset<TAB>query_id<TAB>`` then one column per measure."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(["encoder", "dataset", "query_id", *measures]) + "\n")
        for r in results:
            for qid in r.per_query[measures[0]]:
                values = [f"{r.per_query[m][qid]:.6f}" for m in measures]
                f.write("\t".join([r.encoder, r.dataset, qid, *values]) + "\n")


def write_report(
    results, out: str | Path, measures: Sequence[str], baseline: str | None = None
) -> dict[str, Path]:
    """Write every report file into ``out`` and return their paths."""
    out = Path(out)
    baseline = baseline or results[0].encoder
    measures = list(measures)
    provenance = run_provenance()
    comparisons = compare_to_baseline(
        {(r.encoder, r.dataset): r.per_query for r in results}, baseline, measures
    )
    figures = all_figures(results, baseline, measures[0], out / "figures")
    paths = {
        "json": out / "report.json",
        "md": out / "report.md",
        "html": out / "report.html",
        "tex": out / "report.tex",
        "per_query": out / "per_query.tsv",
    }
    payload = {
        "created": provenance["date"],
        "provenance": provenance,
        "measures": measures,
        "baseline": baseline,
        "results": [r.to_dict() for r in results],
        "significance": [c.to_dict() for c in comparisons],
        "figures": {name: f"figures/{name}.svg" for name in figures},
    }
    paths["json"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    write_per_query(results, measures, paths["per_query"])
    context = (results, measures, baseline, comparisons, provenance, figures)
    paths["md"].write_text(_markdown(*context), encoding="utf-8")
    paths["html"].write_text(_html(*context), encoding="utf-8")
    paths["tex"].write_text(_latex(*context), encoding="utf-8")
    return paths


def _measure_rows(results, measure, comparisons, fmt: str) -> tuple[list[str], list[list[str]]]:
    """One measure's table as header and rows of cells rendered for ``fmt`` (md, html,
    latex)."""
    columns, labels, grid = measure_table(results, measure, comparisons)
    label = {"md": str, "html": html.escape, "latex": latex_escape}[fmt]
    cell = {"md": Cell.markdown, "html": Cell.html, "latex": Cell.latex}[fmt]
    rows = [
        [label(name)] + [cell(c) for c in cells] for name, cells in zip(labels, grid, strict=True)
    ]
    return ["encoder", *columns], rows


def _markdown(results, measures, baseline, comparisons, provenance, figures) -> str:
    parts = [f"# Evaluation report ({provenance['date']})", ""]
    for m in measures:
        parts += [f"## {m}", "", markdown_table(*_measure_rows(results, m, comparisons, "md")), ""]
    parts += [LEGEND.format(baseline=baseline), "", self_hit_note(results), ""]
    if comparisons:
        parts += ["## Significance against " + baseline, ""]
        parts += [markdown_table(*significance_table(comparisons)), ""]
    parts += ["## Efficiency", "", markdown_table(*efficiency_table(results)), ""]
    parts += [
        "Latency and QPS are for search alone (k=10, after a Numba warm-up); FLOPS is "
        "sum_j p_q(j) p_d(j); postings/q is the number of postings exhaustive scoring reads.",
        "",
        "## Figures",
        "",
    ]
    parts += [f"![{name}](figures/{name}.svg)" for name in figures] + [""]
    rows = provenance_rows(results, measures, provenance)
    parts += ["## Provenance", "", markdown_table(["what", "value"], rows), ""]
    return "\n".join(parts)


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "figure{margin:1.5em 0}figure svg{max-width:100%;height:auto}"
    ".note{color:#444;font-size:0.9em}.prov td{text-align:left}"
)


def _html(results, measures, baseline, comparisons, provenance, figures) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>lsr evaluation report</title><style>{STYLE}</style></head><body>",
        f"<h1>Evaluation report</h1><p>{html.escape(provenance['date'])}</p>",
    ]
    for m in measures:
        table = html_table(*_measure_rows(results, m, comparisons, "html"), escape=False)
        parts.append(f"<h2>{html.escape(m)}</h2>{table}")
    parts.append(f"<p class='note'>{html.escape(LEGEND.format(baseline=baseline))}</p>")
    parts.append(f"<p class='note'>{html.escape(self_hit_note(results))}</p>")
    for name, svg in figures.items():
        parts.append(f"<figure id='{name}'>{svg}</figure>")
    if comparisons:
        parts.append(f"<h2>Significance against {html.escape(baseline)}</h2>")
        parts.append(html_table(*significance_table(comparisons)))
    parts.append(f"<h2>Efficiency</h2>{html_table(*efficiency_table(results))}")
    rows = provenance_rows(results, measures, provenance)
    parts.append(
        f"<h2>Provenance</h2><div class='prov'>{html_table(['what', 'value'], rows)}</div>"
    )
    parts.append("</body></html>")
    return "".join(parts)


def _latex(results, measures, baseline, comparisons, provenance, figures) -> str:
    parts = [
        r"\documentclass{article}",
        r"\usepackage[margin=2cm]{geometry}",
        r"\usepackage{booktabs,graphicx,amssymb}",
        r"\begin{document}",
        rf"\section*{{Evaluation report ({latex_escape(provenance['date'])})}}",
    ]
    legend = latex_escape(LEGEND.format(baseline=baseline))
    legend = legend.replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$")
    for m in measures:
        header, rows = _measure_rows(results, m, comparisons, "latex")
        parts.append(latex_table(header, rows, f"{m}.", escape=False))
    parts.append(legend + r"\par")
    parts.append(latex_escape(self_hit_note(results)) + r"\par")
    if comparisons:
        parts.append(
            latex_table(*significance_table(comparisons), f"Significance against {baseline}.")
        )
    header, rows = efficiency_table(results)
    parts.append(r"{\small" + latex_table(header, rows, "Efficiency.") + "}")
    for name in figures:
        parts += [
            r"\begin{figure}[t]", r"\centering",
            rf"\includegraphics[width=\textwidth]{{figures/{name}.pdf}}",
            rf"\caption{{{latex_escape(name.replace('_', ' '))}.}}", r"\end{figure}",
        ]  # fmt: skip
    rows = provenance_rows(results, measures, provenance)
    parts.append(r"\subsection*{Provenance}\begin{itemize}")
    parts += [rf"\item \textbf{{{latex_escape(k)}}}: {latex_escape(v)}" for k, v in rows]
    parts += [r"\end{itemize}", r"\end{document}", ""]
    return "\n".join(parts)
