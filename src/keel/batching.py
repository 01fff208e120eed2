"""One worker thread that takes everything queued and handles it as a batch.

The ledger writer (group commits) and the decision combiner (shared model calls) both work
this way: callers on any thread put items; the worker takes the first item waiting, then
everything else already waiting up to a size, and hands the batch to a handler. Items put
while a batch is being handled form the next one, so batches grow with the load.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from keel.errors import KeelError

T = TypeVar("T")


class BatchWorker(Generic[T]):
    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], None],
        max_size: int,
        size: Callable[[T], int] = lambda _item: 1,
        closed_error: Callable[[], KeelError] = lambda: KeelError("closed"),
    ) -> None:
        self._handle = handle
        self._max_size = max_size
        self._size = size
        self._closed_error = closed_error
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._queue.put(item)

    def close(self) -> None:
        """Handle everything already queued, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = self._size(first)
            stop = False
            while size < self._max_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                size += self._size(item)
            self._handle(batch)
            if stop:
                return
