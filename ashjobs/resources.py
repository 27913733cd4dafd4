"""Resources: records with a state machine, declared in Python.

    ticket = Resource(
        "ticket",
        fields={"title": "text", "opened_at": "timestamp", "reopened": Field("int", default=0)},
        states=["open", "closed"], initial="open",
        transitions=[Transition("close", ["open"], "closed"), Transition("reopen", ["closed"], "open")],
    )

    @ticket.action("close")
    def close(call: ActionCall) -> None:
        call.transition("close", reason="done")

An action is a function of one `ActionCall`: the record (None for a record-less action), the actor, the
args, the transaction's connection, the time, and the job that runs it. It changes the record through
`call.update(...)` and `call.transition(...)`; a transition not allowed from the record's state raises
`IllegalTransition`, and every transition writes a history row in the same transaction.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ashjobs.errors import IllegalTransition, NotFound, UsageError

FieldType = Literal["text", "int", "real", "bool", "timestamp", "json"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
RESERVED = frozenset({"id", "any", "all"})

# Modules declaring the built-in resources; imported on first lookup so that `get("alert")` just works.
BUILTIN_MODULES = ("ashjobs.apps.alerts", "ashjobs.apps.packages")


@dataclass(frozen=True)
class Field:
    type: FieldType
    default: Any = None
    index: bool = False


@dataclass(frozen=True)
class Transition:
    name: str
    from_states: tuple[str, ...]
    to_state: str

    def __init__(self, name: str, from_states: Iterable[str], to_state: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "from_states", tuple(from_states))
        object.__setattr__(self, "to_state", to_state)


Action = Callable[["ActionCall"], Any]


class Resource:
    """A declared resource. Identifiers are checked here, before they can reach SQL."""

    def __init__(self, name: str, *, fields: Mapping[str, str | Field], states: Iterable[str], initial: str,
                 transitions: Iterable[Transition] = (), state_field: str = "status",
                 indexes: Iterable[Iterable[str]] = (), register: bool = True) -> None:
        from ashjobs.store.resources import IDENTIFIER

        def ident(value: str, what: str) -> str:
            if not isinstance(value, str) or not IDENTIFIER.match(value):
                raise UsageError(f"resource {name!r}: {what} {value!r} is not a valid name "
                                 "(lowercase letters, digits, _; starting with a letter; at most 48)")
            return value

        self.name = ident(name, "name")
        self.state_field = ident(state_field, "state field")
        self.fields: dict[str, Field] = {}
        for fname, spec in fields.items():
            ident(fname, "field")
            if fname in RESERVED or fname == state_field:
                raise UsageError(f"resource {name!r}: field {fname!r} is reserved")
            f = Field(spec) if isinstance(spec, str) else spec  # type: ignore[arg-type]  # checked below
            if f.type not in FIELD_TYPES:
                raise UsageError(f"resource {name!r}: field {fname!r}: unknown type {f.type!r} "
                                 f"(known: {', '.join(FIELD_TYPES)})")
            if f.default is not None and not isinstance(f.default, str | int | float | bool):
                raise UsageError(f"resource {name!r}: field {fname!r}: default must be a string or number")
            self.fields[fname] = f
        self.states = tuple(states)
        if not self.states or initial not in self.states:
            raise UsageError(f"resource {name!r}: initial state {initial!r} is not one of its states")
        self.initial = initial
        self.transitions: dict[str, Transition] = {}
        for t in transitions:
            for s in (*t.from_states, t.to_state):
                if s not in self.states:
                    raise UsageError(f"resource {name!r}: transition {t.name!r}: unknown state {s!r}")
            self.transitions[t.name] = t
        self.indexes: list[tuple[str, ...]] = [tuple(ident(c, "index column") for c in ix) for ix in indexes]
        self.indexes += [(f,) for f, spec in self.fields.items() if spec.index]
        for ix in self.indexes:
            for c in ix:
                if c not in self.fields and c not in ("id", state_field):
                    raise UsageError(f"resource {name!r}: index on unknown field {c!r}")
        self.actions: dict[str, Action] = {}
        if register:
            REGISTRY[self.name] = self

    def __repr__(self) -> str:
        return f"Resource({self.name!r})"

    @property
    def columns(self) -> dict[str, str]:
        """Every column a `where` may name → its field type."""
        return {"id": "int", self.state_field: "text", **{f: s.type for f, s in self.fields.items()}}

    def action(self, name: str) -> Callable[[Action], Action]:
        """Decorator: register `fn(call)` as action `name`."""

        def deco(fn: Action) -> Action:
            self.actions[name] = fn
            return fn

        return deco

    # Records

    def create(self, conn: sqlite3.Connection, values: Mapping[str, Any], *, now: float,
               actor: str | None = None, action: str = "create", job_id: int | None = None,
               reason: str | None = None) -> dict[str, Any]:
        """Insert a record in the initial state; its history starts with (None → initial)."""
        from ashjobs.store import resources as sql

        unknown = set(values) - set(self.fields)
        if unknown:
            raise UsageError(f"resource {self.name!r}: unknown field(s) {', '.join(sorted(unknown))}")
        record_id = sql.insert(conn, self, {self.state_field: self.initial, **values})
        sql.add_history(conn, resource=self.name, record_id=record_id, from_state=None, to_state=self.initial,
                        action=action, actor=actor, job_id=job_id, at=now, reason=reason)
        return self.get(conn, record_id)

    def get(self, conn: sqlite3.Connection, record_id: int) -> dict[str, Any]:
        from ashjobs.store import resources as sql

        record = sql.get(conn, self, record_id)
        if record is None:
            raise NotFound(f"{self.name} {record_id}: no such record")
        return record

    def run(self, conn: sqlite3.Connection, action: str, record_id: int | None, *, now: float,
            actor: str | None, args: Mapping[str, Any] | None = None, job_id: int | None = None) -> Any:
        """Run an action inside the caller's transaction (on a record, or record-less when record_id is None)."""
        fn = self.actions.get(action)
        if fn is None:
            raise UsageError(f"resource {self.name!r}: unknown action {action!r} "
                             f"(known: {', '.join(sorted(self.actions)) or 'none'})")
        record = self.get(conn, record_id) if record_id is not None else None
        call = ActionCall(self, action, record, actor, dict(args or {}), conn, now, job_id)
        return fn(call)

    def transition(self, conn: sqlite3.Connection, record: dict[str, Any], name: str, *, now: float,
                   actor: str | None, action: str | None = None, job_id: int | None = None,
                   reason: str | None = None, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply transition `name` to `record` (updated in place) with optional field changes."""
        from ashjobs.store import resources as sql

        t = self.transitions.get(name)
        if t is None:
            raise UsageError(f"resource {self.name!r}: unknown transition {name!r} "
                             f"(known: {', '.join(sorted(self.transitions)) or 'none'})")
        current = record[self.state_field]
        if current not in t.from_states:
            raise IllegalTransition(
                f"{self.name} {record['id']}: cannot {name} from {current!r} "
                f"(allowed from: {', '.join(t.from_states)})")
        update = {**(changes or {}), self.state_field: t.to_state}
        self._check_fields(update)
        sql.update(conn, self, record["id"], update)
        sql.add_history(conn, resource=self.name, record_id=record["id"], from_state=current, to_state=t.to_state,
                        action=action or name, actor=actor, job_id=job_id, at=now, reason=reason)
        record.update(update)
        return record

    def update(self, conn: sqlite3.Connection, record: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change fields without a state change (the state only moves through transitions)."""
        from ashjobs.store import resources as sql

        if self.state_field in changes:
            raise IllegalTransition(f"{self.name} {record['id']}: {self.state_field} changes only by a transition")
        self._check_fields(changes)
        sql.update(conn, self, record["id"], changes)
        record.update(changes)
        return record

    def _check_fields(self, changes: Mapping[str, Any]) -> None:
        unknown = set(changes) - set(self.fields) - {self.state_field}
        if unknown:
            raise UsageError(f"resource {self.name!r}: unknown field(s) {', '.join(sorted(unknown))}")

    def history(self, conn: sqlite3.Connection, record_id: int | None = None) -> list[dict[str, Any]]:
        from ashjobs.store import resources as sql

        return sql.history(conn, self.name, record_id)


@dataclass
class ActionCall:
    """What an action is given. `record` is a dict the action's updates keep current."""

    resource: Resource
    action: str
    record: dict[str, Any] | None
    actor: str | None
    args: dict[str, Any]
    conn: sqlite3.Connection
    now: float
    job_id: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def _record(self) -> dict[str, Any]:
        if self.record is None:
            raise UsageError(f"{self.resource.name}.{self.action}: a record-less action has no record to change")
        return self.record

    def transition(self, name: str, *, reason: str | None = None, **changes: Any) -> dict[str, Any]:
        return self.resource.transition(self.conn, self._record(), name, now=self.now, actor=self.actor,
                                        action=self.action, job_id=self.job_id, reason=reason, changes=changes)

    def update(self, **changes: Any) -> dict[str, Any]:
        return self.resource.update(self.conn, self._record(), changes)


REGISTRY: dict[str, Resource] = {}
_builtins_loaded = False


def get(name: str) -> Resource:
    """A declared resource by name (the built-ins are imported on first use)."""
    global _builtins_loaded
    if name not in REGISTRY and not _builtins_loaded:
        _builtins_loaded = True
        for mod in BUILTIN_MODULES:
            importlib.import_module(mod)
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown resource {name!r} (known: {', '.join(sorted(REGISTRY)) or 'none'})") from None
