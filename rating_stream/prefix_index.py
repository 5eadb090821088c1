"""Longest-prefix lookup over a tariff's rates, precomputed once per tariff version.

A tariff has thousands of prefixes at a carrier; scanning them for every leg would make rating
O(prefixes). Instead the rates are bucketed by prefix length into dicts, and a lookup tries the
lengths present in the tariff from longest to shortest: at most one dict probe per distinct
length (E.164 numbers cap that at ~15), independent of how many prefixes there are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class PrefixIndex(Generic[V]):
    """Immutable map from digit prefixes to values with longest-prefix-match lookup.

    The empty prefix ``''`` is a catch-all that matches every number.
    """

    __slots__ = ("_by_length", "_lengths", "_size")

    def __init__(self, items: Iterable[tuple[str, V]]) -> None:
        by_length: dict[int, dict[str, V]] = {}
        size = 0
        for prefix, value in items:
            bucket = by_length.setdefault(len(prefix), {})
            if prefix in bucket:
                raise ValueError(f"prefix {prefix!r} appears twice")
            bucket[prefix] = value
            size += 1
        self._by_length = by_length
        #: distinct prefix lengths, longest first: the order a longest-match lookup probes them
        self._lengths = tuple(sorted(by_length, reverse=True))
        self._size = size

    def __len__(self) -> int:
        return self._size

    def longest_match(self, number: str) -> tuple[str, V] | None:
        """The (prefix, value) of the longest prefix of ``number``, or None when nothing matches."""
        n = len(number)
        by_length = self._by_length
        for length in self._lengths:
            if length > n:
                continue
            prefix = number[:length]
            value = by_length[length].get(prefix)
            if value is not None:
                return prefix, value
        return None
