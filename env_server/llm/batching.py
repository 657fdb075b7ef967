"""Dynamic batching of model calls: many coroutines submit one request each, a worker thread runs them in batches.

A language model on one device answers a batch of rows almost as fast as a single row, so a server that runs
every episode's calls one by one wastes most of it. :class:`BatchScheduler` sits between the coroutines that
want results and a plain batch function ``run_batch(requests) -> results``::

    scheduler = BatchScheduler(run_batch, key=lambda request: request.kind, max_batch_size=16, max_wait_s=0.005)
    result = await scheduler.submit(request)

How a batch is formed:

* Requests are grouped by ``key(request)``; only requests with equal keys are ever batched together (a model
  may batch generations of one length, or scorings, but not one with the other).
* A group is *ready* when it holds ``max_batch_size`` requests, or when no request has joined it for ``gap_s``,
  or at the latest ``max_wait_s`` after its oldest request arrived. The wait trades a little latency for
  company in the batch. The gap rule matters for bursts: when the concurrent episodes of a trainer send their
  next steps over HTTP, the requests trickle in over tens of milliseconds, a millisecond or two apart; a fixed
  short wait would cut such a burst into a small batch and a large one, and the split would repeat at every
  later call of those episodes. With ``gap_s`` short, a lone request still runs almost at once.
* Batches run one at a time on a single worker thread (a one-thread executor), so model work is serialized
  and the event loop never blocks on it. When the worker is free, the ready group whose oldest request came
  first gives the next batch: its oldest ``max_batch_size`` requests.
* While a batch runs, new requests keep joining their groups rather than queueing as many small batches, so
  under load batches fill up on their own; when the load is light, a lone request waits only ``gap_s``.
* Each request's future receives its own result, in order. If ``run_batch`` raises (or returns the wrong
  number of results), every request of that batch receives the exception; the scheduler itself goes on.
  A caller that stops waiting (cancellation) loses its result; the rest of its batch is unaffected.

``max_batch_size=1`` turns batching off: every request is ready at once and runs alone, in arrival order.

The waiting lists belong to the event loop that submitted them, so the scheduler also serves callers that use
``asyncio.run`` more than once, or several loops in different threads; the worker thread is shared by all.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["BatchScheduler"]

Req = TypeVar("Req")
Res = TypeVar("Res")
T = TypeVar("T")


@dataclass
class _Waiting(Generic[Req, Res]):
    request: Req
    future: asyncio.Future[Res]
    arrived: float


@dataclass
class _LoopState(Generic[Req, Res]):
    """The waiting requests of one event loop, by key; its batch in flight; its next wake-up."""

    groups: dict[Hashable, list[_Waiting[Req, Res]]] = field(default_factory=dict)
    running: asyncio.Task[None] | None = None
    wakeup: asyncio.TimerHandle | None = None


class BatchScheduler(Generic[Req, Res]):
    """Groups concurrent requests by key and runs each group's batches on one worker thread.

    Args:
        run_batch: Answers a list of requests that share a key with one result per request, in order. It runs
            on the worker thread, never on the event loop.
        key: Which requests may share a batch; all requests share one by default.
        max_batch_size: Most requests in one batch; 1 runs every request alone.
        max_wait_s: Longest time a request waits for company before its batch may run.
        gap_s: A group that no request has joined for this long is ready; ``max_wait_s`` when None (a group then
            waits ``max_wait_s`` from its oldest request, whatever arrives).
        thread_name: Name prefix of the worker thread.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Req]], Sequence[Res]],
        *,
        key: Callable[[Req], Hashable] = lambda request: None,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
        gap_s: float | None = None,
        thread_name: str = "attune-batch",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, not {max_wait_s}")
        if gap_s is not None and not 0 <= gap_s <= max_wait_s:
            raise ValueError(f"gap_s must be between 0 and max_wait_s ({max_wait_s}), not {gap_s}")
        self.run_batch = run_batch
        self.key = key
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.gap_s = max_wait_s if gap_s is None else gap_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[Req, Res]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._closed = False

    def run_on_worker(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the worker thread, where batches run, and wait for its result (this call blocks).

        For set-up that must happen on the thread that will run the batches, such as loading a model: on a CPU,
        torch's OpenMP keeps a team of threads for each thread that calls it.
        """
        return self._executor.submit(work).result()

    async def submit(self, request: Req) -> Res:
        """The result of ``request``, computed in a batch with other waiting requests of the same key.

        Raises:
            RuntimeError: The scheduler was closed.
            Exception: Whatever ``run_batch`` raised for the batch this request was in.
        """
        if self._closed:
            raise RuntimeError("the batch scheduler is closed")
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        waiting = _Waiting(request, loop.create_future(), loop.time())
        state.groups.setdefault(self.key(request), []).append(waiting)
        self._dispatch(loop)
        return await waiting.future

    async def aclose(self) -> None:
        """Refuse new requests, let this loop's waiting and running ones finish, then stop the worker thread."""
        self._closed = True
        state = self._states.get(asyncio.get_running_loop())
        if state is not None:
            futures = [waiting.future for group in state.groups.values() for waiting in group]
            if state.running is not None:
                futures.append(state.running)
            await asyncio.gather(*futures, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState[Req, Res]:
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                state = self._states[loop] = _LoopState()
            return state

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next batch if the worker is free and a group is ready; else wake up at the next deadline."""
        state = self._states.get(loop)
        if state is None or state.running is not None:
            return  # the running batch calls again when it ends
        if state.wakeup is not None:
            state.wakeup.cancel()
            state.wakeup = None
        for key in list(state.groups):
            # Requests whose callers stopped waiting (cancelled) are dropped before they cost any model work.
            live = [waiting for waiting in state.groups.pop(key) if not waiting.future.done()]
            if live:
                state.groups[key] = live
        if not state.groups:
            return
        now = loop.time()
        ready = [
            key
            for key, group in state.groups.items()
            if len(group) >= self.max_batch_size or now >= self._deadline(group)
        ]
        if not ready:
            deadline = min(self._deadline(group) for group in state.groups.values())
            state.wakeup = loop.call_at(deadline, self._dispatch, loop)
            return
        # Oldest request first, across keys: no key can starve another.
        key = min(ready, key=lambda key: state.groups[key][0].arrived)
        group = state.groups.pop(key)
        if len(group) > self.max_batch_size:
            state.groups[key] = group[self.max_batch_size :]
        state.running = loop.create_task(self._run(loop, state, group[: self.max_batch_size]))

    def _deadline(self, group: list[_Waiting[Req, Res]]) -> float:
        """When a group that is not full becomes ready: once quiet for ``gap_s``, at most ``max_wait_s`` after its
        oldest request."""
        return min(group[-1].arrived + self.gap_s, group[0].arrived + self.max_wait_s)

    async def _run(
        self, loop: asyncio.AbstractEventLoop, state: _LoopState[Req, Res], batch: list[_Waiting[Req, Res]]
    ) -> None:
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, [w.request for w in batch])
            if len(results) != len(batch):
                raise ValueError(f"the batch function returned {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:
            # The loop is shutting down: its callers will not hear back, and no new batch should start.
            state.running = None
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as exc:  # handed to every caller of the batch
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
        else:
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(result)
        state.running = None
        self._dispatch(loop)
