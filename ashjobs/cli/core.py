"""init, config check, run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ashjobs.cli.common import Env, emit_json, json_option, pass_env


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@pass_env
def init(env: Env, path: str | None) -> None:
    """Write a commented config file (default ./ashjobs.toml) and create the cluster secret.

    Refuses to overwrite an existing file. Every key is listed with its default.

    \b
    Example: ashjobs init /etc/ashjobs/ashjobs.toml
    """
    from importlib.resources import files

    target = Path(path or "ashjobs.toml")
    if target.exists():
        raise click.UsageError(f"{target}: already exists; refusing to overwrite it")
    text = files("ashjobs.templates").joinpath("ashjobs.toml.example").read_text()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)
    click.echo(f"wrote {target}")
    secret = _ensure_secret(env)
    if secret:
        click.echo(secret)


def _ensure_secret(env: Env) -> str | None:
    from ashjobs.cluster.secret import create_secret, secret_path

    path = secret_path(env.cfg)
    if path.exists():
        return f"cluster secret: {path} (kept)"
    create_secret(path)
    return f"created cluster secret {path} (mode 0600); copy it to every node of this cluster"


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@json_option
@pass_env
def config_check(env: Env, as_json: bool) -> None:
    """Validate the config file and print the effective config (defaults filled in).

    Exits 2 with one line naming the file, the key and the problem when something is wrong.
    """
    cfg = env.cfg
    env.load_tasks()
    try:
        from ashjobs import cron
    except ImportError:  # a copy without the cron loop
        pass
    else:
        cron.check(cfg)
    data = cfg.as_dict()
    if as_json:
        emit_json({"path": str(cfg.path) if cfg.path else None, "config": data})
        return
    click.echo(f"# {cfg.path or 'built-in defaults (no config file found)'}: ok", err=True)
    click.echo(_to_toml(data))


def _to_toml(data: dict[str, object]) -> str:
    import json

    def value(v: object) -> str:
        return json.dumps(v) if not isinstance(v, dict) else "{ " + ", ".join(
            f"{k} = {value(x)}" for k, x in v.items()) + " }"

    out: list[str] = []
    for section, body in data.items():
        if isinstance(body, list):
            for entry in body:
                out.append(f"\n[[{section}]]")
                out.extend(f"{k} = {value(v)}" for k, v in entry.items() if v is not None)
        elif isinstance(body, dict):
            out.append(f"\n[{section}]")
            out.extend(f"{k} = {value(v)}" for k, v in body.items() if v is not None)
    return "\n".join(out).lstrip("\n")


@click.command()
@pass_env
def run(env: Env) -> None:
    """Run the daemon on this node until SIGTERM/SIGINT (then drain and exit 0).

    With no config file it runs on built-in defaults: both roles (scheduler and poller) on this node, data in
    /var/lib/ashjobs (root) or $XDG_STATE_HOME/ashjobs.
    """
    from ashjobs import daemon, logs

    logs.setup(env.log_format, env.log_level)
    sys.exit(daemon.run(env.cfg))
