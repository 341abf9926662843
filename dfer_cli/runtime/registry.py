"""The process's loaded networks and measured probes, in one place: each is made once per key and kept
(for the process's lifetime, while its owner lives, or among the last few of its kind), and `clear()`
forgets them all, for tests. Every other module asks here instead of keeping a cache of its own."""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

_MISSING = object()


@dataclass
class _Entry:
    making: threading.Lock = field(default_factory=threading.Lock)  # a second caller waits for the first
    version: Hashable = None
    value: object = _MISSING


_entries: OrderedDict[tuple, _Entry] = OrderedDict()
# Guards _entries only: a slow make() holds its entry's lock, not this one. Re-entrant: an owner's
# finalizer (_forget) may run in the middle of get(), when a collection starts there.
_lock = threading.RLock()


def get(kind: str, key: Hashable, make: Callable[[], T], *, owner: object | None = None,
        version: Hashable = None, keep: int | None = None) -> T:
    """The `kind` object for `key`, made by `make()` the first time. `owner`: kept while that object
    lives (an entry per owner, by identity); `version`: made again when it differs from the version the
    kept one was made at; `keep`: at most that many of this kind, the least recently used let go."""
    full = (kind, key) if owner is None else (kind, key, id(owner))
    with _lock:
        entry = _entries.get(full)
        if entry is None:
            entry = _entries[full] = _Entry()
            if owner is not None:
                weakref.finalize(owner, _forget, full, entry)
            if keep is not None:
                _trim(kind, keep)
        _entries.move_to_end(full)
    with entry.making:
        if entry.value is _MISSING or entry.version != version:
            entry.value = _MISSING  # the stale one goes before its successor is made
            entry.value, entry.version = make(), version
        return entry.value  # type: ignore[return-value]


def cached(kind: str, keep: int | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A function whose results are kept here, one per (hashable) arguments, `keep` as in `get`: the
    registry's form of functools.cache."""

    def wrap(make: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(make)
        def call(*args: Hashable, **kwargs: Hashable) -> T:
            return get(kind, (args, tuple(sorted(kwargs.items()))), lambda: make(*args, **kwargs), keep=keep)

        return call

    return wrap


def _trim(kind: str, keep: int) -> None:
    mine = [k for k in _entries if k[0] == kind]
    for k in mine[:max(0, len(mine) - keep)]:
        _entries.pop(k, None)


def _forget(full: tuple, entry: _Entry) -> None:
    with _lock:
        if _entries.get(full) is entry:
            del _entries[full]


def held(kind: str) -> list[Hashable]:
    """The keys of the `kind` objects made and kept now."""
    with _lock:
        return [k[1] for k, e in _entries.items() if k[0] == kind and e.value is not _MISSING]


def drop(kind: str, key: Hashable) -> None:
    """Forget the `kind` object for `key` (one kept without an owner): the next request makes it again."""
    with _lock:
        _entries.pop((kind, key), None)


def clear() -> None:
    """Forget every network and probe: the next request makes its own."""
    with _lock:
        _entries.clear()
