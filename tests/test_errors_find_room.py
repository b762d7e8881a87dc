"""Error events are held to the send queue's bytes only, not its size, and with the bytes used up one takes
the place of the newest queued transactions: under a burst the errors go out, and what is lost (counted in
client reports) is transactions."""

from __future__ import annotations

import sentry_sdk

from otel_bridge.transport import ConcurrentHttpTransport
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_transport import client_for, discarded, request_count, sender_of, transaction


def test_error_events_are_not_held_to_the_queue_size_transactions_are(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(delay=3.0)
    one_at_a_time = ConcurrentHttpTransport.with_max_connections(1)
    with client_for(receiver, transport=one_at_a_time, transport_queue_size=3) as client:
        sentry_sdk.capture_event(transaction("in flight"))
        assert receiver.wait_for(lambda r: request_count(r) >= 1, timeout=5)
        for name in ("queued 1", "queued 2", "queued 3", "refused"):
            sentry_sdk.capture_event(transaction(name))
        for number in range(3):
            sentry_sdk.capture_message(f"failure {number}", level="error")
        receiver.respond_with()
        client.flush(timeout=10)
    assert sorted(e["message"] for e in receiver.events()) == ["failure 0", "failure 1", "failure 2"]
    assert_relay_valid(receiver.events()[0])
    assert sorted(t["transaction"] for t in receiver.transactions()) == [
        "in flight",
        "queued 1",
        "queued 2",
        "queued 3",
    ]
    assert discarded(receiver)[("queue_overflow", "transaction")] == 1
    assert discarded(receiver)[("queue_overflow", "error")] == 0


def kilobytes(count: int) -> dict[str, list[str]]:
    """A databag of about ``count`` KB that sentry-sdk keeps whole (nothing over its limits)."""
    return {f"part {number}": ["x" * 100] * 10 for number in range(count)}


def test_with_its_bytes_used_up_an_error_takes_the_place_of_the_newest_transactions(
    receiver: EnvelopeReceiver,
) -> None:
    receiver.respond_with(delay=3.0)
    # room for about a dozen transactions of 5 KB
    small = ConcurrentHttpTransport.with_max_connections(1).with_max_queue_bytes(60_000)
    with client_for(receiver, transport=small, transport_queue_size=100) as client:
        sender = sender_of(client)
        sentry_sdk.capture_event(transaction("in flight"))
        assert receiver.wait_for(lambda r: request_count(r) >= 1, timeout=5)
        names = [f"queued {number}" for number in range(20)]
        for name in names:
            sentry_sdk.capture_event({**transaction(name), "extra": kilobytes(5)})
        # the bytes are used up: the first of them are queued, the others refused
        queued = sender.pending() - 1
        assert 0 < queued < len(names)
        # larger than what the transactions left free
        sentry_sdk.capture_event({"message": "the checkout failed", "level": "error", "extra": kilobytes(10)})
        displaced = queued + 1 - (sender.pending() - 1)
        assert displaced >= 1
        receiver.respond_with()
        client.flush(timeout=10)
    [error] = receiver.events()
    assert error["message"] == "the checkout failed"
    delivered = sorted(t["transaction"] for t in receiver.transactions())
    # the transactions that made way are the newest that were queued
    assert delivered == sorted(["in flight", *names[: queued - displaced]])
    assert discarded(receiver)[("queue_overflow", "transaction")] == len(names) - (queued - displaced)
    assert discarded(receiver)[("queue_overflow", "error")] == 0
