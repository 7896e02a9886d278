"""gateway/deadlines.py: coarse deadlines fire late by at most a tick, never early, never twice,
never after cancel; short waits stay exact; a failing callback does not stop the others."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from gateway import deadlines
from gateway.deadlines import COARSE_MIN, TICK, Sweep, sweep_for


def run(coro):  # type: ignore[no-untyped-def]
    return uvloop.run(coro)


def test_a_coarse_deadline_fires_after_its_time_within_a_tick() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        fired = loop.create_future()
        start = loop.time()
        d = sweep.call_later(COARSE_MIN + 0.1, lambda: fired.set_result(loop.time()))
        assert d.timer is None and d in sweep.pending  # on the sweep, not a loop timer
        at = await fired
        return at - start, at - d.when

    elapsed, late = run(main())
    assert elapsed >= COARSE_MIN + 0.1
    assert late <= TICK + 0.5  # a tick, plus scheduling slack on a busy machine


def test_a_short_wait_gets_an_exact_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        fired = loop.create_future()
        d = sweep.call_later(0.02, lambda: fired.set_result(None))
        assert d.timer is not None and not sweep.pending
        await asyncio.wait_for(fired, 5)
        assert d.fired

    run(main())


@pytest.mark.parametrize("delay", [0.02, COARSE_MIN + 0.05])
def test_a_cancelled_deadline_never_fires_and_cancel_is_idempotent(delay: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        calls: list[int] = []
        d = sweep.call_later(delay, lambda: calls.append(1))
        d.cancel()
        d.cancel()
        await asyncio.sleep(delay + 3 * TICK)
        assert calls == [] and not d.fired and not sweep.pending
        assert sweep.handle is None  # nothing pending: the sweep's own timer stopped

    run(main())


def test_due_deadlines_fire_once_in_one_tick_even_when_one_cancels_another() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        calls: list[str] = []
        # Well past COARSE_MIN: the loop clock ticks in ms, so `now + COARSE_MIN` may come out a
        # hair under it by the time it is checked, and get an exact timer of its own.
        when = loop.time() + COARSE_MIN + 0.2
        second = None

        def first() -> None:
            calls.append("first")
            assert second is not None
            second.cancel()

        made = [sweep.call_at(when, first), sweep.call_at(when, lambda: calls.append("second")),
                sweep.call_at(when, lambda: calls.append("third"))]
        second = made[1]
        assert all(d.armed and d.timer is None for d in made)  # all three on the sweep
        await asyncio.sleep(COARSE_MIN + 0.2 + 10 * TICK)
        return calls

    assert run(main()) == ["first", "third"]


def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    async def main() -> tuple[list[str], list[dict]]:  # type: ignore[type-arg]
        loop = asyncio.get_running_loop()
        reported: list[dict] = []  # type: ignore[type-arg]
        loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        sweep = Sweep(loop)
        calls: list[str] = []

        def boom() -> None:
            raise ValueError("boom")

        when = loop.time() + COARSE_MIN + 0.2  # on the sweep, both (see above)
        sweep.call_at(when, boom)
        sweep.call_at(when, lambda: calls.append("ok"))
        await asyncio.sleep(COARSE_MIN + 0.2 + 10 * TICK)
        return calls, reported

    calls, reported = run(main())
    assert calls == ["ok"]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], ValueError)


def test_nothing_fires_early() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        early: list[float] = []
        done = loop.create_future()
        n = 40
        for i in range(n):
            when = loop.time() + COARSE_MIN + i * 0.013

            def cb(when: float = when, i: int = i) -> None:
                early.append(when - loop.time())
                if i == n - 1:
                    done.set_result(None)

            sweep.call_at(when, cb)
        await asyncio.wait_for(done, 10)
        return early

    assert max(run(main())) <= 0


def test_each_loop_has_its_own_sweep() -> None:
    async def main() -> Sweep:
        loop = asyncio.get_running_loop()
        sweep = sweep_for(loop)
        assert sweep_for(loop) is sweep and sweep.loop is loop
        return sweep

    first, second = run(main()), run(main())
    assert first is not second
    assert deadlines.sweep_for(second.loop) is second


def test_a_rearmed_deadline_fires_once_at_its_new_time() -> None:
    async def main() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        calls: list[float] = []
        d = sweep.deadline(lambda: calls.append(loop.time()))
        assert not d.armed and not d.fired
        d.later(COARSE_MIN)
        d.later(COARSE_MIN + 0.3)  # re-armed before it was due: only the new time counts
        new_when = d.when
        await asyncio.sleep(COARSE_MIN + 0.3 + 4 * TICK)
        assert d.fired and not d.armed
        d.later(0.01)  # and again after it fired, this time an exact timer
        await asyncio.sleep(0.2)
        return calls, new_when

    calls, new_when = run(main())
    assert len(calls) == 2 and calls[0] >= new_when


def test_a_deadline_rearmed_by_an_earlier_callback_in_the_same_tick_waits_for_its_new_time() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        sweep = Sweep(loop)
        calls: list[str] = []
        later = sweep.deadline(lambda: calls.append("later"))

        def first() -> None:
            calls.append("first")
            later.later(COARSE_MIN + 0.5)  # was due in this very tick; now it is not

        when = loop.time() + COARSE_MIN + 0.2  # on the sweep, both (see above)
        assert sweep.call_at(when, first).armed and later.at(when).armed
        await asyncio.sleep(COARSE_MIN + 0.2 + 10 * TICK)
        assert calls == ["first"] and later.armed
        later.cancel()
        return calls

    assert run(main()) == ["first"]
