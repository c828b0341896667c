"""A small thread-safe pool: each item is used by one thread at a time, and at most ``size`` items ever exist.

TensorRT execution contexts are not thread-safe (docs/architecture.md §6), and each one holds its activation memory,
so the runtime keeps a few of them and lends one to each calling thread for the length of a call. Items are created
on demand (creating one is slow, outside the lock) and destroyed by :meth:`ContextPool.close`, which waits for the
ones still lent out. The factory gets the item's place, a number in 0..size-1 that no other live item holds: a
dynamic-shape engine's context uses it as its own optimization profile (contexts in concurrent use need one each).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import EngineError

T = TypeVar("T")

# Contexts a pool holds unless asked otherwise: each holds the engine's activation memory; two keep a second thread
# busy. Here, below both users: the backend sizes its pool with it, and maefuse-build-engine builds as many
# optimization profiles by default, since each concurrent context of a dynamic-batch engine needs its own.
DEFAULT_POOL_SIZE = 2


class ContextPool(Generic[T]):
    def __init__(self, factory: Callable[[int], T], size: int, destroy: Callable[[T], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self._factory = factory
        self._destroy = destroy
        self._size = size
        self._cond = threading.Condition()
        self._idle: list[T] = []
        self._items: list[T] = []
        self._lent = 0
        self._creating = 0
        self._free_places = list(range(size - 1, -1, -1))  # popped from the end: 0 first
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def created(self) -> int:
        """Items that exist now (idle or lent)."""
        with self._cond:
            return len(self._items)

    @contextlib.contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[T]:
        """Lend one item to the calling thread for the ``with`` block; wait while all ``size`` items are lent."""
        item = self._take(timeout)
        try:
            yield item
        finally:
            self._give_back(item)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new loans, wait until every lent item is back, destroy all items. Safe to call twice."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._lent or self._creating:
                if not self._cond.wait(_remaining(deadline)):
                    raise TimeoutError(f"{self._lent} pooled items still in use after {timeout} s")
            items, self._items, self._idle = self._items, [], []
        if self._destroy is not None:
            for item in items:
                self._destroy(item)

    def _take(self, timeout: float | None) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._refuse_if_closed()
                if self._idle:
                    self._lent += 1
                    return self._idle.pop()
                if len(self._items) + self._creating < self._size:
                    self._creating += 1
                    place = self._free_places.pop()
                    break
                if not self._cond.wait(_remaining(deadline)):
                    raise TimeoutError(f"no pooled item became free within {timeout} s")
        try:
            item = self._factory(place)
        except BaseException:
            with self._cond:
                self._creating -= 1
                self._free_places.append(place)
                self._cond.notify_all()
            raise
        with self._cond:
            self._creating -= 1
            self._items.append(item)
            self._lent += 1
            # close() may have started meanwhile; it waits for this loan, so hand the item out anyway.
            return item

    def _give_back(self, item: T) -> None:
        with self._cond:
            self._lent -= 1
            if not self._closed:
                self._idle.append(item)
            self._cond.notify_all()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise EngineError("the TensorRT backend is closed", fix="create a new backend to run more images")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
