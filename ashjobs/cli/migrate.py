"""`ashjobs migrate`: turn a custom scheduler's schedules into `[[cron]]` entries, proving each one fires at
the same times as before."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ashjobs.cli.common import console, emit_json, json_option

if TYPE_CHECKING:
    from ashjobs.migrate import Report

PROGRESS_FROM = 20  # show a progress bar when proving this many entries or more


@click.command()
@click.argument("source", metavar="SOURCE")
@click.option("--format", "fmt", required=True, type=click.Choice(["schedules-table", "crontab", "systemd"]),
              help="schedules-table: CSV or SQLite (job_key, cron, timezone, enabled, unique_period_seconds, "
                   "[queue, max_attempts, args, task]); crontab: a crontab file; systemd: a .timer file or a "
                   "directory of .timer/.service units.")
@click.option("--write", "write_path", metavar="PATH", type=click.Path(dir_okay=False),
              help="Write the [[cron]] entries as TOML to PATH (atomically; refused unless every entry is "
                   "proven equivalent).")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.option("--force", is_flag=True, help="Replace PATH even if it was not written by `ashjobs migrate`.")
@click.option("--timezone", "zone", default="UTC", show_default=True, metavar="ZONE",
              help="The zone the old scheduler ran in, for crontab lines before any CRON_TZ= and timers "
                   "without a zone.")
@click.option("--system-crontab/--user-crontab", "user_field", default=None,
              help="crontab lines have a user field after the schedule (default: only for /etc/crontab and "
                   "/etc/cron.d/*).")
@click.option("--compare", default=1000, show_default=True, type=click.IntRange(1, 100_000), metavar="N",
              help="Fire times compared per entry.")
@click.option("--from", "start_text", metavar="ISO8601", help="Compare fire times after this instant (default: now).")
@json_option
def migrate(source: str, fmt: str, write_path: str | None, dry_run: bool, force: bool, zone: str,
            user_field: bool | None, compare: int, start_text: str | None, as_json: bool) -> None:
    """Migrate schedules from a custom scheduler, crontab or systemd timers to [[cron]] entries.

    Every entry is proven: its next N fire times (default 1,000) in the old time zone equal the old
    schedule's, computed independently. Lines that cannot be translated are listed with the reason.
    Exit 0 when every entry is equivalent, 1 when one is not (nothing is written), 2 for a bad source.
    The written file holds only [[cron]] tables: copy them into your ashjobs.toml.

    \b
    Examples:
      ashjobs migrate schedules.csv --format schedules-table
      crontab -l > old.crontab
      ashjobs migrate old.crontab --format crontab --timezone Europe/Berlin --write cron.toml
      ashjobs migrate /etc/systemd/system --format systemd --json
    """
    from ashjobs import cron
    from ashjobs import migrate as mig
    from ashjobs.clock import SYSTEM, parse_iso
    from ashjobs.errors import AshError, UsageError

    if cron.zone_problem(zone):
        raise UsageError(f"--timezone: {cron.zone_problem(zone)}")
    try:
        start = parse_iso(start_text) if start_text else SYSTEM.now()
    except ValueError:
        raise UsageError(f"--from: not an ISO 8601 time: {start_text!r}") from None
    if write_path and not force and _foreign(Path(write_path)):
        raise UsageError(f"--write {write_path}: the file exists and was not written by `ashjobs migrate` (is it "
                         "your config?); choose another path, or --force")
    report = mig.load(source, fmt, timezone=zone, user_field=user_field)
    _prove(report, start, compare, show_progress=len(report.entries) >= PROGRESS_FROM)
    toml_text = None
    if write_path:
        toml_text = mig.to_toml(report, f"{HEADER} {Path(source).name} --format {fmt}\n"
                                        f"{len(report.entries)} entries, {len(report.skipped)} skipped; every entry "
                                        f"proven over {compare} fire times")
    if as_json:
        emit_json(report.to_dict())
    else:
        _render(report)
    bad = [m.entry.name for m in report.entries if not m.equivalent]
    if bad:
        what = f"not written to {write_path}: " if write_path else ""
        raise AshError(f"{what}{len(bad)} entr{'y' if len(bad) == 1 else 'ies'} not equivalent: {', '.join(bad)}")
    if write_path and toml_text is not None:
        _check_toml(toml_text)
        if dry_run:
            click.echo(f"dry run: would write {len(report.entries)} entries to {write_path}", err=True)
        else:
            _write_atomic(Path(write_path), toml_text)
            click.echo(f"wrote {len(report.entries)} entries to {write_path}", err=True)


HEADER = "ashjobs migrate"


def _foreign(path: Path) -> bool:
    """An existing file we did not write (a config we must not clobber)."""
    try:
        with path.open() as f:
            return not f.readline().startswith(f"# {HEADER} ")
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError):
        return True


def _prove(report: Report, start: float, n: int, *, show_progress: bool) -> None:
    from ashjobs import migrate as mig

    if not show_progress:
        mig.verify(report, start, n)
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task("proving fire times", total=len(report.entries))
        mig.verify(report, start, n, progress=lambda m: progress.advance(bar))


def _check_toml(text: str) -> None:
    """What we write must load as config (a bug here must not leave a file the daemon refuses)."""
    import tomllib

    from ashjobs import config

    config.from_dict(tomllib.loads(text), where="<migrated TOML>")


def _write_atomic(path: Path, text: str) -> None:
    from ashjobs.errors import AshError

    directory = path.resolve().parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise AshError(f"{path}: cannot write: {e.strerror}") from None
    try:
        # mkstemp makes it 0600: give it the mode of the file it replaces, else 0644 (less the umask), so the
        # daemon's own user can read what root wrote.
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o644 & ~umask
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _render(report: Report) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"{len(report.entries)} entries", title_justify="left")
    for col in ("name", "schedule", "timezone", "task", "equivalent", "from"):
        table.add_column(col, overflow="fold")
    for m in report.entries:
        ok = "[green]yes[/]" if m.equivalent else f"[red]NO[/] ({m.mismatch})"
        sched = m.entry.schedule + (f"  (was {m.old_schedule})" if m.old_schedule != m.entry.schedule else "")
        table.add_row(m.entry.name, sched, m.entry.timezone, m.entry.task, ok, m.source)
    out.print(table)
    if report.skipped:
        skipped = Table(title=f"{len(report.skipped)} skipped", title_justify="left")
        skipped.add_column("line", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for s in report.skipped:
            skipped.add_row(s.line, s.reason)
        out.print(skipped)
    sys.stdout.flush()
