"""Filters over stored document fields: expression objects, their JSON form, and their
evaluation to a mask over a segment's documents (which the kernels apply while scoring).

Python::

    from lsr.index.filters import Field
    recent = Field("metadata.year") >= 2015
    f = recent & Field("lang").isin(["en", "de"]) & ~Field("draft").eq(True)

JSON (REST ``"filter"``, ``lsr search --filter``)::

    {"and": [{"field": "metadata.year", "gte": 2015},
             {"field": "lang", "in": ["en", "de"]},
             {"not": {"field": "draft", "eq": true}}]}

Leaves: ``eq`` (equal), ``in`` (equal to one of), ``gte``/``gt``/``lte``/``lt`` (a range: one
or more bounds; numbers, or ISO-8601 dates and times compared as instants), ``exists``. A
dotted name reaches into objects (``metadata.year``). On a list field a leaf matches when
any element matches, as in OpenSearch. A document without the field matches no leaf but
``exists: false``. Comparing a field with a value of another kind (text with a number) is an
error naming both, never a silent empty result.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsr.errors import InputError

_RANGE_KEYS = ("gte", "gt", "lte", "lt")
_RANGE_OPS = {"gte": pc.greater_equal, "gt": pc.greater, "lte": pc.less_equal, "lt": pc.less}


class Columns(Protocol):
    """Where a filter reads fields: a document store or a buffer's documents."""

    def column(self, name: str) -> pa.ChunkedArray | None: ...

    def is_json(self, name: str) -> bool: ...


class Filter:
    """A condition on stored fields; combine with ``&``, ``|`` and ``~``."""

    def __and__(self, other: Filter) -> Filter:
        return And((self, _check_filter(other)))

    def __or__(self, other: Filter) -> Filter:
        return Or((self, _check_filter(other)))

    def __invert__(self) -> Filter:
        return Not(self)

    def mask(self, docs: Columns, n_docs: int) -> np.ndarray:
        """A bool array over the ``n_docs`` documents of ``docs``: True where it matches."""
        raise NotImplementedError

    def to_json(self) -> dict:
        """The JSON form :func:`parse_filter` reads back."""
        raise NotImplementedError

    def fields(self) -> set[str]:
        """The field names (dotted paths) the filter reads."""
        raise NotImplementedError

    def key(self) -> str:
        """A canonical text of the filter, for caching its masks."""
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)

    def __repr__(self) -> str:
        return f"Filter({self.key()})"


def _check_filter(f: object) -> Filter:
    if not isinstance(f, Filter):
        raise InputError(f"A filter combines only with filters, got {type(f).__name__}.")
    return f


@dataclass(frozen=True, repr=False)
class _Combination(Filter):
    """Several filters joined by one operator (the subclass says which)."""

    parts: tuple[Filter, ...]
    word = ""  # the JSON key
    empty = True  # the mask of no parts
    join = staticmethod(np.logical_and)

    def mask(self, docs: Columns, n_docs: int) -> np.ndarray:
        out = np.full(n_docs, self.empty, dtype=bool)
        for p in self.parts:
            self.join(out, p.mask(docs, n_docs), out=out)
        return out

    def to_json(self) -> dict:
        return {self.word: [p.to_json() for p in self.parts]}

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts))


class And(_Combination):
    """Documents every part matches."""

    word, empty, join = "and", True, staticmethod(np.logical_and)


class Or(_Combination):
    """Documents some part matches."""

    word, empty, join = "or", False, staticmethod(np.logical_or)


@dataclass(frozen=True, repr=False)
class Not(Filter):
    part: Filter

    def mask(self, docs: Columns, n_docs: int) -> np.ndarray:
        return ~self.part.mask(docs, n_docs)

    def to_json(self) -> dict:
        return {"not": self.part.to_json()}

    def fields(self) -> set[str]:
        return self.part.fields()


@dataclass(frozen=True, repr=False)
class Leaf(Filter):
    """A condition on one field: ``op`` is eq, in, range or exists."""

    field: str
    op: str
    value: Any

    def fields(self) -> set[str]:
        return {self.field}

    def to_json(self) -> dict:
        if self.op == "range":
            return {"field": self.field, **self.value}
        return {"field": self.field, self.op: self.value}

    def mask(self, docs: Columns, n_docs: int) -> np.ndarray:
        values, is_json = _resolve(docs, self.field)
        if values is None:
            if self.op == "exists":
                return np.full(n_docs, not self.value, dtype=bool)
            return np.zeros(n_docs, dtype=bool)
        if self.op == "exists":
            present = np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)
            return present if self.value else ~present
        if is_json:
            return _python_mask(values, self._python_test())
        try:
            return _any_element(values, self._arrow_test(values))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise InputError(
                f"filter on {self.field!r}: the field holds {_kind(values.type)}, which cannot "
                f"be compared with {self.value!r} ({self.op})."
            ) from e

    def _arrow_test(self, values: pa.Array) -> Callable[[pa.Array], pa.Array]:
        if self.op == "eq":
            return lambda a: pc.equal(a, _scalar(self.value, a.type))
        if self.op == "in":
            return lambda a: pc.is_in(a, value_set=_value_set(self.value, a.type))
        return lambda a: _range_test(a, self.value)

    def _python_test(self) -> Callable[[Any], bool]:
        if self.op == "eq":
            return lambda v: _same_value(v, self.value)
        if self.op == "in":
            return lambda v: any(_same_value(v, x) for x in self.value)
        bounds = self.value

        def test(v):
            try:
                return all(_compare(v, key, bound) for key, bound in bounds.items())
            except TypeError:
                return False

        return test


