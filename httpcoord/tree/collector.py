"""Keeping a tree out of Python's cyclic garbage collector.

A tree of millions of znodes is millions of objects that all live: every
pass of the collector over them finds nothing and costs time (a second per
million while a tree was rebuilt; pauses of hundreds of ms while one grew).
The node and a read worker's copy both use these.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def building_long_lived() -> Iterator[None]:
    """Build objects that live until shutdown (a whole tree): the collector
    is off while they are built, and once built they are frozen out of all
    its later passes."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
    gc.freeze()


class FreezeOnGrowth:
    """``gc.freeze()`` each time the tree has grown by ``growth_znodes`` since
    the last freeze, so older-generation passes scan only what is new."""

    def __init__(self, growth_znodes: int, size: int) -> None:
        self.growth_znodes = growth_znodes
        self._frozen_at = size  # the tree's size at the last freeze

    def grown_to(self, size: int) -> None:
        if size - self._frozen_at >= self.growth_znodes:
            gc.freeze()
            self._frozen_at = size
