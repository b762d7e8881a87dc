"""The HTTP/1.1 load generator in Python: closed loop (the fallback when ``wrk`` is not installed) and
open loop (``--rate``, for ``delivery.py``). It runs in its own process, on its own core when it can.

Closed loop: ``--connections`` kept-alive connections to 127.0.0.1, each sending ``GET <path>`` as soon as
the previous answer arrived, for ``--duration`` seconds or until ``--requests`` answers (whichever comes
first); prints one ``RESULT {json}`` line with the figures ``benchlib.run_wrk`` returns (requests, req/s,
latency percentiles, non-2xx answers, socket errors). Slower than ``wrk``, so it leaves less CPU to the
app on a 2-core machine.

Open loop (``--rate R``): request *i* starts at *t0 + i/R* whatever the earlier ones are doing, on up to
``--connections`` kept-alive connections; latency counts from each request's *scheduled* start (waiting
for a connection or for an overloaded app counts); ``--drain`` s at most for the last answers.

    .venv/bin/python benchmarks/pyload.py --port 8000 --duration 5 --connections 50
    .venv/bin/python benchmarks/pyload.py --port 8000 --duration 10 --rate 500 --connections 256
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

RESULT = benchlib.RESULT


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
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
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


# ------------------------------------------------------------------------------------------ open loop


class Connections:
    """Kept-alive HTTP/1.1 connections to the app, at most ``limit`` of them."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(limit)
        self.opened = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.slots.acquire()
        if self.idle:
            return self.idle.pop()
        try:
            connection = await asyncio.open_connection("127.0.0.1", self.port)
        except BaseException:
            self.slots.release()
            raise
        connection[1].get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return connection

    def put(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], reusable: bool) -> None:
        if reusable:
            self.idle.append(connection)
        else:
            connection[1].close()
        self.slots.release()


async def one_request(
    connections: Connections, request: bytes, scheduled: float, results: list[tuple[float, float]]
) -> None:
    loop = asyncio.get_running_loop()
    connection = await connections.get()
    reader, writer = connection
    reusable = False
    try:
        writer.write(request)
        head = await benchlib.read_http_answer(reader)
        if not head.startswith(b"HTTP/1.1 200 "):
            status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            raise RuntimeError(f"answered {status_line!r}")
        results.append((scheduled, loop.time()))
        reusable = True
    finally:
        connections.put(connection, reusable)


async def open_loop(
    port: int, path: str, rate: float, duration: float, limit: int, drain: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nuser-agent: pyload\r\n\r\n".encode()
    connections = Connections(port, limit)
    warm = [await connections.get() for _ in range(min(limit, 32))]
    for connection in warm:
        connections.put(connection, True)
    total = int(rate * duration)
    results: list[tuple[float, float]] = []
    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            tasks.append(loop.create_task(one_request(connections, request, start + sent / rate, results)))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
    scheduled_until = loop.time()
    done, pending = await asyncio.wait(tasks, timeout=drain) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    failures = Counter(type(task.exception()).__name__ for task in done if task.exception() is not None)
    latencies = sorted(finished - scheduled for scheduled, finished in results)
    last = max((finished for _, finished in results), default=start)
    return {
        "tool": "python-open-loop",
        "target_rate": rate,
        "duration_s": duration,
        "scheduled": total,
        "offered_rate": total / max(1e-9, scheduled_until - start),
        "answered": len(results),
        "failed": sum(failures.values()),
        "failure_kinds": dict(failures),
        "unanswered_after_drain": len(pending),
        "achieved_rate": len(results) / max(1e-9, last - start),
        "connections_opened": connections.opened,
        "latency_p50_ms": benchlib.percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": benchlib.percentile(latencies, 0.99) * 1000,
        "latency_max_ms": (latencies[-1] if latencies else math.nan) * 1000,
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--duration", type=float, required=True, help="seconds (the bound with --requests)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--drain", type=float, default=10.0, help="open loop: seconds for the last answers")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections <= 0 or (args.rate is not None and args.rate <= 0):
        parser.error("--duration, --connections and --rate must be above 0")
    if args.rate is not None:
        found = open_loop(args.port, args.path, args.rate, args.duration, args.connections, args.drain)
    else:
        found = generate(args.port, args.path, args.duration, args.connections, args.requests)
    result = asyncio.run(found)
    print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
