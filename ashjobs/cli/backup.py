"""`ashjobs backup PATH` and `ashjobs restore PATH`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ashjobs.cli.common import Env, emit_json, json_option, pass_env


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done * 4096, total=total * 4096)  # pages → approximate bytes

        yield update


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@pass_env
def backup(env: Env, path: Path, as_json: bool) -> None:
    """Copy the live database to PATH (a new file, or a directory to put a dated file in).

    Safe while the daemon runs: the copy is one consistent snapshot, checked with PRAGMA integrity_check.
    """
    from ashjobs.errors import UsageError
    from ashjobs.store import backup as bk

    src = env.cfg.db_path
    if not src.exists():
        raise UsageError(f"{src}: no database to back up (wrong --data-dir or --config?)")
    if path.is_dir():
        path = path / time.strftime("ashjobs-%Y%m%dT%H%M%SZ.db", time.gmtime())
    with _progress(f"backup → {path.name}", as_json) as progress:
        info = bk.backup(src, path, progress)
    if as_json:
        emit_json({"path": str(info.path), "bytes": info.bytes, "pages": info.pages,
                   "schema_version": info.schema_version, "jobs": info.jobs, "integrity": "ok",
                   "seconds": round(info.seconds, 3)})
    else:
        click.echo(f"backed up {src} to {info.path}: {info.bytes / 1e6:.1f} MB, schema v{info.schema_version}, "
                   f"{info.jobs} jobs, integrity ok, {info.seconds:.2f}s")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@pass_env
def restore(env: Env, path: Path, as_json: bool) -> None:
    """Replace the database with the backup at PATH. Refused while a daemon runs on the data directory.

    The current database is kept beside it as ashjobs.db.before-restore-<time>.
    """
    from ashjobs.store import backup as bk

    data_dir = env.cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with _progress(f"restore ← {path.name}", as_json) as progress:
        aside = bk.restore(data_dir, path, progress)
    version, jobs = bk.describe(data_dir / bk.DB_NAME)
    if as_json:
        emit_json({"restored": str(path), "into": str(data_dir / bk.DB_NAME), "schema_version": version,
                   "jobs": jobs, "previous": str(aside) if aside else None})
    else:
        click.echo(f"restored {path} into {data_dir / bk.DB_NAME}: schema v{version}, {jobs} jobs")
        if aside:
            click.echo(f"the previous database is kept as {aside}")
        click.echo("start the daemon to use it (older schemas are migrated at start)")
