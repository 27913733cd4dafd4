"""peers [--json]: the pollers the scheduler knows, from its last registry snapshot."""

from __future__ import annotations

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, pass_env


@click.command()
@json_option
@pass_env
def peers(env: Env, as_json: bool) -> None:
    """Pollers: node, address, partition, domains, capacity, in flight, state, last heartbeat, source.

    The daemon writes this snapshot once a heartbeat; liveness comes from heartbeats only (an mDNS sighting
    alone shows as unavailable until the poller answers).
    """
    from ashjobs.store import peers as sql

    with env.store() as store:
        rows = sql.list_peers(store.conn)
    keys = ("node", "address", "partition", "domains", "capacity", "in_flight", "state", "last_heartbeat", "source")
    if as_json:
        emit_json([{k: r[k] for k in keys} for r in rows])
        return
    if not rows:
        click.echo("no peers known (is `ashjobs run` up with the scheduler role?)")
        return
    from rich.table import Table

    styles = {"available": "green", "busy": "yellow", "draining": "cyan", "unavailable": "red"}
    table = Table("node", "address", "partition", "domains", "cap", "in flight", "state", "last heartbeat",
                  "source", box=None)
    for r in rows:
        table.add_row(r["node"] or "?", r["address"], r["partition"] or "", ",".join(r["domains"]),
                      str(r["capacity"]), str(r["in_flight"]),
                      f"[{styles.get(r['state'], 'white')}]{r['state']}[/]", r["last_heartbeat"] or "never",
                      r["source"])
    console().print(table)