class Field:
    """Build leaf filters on one field: ``Field("year") >= 2015``, ``Field("lang").eq("en")``,
    ``Field("tag").isin(["a", "b"])``, ``Field("doi").exists()``, ``.between(lo, hi)``."""

    def __init__(self, name: str) -> None:
        self.name = _check_name(name, "Field")

    def eq(self, value: Any) -> Filter:
        return Leaf(self.name, "eq", _check_value(value, self.name))

    def isin(self, values: Sequence[Any]) -> Filter:
        return Leaf(self.name, "in", _check_values(values, self.name))

    def exists(self, present: bool = True) -> Filter:
        return Leaf(self.name, "exists", bool(present))

    def between(self, low: Any, high: Any) -> Filter:
        """``low <= value <= high``."""
        return _range(self.name, {"gte": low, "lte": high})

    def __ge__(self, value: Any) -> Filter:
        return _range(self.name, {"gte": value})

    def __gt__(self, value: Any) -> Filter:
        return _range(self.name, {"gt": value})

    def __le__(self, value: Any) -> Filter:
        return _range(self.name, {"lte": value})

    def __lt__(self, value: Any) -> Filter:
        return _range(self.name, {"lt": value})

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


def parse_filter(spec: object, where: str = "filter") -> Filter:
    """The :class:`Filter` of a JSON filter (a dict, or its text), or an :class:`InputError`
    naming the part that is wrong (``filter.and[1]: ...``)."""
    if isinstance(spec, Filter):
        return spec
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise InputError(f"{where} is not valid JSON ({e.msg}).") from e
    if not isinstance(spec, dict) or not spec:
        raise InputError(
            f'{where} must be an object such as {{"field": "year", "gte": 2015}} or '
            f'{{"and": [...]}}, got {spec!r}.'
        )
    for combinator in ("and", "or"):
        if combinator in spec:
            _only_keys(spec, {combinator}, where)
            parts = spec[combinator]
            if not isinstance(parts, list) or not parts:
                raise InputError(f"{where}.{combinator} must be a non-empty list of filters.")
            parsed = tuple(
                parse_filter(p, f"{where}.{combinator}[{i}]") for i, p in enumerate(parts)
            )
            return And(parsed) if combinator == "and" else Or(parsed)
    if "not" in spec:
        _only_keys(spec, {"not"}, where)
        return Not(parse_filter(spec["not"], f"{where}.not"))
    if "field" not in spec:
        raise InputError(
            f"{where} needs 'field' (with eq, in, gte, gt, lte, lt or exists), or one of "
            f"'and', 'or', 'not'; got keys {sorted(spec)}."
        )
    name = _check_name(spec["field"], f"{where}.field")
    ops = set(spec) - {"field"}
    _only_keys(spec, {"field", "eq", "in", "exists", *_RANGE_KEYS}, where)
    if not ops:
        raise InputError(
            f"{where}: say what to test on {name!r}: eq, in, gte, gt, lte, lt or exists."
        )
    if ops & {"eq", "in", "exists"} and len(ops) > 1:
        raise InputError(
            f"{where}: give one of eq, in, exists, or range bounds; got {sorted(ops)}."
        )
    if "eq" in ops:
        return Leaf(name, "eq", _check_value(spec["eq"], f"{where}.eq"))
    if "in" in ops:
        return Leaf(name, "in", _check_values(spec["in"], f"{where}.in"))
    if "exists" in ops:
        if not isinstance(spec["exists"], bool):
            raise InputError(f"{where}.exists must be true or false.")
        return Leaf(name, "exists", spec["exists"])
    return _range(name, {k: spec[k] for k in _RANGE_KEYS if k in spec}, where)


def _only_keys(spec: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(spec) - allowed)
    if extra:
        raise InputError(f"{where}: unknown key {extra[0]!r} (allowed here: {sorted(allowed)}).")


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or name.endswith("."):
        raise InputError(f"{where} must be a field name such as 'year' or 'metadata.year'.")
    return name


def _check_value(value: object, where: str):
    if isinstance(value, (dict, list)) or value is None:
        raise InputError(f"{where} must be a string, number or boolean, got {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value!r}.")
    return value


