"""monitor.heap: the start-up heap is frozen, and nothing dead goes with it."""

from __future__ import annotations

import gc
import weakref

from monitor.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can free it


def test_live_objects_are_frozen_and_dead_cycles_are_collected_first():
    alive = _Node()
    dead = _Node()
    dead_ref = weakref.ref(dead)
    del dead
    assert dead_ref() is not None  # only a collection frees a cycle
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert dead_ref() is None  # collected before the freeze: a frozen cycle would never be freed
        assert not any(o is alive for o in gc.get_objects())  # frozen objects are out of every generation
    finally:
        gc.unfreeze()  # this test runs inside pytest's process: give it its heap back
    assert any(o is alive for o in gc.get_objects(generation=2))
