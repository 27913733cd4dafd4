"""Built-in tasks: noop, sleep, command."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ashjobs.config import parse_duration
from ashjobs.tasks import task

STDERR_TAIL = 2000


@task("noop")
async def noop(**_: Any) -> None:
    return None


@task("sleep")
async def sleep(seconds: float = 1.0) -> None:
    await asyncio.sleep(float(seconds))


@task("command")
async def command(argv: list[str], timeout: str | float | None = None, env: dict[str, str] | None = None,
                  stdin: str | None = None) -> str:
    """Run argv without a shell. Non-zero exit is a failure whose error is the tail of stderr."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("command: 'argv' must be a non-empty list of strings")
    limit = parse_duration(timeout) if isinstance(timeout, str) else timeout
    full_env = {**os.environ, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=full_env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        async with asyncio.timeout(limit):  # not wait_for: on 3.11 it can swallow a racing cancel
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        raise TimeoutError(f"command timed out after {limit}s: {argv[0]}") from None
    except asyncio.CancelledError:  # the job was cancelled or timed out: the child must not outlive it
        _kill(proc)
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-STDERR_TAIL:].strip()
        raise RuntimeError(f"exit {proc.returncode}: {tail}" if tail else f"exit {proc.returncode}")
    return out.decode(errors="replace")[-STDERR_TAIL:]


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, 9)  # the whole process group: a shell script's children go too
    except ProcessLookupError:
        pass
