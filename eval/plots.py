"""The report's figures, drawn with matplotlib (headless): each is written as SVG (embedded
in ``report.html``) and PDF (included by ``report.tex``) under ``figures/``.

- quality against cost: the first measure against postings scored per query, median
  latency and index size (log scales), one colour per encoder and one marker per dataset,
  with each dataset's Pareto frontier (no other run is both cheaper and better);
- per-query differences against the baseline, sorted, one panel per dataset: where a system
  wins and loses, which a mean hides;
- recall@k curves, one panel per dataset.

And a training run's curves (``lsr train`` draws them from ``train_log.jsonl``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

COST_AXES = (  # (efficiency key, axis label, scale to the unit shown)
    ("postings_per_query", "postings scored per query", 1.0),
    ("latency_ms_p50", "median latency (ms)", 1.0),
    ("index_bytes", "index size (MiB)", 2.0**-20),
)
MARKERS = "osD^v<>Px*"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    return plt


def _no_labels():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both counts (lower cost x, higher quality y),
    by increasing cost."""
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier


def _save(fig, out: Path, name: str) -> str:
    """Write ``name``.svg and .pdf under ``out``; the SVG markup, for inline HTML."""
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    (out / f"{name}.svg").write_text(svg, encoding="utf-8")
    _pyplot().close(fig)
    return svg[svg.index("<svg") :]  # without the XML prolog, to sit inside HTML


def _styles(results):
    encoders = list(dict.fromkeys(r.encoder for r in results))
    datasets = list(dict.fromkeys(r.dataset for r in results))
    colors = {e: f"C{i % 10}" for i, e in enumerate(encoders)}
    markers = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(datasets)}
    return encoders, datasets, colors, markers


def quality_vs_cost(results, measure: str, out: Path) -> str:
    plt = _pyplot()
    encoders, datasets, colors, markers = _styles(results)
    fig, axes = plt.subplots(1, len(COST_AXES), figsize=(11, 3.6), sharey=True)
    for ax, (key, label, unit) in zip(axes, COST_AXES, strict=True):
        xs = []
        for d in datasets:
            pts = [
                (r.efficiency[key] * unit, r.metrics[measure], r.encoder)
                for r in results
                if r.dataset == d and r.efficiency.get(key)
            ]
            xs += [x for x, _, _ in pts]
            for x, y, e in pts:
                ax.scatter(x, y, color=colors[e], marker=markers[d], s=40, zorder=3)
            front = pareto_frontier([(x, y) for x, y, _ in pts])
            if len(front) > 1:
                ax.step(*zip(*front, strict=True), where="post", color="0.5", ls="--", lw=1)
        if xs and max(xs) > 20 * min(xs):  # a log axis where costs span decades
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(_no_labels())  # minor labels collide
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(measure)
    handles = [
        plt.Line2D([], [], color=colors[e], marker="o", ls="", label=e) for e in encoders
    ] + [
        plt.Line2D([], [], color="0.3", marker=markers[d], ls="", label=d) for d in datasets
    ] + [plt.Line2D([], [], color="0.5", ls="--", label="Pareto frontier")]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6),
               bbox_to_anchor=(0.5, -0.12), frameon=False)  # fmt: skip
    fig.suptitle(f"{measure} against cost (one point per encoder and dataset)")
    return _save(fig, out, "quality_vs_cost")


