"""What every command shares: the loaded config, the store, JSON and table output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ashjobs.config import Config
    from ashjobs.store import Store


@dataclass
class Env:
    config_path: str | None
    data_dir: str | None
    log_format: str = "text"
    log_level: str = "info"
    _cfg: Config | None = field(default=None, repr=False)

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            from ashjobs import config

            self._cfg = config.load(self.config_path, data_dir=self.data_dir)
        return self._cfg

    def store(self, *, create: bool = True) -> Store:
        from ashjobs.store import Store

        return Store.from_config(self.cfg, create=create)

    def load_tasks(self) -> None:
        from ashjobs import tasks

        tasks.load(self.cfg)


pass_env = click.make_pass_decorator(Env)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def console() -> Any:
    from rich.console import Console

    return Console()


def parse_json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise click.UsageError(f"{option}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
