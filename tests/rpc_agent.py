"""An RPC side for multi-host tests, run inside a network namespace; reports JSON lines on stdout.

    python tests/rpc_agent.py serve PORT            serves "echo" and "hang" (never answers)
    python tests/rpc_agent.py call HOST PORT METHOD  connects, calls METHOD (timeout 60 s), reports the outcome

The secret is fixed: these agents only ever talk to each other inside a test's namespaces.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from ashjobs.cluster import rpc

SECRET = b"netns-test-secret-0123456789abcdef"


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def echo(peer: rpc.Peer, params: dict[str, Any]) -> Any:
    return params


async def hang(peer: rpc.Peer, params: dict[str, Any]) -> Any:
    await asyncio.Event().wait()


async def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        await rpc.serve("0.0.0.0", int(argv[1]), secret=SECRET, node="server", info={},
                        handlers={"echo": echo, "hang": hang}, idle_timeout=60)
        say("ready")
        await asyncio.Event().wait()
    host, port, method = argv[1], int(argv[2]), argv[3]
    peer = await rpc.connect(host, port, secret=SECRET, node="client", info={}, handlers={}, idle_timeout=60)
    say("connected")
    started = time.monotonic()
    call = asyncio.create_task(peer.call(method, {"x": 1}, timeout=60))
    await asyncio.sleep(0.2)  # the request is on the wire (and acknowledged) before the test cuts the link
    say("calling")
    try:
        say("result", value=await call)
    except Exception as e:
        say("error", type=type(e).__name__, message=str(e), after=round(time.monotonic() - started, 1))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
