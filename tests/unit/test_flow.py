"""SingleFlight, RenderGate and StoreQueue, exercised with real threads and short timeouts."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack

import pytest

from resize_server.errors import Overloaded
from resize_server.flow import RenderGate, SingleFlight, StoreQueue


def run_threads(n, target):
    """Start n threads on target(i) after a common barrier; return {i: ("ok", value) | ("error", exc)}."""
    barrier = threading.Barrier(n)
    outcomes = {}

    def body(i):
        barrier.wait(timeout=5)
        try:
            outcomes[i] = ("ok", target(i))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            outcomes[i] = ("error", exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    return outcomes


def wait_until(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


# ---- SingleFlight ---------------------------------------------------------


def test_single_flight_runs_once_for_concurrent_callers():
    flight = SingleFlight(wait_timeout=5)
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.2)
        return object()

    outcomes = run_threads(20, lambda i: flight.do("k", fn))
    assert len(calls) == 1
    assert all(kind == "ok" for kind, _ in outcomes.values())
    results = [value for _, value in outcomes.values()]
    assert len({id(result) for result, _shared in results}) == 1
    assert sorted(shared for _result, shared in results) == [False] + [True] * 19
    assert flight.in_flight() == 0


def test_single_flight_error_reaches_every_waiter():
    flight = SingleFlight(wait_timeout=5)
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.2)
        raise KeyError("boom")

    outcomes = run_threads(8, lambda i: flight.do("k", fn))
    assert len(calls) == 1
    assert all(kind == "error" and isinstance(exc, KeyError) for kind, exc in outcomes.values())
    assert flight.in_flight() == 0
    assert flight.do("k", lambda: 42) == (42, False)  # the failure is not remembered


def test_single_flight_keys_are_independent():
    flight = SingleFlight(wait_timeout=5)
    entered = {"a": threading.Event(), "b": threading.Event()}

    def fn(key, other):
        entered[key].set()
        # Only returns True if the other key's call runs at the same time.
        return entered[other].wait(timeout=2)

    outcomes = run_threads(2, lambda i: flight.do("ab"[i], lambda: fn("ab"[i], "ba"[i])))
    assert outcomes == {0: ("ok", (True, False)), 1: ("ok", (True, False))}


def test_single_flight_sequential_calls_are_not_shared():
    flight = SingleFlight(wait_timeout=5)
    counter = iter(range(10))
    assert flight.do("k", lambda: next(counter)) == (0, False)
    assert flight.do("k", lambda: next(counter)) == (1, False)


def test_single_flight_waiter_times_out_with_overloaded():
    flight = SingleFlight(wait_timeout=0.1)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(timeout=2)
        return "done"

    leader = threading.Thread(target=flight.do, args=("k", slow), daemon=True)
    leader.start()
    assert started.wait(timeout=2)
    t0 = time.monotonic()
    with pytest.raises(Overloaded) as info:
        flight.do("k", lambda: "never")
    assert 0.05 < time.monotonic() - t0 < 1.5
    assert info.value.status == 503
    release.set()
    leader.join(timeout=2)
    assert flight.in_flight() == 0


# ---- RenderGate -----------------------------------------------------------


def test_render_gate_queues_then_refuses():
    gate = RenderGate(slots=2, max_waiting=1, timeout=0.3)
    with ExitStack() as held:
        held.enter_context(gate.slot())
        second = ExitStack()
        second.enter_context(gate.slot())
        assert gate.active == 2 and gate.waiting == 0

        got_slot = threading.Event()

        def third():
            with gate.slot():
                got_slot.set()

        waiter = threading.Thread(target=third, daemon=True)
        waiter.start()
        wait_until(lambda: gate.waiting == 1)

        # A fourth caller while one waits is refused at once.
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as info:
            with gate.slot():
                pytest.fail("fourth caller must not get a slot")
        assert time.monotonic() - t0 < 0.1
        assert info.value.status == 503
        assert int(info.value.headers["Retry-After"]) >= 1

        second.close()  # release one slot: the waiter gets it
        assert got_slot.wait(timeout=1)
        waiter.join(timeout=1)
        assert not waiter.is_alive()
        assert gate.waiting == 0
        assert gate.active == 1
    assert gate.active == 0


def test_render_gate_waiter_times_out():
    gate = RenderGate(slots=1, max_waiting=1, timeout=0.3)
    with gate.slot():
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as info:
            with gate.slot():
                pytest.fail("no slot should be free")
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 2
        assert info.value.status == 503
        assert "Retry-After" in info.value.headers
        assert gate.waiting == 0
    with gate.slot():  # the slot is free again
        assert gate.active == 1


def test_render_gate_releases_slot_on_error():
    gate = RenderGate(slots=1, max_waiting=0, timeout=0.3)
    with pytest.raises(ValueError):
        with gate.slot():
            raise ValueError("render failed")
    assert gate.active == 0
    with gate.slot():
        with pytest.raises(Overloaded):  # max_waiting=0: refused at once
            with gate.slot():
                pass


def test_render_gate_never_exceeds_slots():
    gate = RenderGate(slots=2, max_waiting=20, timeout=5)
    lock = threading.Lock()
    peak = [0]

    def work(i):
        with gate.slot():
            with lock:
                peak[0] = max(peak[0], gate.active)
            time.sleep(0.02)

    outcomes = run_threads(8, work)
    assert all(kind == "ok" for kind, _ in outcomes.values())
    assert peak[0] == 2
    assert gate.active == 0 and gate.waiting == 0


# ---- StoreQueue -----------------------------------------------------------


def test_store_queue_stores_everything_after_drain():
    stored = []
    q = StoreQueue(stored.append, maxsize=64)
    items = [f"item-{i}" for i in range(50)]
    assert all(q.submit(item) for item in items)
    assert q.drain(timeout=5) is True
    assert stored == items
    assert q.pending() == 0


def test_store_queue_full_stores_inline():
    stored = []
    taken, release = threading.Event(), threading.Event()

    def store(item):
        if item == "first":
            taken.set()
            release.wait(timeout=5)
        stored.append(item)

    q = StoreQueue(store, maxsize=1)
    assert q.submit("first") is True
    assert taken.wait(timeout=2)  # the worker is busy with "first"
    assert q.submit("second") is True  # fills the queue
    t0 = time.monotonic()
    assert q.submit("third") is False  # full: stored by the caller
    assert time.monotonic() - t0 < 1
    assert stored == ["third"]
    release.set()
    assert q.drain(timeout=5) is True
    assert sorted(stored) == ["first", "second", "third"]


def test_store_queue_survives_a_failing_store(caplog):
    stored = []

    def store(item):
        if item == "bad":
            raise RuntimeError("S3 is down")
        stored.append(item)

    q = StoreQueue(store, maxsize=8)
    with caplog.at_level(logging.ERROR, logger="resize_server.flow"):
        assert q.submit("good-1") and q.submit("bad") and q.submit("good-2")
        assert q.drain(timeout=5) is True
    assert stored == ["good-1", "good-2"]
    assert any("store worker failed" in r.getMessage() for r in caplog.records)
    assert q.submit("good-3") is True
    assert q.drain(timeout=5) is True
    assert stored == ["good-1", "good-2", "good-3"]


def test_store_queue_drain_times_out():
    release = threading.Event()
    q = StoreQueue(lambda item: release.wait(timeout=5), maxsize=4)
    q.submit("slow")
    t0 = time.monotonic()
    assert q.drain(timeout=0.1) is False
    assert time.monotonic() - t0 < 1
    release.set()
    assert q.drain(timeout=5) is True


def test_store_queue_is_bounded_in_bytes_too():
    release = threading.Event()
    stored = []

    def slow_store(item):
        release.wait(5)
        stored.append(item)

    q = StoreQueue(slow_store, maxsize=100, max_bytes=10, size_of=len)
    assert q.submit(b"123456") is True          # queued: 6 of 10 bytes, its store blocked
    threading.Timer(0.2, release.set).start()
    assert q.submit(b"1234567") is False        # 6 + 7 > 10: stored inline instead
    assert q.drain(5)
    assert sorted(stored) == [b"123456", b"1234567"]
    assert q.queued_bytes == 0


def test_render_gate_serves_waiters_first_come_first_served():
    gate = RenderGate(slots=1, max_waiting=10, timeout=5)
    order = []
    holder = gate.slot()
    holder.__enter__()
    threads = []
    for i in range(6):
        def wait_turn(i=i):
            with gate.slot():
                order.append(i)
        t = threading.Thread(target=wait_turn)
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while gate.waiting != i + 1:  # queue them in a known order
            assert time.monotonic() < deadline
            time.sleep(0.001)
    holder.__exit__(None, None, None)
    for t in threads:
        t.join(5)
    assert order == list(range(6))
    assert (gate.active, gate.waiting) == (0, 0)
