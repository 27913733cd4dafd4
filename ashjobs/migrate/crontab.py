"""crontab → cron entries running the `command` task.

Understood: comments and blank lines; environment lines (`NAME=value`, applying to the lines after them, as
cron does); `CRON_TZ=zone` (the schedule's zone for the lines after it); 5-field schedules and @nicknames;
`%` in the command (the first unescaped `%` starts the job's stdin, later ones are newlines); the user field
of system crontabs (/etc/crontab, /etc/cron.d/*, or `user_field=True`). A command that
needs a shell (pipes, redirections, variables, globs, `&&`...) runs as [$SHELL or /bin/sh, "-c", command];
others are split like a shell would (shlex) and run without one. Anything else is listed as skipped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ashjobs import cron
from ashjobs.cron import CronEntry
from ashjobs.errors import UsageError
from ashjobs.migrate import Migrated, Report, Skipped, unique_names

_ENV = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_SHELL_CHARS = set("|&;<>()$`\\*?[]{}~!#\n")
_NAME = re.compile(r"[^a-z0-9_-]+")


def needs_shell(command: str) -> bool:
    try:
        words = shlex.split(command)
    except ValueError:
        return True
    if not words or "=" in words[0]:
        return True
    # Quotes are fine for shlex; anything a shell would interpret is not.
    return any(c in _SHELL_CHARS for c in command)


def split_percent(command: str) -> tuple[str, str | None]:
    """cron's `%`: the first unescaped one ends the command, the rest is stdin with `%` → newline."""
    parts, buf, i = [], "", 0
    while i < len(command):
        ch = command[i]
        if ch == "\\" and i + 1 < len(command) and command[i + 1] == "%":
            buf += "%"
            i += 2
            continue
        if ch == "%":
            parts.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    parts.append(buf)
    if len(parts) == 1:
        return parts[0], None
    return parts[0], "\n".join(parts[1:]) + "\n"


def job_name(argv: list[str]) -> str:
    words = argv[2].split() if argv[:2] == [argv[0], "-c"] and len(argv) == 3 else argv
    prog = Path(words[0]).name if words else "command"
    return _NAME.sub("-", prog.lower()).strip("-") or "command"


def is_system_crontab(source: str) -> bool:
    """/etc/crontab and /etc/cron.d/* have a user field between the schedule and the command."""
    path = str(Path(source).resolve())
    return path == "/etc/crontab" or path.startswith("/etc/cron.d/")


def parse_crontab(source: str, *, timezone: str = "UTC", user_field: bool | None = None) -> Report:
    if user_field is None:
        user_field = is_system_crontab(source)
    try:
        text = Path(source).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{source}: cannot read crontab: {getattr(e, 'strerror', None) or e}") from None
    report = Report()
    zone, env, shell = timezone, {}, "/bin/sh"
    label = Path(source).name
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{label}:{lineno}: {line}"
        if not line or line.startswith("#"):
            continue
        m = _ENV.match(line)
        if m:
            key, value = m.group(1), m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            if key == "CRON_TZ":
                problem = cron.zone_problem(value)
                if problem:
                    report.skipped.append(Skipped(where, f"CRON_TZ: {problem}; the lines after it keep {zone}"))
                else:
                    zone = value
            elif key == "SHELL":
                shell = value
            elif key != "MAILTO":
                env[key] = value
            continue
        if line.startswith("@"):
            nick, _, command = line.partition(" ")
            schedule, command = nick, command.strip()
        else:
            fields = line.split(None, 5)
            if len(fields) < 6:
                report.skipped.append(Skipped(where, "expected 5 schedule fields and a command"))
                continue
            schedule, command = " ".join(fields[:5]), fields[5]
        problem = cron.schedule_problem(schedule)
        if problem:
            report.skipped.append(Skipped(where, problem))
            continue
        notes = []
        if user_field:
            user, _, command = command.partition(" ")
            command = command.strip()
            notes.append(f"ran as user {user!r} under cron; ashjobs runs it as its own user")
        if not command:
            report.skipped.append(Skipped(where, "no command"))
            continue
        command, stdin = split_percent(command)
        argv = [shell, "-c", command] if needs_shell(command) else shlex.split(command)
        args: dict[str, object] = {"argv": argv}
        if env:
            args["env"] = dict(env)
        if stdin is not None:
            args["stdin"] = stdin
        entry = CronEntry(name=job_name(argv), task="command", schedule=schedule, timezone=zone, args=args)
        if argv[:2] == [shell, "-c"]:
            notes.append("runs through a shell")
        report.entries.append(Migrated(entry, where, schedule, "cron", notes))
    unique_names(report)
    return report
