"""A zeroconf side for discovery tests, run inside a network namespace; reports JSON lines on stdout.

    python tests/mdns_agent.py advertise '{"node": ..., "cluster": ...}' PORT [INTERFACE...]
    python tests/mdns_agent.py browse CLUSTER

Both print {"event": "ready"} once started. SIGTERM stops cleanly (an advertiser sends its goodbye) and
prints {"event": "closed"}. SIGUSR1 makes an advertiser re-announce with cap + 1 ("updated"). A browser
prints added / updated / removed / ignored events.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from ashjobs.cluster.discovery import Advertiser, Browser


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(argv: list[str]) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    side: Advertiser | Browser
    if argv[0] == "advertise":
        info = json.loads(argv[1])
        side = advertiser = Advertiser(info, int(argv[2]), interfaces=argv[3:])

        async def grow() -> None:
            info["cap"] += 1
            await advertiser.update(info)
            say("updated", cap=info["cap"])

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(grow()))
    else:
        side = Browser(lambda kind, info: say(kind, info=info), cluster=argv[1],
                       on_ignored=lambda reason, info: say("ignored", reason=reason, info=info))
    await side.start()
    say("ready")
    await stop.wait()
    await side.close()
    say("closed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
