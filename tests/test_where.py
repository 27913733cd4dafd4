"""The `where` compiler: every filter means the same in SQL as in plain Python, and bad filters are
config errors that name the trigger and the key."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ashjobs.errors import ConfigError
from ashjobs.where import parse, to_sql

NOW = 1_800_000_000.0
COLUMNS = {"id": "int", "status": "text", "name": "text", "n": "int", "x": "real", "t": "timestamp",
           "flag": "bool"}

texts = st.text(alphabet="abcé", max_size=3)
values = {
    "status": st.sampled_from(["open", "closed", "held"]),
    "name": texts,
    "n": st.integers(-5, 5),
    "x": st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False)),
    "t": st.floats(NOW - 2000, NOW + 2000, allow_nan=False),
    "flag": st.booleans(),
}
rows = st.lists(st.fixed_dictionaries({f: st.one_of(st.none(), s) for f, s in values.items()}), max_size=12)


def _ops(field: str) -> st.SearchStrategy[dict[str, Any]]:
    v = values[field]
    cmp = ["eq", "ne"] if field == "flag" else ["eq", "ne", "lt", "lte", "gt", "gte"]
    single = st.tuples(st.sampled_from(cmp), v).map(lambda p: {p[0]: p[1]})
    member = st.tuples(st.sampled_from(["in", "not_in"]), st.lists(v, min_size=1, max_size=3)).map(
        lambda p: {p[0]: p[1]})
    null = st.booleans().map(lambda b: {"is_null": b})
    options = [single, member, null]
    if field == "t":
        options.append(st.tuples(st.sampled_from(["older_than", "newer_than"]), st.integers(0, 2000)).map(
            lambda p: {p[0]: p[1]}))
    return st.one_of(*options)


def _field_cond(field: str) -> st.SearchStrategy[Any]:
    v = values[field]
    return st.one_of(v, st.lists(v, min_size=1, max_size=3), _ops(field))


leaf = st.sampled_from(list(values)).flatmap(lambda f: _field_cond(f).map(lambda c: {f: c}))


def _combine(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    group = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        st.tuples(st.sampled_from(["any", "all"]), group).map(lambda p: {p[0]: p[1]}),
        st.lists(children, min_size=1, max_size=3).map(_merge),
    )


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, v)
    return out


wheres = st.recursive(leaf, _combine, max_leaves=8)


# An independent evaluator of the documented meaning (not of the compiled tree).
def evaluate(where: dict[str, Any], row: dict[str, Any]) -> bool:
    for key, cond in where.items():
        if key == "any":
            ok = any(evaluate(w, row) for w in cond)
        elif key == "all":
            ok = all(evaluate(w, row) for w in cond)
        elif isinstance(cond, dict):
            ok = all(_op(row[key], op, arg) for op, arg in cond.items())
        elif isinstance(cond, list):
            ok = _op(row[key], "in", cond)
        else:
            ok = _op(row[key], "eq", cond)
        if not ok:
            return False
    return True


def _op(value: Any, op: str, arg: Any) -> bool:
    if op == "is_null":
        return (value is None) == arg
    if value is None:  # a NULL field matches no comparison
        return False
    if op == "older_than":
        return bool(value < NOW - arg)
    if op == "newer_than":
        return bool(value > NOW - arg)
    if op == "in":
        return value in arg
    if op == "not_in":
        return value not in arg
    return bool({"eq": value == arg, "ne": value != arg, "lt": value < arg, "lte": value <= arg,
                 "gt": value > arg, "gte": value >= arg}[op])


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    c = sqlite3.connect(str(tmp_path_factory.mktemp("where") / "w.db"), isolation_level=None)
    c.execute('CREATE TABLE r (id INTEGER PRIMARY KEY, status TEXT, name TEXT, n INTEGER, x REAL, t REAL, '
              'flag INTEGER)')
    return c


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=rows, where=wheres)
def test_sql_matches_python(conn: sqlite3.Connection, table: list[dict[str, Any]], where: dict[str, Any]) -> None:
    conn.execute("DELETE FROM r")
    for row in table:
        conn.execute("INSERT INTO r (status, name, n, x, t, flag) VALUES (?, ?, ?, ?, ?, ?)",
                     [row["status"], row["name"], row["n"], row["x"], row["t"], row["flag"]])
    clause, params = to_sql(parse(where, COLUMNS, trigger="t1"), NOW)
    assert "?" in clause or clause == "1" or "NULL" in clause
    got = [r[0] for r in conn.execute(f"SELECT id FROM r WHERE {clause} ORDER BY id", params)]
    expected = [i + 1 for i, row in enumerate(table) if evaluate(where, row)]
    assert got == expected, (clause, params)


def test_values_are_parameters_never_text() -> None:
    evil = "x' OR 1=1 --"
    clause, params = to_sql(parse({"name": evil, "status": {"in": [evil]}}, COLUMNS, trigger="t1"), NOW)
    assert evil not in clause
    assert params == [evil, evil]


def test_durations_are_relative_to_the_time_given() -> None:
    node = parse({"t": {"older_than": "30m"}}, COLUMNS, trigger="t1")
    assert to_sql(node, NOW) == ('"t" < ?', [NOW - 1800])
    assert to_sql(node, NOW + 60) == ('"t" < ?', [NOW - 1740])


def test_empty_where_matches_everything() -> None:
    assert to_sql(parse({}, COLUMNS, trigger="t1"), NOW) == ("1", [])


@pytest.mark.parametrize(("where", "message"), [
    ({"colour": "red"}, "trigger 'escalate': where.colour: unknown field"),
    ({"n": {"between": [1, 2]}}, "trigger 'escalate': where.n.between: unknown operator"),
    ({"n": {"older_than": "5m"}}, "where.n.older_than: older_than needs a timestamp field"),
    ({"t": {"older_than": "5 minutes"}}, "where.t.older_than: bad duration"),
    ({"n": "three"}, "where.n: expected a int value, got 'three'"),
    ({"n": {"in": []}}, "where.n.in: expected a non-empty list"),
    ({"n": {"is_null": "yes"}}, "where.n.is_null: expected true or false"),
    ({"any": {"n": 1}}, "where.any: expected a non-empty list of tables"),
    ({"any": [{"n": 1}, {"nope": 2}]}, "where.any[1].nope: unknown field"),
    ({"flag": {"lt": True}}, "where.flag.lt: lt does not apply to a bool field"),
    ({"status": {}}, "where.status: expected at least one operator"),
    ({"t": {"gt": "yesterday"}}, "where.t.gt: expected Unix seconds or an ISO 8601 time"),
])
def test_bad_filters_are_config_errors_naming_trigger_and_key(where: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse(where, COLUMNS, trigger="escalate")
