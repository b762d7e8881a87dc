"""The one background queue (``otel_bridge._deliver.queue``) and its three users: the trace worker, the
socket sender and the proxy path's sending threads. Bounded, woken rather than polled, fork-aware, and
OpenTelemetry instrumentation suppressed on its threads."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import sentry_sdk
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_bridge._deliver.queue import BackgroundQueue
from otel_bridge._deliver.sender import SocketSender
from otel_bridge._deliver.trace_worker import HEAD_START_SECONDS, TraceWorker
from otel_bridge._drops import DropCounter
from otel_bridge.transport import ConcurrentWorker
from tests.receiver import EnvelopeReceiver
from tests.test_transport import client_for, request_count, sender_of

pytestmark = pytest.mark.timeout(60)


def eventually(done: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class Consumer:
    """A queue whose one thread records each item, and counts how often it came back from waiting."""

    def __init__(self, **limits: Any) -> None:
        self.rounds = 0
        self.seen: list[Any] = []
        self.queue: BackgroundQueue[Any] = BackgroundQueue(self.run, name="otel_bridge.test", **limits)

    def run(self) -> None:
        while True:
            item = self.queue.get()
            self.rounds += 1
            if item is None:
                return
            if callable(item):
                item()
            self.seen.append(item)
            # an item ("name", size) frees its bytes
            self.queue.done(item[1] if isinstance(item, tuple) else 0)


@pytest.fixture
def worker() -> Iterator[TraceWorker]:
    started = TraceWorker(10, DropCounter(), tick=None)
    yield started
    started.stop(timeout=2)


def test_a_full_queue_refuses_and_the_trace_worker_counts_the_drop(worker: TraceWorker) -> None:
    release = threading.Event()
    assert worker.submit(release.wait)
    assert eventually(worker._queue.empty), "the first job is taken and blocks the thread"
    accepted = [worker.submit(lambda: None) for _ in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    assert worker._drops.totals() == {("queue_overflow", "transaction"): 5}
    release.set()
    assert worker.flush(5)


def test_a_job_waits_for_its_request_to_finish_unless_it_waited_in_the_queue_already(
    worker: TraceWorker,
) -> None:
    started: list[float] = []
    queued = time.monotonic()
    worker.submit(lambda: started.append(time.monotonic()))
    assert worker.flush(5)
    assert started[0] - queued >= HEAD_START_SECONDS
    # a backlog is worked off without waiting again
    release = threading.Event()
    worker.submit(release.wait)
    for _ in range(5):
        worker.submit(lambda: started.append(time.monotonic()))
    time.sleep(HEAD_START_SECONDS * 2)
    release.set()
    assert worker.flush(5)
    backlog = started[1:]
    # each waiting again would take at least 4 head starts between the first and the last
    assert backlog[-1] - backlog[0] < HEAD_START_SECONDS * 4


def test_an_item_displaces_as_many_of_the_newest_displaceable_items_as_it_needs_room_for() -> None:
    consumer = Consumer(max_items=4, max_bytes=100)
    release = threading.Event()
    assert consumer.queue.put(release.wait)
    assert eventually(consumer.queue.empty)
    for item in (("tx-old", 30), ("error", 10), ("tx-1", 25), ("tx-2", 25)):
        assert consumer.queue.put(item, item[1])

    def displaceable(item: Any) -> bool:
        return isinstance(item, tuple) and item[0].startswith("tx")

    def size_of(item: Any) -> int:
        return int(item[1])

    # 90 bytes queued: 40 more need the two newest transactions out, not the error nor the oldest
    queued, displaced = consumer.queue.put_displacing(("big error", 40), 40, displaceable, size_of)
    assert queued and displaced == [("tx-2", 25), ("tx-1", 25)]
    assert consumer.queue.queued_bytes == 80
    # nothing displaceable is left that would make room
    assert consumer.queue.put_displacing(("huge", 90), 90, displaceable, size_of) == (False, [])
    release.set()
    assert consumer.queue.wait_until_idle(5)
    assert consumer.seen[1:] == [("tx-old", 30), ("error", 10), ("big error", 40)]
    assert consumer.queue.queued_bytes == 0
    consumer.queue.close()


def test_the_queue_is_bounded_in_bytes_and_items_taken_back_count_against_it() -> None:
    consumer = Consumer(max_items=3, max_bytes=100)
    blocked = threading.Event()
    assert consumer.queue.put(blocked.wait)
    assert eventually(consumer.queue.empty)
    assert consumer.queue.put(("a", 60), size=60)
    assert not consumer.queue.put(("b", 60), size=60), "over the byte bound"
    assert consumer.queue.put(("c", 40), size=40)
    assert consumer.queue.queued_bytes == 100
    consumer.queue.parked = 1  # an item taken and waiting to be tried again
    assert consumer.queue.full()
    assert not consumer.queue.put(("d", 0))
    consumer.queue.parked = 0
    blocked.set()
    assert consumer.queue.wait_until_idle(5)
    assert consumer.queue.queued_bytes == 0
    assert consumer.seen[1:] == [("a", 60), ("c", 40)]
    consumer.queue.close()


def test_a_waiting_consumer_is_woken_by_a_put_and_not_before() -> None:
    consumer = Consumer(max_items=10)
    consumer.queue.ensure_consumer()
    time.sleep(0.5)
    assert consumer.rounds == 0, "a consumer with nothing to do does not look again by itself"
    put_at = time.monotonic()
    consumer.queue.put("hello")
    assert eventually(lambda: consumer.seen == ["hello"], timeout=1)
    assert time.monotonic() - put_at < 0.5
    assert consumer.rounds == 1
    consumer.queue.close()
    [thread] = consumer.queue.threads
    thread.join(timeout=2)
    assert not thread.is_alive() and consumer.rounds == 2


def test_the_sender_neither_spins_nor_waits_while_a_post_is_in_flight(
    receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = {"count": 0}
    real_run_once = SocketSender._run_once

    def counted(self: SocketSender) -> bool:
        rounds["count"] += 1
        return bool(real_run_once(self))

    monkeypatch.setattr(SocketSender, "_run_once", counted)
    receiver.respond_with(delay=3.0)
    with client_for(receiver) as client:
        sentry_sdk.capture_message("slow answer")
        assert receiver.wait_for(lambda r: request_count(r) >= 1, timeout=5)
        time.sleep(0.2)
        before = rounds["count"]
        time.sleep(1.0)
        assert rounds["count"] - before <= 1, "the sender woke with nothing to do"

        # a connection is free: a new envelope is written at once, not at the next look
        receiver.respond_with()
        submitted = time.monotonic()
        sentry_sdk.capture_message("goes out at once")
        assert receiver.wait_for(lambda r: request_count(r) >= 2, timeout=2)
        assert time.monotonic() - submitted < 1.0
        client.flush(timeout=5)
        assert sender_of(client).pending() == 0


def instrumentation_seen_by(submit: Callable[[Callable[[], None]], bool]) -> bool:
    seen: list[bool] = []
    ran = threading.Event()

    def job() -> None:
        seen.append(is_instrumentation_enabled())
        ran.set()

    assert submit(job)
    assert ran.wait(5)
    return seen[0]


def test_instrumentation_is_suppressed_on_every_background_thread(
    worker: TraceWorker, receiver: EnvelopeReceiver
) -> None:
    assert is_instrumentation_enabled(), "the test's own thread is instrumented"
    assert instrumentation_seen_by(worker.submit) is False
    pool = ConcurrentWorker(10, max_threads=2)
    try:
        assert instrumentation_seen_by(pool.submit) is False
    finally:
        pool.kill()
    with client_for(receiver) as client:
        assert instrumentation_seen_by(sender_of(client).submit) is False


def test_a_forked_child_gets_a_fresh_working_queue_for_each_user(
    worker: TraceWorker, receiver: EnvelopeReceiver
) -> None:
    pool = ConcurrentWorker(10, max_threads=2)
    consumer = Consumer(max_items=10)
    release = threading.Event()
    try:
        with client_for(receiver) as client:
            sender = sender_of(client)
            # at the fork, each queue holds work of the parent's
            for submit in (worker.submit, pool.submit, sender.submit, consumer.queue.put):
                assert submit(release.wait)
            for submit in (worker.submit, pool.submit, sender.submit, consumer.queue.put):
                assert submit(lambda: None)
            assert all(len(user.threads) >= 1 for user in (worker._queue, pool, sender, consumer.queue))

            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child_uses_fresh_queues(worker, pool, sender, consumer)
                    if code == 0:
                        sentry_sdk.capture_message("from the child")
                        client.flush(timeout=5)
                        code = 0 if sender.pending() == 0 else 7
                finally:
                    os._exit(code)

            status = _wait_for_child(pid)
            assert status == 0, f"child check {status} failed"
            release.set()
            assert worker.flush(5)
            assert pool.wait_until_idle(5) and consumer.queue.wait_until_idle(5)
            sentry_sdk.capture_message("parent after fork")
            client.flush(timeout=5)
            assert sender.pending() == 0
        assert sorted(event["message"] for event in receiver.events()) == [
            "from the child",
            "parent after fork",
        ]
    finally:
        release.set()
        pool.kill()
        consumer.queue.close()


def _child_uses_fresh_queues(
    worker: TraceWorker, pool: ConcurrentWorker, sender: SocketSender, consumer: Consumer
) -> int:
    queues = (worker._queue, pool._queue, sender._queue, consumer.queue)
    if any(queue.threads or queue.pending() or not queue.empty() for queue in queues):
        return 2
    ran: list[str] = []
    if not (worker.submit(lambda: ran.append("worker")) and worker.flush(5)):
        return 3
    if not (pool.submit(lambda: ran.append("pool")) and pool.wait_until_idle(5)):
        return 4
    if not (sender.submit(lambda: ran.append("sender")) and sender.wait_until_idle(5)):
        return 5
    if not (consumer.queue.put(lambda: ran.append("consumer")) and consumer.queue.wait_until_idle(5)):
        return 6
    return 0 if sorted(ran) == ["consumer", "pool", "sender", "worker"] else 8


def _wait_for_child(pid: int) -> int:
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        time.sleep(0.02)


def test_the_fork_registry_does_not_keep_a_queue_alive() -> None:
    consumer = Consumer(max_items=1)
    queue = weakref.ref(consumer.queue)
    del consumer
    gc.collect()
    assert queue() is None
