"""A trigger's `where`: structured filters compiled to parameterized SQL (values never pasted as text).

    where = { status = "pending", severity = { in = ["critical", "emergency"] },
              triggered_at = { older_than = "30m" }, any = [ { partition = "p1" }, { partition = { is_null = true } } ] }

Keys are ANDed. A key is a field name or `any` (a list of where-tables, ORed) or `all` (ANDed). A field's
value is a scalar (equality), a list (shorthand for `in`), or a table of operators, ANDed:
eq, ne, in, not_in, lt, lte, gt, gte, older_than, newer_than (a duration against a timestamp field, relative
to the time the filter runs), is_null (true/false). A NULL field matches no comparison (as in SQL).

`parse` checks everything against the resource's columns once (ConfigError naming the trigger and key);
`to_sql(node, now)` is pure and cheap, run at each use with the current time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ashjobs.errors import ConfigError

OPERATORS = ("eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "older_than", "newer_than", "is_null")
_SQL_OP = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


@dataclass(frozen=True)
class Cmp:
    field: str
    op: str
    value: Any  # a scalar; a tuple for in/not_in; seconds for older_than/newer_than; bool for is_null


@dataclass(frozen=True)
class All:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


Node = Cmp | All | AnyOf


def parse(where: Mapping[str, Any], columns: Mapping[str, str], *, trigger: str) -> Node:
    """Validate a where-table against `columns` (name → field type). Raises ConfigError naming the key."""
    return _parse_table(where, columns, trigger, "where")


def _err(trigger: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"trigger {trigger!r}: {key}: {problem}")


def _parse_table(where: Any, columns: Mapping[str, str], trigger: str, key: str) -> Node:
    if not isinstance(where, Mapping):
        raise _err(trigger, key, f"expected a table of field = condition, got {where!r}")
    parts: list[Node] = []
    for name, cond in where.items():
        here = f"{key}.{name}"
        if name in ("any", "all"):
            if not isinstance(cond, list) or not cond:
                raise _err(trigger, here, "expected a non-empty list of tables")
            subs = tuple(_parse_table(c, columns, trigger, f"{here}[{i}]") for i, c in enumerate(cond))
            parts.append(AnyOf(subs) if name == "any" else All(subs))
        elif name not in columns:
            raise _err(trigger, here, f"unknown field (known: {', '.join(sorted(columns))})")
        elif isinstance(cond, Mapping):
            if not cond:
                raise _err(trigger, here, "expected at least one operator")
            for op, value in cond.items():
                parts.append(_parse_op(name, columns[name], op, value, trigger, f"{here}.{op}"))
        elif isinstance(cond, list):
            parts.append(_parse_op(name, columns[name], "in", cond, trigger, here))
        else:
            parts.append(_parse_op(name, columns[name], "eq", cond, trigger, here))
    return parts[0] if len(parts) == 1 else All(tuple(parts))  # an empty table matches every record


def _parse_op(name: str, ftype: str, op: str, value: Any, trigger: str, key: str) -> Cmp:
    if op not in OPERATORS:
        raise _err(trigger, key, f"unknown operator (known: {', '.join(OPERATORS)})")
    if op == "is_null":
        if not isinstance(value, bool):
            raise _err(trigger, key, f"expected true or false, got {value!r}")
        return Cmp(name, op, value)
    if op in ("older_than", "newer_than"):
        if ftype != "timestamp":
            raise _err(trigger, key, f"{op} needs a timestamp field; {name!r} is {ftype}")
        return Cmp(name, op, _duration(value, trigger, key))
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise _err(trigger, key, f"expected a non-empty list, got {value!r}")
        return Cmp(name, op, tuple(_scalar(v, ftype, trigger, f"{key}[{i}]") for i, v in enumerate(value)))
    if ftype in ("bool", "json") and op not in ("eq", "ne"):
        raise _err(trigger, key, f"{op} does not apply to a {ftype} field")
    return Cmp(name, op, _scalar(value, ftype, trigger, key))


def _duration(value: Any, trigger: str, key: str) -> float:
    from ashjobs.config import parse_duration

    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as e:
            raise _err(trigger, key, str(e)) from None
    raise _err(trigger, key, f"expected a duration like '30m', got {value!r}")


def _scalar(value: Any, ftype: str, trigger: str, key: str) -> Any:
    """A value checked against the field's type, so SQL and Python compare it the same way."""
    if ftype in ("text", "json"):
        if isinstance(value, str):
            return value
    elif ftype == "bool":
        if isinstance(value, bool):
            return int(value)
    elif ftype == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif ftype in ("real", "timestamp"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if ftype == "timestamp" and isinstance(value, str):
            from ashjobs.clock import parse_iso

            try:
                return parse_iso(value)
            except ValueError:
                raise _err(trigger, key, f"expected Unix seconds or an ISO 8601 time, got {value!r}") from None
    raise _err(trigger, key, f"expected a {ftype} value, got {value!r}")


def to_sql(node: Node, now: float) -> tuple[str, list[Any]]:
    """The WHERE clause (column names are validated identifiers; every value is a parameter)."""
    params: list[Any] = []
    return _sql(node, now, params), params


def _sql(node: Node, now: float, params: list[Any]) -> str:
    if isinstance(node, All):
        if not node.parts:
            return "1"
        return "(" + " AND ".join(_sql(p, now, params) for p in node.parts) + ")"
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(_sql(p, now, params) for p in node.parts) + ")"
    col = f'"{node.field}"'
    if node.op == "is_null":
        return f"{col} IS {'' if node.value else 'NOT '}NULL"
    if node.op == "older_than":
        params.append(now - node.value)
        return f"{col} < ?"
    if node.op == "newer_than":
        params.append(now - node.value)
        return f"{col} > ?"
    if node.op in ("in", "not_in"):
        params.extend(node.value)
        return f"{col} {'IN' if node.op == 'in' else 'NOT IN'} ({', '.join('?' * len(node.value))})"
    params.append(node.value)
    return f"{col} {_SQL_OP[node.op]} ?"