def _check_values(values: object, where: str) -> list:
    if not isinstance(values, (list, tuple)) or not values:
        raise InputError(f"{where} must be a non-empty list of values.")
    return [_check_value(v, f"{where}[{i}]") for i, v in enumerate(values)]


def _range(name: str, bounds: dict, where: str | None = None) -> Filter:
    where = where or f"range on {name!r}"
    for key, bound in bounds.items():
        ok = (isinstance(bound, (int, float)) and not isinstance(bound, bool)) or (
            isinstance(bound, str) and _instant(bound) is not None
        )
        if not ok or (isinstance(bound, float) and not math.isfinite(bound)):
            raise InputError(
                f"{where}: {key} must be a number or an ISO-8601 date/time, got {bound!r}."
            )
    kinds = {isinstance(b, str) for b in bounds.values()}
    if len(kinds) > 1:
        raise InputError(f"{where}: bounds mix dates and numbers ({bounds}).")
    return Leaf(name, "range", dict(bounds))


def _instant(text: str) -> dt.datetime | None:
    """An ISO-8601 date or date-time (naive ones read as UTC), or None."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "numbers"
    if pa.types.is_boolean(t):
        return "booleans"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"lists of {_kind(t.value_type)}"
    return str(t)


def _resolve(docs: Columns, path: str) -> tuple[pa.Array | None, bool]:
    """The values of dotted field ``path`` (and whether they are JSON texts), or None."""
    column = docs.column(path)
    if column is not None:
        return column.combine_chunks(), docs.is_json(path)
    head, *rest = path.split(".")
    column = docs.column(head)
    if column is None or not rest:
        return None, False
    values = column.combine_chunks()
    for part in rest:
        if not pa.types.is_struct(values.type) or values.type.get_field_index(part) < 0:
            return None, False
        values = pc.struct_field(values, part)
    return values, False


def _any_element(values: pa.Array, test: Callable[[pa.Array], pa.Array]) -> np.ndarray:
    """``test`` per document; on a list field, True where any element passes."""
    n = len(values)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        flat = pc.list_flatten(values)
        parents = pc.list_parent_indices(values).to_numpy()
        hit = _as_bool(test(flat))
        out = np.zeros(n, dtype=bool)
        out[parents[hit]] = True
        return out
    return _as_bool(test(values))


def _as_bool(result: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)


def _scalar(value, type_: pa.DataType) -> pa.Scalar:
    """``value`` as a scalar comparable with values of ``type_``: text with text, booleans
    with booleans, numbers with numbers (Arrow would cast a number to text, or the reverse)."""
    if isinstance(value, bool):
        ok = pa.types.is_boolean(type_)
    elif isinstance(value, str):
        ok = pa.types.is_string(type_) or pa.types.is_large_string(type_)
    else:
        ok = pa.types.is_integer(type_) or pa.types.is_floating(type_)
    if not ok:
        raise pa.ArrowTypeError(f"{value!r} does not compare with {type_}")
    return pa.scalar(value)


def _value_set(values: list, type_: pa.DataType) -> pa.Array:
    return pa.array([_scalar(v, type_).as_py() for v in values]).cast(type_)


def _range_test(values: pa.Array, bounds: dict) -> pa.Array:
    if any(isinstance(b, str) for b in bounds.values()):  # dates and times, as instants
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise pa.ArrowTypeError("dates compare only with text fields holding dates")
        stamps = _parse_instants(values)
        out = None
        for key, bound in bounds.items():
            test = _RANGE_OPS[key](stamps, pa.scalar(_instant(bound), stamps.type))
            out = test if out is None else pc.and_kleene(out, test)
        return out
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise pa.ArrowTypeError("number ranges apply to number fields")
    out = None
    for key, bound in bounds.items():
        test = _RANGE_OPS[key](values, pa.scalar(float(bound)))
        out = test if out is None else pc.and_kleene(out, test)
    return out


def _parse_instants(values: pa.Array) -> pa.Array:
    """Text values as UTC timestamps (null where a value is not an ISO-8601 date/time)."""
    parsed = [None if v is None else _instant(v) for v in values.to_pylist()]
    return pa.array(parsed, pa.timestamp("us", tz="UTC"))


def _python_mask(values: pa.Array, test: Callable[[Any], bool]) -> np.ndarray:
    """A leaf over JSON-text values (a field whose values mix types), one by one."""
    out = np.zeros(len(values), dtype=bool)
    for i, text in enumerate(values.to_pylist()):
        if text is None:
            continue
        v = json.loads(text)
        out[i] = any(test(x) for x in v) if isinstance(v, list) else test(v)
    return out


def _same_value(a, b) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _compare(v, key: str, bound) -> bool:
    if isinstance(bound, str):
        if not isinstance(v, str) or _instant(v) is None:
            return False
        v, bound = _instant(v), _instant(bound)
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return {"gte": v >= bound, "gt": v > bound, "lte": v <= bound, "lt": v < bound}[key]
