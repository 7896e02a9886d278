"""GC tuning after start-up: survivors frozen, young threshold raised, cycles still collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_tune_freezes_startup_objects_and_still_collects_cycles() -> None:
    code = textwrap.dedent("""
        import gc, weakref
        from gateway.gctune import THRESHOLDS, tune_after_startup
        import gateway.app  # a realistic start-up heap
        tune_after_startup()
        assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
        assert gc.get_threshold() == THRESHOLDS
        class Node: pass
        a, b = Node(), Node()
        a.other, b.other = b, a        # a cycle: only the collector frees it
        ref = weakref.ref(a)
        del a, b
        gc.collect(0)                  # objects made after the freeze are still collected
        assert ref() is None
        print("ok", gc.get_freeze_count())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
