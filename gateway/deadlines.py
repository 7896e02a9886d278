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
    """A call at a loop time; re-armable (`at` / `later`), so a connection keeps one per purpose
    instead of allocating one per request. `cancel()` is idempotent; `fired` tells whether the
    callback ran since the last arming."""

    __slots__ = ("when", "callback", "sweep", "timer", "fired", "armed")

    def __init__(self, sweep: Sweep, callback: Callable[[], object]) -> None:
        self.sweep = sweep
        self.callback = callback
        self.when = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.fired = False
        self.armed = False  # pending in the sweep

    def at(self, when: float) -> Deadline:
        """(Re)arm for loop time `when`: coarsely when that is at least COARSE_MIN away."""
        self.cancel()
        self.fired = False
        self.when = when
        sweep = self.sweep
        loop = sweep.loop
        if when - loop.time() < COARSE_MIN:
            self.timer = loop.call_at(when, self._fire)
            return self
        sweep.pending[self] = None
        self.armed = True
        if sweep.handle is None:
            sweep.handle = loop.call_later(TICK, sweep._tick)
        return self

    def later(self, delay: float) -> Deadline:
        return self.at(self.sweep.loop.time() + delay)

    def cancel(self) -> None:
        if self.armed:
            self.armed = False
            self.sweep.pending.pop(self, None)
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def _fire(self) -> None:
        self.armed = False
        self.timer = None
        self.fired = True
        self.callback()


class Sweep:
    """The deadlines of one event loop (`sweep_for(loop)`)."""

    __slots__ = ("loop", "pending", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[Deadline, None] = {}
        self.handle: asyncio.TimerHandle | None = None

    def deadline(self, callback: Callable[[], object]) -> Deadline:
        """An unarmed deadline for `callback`, to arm (and re-arm) with `at` / `later`."""
        return Deadline(self, callback)

    def call_at(self, when: float, callback: Callable[[], object]) -> Deadline:
        """Call `callback` at loop time `when` (coarsely when that is at least COARSE_MIN away)."""
        return Deadline(self, callback).at(when)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Deadline:
        return Deadline(self, callback).at(self.loop.time() + delay)

    def _tick(self) -> None:
        self.handle = None
        pending = self.pending
        now = self.loop.time()
        due = [d for d in pending if d.when <= now]
        for d in due:
            # Still pending and due: an earlier callback may have cancelled or re-armed it.
            if d.when <= now and pending.pop(d, 0) is None:
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
