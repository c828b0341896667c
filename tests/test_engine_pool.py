"""The execution-context pool (tensorrt/pool.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from maefuse_deploy.tensorrt.errors import EngineError
from maefuse_deploy.tensorrt.pool import ContextPool


def test_pool_thread_safety():
    """8 threads x 50 loans: each item used by one thread at a time, never more items than the pool size."""
    size, created, destroyed = 3, [], []
    users: Counter = Counter()
    lock = threading.Lock()
    violations = []

    def factory(place: int) -> int:
        time.sleep(0.002)  # creating a context is slow: leave a window for races
        with lock:
            created.append(len(created))
            return created[-1]

    pool = ContextPool(factory, size, destroy=destroyed.append)

    def worker() -> None:
        for _ in range(50):
            with pool.acquire() as item:
                with lock:
                    users[item] += 1
                    if users[item] != 1:
                        violations.append(item)
                time.sleep(0.0001)
                with lock:
                    users[item] -= 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "pool deadlocked"
    assert violations == []
    assert 1 <= len(created) <= size == pool.size
    assert pool.created == len(created)
    pool.close()
    assert sorted(destroyed) == sorted(created)
    pool.close()  # idempotent
    assert sorted(destroyed) == sorted(created)
    with pytest.raises(EngineError, match="closed"), pool.acquire():
        pass


def test_pool_factory_failure_frees_the_place():
    calls = []

    def factory(place: int) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("no GPU memory")
        return "context"

    pool = ContextPool(factory, 1)
    with pytest.raises(MemoryError), pool.acquire():
        pass
    with pool.acquire() as item:
        assert item == "context"


def test_pool_waits_and_times_out():
    pool = ContextPool(lambda place: object(), 1)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with pool.acquire():
            taken.set()
            release.wait()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert taken.wait(5)
    try:
        with pytest.raises(TimeoutError), pool.acquire(timeout=0.05):
            pass
    finally:
        release.set()
    thread.join(5)
    with pool.acquire(timeout=1):
        pass


def test_pool_close_waits_for_lent_items():
    events = []
    pool = ContextPool(lambda place: "ctx", 2, destroy=lambda item: events.append("destroyed"))
    taken = threading.Event()

    def holder() -> None:
        with pool.acquire():
            taken.set()
            time.sleep(0.1)
            events.append("returned")

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert taken.wait(5)
    pool.close(timeout=5)
    thread.join(5)
    assert events == ["returned", "destroyed"]


def test_each_item_gets_its_own_place():
    """Issue 27: a dynamic-shape TensorRT engine's contexts in concurrent use need one optimization profile each;
    the pool numbers its items 0..size-1, each number held by one live item, a failed creation's number reused."""
    size, lock, places = 3, threading.Lock(), []
    failures = iter([True])  # the first creation fails

    def factory(place: int) -> int:
        time.sleep(0.002)
        if next(failures, False):
            raise MemoryError("no GPU memory")
        with lock:
            places.append(place)
        return place

    pool = ContextPool(factory, size)
    with pytest.raises(MemoryError), pool.acquire():
        pass

    together = threading.Barrier(size, timeout=10)  # all three lent at once: three items must exist

    def worker() -> None:
        with pool.acquire():
            together.wait()
        for _ in range(20):
            with pool.acquire():
                time.sleep(0.0005)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(places) == list(range(size))  # every place once: none shared, none beyond the size
