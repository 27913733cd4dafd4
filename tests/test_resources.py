"""Resources: declared state machines over real SQLite tables, with a history row for every transition."""

from __future__ import annotations

import pytest

from ashjobs import resources
from ashjobs.errors import IllegalTransition, NotFound, UsageError
from ashjobs.resources import Field, Resource, Transition
from ashjobs.store import Store

NOW = 1_800_000_000.0


def ticket(**extra_fields: str | Field) -> Resource:
    res = Resource(
        "ticket",
        fields={"title": "text", "opened_at": "timestamp", "reopens": Field("int", default=0), **extra_fields},
        states=["open", "closed"], initial="open",
        transitions=[Transition("close", ["open"], "closed"), Transition("reopen", ["closed"], "open")],
        register=False,
    )

    @res.action("close")
    def close(call: resources.ActionCall) -> None:
        call.transition("close", reason=call.args.get("why"))

    @res.action("reopen")
    def reopen(call: resources.ActionCall) -> None:
        assert call.record is not None
        call.transition("reopen", reopens=call.record["reopens"] + 1)

    @res.action("bad")
    def bad(call: resources.ActionCall) -> None:
        call.update(status="closed")

    return res


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "a.db") as s:
        yield s


def test_records_start_in_the_initial_state_with_history(store):
    res = ticket()
    with store.tx() as conn:
        rec = res.create(conn, {"title": "disk", "opened_at": NOW}, now=NOW, actor="user:ann")
    assert rec == {"id": 1, "status": "open", "title": "disk", "opened_at": NOW, "reopens": 0}
    [h] = res.history(store.conn, rec["id"])
    assert (h["from_state"], h["to_state"], h["action"], h["actor"], h["at"]) == (None, "open", "create", "user:ann", NOW)


def test_actions_transition_and_write_history_with_job_and_reason(store):
    res = ticket()
    with store.tx() as conn:
        rec = res.create(conn, {"title": "disk"}, now=NOW)
        res.run(conn, "close", rec["id"], now=NOW + 1, actor="system:scheduler", args={"why": "fixed"}, job_id=77)
        res.run(conn, "reopen", rec["id"], now=NOW + 2, actor="user:bob")
    assert res.get(store.conn, rec["id"])["reopens"] == 1
    hist = [(h["from_state"], h["to_state"], h["action"], h["actor"], h["job_id"], h["at"], h["reason"])
            for h in res.history(store.conn, rec["id"])]
    assert hist == [(None, "open", "create", None, None, NOW, None),
                    ("open", "closed", "close", "system:scheduler", 77, NOW + 1, "fixed"),
                    ("closed", "open", "reopen", "user:bob", None, NOW + 2, None)]


def test_illegal_transition_is_refused_and_changes_nothing(store):
    res = ticket()
    with store.tx() as conn:
        rec = res.create(conn, {"title": "disk"}, now=NOW)
    refused = r"ticket 1: cannot reopen from 'open' \(allowed from: closed\)"
    with pytest.raises(IllegalTransition, match=refused), store.tx() as conn:
        res.run(conn, "reopen", rec["id"], now=NOW, actor=None)
    assert res.get(store.conn, 1)["status"] == "open"
    assert len(res.history(store.conn, 1)) == 1
    with pytest.raises(IllegalTransition, match="changes only by a transition"), store.tx() as conn:
        res.run(conn, "bad", 1, now=NOW, actor=None)


def test_unknown_things_are_named(store):
    res = ticket()
    with store.tx() as conn:
        res.create(conn, {"title": "x"}, now=NOW)
        with pytest.raises(UsageError, match="unknown action 'explode'"):
            res.run(conn, "explode", 1, now=NOW, actor=None)
        with pytest.raises(UsageError, match="unknown field"):
            res.create(conn, {"colour": "red"}, now=NOW)
        with pytest.raises(NotFound, match="ticket 99: no such record"):
            res.run(conn, "close", 99, now=NOW, actor=None)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "Robert'); DROP TABLE jobs;--"}, "is not a valid name"),
    ({"fields": {"bad name": "text"}}, "field 'bad name' is not a valid name"),
    ({"fields": {"id": "text"}}, "field 'id' is reserved"),
    ({"fields": {"x": "blob"}}, "unknown type 'blob'"),
    ({"initial": "nowhere"}, "initial state 'nowhere' is not one of its states"),
    ({"transitions": [Transition("go", ["a"], "zzz")]}, "unknown state 'zzz'"),
])
def test_declarations_are_checked_before_sql(kwargs, message):
    args = {"name": "thing", "fields": {"x": "text"}, "states": ["a", "b"], "initial": "a", "register": False,
            **kwargs}
    with pytest.raises(UsageError, match=message):
        Resource(**args)


def test_a_newer_declaration_adds_its_fields_to_the_table(store):
    with store.tx() as conn:
        ticket().create(conn, {"title": "old"}, now=NOW)
    newer = ticket(owner=Field("text", default="nobody", index=True))
    with store.tx() as conn:
        rec = newer.create(conn, {"title": "new", "owner": "ann"}, now=NOW)
    assert newer.get(store.conn, 1)["owner"] == "nobody"
    assert rec["owner"] == "ann"
    indexes = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                 "AND tbl_name = 'res_ticket'")}
    assert "res_ticket_owner" in indexes


def test_builtins_are_found_by_name():
    assert resources.get("alert").initial == "pending"
    assert resources.get("edge_package").initial == "issued"
    with pytest.raises(UsageError, match="unknown resource 'nope'"):
        resources.get("nope")
