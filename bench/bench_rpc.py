"""RPC round trips per second on loopback: small calls, sequential and 64 concurrent, one connection.

    PYTHONPATH=. python bench/bench_rpc.py [--seconds 3]

Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from ashjobs.cluster import rpc

SECRET = b"bench-secret-0123456789abcdef0123"


async def echo(peer: rpc.Peer, params: dict[str, Any]) -> Any:
    return params


async def measure(peer: rpc.Peer, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    params = {"job": 12345, "task": "noop", "token": 7, "partition": "P1"}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await peer.call("echo", params, timeout=10)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - start), sorted(latencies)


async def handshakes(port: int, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        peer = await rpc.connect("127.0.0.1", port, secret=SECRET, node="bench-client", info={}, handlers={})
        await peer.close()
    return n / (time.perf_counter() - start)


async def main(seconds: float) -> dict[str, Any]:
    server = await rpc.serve("127.0.0.1", 0, secret=SECRET, node="bench-server", info={}, handlers={"echo": echo})
    peer = await rpc.connect("127.0.0.1", server.port, secret=SECRET, node="bench-client", info={}, handlers={})
    out: dict[str, Any] = {"bench": "rpc_loopback"}
    for conc in (1, 64):
        await measure(peer, conc, 0.3)  # warm up
        rate, lat = await measure(peer, conc, seconds)
        p50, p99 = lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6
        print(f"concurrency {conc:>3}: {rate:>9,.0f} calls/s   p50 {p50:>7.0f} us   p99 {p99:>7.0f} us")
        out[f"calls_per_s_c{conc}"] = round(rate)
        out[f"p50_us_c{conc}"] = round(p50)
        out[f"p99_us_c{conc}"] = round(p99)
    await peer.close()
    hs = await handshakes(server.port, 200)
    print(f"connect + authenticate + close: {hs:,.0f} /s")
    out["handshakes_per_s"] = round(hs)
    await server.close()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    result = asyncio.run(main(ap.parse_args().seconds))
    print(json.dumps(result))