def per_query_differences(results, baseline: str, measure: str, out: Path) -> str | None:
    """Sorted per-query differences to the baseline; None without a system to compare."""
    plt = _pyplot()
    encoders, datasets, colors, _ = _styles(results)
    others = [e for e in encoders if e != baseline]
    by = {(r.encoder, r.dataset): r for r in results}
    panels = [d for d in datasets if (baseline, d) in by and any((e, d) in by for e in others)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, d in zip(axes[0], panels, strict=True):
        base = by[(baseline, d)].per_query[measure]
        for e in others:
            if (e, d) not in by:
                continue
            mine = by[(e, d)].per_query[measure]
            diffs = sorted((mine.get(q, 0.0) - v for q, v in base.items()), reverse=True)
            ax.plot(range(1, len(diffs) + 1), diffs, color=colors[e], label=e, lw=1.2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(d)
        ax.set_xlabel("queries, sorted by difference")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"{measure} minus {baseline}")
    axes[0][-1].legend(frameon=False, fontsize=8)
    fig.suptitle(f"Per-query {measure} against {baseline} (above 0: better than {baseline})")
    return _save(fig, out, "per_query_differences")


def recall_curves(results, out: Path) -> str | None:
    """Recall@k for every k the runs were scored at; None when none were."""
    plt = _pyplot()
    encoders, datasets, colors, _ = _styles(results)
    if not any(r.recall_curve for r in results):
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        for r in results:
            if r.dataset == d and r.recall_curve:
                ks = sorted(int(k) for k in r.recall_curve)
                ax.plot(ks, [r.recall_curve[str(k)] for k in ks], marker="o", ms=3,
                        color=colors[r.encoder], label=r.encoder)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(_no_labels())
        ax.set_ylim(0, 1.02)
        ax.set_title(d)
        ax.set_xlabel("k (hits retrieved)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("recall@k")
    axes[0][-1].legend(frameon=False, fontsize=8, loc="lower right")
    fig.suptitle("Recall at depth k")
    return _save(fig, out, "recall_curves")


def all_figures(results, baseline: str, measure: str, out: Path) -> dict[str, str]:
    """Every figure the report shows, by name: SVG markup (files written under ``out``)."""
    figures = {"quality_vs_cost": quality_vs_cost(results, measure, out)}
    for name, svg in (
        ("per_query_differences", per_query_differences(results, baseline, measure, out)),
        ("recall_curves", recall_curves(results, out)),
    ):
        if svg is not None:
            figures[name] = svg
    return {name: re.sub(r"\s*<!--.*?-->", "", svg, flags=re.S) for name, svg in figures.items()}


def _query_factor_panel(ax, epochs: list[dict]) -> None:
    """The query factors' listwise loss and the tokens they moved, by epoch."""
    x = [e["epoch"] for e in epochs]
    ax.plot(x, [e["loss"] for e in epochs], color="C5", marker="o", ms=3, label="listwise loss")
    ax.set_title("query factors (documents frozen)")
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    moved = ax.twinx()
    moved.plot(x, [e["tokens_moved"] for e in epochs], color="0.5", ls=":",
               label="tokens moved > 5%")  # fmt: skip
    moved.set_ylabel("tokens")
    moved.legend(frameon=False, fontsize=8, loc="center right")


def training_curves(run: Path) -> Path:
    """Draw ``train_curves.png`` beside a run's ``train_log.jsonl``: the ranking loss, the
    non-zeros per document and query, and the document FLOPS with its regularizer weight
    (which rises over the warm-up), by step; and, for a run that learned query factors
    (``query_factors_log.jsonl``), their loss and the tokens they moved, by epoch. Returns
    the image's path."""
    run = Path(run)
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    if not rows:
        raise ValueError(f"{run / 'train_log.jsonl'} has no logged steps to draw.")
    factors_log = run / "query_factors_log.jsonl"
    epochs = (
        [json.loads(line) for line in factors_log.read_text().splitlines()]
        if factors_log.is_file()
        else []
    )
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    panels = 4 if epochs else 3
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.4))
    loss, nnz, flops = axes[:3]
    loss.plot(steps, [r["rank_loss"] for r in rows], color="C0", label="ranking loss")
    loss.plot(steps, [r["loss"] for r in rows], color="C1", ls="--", lw=1, label="total loss")
    loss.set_title("loss (mean over each logging window)")
    nnz.plot(steps, [r["nnz_d"] for r in rows], color="C2", label="per document")
    nnz.plot(steps, [r["nnz_q"] for r in rows], color="C3", label="per query")
    nnz.set_title("non-zero terms")
    flops.plot(steps, [r["flops_d"] for r in rows], color="C4", label="document FLOPS")
    flops.set_title("document FLOPS and its weight")
    weight = flops.twinx()
    weight.plot(steps, [r.get("lambda_d", 0.0) for r in rows], color="0.5", ls=":",
                label="regularizer weight")  # fmt: skip
    weight.set_ylabel("regularizer weight")
    for ax in (loss, nnz, flops):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    weight.legend(frameon=False, fontsize=8, loc="lower right")
    if epochs:
        _query_factor_panel(axes[3], epochs)
    fig.suptitle(f"Training curves of {run.name}")
    fig.tight_layout()
    path = run / "train_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
