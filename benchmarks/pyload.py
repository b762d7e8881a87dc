"""A closed-loop HTTP/1.1 load generator in Python, the fallback when ``wrk`` is not installed.

``--connections`` kept-alive connections to 127.0.0.1, each sending ``GET <path>`` as soon as the previous
answer arrived, for ``--duration`` seconds or until ``--requests`` answers (whichever comes first). Prints
one ``RESULT {json}`` line with the figures ``benchlib.run_wrk`` returns (requests, req/s, latency
percentiles, non-2xx answers, socket errors). It runs in its own process, on its own core when it can:
slower than ``wrk``, so it leaves less CPU to the app on a 2-core machine.

    .venv/bin/python benchmarks/pyload.py --port 8000 --duration 5 --connections 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import time
from collections import Counter
from typing import Any, Optional

import benchlib

RESULT = "RESULT "


class Totals:
    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self.started = 0
        self.latencies: list[float] = []
        self.non_2xx = 0
        self.errors: Counter[str] = Counter()

    def take(self) -> bool:
        if self.limit is not None and self.started >= self.limit:
            return False
        self.started += 1
        return True


async def connection_loop(port: int, request: bytes, deadline: float, totals: Totals) -> None:
    clock = time.perf_counter
    writer: Optional[asyncio.StreamWriter] = None
    while clock() < deadline and totals.take():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = clock()
            writer.write(request)
            head = await asyncio.wait_for(
                benchlib.read_http_answer(reader), timeout=max(0.1, deadline + 10 - clock())
            )
            totals.latencies.append(clock() - started)
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                totals.non_2xx += 1
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as exc:
            totals.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def generate(
    port: int, path: str, duration: float, connections: int, limit: Optional[int]
) -> dict[str, Any]:
    request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nuser-agent: pyload\r\n\r\n".encode()
    totals = Totals(limit)
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(connection_loop(port, request, deadline, totals) for _ in range(connections)))
    seconds = time.perf_counter() - started
    ordered = sorted(totals.latencies)
    answered = len(ordered)
    return {
        "tool": "python",
        "requests": answered,
        "duration_s": seconds,
        "rps": answered / seconds if seconds else math.nan,
        "latency_p50_ms": benchlib.percentile(ordered, 0.50) * 1000,
        "latency_p90_ms": benchlib.percentile(ordered, 0.90) * 1000,
        "latency_p99_ms": benchlib.percentile(ordered, 0.99) * 1000,
        "latency_p999_ms": benchlib.percentile(ordered, 0.999) * 1000,
        "latency_mean_ms": (sum(ordered) / answered * 1000) if answered else math.nan,
        "latency_max_ms": (ordered[-1] * 1000) if ordered else math.nan,
        "non_2xx": totals.non_2xx,
        "socket_errors": sum(totals.errors.values()),
        "errors": dict(totals.errors),
        "output": [],
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--duration", type=float, required=True, help="seconds (the bound with --requests)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections <= 0:
        parser.error("--duration and --connections must be above 0")
    result = asyncio.run(generate(args.port, args.path, args.duration, args.connections, args.requests))
    print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
