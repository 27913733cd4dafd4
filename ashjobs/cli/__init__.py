"""The `ashjobs` command line. Thin: parse, call, render. Subcommands live in their own modules and are
imported only when invoked, so `ashjobs --version` does not pay for rich, sqlite or zeroconf.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ashjobs import __version__

# command name → "module:attribute". A feature adds its commands with one line here.
COMMANDS: dict[str, str] = {
    "init": "ashjobs.cli.core:init",
    "config": "ashjobs.cli.core:config",
    "run": "ashjobs.cli.core:run",
    "enqueue": "ashjobs.cli.jobs:enqueue",
    "jobs": "ashjobs.cli.jobs:jobs",
    "queues": "ashjobs.cli.jobs:queues",
    "status": "ashjobs.cli.status:status",
    "triggers": "ashjobs.cli.triggers:triggers",
    "alerts": "ashjobs.cli.alerts:alerts",
    "packages": "ashjobs.cli.packages:packages",
    "notifications": "ashjobs.cli.notifications:notifications",
    "migrate": "ashjobs.cli.migrate:migrate",
    "peers": "ashjobs.cli.peers:peers",
    "backup": "ashjobs.cli.backup:backup",
    "restore": "ashjobs.cli.backup:restore",
}


def _load(name: str) -> click.Command | None:
    module, _, attr = COMMANDS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):  # a feature not built into this copy
            return None
        raise
    return getattr(mod, attr)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if _load(n) is not None) if "--help" in sys.argv else sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name) if cmd_name in COMMANDS else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ashjobs", message="%(prog)s %(version)s")
@click.option("--config", "config_path", metavar="PATH", envvar="ASHJOBS_CONFIG",
              help="Config file (default: ./ashjobs.toml, then /etc/ashjobs/ashjobs.toml, else built-in defaults).")
@click.option("--data-dir", metavar="DIR", envvar="ASHJOBS_DATA_DIR",
              help="Data directory; overrides [node] data_dir. Default: /var/lib/ashjobs as root, "
                   "else $XDG_STATE_HOME/ashjobs.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log line format.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Least severe level logged.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, data_dir: str | None, log_format: str, log_level: str) -> None:
    """ashjobs: a durable SQLite job scheduler for monitoring fleets on edge appliances.

    \b
    Quick start:
      ashjobs run                                   # the daemon, on built-in defaults
      ashjobs enqueue sleep --args '{"seconds": 1}'
      ashjobs status
    """
    from ashjobs.cli.common import Env

    ctx.obj = Env(config_path=config_path, data_dir=data_dir, log_format=log_format, log_level=log_level)


def main(argv: list[str] | None = None) -> Any:
    from ashjobs.errors import AshError

    try:
        return cli.main(args=argv, prog_name="ashjobs", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except AshError as e:
        click.echo(f"ashjobs: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
