"""Work beside the main thread for streaming steps (transfer): label maps made ahead of the
generator, videos encoded behind it. cv2, numpy, torch and pipe writes release the GIL, so
threads overlap with the main thread's GPU work. An error in a thread is raised in the main
thread where its work is next asked for or handed over.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable, items: Iterable, workers: int = 2, ahead: int = 4) -> Iterator:
    """fn(x) for each x, in order, computed by `workers` threads up to `ahead` items before it is
    asked for. fn's error is raised where its result is asked for; closing the iterator waits
    for the calls under way (at most `ahead`) and starts no more."""
    with ThreadPoolExecutor(workers, thread_name_prefix="ordered_map") as pool:
        running: deque = deque()
        for x in items:
            running.append(pool.submit(fn, x))
            if len(running) >= ahead:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


class Sink:
    """consume(items) in a thread, fed item by item through a bounded queue (so the producer runs
    at most `maxsize` items ahead). close() ends the items and returns consume's result; abort()
    makes the items raise inside consume, so a writer's temporary file is removed and no partial
    output remains. consume's error is raised by the next put(), close() or the one under way."""

    _ABORT = object()

    def __init__(self, consume: Callable[[Iterable], Any], name: str, maxsize: int = 16):
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.result = None

        def items():
            while (x := self.q.get()) is not None:
                if x is self._ABORT:
                    raise RuntimeError(f"{name}: aborted")
                yield x

        def run():
            try:
                self.result = consume(items())
            except BaseException as e:  # re-raised in the producer's thread
                self.error = e
        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def _put(self, item) -> None:
        """Put unless the consumer has stopped (then the item is not needed)."""
        while self.thread.is_alive():
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                pass

    def put(self, item) -> None:
        if self.error:
            raise self.error
        self._put(item)
        if self.error:
            raise self.error

    def close(self):
        self._put(None)
        self.thread.join()
        if self.error:
            raise self.error
        return self.result

    def abort(self) -> None:
        self._put(self._ABORT)
        self.thread.join()
