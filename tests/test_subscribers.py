"""Subscriber queues (vectorshift_sync._subscribers): overflow that really delivers, ends.

No sleeps: cross-thread tests hand over with threading.Event and a condition that
announces when the consumer is really waiting; every wait has a deadline.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, List, Optional, Set

import pytest
from conftest import scaled

from vectorshift_sync import _subscribers
from vectorshift_sync._protocol import OVERFLOW_ERROR
from vectorshift_sync._subscribers import SLICE, Ended, SubscriberQueue
from vectorshift_sync.events import SessionEvent, SessionEventType

T = SessionEventType
NOW = 0.0  # a deadline that has always passed: take() must not wait


def delta(index: int, session_id: str = "s") -> SessionEvent:
    return SessionEvent(T.MESSAGE_DELTA, session_id, "m", {"delta": str(index), "index": index})


def event(event_type: SessionEventType, tag: str = "") -> SessionEvent:
    return SessionEvent(event_type, "s", None, {"tag": tag})


def take_now(q: SubscriberQueue) -> SessionEvent:
    return q.take(NOW)


def take_all(q: SubscriberQueue) -> List[SessionEvent]:
    taken: List[SessionEvent] = []
    while True:
        try:
            taken.append(q.take(NOW))
        except queue.Empty:
            return taken


def overflow(count: int, types: Any, first: str, session_id: str = "s") -> SessionEvent:
    return SessionEvent(
        T.ERROR,
        session_id,
        None,
        {
            "error": OVERFLOW_ERROR,
            "dropped_count": count,
            "dropped_event_types": types,
            "dropped_event_type": first,
        },
    )


# --- bounded overflow (issue 3, point 1; D7) --------------------------------------------


def test_overflow_delivers_exactly_one_error_before_later_events() -> None:
    q = SubscriberQueue(2)
    accepted = [q.offer(delta(i)) for i in range(10)]
    assert accepted == [True, True] + [False] * 8
    assert q.overflows == 1

    assert take_now(q) == delta(0)
    assert take_now(q) == delta(1)
    assert q.offer(delta(10)) is True  # room again, queued behind the marker

    error = take_now(q)
    assert error == overflow(8, {"message_delta": 8}, "message_delta")
    assert error.error == OVERFLOW_ERROR
    assert take_all(q) == [delta(10)]  # and no second ERROR


def test_overflow_error_is_not_lost_while_the_queue_stays_full() -> None:
    # The official SDK pushes its overflow ERROR into the same full queue (D7).
    q = SubscriberQueue(1)
    assert q.offer(delta(0)) is True
    assert q.offer(delta(1)) is False
    assert q.qsize() == 2  # the marker takes one slot beyond the bound
    assert take_now(q) == delta(0)
    # Still full (the marker counts): later drops join the same marker.
    assert q.offer(event(T.PONG)) is False
    assert q.offer(delta(2)) is False
    assert q.overflows == 1
    assert take_now(q) == overflow(3, {"message_delta": 2, "pong": 1}, "message_delta")
    assert q.offer(delta(3)) is True
    assert take_all(q) == [delta(3)]


def test_overflow_counts_every_dropped_type() -> None:
    q = SubscriberQueue(1)
    q.offer(event(T.PONG))
    for event_type in (T.MESSAGE_DELTA, T.MESSAGE_DELTA, T.TOOL_CALL, T.MESSAGE_COMPLETE, T.PONG):
        assert q.offer(event(event_type)) is False
    assert take_all(q) == [
        event(T.PONG),
        overflow(
            5,
            {"message_delta": 2, "tool_call": 1, "message_complete": 1, "pong": 1},
            "message_delta",
        ),
    ]


def test_overflow_error_carries_the_session_id_of_the_dropped_event() -> None:
    q = SubscriberQueue(1)
    q.offer(delta(0, "sess_A"))
    q.offer(delta(1, "sess_A"))
    assert take_all(q)[-1].session_id == "sess_A"


def test_a_second_loss_after_catching_up_gets_its_own_error() -> None:
    q = SubscriberQueue(2)
    for i in range(4):
        q.offer(delta(i))
    assert take_all(q) == [delta(0), delta(1), overflow(2, {"message_delta": 2}, "message_delta")]
    for i in range(4, 9):
        q.offer(delta(i))
    assert take_all(q) == [delta(4), delta(5), overflow(3, {"message_delta": 3}, "message_delta")]
    assert q.overflows == 2


def test_every_loss_is_reported_before_the_events_that_follow_it() -> None:
    q = SubscriberQueue(2)
    q.offer(delta(0))
    q.offer(delta(1))
    q.offer(delta(2))  # dropped -> marker 1
    assert take_now(q) == delta(0)
    assert take_now(q) == delta(1)
    q.offer(delta(3))  # queued after marker 1: [m1, d3]
    q.offer(delta(4))  # dropped: last item is d3, so a new marker 2 follows it
    assert take_all(q) == [
        overflow(1, {"message_delta": 1}, "message_delta"),
        delta(3),
        overflow(1, {"message_delta": 1}, "message_delta"),
    ]
    assert q.overflows == 2


def test_overflow_error_reports_a_snapshot() -> None:
    q = SubscriberQueue(1)
    q.offer(delta(0))
    q.offer(delta(1))
    take_now(q)
    first = take_now(q)
    q.offer(delta(2))
    q.offer(delta(3))  # a new marker; the delivered error must not change
    assert first.data["dropped_count"] == 1
    assert first.data["dropped_event_types"] == {"message_delta": 1}


@pytest.mark.parametrize("maxsize", [0, -1])
def test_unbounded_queue_loses_nothing_in_a_20000_event_flood(maxsize: int) -> None:
    q = SubscriberQueue(maxsize)
    assert q.limit == 0
    assert all(q.offer(delta(i)) for i in range(20_000))
    assert q.qsize() == 20_000
    indexes = [take_now(q).data["index"] for _ in range(20_000)]
    assert indexes == list(range(20_000))
    assert q.overflows == 0
    with pytest.raises(queue.Empty):
        take_now(q)


def test_unbounded_flood_from_another_thread_arrives_complete_and_in_order() -> None:
    q = SubscriberQueue(0)
    total = 20_000

    def produce() -> None:
        for i in range(total):
            q.offer(delta(i))
        q.close()

    producer = threading.Thread(target=produce, name="test-producer", daemon=True)
    producer.start()
    deadline = time.monotonic() + scaled(10)
    received: List[int] = []
    with pytest.raises(Ended):
        while True:
            received.append(q.take(deadline).data["index"])
    producer.join(scaled(5))
    assert not producer.is_alive()
    assert received == list(range(total))


# --- filter, force ------------------------------------------------------------------------


def test_filter_happens_at_offer_and_filtered_events_take_no_space() -> None:
    q = SubscriberQueue(1, event_types=[T.MESSAGE_COMPLETE])
    assert q.types == frozenset({T.MESSAGE_COMPLETE})
    for i in range(100):
        assert q.offer(delta(i)) is True  # not wanted: "accepted" and discarded
    assert q.qsize() == 0
    assert q.offer(event(T.MESSAGE_COMPLETE, "done")) is True
    assert q.overflows == 0
    assert take_all(q) == [event(T.MESSAGE_COMPLETE, "done")]


def test_filter_accepts_plain_strings() -> None:
    q = SubscriberQueue(0, event_types=["pong"])  # type: ignore[list-item]
    q.offer(event(T.PONG))
    q.offer(event(T.ERROR))
    assert take_all(q) == [event(T.PONG)]


@pytest.mark.parametrize("event_types", [None, [], ()])
def test_no_or_empty_filter_keeps_everything(event_types: Any) -> None:
    q = SubscriberQueue(0, event_types=event_types)
    assert q.types is None
    for event_type in SessionEventType:
        q.offer(event(event_type))
    assert [e.type for e in take_all(q)] == list(SessionEventType)


def test_force_bypasses_filter_and_bound() -> None:
    q = SubscriberQueue(1, event_types=[T.MESSAGE_DELTA])
    assert q.offer(delta(0)) is True
    lost = SessionEvent(T.ERROR, "s", None, {"error": "connection lost"})
    assert q.offer(lost, force=True) is True
    assert q.offer(event(T.PONG, "forced"), force=True) is True
    assert q.qsize() == 3
    assert q.overflows == 0
    assert take_all(q) == [delta(0), lost, event(T.PONG, "forced")]


def test_a_drop_after_a_forced_event_gets_a_marker_after_it() -> None:
    q = SubscriberQueue(1)
    q.offer(delta(0))
    q.offer(event(T.ERROR, "forced"), force=True)
    assert q.offer(delta(1)) is False
    assert take_all(q) == [
        delta(0),
        event(T.ERROR, "forced"),
        overflow(1, {"message_delta": 1}, "message_delta"),
    ]


# --- close, Ended, deadlines ---------------------------------------------------------------


def test_close_without_error_ends_after_queued_events() -> None:
    q = SubscriberQueue(0)
    q.offer(delta(0))
    q.close()
    assert q.closed is True
    assert take_now(q) == delta(0)
    for _ in range(3):  # the end is sticky
        with pytest.raises(Ended) as info:
            take_now(q)
        assert info.value.error is None


def test_close_error_is_delivered_once_then_ended() -> None:
    q = SubscriberQueue(0)
    q.offer(delta(0))
    lost = SessionEvent(T.ERROR, "s", None, {"error": "connection lost", "reason": "EOF"})
    q.close(lost)
    assert take_now(q) == delta(0)
    with pytest.raises(Ended) as info:
        take_now(q)
    assert info.value.error is lost
    for _ in range(3):
        with pytest.raises(Ended) as info:
            take_now(q)
        assert info.value.error is None


def test_ended_is_reported_by_take_now_too() -> None:
    q = SubscriberQueue(0)
    lost = SessionEvent(T.ERROR, "s", None, {"error": "connection lost"})
    q.close(lost)
    with pytest.raises(Ended) as info:
        q.take_now()
    assert info.value.error is lost
    with pytest.raises(Ended) as info:
        q.take_now()
    assert info.value.error is None


def test_close_is_idempotent_and_the_first_error_wins() -> None:
    q = SubscriberQueue(0)
    q.close()
    q.close(SessionEvent(T.ERROR, "s", None, {"error": "late"}))
    assert q.qsize() == 1  # one end marker
    with pytest.raises(Ended) as info:
        take_now(q)
    assert info.value.error is None


def test_close_on_a_full_queue_still_ends_it() -> None:
    q = SubscriberQueue(1)
    q.offer(delta(0))
    q.offer(delta(1))  # dropped
    q.close()
    assert take_now(q) == delta(0)
    assert take_now(q).error == OVERFLOW_ERROR
    with pytest.raises(Ended):
        take_now(q)


def test_offer_after_close_is_refused_even_forced() -> None:
    q = SubscriberQueue(0)
    q.close()
    assert q.offer(delta(0)) is False
    assert q.offer(delta(1), force=True) is False
    assert q.qsize() == 1


def test_passed_deadline_on_an_empty_queue_raises_empty_at_once() -> None:
    q = SubscriberQueue(0)
    with pytest.raises(queue.Empty):
        q.take(NOW)
    with pytest.raises(queue.Empty):
        q.take(time.monotonic() - 10)


def test_passed_deadline_still_returns_what_is_queued() -> None:
    q = SubscriberQueue(0)
    q.offer(delta(0))
    assert q.take(NOW) == delta(0)


def test_future_deadline_expires_with_empty() -> None:
    q = SubscriberQueue(0)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.take(start + 0.02)
    assert time.monotonic() - start >= 0.02


def test_empty_is_raised_not_a_library_error() -> None:
    # The listener turns queue.Empty into SessionTimeoutError; nothing else may escape.
    q = SubscriberQueue(0)
    with pytest.raises(queue.Empty) as info:
        q.take(NOW)
    assert type(info.value) is queue.Empty


# --- waking a consumer blocked in another thread --------------------------------------------


class _AnnouncingCondition(threading.Condition):
    """A Condition that says when a consumer starts waiting, while it still holds the lock.

    Whoever then calls close()/offer() needs the same lock, so it runs only once the
    consumer is really inside wait(): the wake-up must come from a notify.
    """

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.waiting = threading.Event()
        self.waits = 0

    def wait(self, timeout: Optional[float] = None) -> bool:
        self.waits += 1
        self.waiting.set()
        return super().wait(timeout)


def _blocked_consumer(
    q: SubscriberQueue, take: Callable[[], SessionEvent]
) -> "tuple[threading.Thread, _AnnouncingCondition, List[Any]]":
    condition = _AnnouncingCondition(q.mutex)
    q.not_empty = condition  # type: ignore[assignment]
    outcome: List[Any] = []

    def consume() -> None:
        try:
            outcome.append(take())
        except BaseException as exc:  # report anything, including Ended
            outcome.append(exc)

    thread = threading.Thread(target=consume, name="test-consumer", daemon=True)
    thread.start()
    assert condition.waiting.wait(scaled(5)), "the consumer never started waiting"
    return thread, condition, outcome


@pytest.fixture
def long_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # take() waits in slices so Ctrl-C gets through; make a slice far longer than the
    # test's deadline so that only a real notify can wake the consumer in time.
    monkeypatch.setattr(_subscribers, "SLICE", 60.0)


@pytest.mark.usefixtures("long_slices")
@pytest.mark.parametrize("how", ["take", "wait_then_take_now"])
def test_close_wakes_a_blocked_consumer(how: str) -> None:
    q = SubscriberQueue(0)
    def wait_then_take_now() -> SessionEvent:  # the dispatcher's way
        q.wait(None, sliced=False)
        return q.take_now(1)[0]

    take = (lambda: q.take(None)) if how == "take" else wait_then_take_now
    thread, condition, outcome = _blocked_consumer(q, take)
    lost = SessionEvent(T.ERROR, "s", None, {"error": "connection lost"})
    q.close(lost)
    thread.join(scaled(5))
    assert not thread.is_alive(), "close() did not wake the consumer"
    assert len(outcome) == 1 and isinstance(outcome[0], Ended)
    assert outcome[0].error is lost
    assert condition.waits == 1  # woken by the notify, not by a timeout


@pytest.mark.usefixtures("long_slices")
def test_offer_wakes_a_blocked_consumer() -> None:
    q = SubscriberQueue(2)
    thread, condition, outcome = _blocked_consumer(q, lambda: q.take(time.monotonic() + 30))
    q.offer(delta(7))
    thread.join(scaled(5))
    assert not thread.is_alive(), "offer() did not wake the consumer"
    assert outcome == [delta(7)]
    assert condition.waits == 1


def test_deadline_wakes_a_consumer_in_another_thread() -> None:
    q = SubscriberQueue(0)
    thread, _, outcome = _blocked_consumer(q, lambda: q.take(time.monotonic() + 0.05))
    thread.join(scaled(5))
    assert not thread.is_alive()
    assert len(outcome) == 1 and type(outcome[0]) is queue.Empty


# --- hand-over: drain() / give() / clear() ----------------------------------------------------


def test_drain_and_give_hand_events_and_losses_over_in_order() -> None:
    backlog = SubscriberQueue(2)
    for i in range(5):
        backlog.offer(delta(i))
    items = backlog.drain()
    assert len(items) == 3  # two events and the loss marker
    assert backlog.qsize() == 0

    listener = SubscriberQueue(0)
    listener.give(items)
    listener.offer(delta(99))
    assert take_all(listener) == [
        delta(0),
        delta(1),
        overflow(3, {"message_delta": 3}, "message_delta"),
        delta(99),
    ]


def test_give_applies_the_receivers_filter_but_never_drops_a_loss() -> None:
    backlog = SubscriberQueue(1)
    backlog.offer(delta(0))
    backlog.offer(delta(1))
    listener = SubscriberQueue(1, event_types=[T.MESSAGE_COMPLETE])
    listener.give(backlog.drain())
    assert take_all(listener) == [overflow(1, {"message_delta": 1}, "message_delta")]


def test_give_skips_end_markers() -> None:
    backlog = SubscriberQueue(0)
    backlog.offer(delta(0))
    backlog.close()
    items = backlog.drain()
    listener = SubscriberQueue(0)
    listener.give(items)
    assert listener.closed is False
    assert take_all(listener) == [delta(0)]


def test_clear_forgets_everything() -> None:
    q = SubscriberQueue(1)
    q.offer(delta(0))
    q.offer(delta(1))
    q.clear()
    assert q.qsize() == 0
    with pytest.raises(queue.Empty):
        take_now(q)
    assert q.offer(delta(2)) is True
    assert take_all(q) == [delta(2)]


def test_abandoned_flag_starts_false() -> None:
    q = SubscriberQueue(0)
    assert q.abandoned is False
    assert q.closed is False
    assert q.limit == 0
    assert SubscriberQueue(5).limit == 5


def test_a_consumer_thread_sleeps_until_woken_not_in_slices() -> None:
    # Only the main thread can get KeyboardInterrupt, so only it waits in slices: a
    # thousand web-server threads idle in listen() must not wake 4,000 times a second.
    q = SubscriberQueue(0)
    thread, condition, outcome = _blocked_consumer(q, lambda: q.take(None))
    time.sleep(SLICE * 3)  # three slices' worth of nothing arriving
    q.offer(delta(1))
    thread.join(scaled(5))
    assert outcome == [delta(1)]
    assert condition.waits == 1, "a non-main thread woke up with nothing to take"


@pytest.mark.usefixtures("long_slices")
def test_a_deferred_wake_up_waits_for_wake() -> None:
    # The I/O thread queues a round's events, and wakes each consumer once at the end
    # of the round (IOLoop._wake_consumers), not once per socket read.
    q = SubscriberQueue(0)
    thread, condition, outcome = _blocked_consumer(q, lambda: q.take(time.monotonic() + 30))
    wakes: Set[Any] = set()
    assert q.offer_many([delta(1), delta(2)], wakes) == 0
    assert wakes == {q}
    thread.join(0.3)
    assert thread.is_alive(), "offer_many woke the consumer although asked to defer"
    q.wake()
    thread.join(scaled(5))
    assert outcome == [delta(1)] and condition.waits == 1
    assert q.take_now() == [delta(2)]


def test_a_deferred_offer_with_nobody_waiting_asks_for_no_wake_up() -> None:
    q = SubscriberQueue(0)
    wakes: Set[Any] = set()
    q.offer_many([delta(1)], wakes)
    assert wakes == set()
    q.wake()  # harmless with nobody waiting
    assert q.take(NOW) == delta(1)
