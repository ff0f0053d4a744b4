"""Evaluation reports: ``report.json`` (all figures), ``report.md``, ``report.html`` (+ a plot)."""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

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


def _fmt(value, fmt) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt(value)


def effectiveness_table(results, measures: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """One row per dataset (plus the average); a column per encoder x measure."""
    encoders = list(dict.fromkeys(r.encoder for r in results))
    datasets = list(dict.fromkeys(r.dataset for r in results))
    by = {(r.encoder, r.dataset): r for r in results}
    header = ["dataset"] + [
        f"{e} {m}" if len(encoders) > 1 else m for e in encoders for m in measures
    ]
    rows = []
    for d in datasets:
        row = [d]
        for e in encoders:
            r = by.get((e, d))
            row += [f"{r.metrics[m]:.4f}" if r else "–" for m in measures]
        rows.append(row)
    if len(datasets) > 1:
        avg = ["average"]
        for e in encoders:
            rs = [by[(e, d)] for d in datasets if (e, d) in by]
            avg += [f"{sum(r.metrics[m] for r in rs) / len(rs):.4f}" for m in measures]
        rows.append(avg)
    return header, rows


def efficiency_table(results) -> tuple[list[str], list[list[str]]]:
    header = ["encoder", "dataset"] + [label for _, label, _ in EFFICIENCY_COLUMNS]
    rows = [
        [r.encoder, r.dataset] + [_fmt(r.efficiency.get(k), f) for k, _, f in EFFICIENCY_COLUMNS]
        for r in results
    ]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def tradeoff_svg(results, x_key: str = "postings_per_query", y_key: str = "nDCG@10") -> str:
    """An SVG scatter plot of effectiveness (y) against cost per query (x, log scale)."""
    pts = [
        (r.efficiency.get(x_key) or 0.0, r.metrics.get(y_key, 0.0), f"{r.encoder} / {r.dataset}")
        for r in results
    ]
    w, h, pad = 640, 400, 60
    xs = [math.log10(max(p[0], 1.0)) for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05)
    if y1 - y0 < 1e-6:
        y0, y1 = max(0.0, y0 - 0.1), y1 + 0.1

    def sx(v):
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(v):
        return h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)

    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    encoders = list(dict.fromkeys(r.encoder for r in results))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">{x_key.replace("_", " ")} '
        "(log scale)</text>",
        f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">'
        f"{y_key}</text>",
    ]
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{pad - 5}" y="{sy(yv) + 4}" text-anchor="end">{yv:.3f}</text>')
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        if x0 <= e <= x1:
            parts.append(f'<text x="{sx(e)}" y="{h - pad + 15}" text-anchor="middle">1e{e}</text>')
    for (_, _, label), xv, yv, r in zip(pts, xs, ys, results, strict=True):
        color = palette[encoders.index(r.encoder) % len(palette)]
        parts.append(f'<circle cx="{sx(xv):.1f}" cy="{sy(yv):.1f}" r="5" fill="{color}"/>')
        parts.append(f'<text x="{sx(xv) + 8:.1f}" y="{sy(yv) - 6:.1f}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


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


def write_report(results, out: str | Path, measures: Sequence[str]) -> dict[str, Path]:
    """Write the three report files into ``out`` and return their paths."""
    out = Path(out)
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    eff_header, eff_rows = efficiency_table(results)
    header, rows = effectiveness_table(results, measures)
    payload = {
        "created": created,
        "measures": list(measures),
        "results": [r.to_dict() for r in results],
    }
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    paths["md"].write_text(
        f"# Evaluation report ({created})\n\n## Effectiveness\n\n{markdown_table(header, rows)}\n\n"
        f"## Efficiency\n\n{markdown_table(eff_header, eff_rows)}\n\n"
        "Latency and QPS are for search alone (k=10, after a Numba warm-up); FLOPS is "
        "sum_j p_q(j) p_d(j); postings/q is the number of postings exhaustive scoring reads.\n"
        f"\n{self_hit_note(results)}\n",
        encoding="utf-8",
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
    )
    paths["html"].write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>lsr evaluation report</title>"
        f"<style>{style}</style></head><body><h1>Evaluation report</h1><p>{created}</p>"
        f"<h2>Effectiveness</h2>{html_table(header, rows)}"
        f"<h2>Efficiency</h2>{html_table(eff_header, eff_rows)}"
        f"<p>{html.escape(self_hit_note(results))}</p>"
        f"<h2>Effectiveness vs. cost</h2>{tradeoff_svg(results)}</body></html>",
        encoding="utf-8",
    )
    return paths
