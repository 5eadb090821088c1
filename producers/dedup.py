"""Bounded memory of what was already published, to drop duplicate AMI events.

Asterisk can report the same fact twice (a Newstate Up repeated after a masquerade, a reconnect of an
HA pair, a transcript replayed twice); the key is (PBX id, Uniqueid, event identity) as built by the
translator. Bounded LRU: a busy PBX runs for months, memory must not grow with it. 100k keys is
hours of traffic on a large PBX, far longer than any duplicate can lag.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RecentKeys:
    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def seen(self, key: Hashable) -> bool:
        """True when ``key`` was recorded before (and refresh it); else record it and return False."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable) -> None:
        self.seen(key)

    def __len__(self) -> int:
        return len(self._keys)
