"""status [--json] [--watch]."""

from __future__ import annotations

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, pass_env


@click.command()
@json_option
@click.option("--watch", is_flag=True, help="Refresh in place until interrupted.")
@click.option("--interval", type=click.FloatRange(0.2), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@pass_env
def status(env: Env, as_json: bool, watch: bool, interval: float) -> None:
    """The node, its daemon, queues, jobs by state, waiting reasons, recent failures.

    Read-only: works with or without a running daemon and never blocks it.
    """
    from ashjobs import status as st
    from ashjobs.clock import SYSTEM

    if as_json:
        emit_json(st.collect(env.cfg, SYSTEM))
        return
    if not watch:
        console().print(st.render(st.collect(env.cfg, SYSTEM)))
        return
    import time

    from rich.live import Live

    with Live(st.render(st.collect(env.cfg, SYSTEM)), console=console(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(st.render(st.collect(env.cfg, SYSTEM)), refresh=True)
        except KeyboardInterrupt:
            pass
