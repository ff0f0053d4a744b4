"""Effectiveness metrics computed by ir-measures, the reference implementation of trec_eval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lsr.errors import InputError

DEFAULT_MEASURES = ("nDCG@10", "R@100", "R@1000", "RR@10", "AP@100")


def parse_measures(measures: Sequence[str]) -> list:
    """ir-measures objects for measure names, or one clear error naming the bad one."""
    import ir_measures

    parsed = []
    for name in measures:
        try:
            parsed.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError, AttributeError) as e:
            raise InputError(
                f"Unknown measure {name!r} (use ir-measures names such as nDCG@10, R@100, "
                f"RR@10, AP@100, P@5): {e}"
            ) from e
    return parsed


def per_query(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> dict[str, dict[str, float]]:
    """``{measure: {query_id: value}}`` for every judged query; a query without hits scores 0."""
    import ir_measures

    parsed = parse_measures(measures)
    values = {str(m): dict.fromkeys(qrels, 0.0) for m in parsed}
    judged_run = {q: dict(hits) for q, hits in run.items() if q in qrels and hits}
    for m in ir_measures.iter_calc(parsed, dict(qrels), judged_run):
        values[str(m.measure)][m.query_id] = float(m.value)
    return values


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> dict[str, float]:
    """Mean of each measure over all judged queries (trec_eval ``-c``: missing queries count 0)."""
    table = per_query(run, qrels, measures)
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in table.items()}
