"""The fetcher's cache of findmy ``KeyPair``s, by hashed advertisement key.

Making a ``KeyPair`` from a tracker's private key (``ec.derive_private_key``: a scalar
multiplication on P-224) costs about as much as decrypting one report, and it holds the GIL.
A fetcher fetches the same trackers every interval, so it keeps the pairs it made, at most
``max_entries`` of them, the least recently used going first. An entry is an OpenSSL key in
memory (about 2.8 KB with its share of the cache; docs/fetching.md); the unsealed private key
itself is never kept apart from it, never logged, and the cache's repr shows only its size.
``max_entries = 0`` turns the cache off (a pair is made per fetch, as before).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from findmy import KeyPair

DEFAULT_MAX_ENTRIES = 250_000


class KeyPairCache:
    """A bounded LRU of ``KeyPair``s shared by every account of one process; safe to use
    from the decryption threads."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._pairs: OrderedDict[bytes, KeyPair] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"KeyPairCache({len(self._pairs)}/{self.max_entries})"

    def get(self, hashed: bytes, private_key: Callable[[], bytes]) -> KeyPair:
        """The pair of the tracker whose hashed advertisement key is ``hashed``; made from
        ``private_key()`` (which unseals it) only when not kept."""
        with self._lock:
            pair = self._pairs.get(hashed)
            if pair is not None:
                self._pairs.move_to_end(hashed)
                self.hits += 1
                return pair
            self.misses += 1
        pair = KeyPair(private_key())
        if self.max_entries:
            with self._lock:
                self._pairs[hashed] = pair
                while len(self._pairs) > self.max_entries:
                    self._pairs.popitem(last=False)
        return pair

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()
