"""Filters: the JSON form, the Python expressions, evaluation against a brute-force Python
check, and filtered search equal to brute force over the documents that pass."""

import datetime as dt

import numpy as np
import pytest

from lsr.errors import InputError
from lsr.index import Field, parse_filter
from lsr.index.store import DocumentStore, TableDocuments, write_store

LANGS = ["en", "de", "fr"]


def _records(rng, n):
    out = []
    for i in range(n):
        rec = {"_id": f"d{i}", "title": f"t{i}", "text": "x"}
        if rng.random() < 0.8:
            rec["lang"] = LANGS[rng.integers(3)]
        if rng.random() < 0.7:
            rec["metadata"] = {"year": int(rng.integers(1990, 2025))}
            if rng.random() < 0.5:
                rec["metadata"]["tags"] = [f"g{j}" for j in rng.choice(5, 2, replace=False)]
        if rng.random() < 0.5:
            rec["date"] = f"20{rng.integers(10, 25)}-0{rng.integers(1, 10)}-1{rng.integers(0, 9)}"
        rec["score"] = float(rng.random())
        out.append(rec)
    return out


def _get(rec, path):
    value = rec
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _date(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


# each case: a filter, and the same condition as a Python predicate on a record
CASES = [
    (Field("lang").eq("en"), lambda r: _get(r, "lang") == "en"),
    (Field("lang").isin(["de", "fr"]), lambda r: _get(r, "lang") in ("de", "fr")),
    (Field("metadata.year") >= 2010, lambda r: (_get(r, "metadata.year") or 0) >= 2010),
    (
        Field("metadata.year").between(2000, 2005),
        lambda r: 2000 <= (_get(r, "metadata.year") or 0) <= 2005,
    ),
    (Field("score") < 0.25, lambda r: r["score"] < 0.25),
    (Field("metadata.tags").eq("g1"), lambda r: "g1" in (_get(r, "metadata.tags") or [])),
    (Field("metadata.tags").exists(), lambda r: _get(r, "metadata.tags") is not None),
    (Field("lang").exists(False), lambda r: "lang" not in r),
    (
        Field("date") >= "2018-01-01",
        lambda r: "date" in r and _date(r["date"]) >= _date("2018-01-01"),
    ),
    (
        (Field("lang").eq("en") | (Field("metadata.year") < 2000)) & ~Field("date").exists(),
        lambda r: (
            (_get(r, "lang") == "en" or (_get(r, "metadata.year") or 9999) < 2000)
            and "date" not in r
        ),
    ),
    (Field("nowhere").eq("x"), lambda r: False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_masks_equal_brute_force_in_memory_and_on_disk(rng, tmp_path, case):
    records = _records(rng, 700)
    write_store(tmp_path / "s.arrow", records)
    condition, predicate = CASES[case]
    expected = np.array([predicate(r) for r in records])
    for docs in (TableDocuments(records), DocumentStore(tmp_path / "s.arrow")):
        assert np.array_equal(condition.mask(docs, len(records)), expected)
    again = parse_filter(condition.to_json())  # the JSON form reads back the same filter
    assert np.array_equal(again.mask(TableDocuments(records), len(records)), expected)


def test_fields_of_mixed_types_are_filtered_by_value():
    records = [{"_id": "a", "v": 1}, {"_id": "b", "v": "one"}, {"_id": "c", "v": [2, "x"]}]
    docs = TableDocuments(records)
    assert Field("v").eq("one").mask(docs, 3).tolist() == [False, True, False]
    assert (Field("v") >= 2).mask(docs, 3).tolist() == [False, False, True]
    assert Field("v").isin(["x", 1]).mask(docs, 3).tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{", "not valid JSON"),
        ([], "must be an object"),
        ({"and": []}, "non-empty list"),
        ({"and": [{"field": "a", "eq": 1}, {"feld": "b"}]}, r"filter\.and\[1\] needs 'field'"),
        ({"field": "a", "gtee": 1}, "unknown key 'gtee'"),
        ({"field": "a"}, "say what to test"),
        ({"field": "a", "eq": 1, "gte": 2}, "give one of"),
        ({"field": "a", "eq": None}, "string, number or boolean"),
        ({"field": "a", "in": []}, "non-empty list"),
        ({"field": "a", "gte": "yesterday"}, "ISO-8601"),
        ({"field": "a", "gte": 1, "lt": "2020-01-01"}, "mix dates and numbers"),
        ({"field": "a", "exists": "yes"}, "true or false"),
        ({"field": "", "eq": 1}, "field name"),
        ({"not": {"field": "a", "eq": float("nan")}}, "finite"),
    ],
)
def test_bad_filters_name_the_problem(spec, message):
    with pytest.raises(InputError, match=message):
        parse_filter(spec)


def test_comparing_kinds_that_differ_is_an_error():
    docs = TableDocuments([{"_id": "a", "lang": "en", "year": 2000, "ok": True}])
    for condition, kind in [
        (Field("lang").eq(3), "text"),
        (Field("year").eq("2000"), "numbers"),
        (Field("lang") >= 3, "text"),
        (Field("year") >= "2020-01-01", "numbers"),
        (Field("ok").eq(1), "booleans"),
    ]:
        with pytest.raises(InputError, match=f"holds {kind}"):
            condition.mask(docs, 1)


def test_combining_with_a_non_filter_is_refused():
    with pytest.raises(InputError, match="combines only with filters"):
        Field("a").eq(1) & "b"
