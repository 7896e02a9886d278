"""Coarse deadlines for the request path: one sweep timer per event loop instead of a timer each.

A request used to arm and cancel four or five loop timers (the client's head deadline, the
keep-alive wait, the upstream exchange's total timeout, the rate-limit store's budget); on uvloop
each costs ~1.5 µs to arm and cancel, ~4 µs as `asyncio.timeout`, and more with many alive. Here a
deadline is an entry in a dict: arming is one small object and one insert, cancelling one delete.
One loop timer, running only while deadlines are pending, fires those that are due every `TICK`.

The price is resolution: a coarse deadline fires up to `TICK` (50 ms) late, never early. So only
waits of at least `COARSE_MIN` (0.5 s, an error of at most 10 %) go through the sweep; shorter ones
get an exact loop timer behind the same handle. Every deadline this serves is a bound on misbehaviour
(a silent client, a stalled upstream, an unreachable store), never a rate or a schedule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from weakref import WeakKeyDictionary

TICK = 0.05
COARSE_MIN = 0.5


class Deadline:
    """A pending call; `cancel()` is idempotent and `fired` tells whether the callback ran."""

    __slots__ = ("when", "callback", "sweep", "timer", "fired")

    def __init__(self, when: float, callback: Callable[[], object], sweep: Sweep) -> None:
        self.when = when
        self.callback = callback
        self.sweep: Sweep | None = sweep
        self.timer: asyncio.TimerHandle | None = None
        self.fired = False

    def cancel(self) -> None:
        sweep = self.sweep
        if sweep is not None:
            self.sweep = None
            sweep.pending.pop(self, None)
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def _fire(self) -> None:
        self.sweep = self.timer = None
        self.fired = True
        self.callback()


class Sweep:
    """The deadlines of one event loop (`sweep_for(loop)`)."""

    __slots__ = ("loop", "pending", "handle", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[Deadline, None] = {}
        self.handle: asyncio.TimerHandle | None = None

    def call_at(self, when: float, callback: Callable[[], object]) -> Deadline:
        """Call `callback` at loop time `when` (coarsely when that is at least COARSE_MIN away)."""
        loop = self.loop
        d = Deadline(when, callback, self)
        if when - loop.time() < COARSE_MIN:
            d.sweep = None
            d.timer = loop.call_at(when, d._fire)
            return d
        self.pending[d] = None
        if self.handle is None:
            self.handle = loop.call_later(TICK, self._tick)
        return d

    def call_later(self, delay: float, callback: Callable[[], object]) -> Deadline:
        return self.call_at(self.loop.time() + delay, callback)

    def _tick(self) -> None:
        self.handle = None
        pending = self.pending
        now = self.loop.time()
        due = [d for d in pending if d.when <= now]
        for d in due:
            if pending.pop(d, 0) is None:  # still pending: an earlier callback may have cancelled it
                try:
                    d._fire()
                except Exception as exc:  # one callback's failure must not stop the others
                    self.loop.call_exception_handler({"message": "deadline callback failed", "exception": exc})
        if pending:
            self.handle = self.loop.call_later(TICK, self._tick)


_sweeps: WeakKeyDictionary[asyncio.AbstractEventLoop, Sweep] = WeakKeyDictionary()
_last: Sweep | None = None


def sweep_for(loop: asyncio.AbstractEventLoop) -> Sweep:
    """The loop's sweep (a worker has one loop: the last one asked for is answered first)."""
    global _last
    last = _last
    if last is not None and last.loop is loop:
        return last
    sweep = _sweeps.get(loop)
    if sweep is None:
        sweep = _sweeps[loop] = Sweep(loop)
    _last = sweep
    return sweep
