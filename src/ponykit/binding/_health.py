"""What a process knows of one replica, shared by its threads: down or up, how far it has replayed.

- **Down**: a connection or a health query failed. The replica is skipped until ``retry_at``, which
  backs off exponentially with the failures in a row; after that one thread (the first to ask) probes
  it while the others keep skipping it, so a returning replica is not hit by every thread at once.
- **Replayed**: the highest WAL position the replica was seen to have replayed. A pinned reader whose
  pin is below it needs no query at all.
- **Lagging**: the replica is behind a WAL position known to exist on the primary for longer than
  ``max_lag`` seconds. Known positions are this process's own commits and what the replica itself has
  *received* (``pg_last_wal_receive_lsn()``, ahead of what it replayed when it applies with a delay),
  so lag is seen without asking the primary. The replica's own age of its last replayed commit
  (``now() - pg_last_xact_replay_timestamp()``, counted only while it has received WAL it has not
  replayed) bounds the lag too, for a process that commits little. A lagging replica is skipped; it is
  checked again at most once per ``check_interval`` (by one thread).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque

from ._gtid import Position

__all__ = ["Health"]

# At most this many marks are kept. When full, the mark whose neighbours are closest in time is dropped
# (never the oldest nor the newest): the oldest unreplayed position, what the lag is measured from, is
# never lost whatever the commit rate, and the others stay spread evenly over time.
_MAX_MARKS = 64


class Health:
    """The shared state of one replica (see the module docstring); every method is thread-safe."""

    def __init__(
        self, *, max_lag: float, check_interval: float, retry_after: float, retry_cap: float
    ) -> None:
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.retry_after = retry_after
        self.retry_cap = retry_cap
        self.failures = 0
        self.retry_at = 0.0
        self.probing = False
        self.replayed: Position = -1  # a WAL integer (PostgreSQL) or a Gtid (MariaDB); -1: nothing yet
        self.lagging = False
        self.checked_at = float("-inf")
        self.checking = False
        # (WAL position, monotonic time it was known to exist on the primary), oldest first, increasing.
        self._marks: deque[tuple[Position, float]] = deque()
        self._replay_age = 0.0  # see observed()
        self._lock = threading.Lock()
        _alive.add(self)

    # -- availability -------------------------------------------------------------------------------

    def claim(self, now: float) -> bool:
        """May this thread use the replica now? False while it is down (one thread probes after
        ``retry_at``: the one this returns True to) or lagging and not due for a check."""
        if not self.failures and not self.lagging:
            return True  # the common case, read without the lock
        with self._lock:
            if self.failures:
                if now < self.retry_at or self.probing:
                    return False
                self.probing = True
                return True
            if self.lagging:
                return self._claim_check(now)
            return True

    def failed(self, now: float) -> None:
        """A connection or query on the replica failed: down, retried after a growing wait."""
        with self._lock:
            self.failures += 1
            self.probing = False
            wait = min(self.retry_cap, self.retry_after * (2 ** min(self.failures - 1, 16)))
            self.retry_at = now + wait

    def succeeded(self) -> None:
        """A connection to the replica worked: up again."""
        if self.failures or self.probing:
            with self._lock:
                self.failures = 0
                self.probing = False

    def unclaim(self) -> None:
        """The probe claimed by :meth:`claim` ended without an answer (the replica's pool was full, say):
        the next thread may probe. No-op when :meth:`succeeded` or :meth:`failed` ended it."""
        if self.probing:
            with self._lock:
                self.probing = False

    @property
    def down(self) -> bool:
        """True while the replica is considered down."""
        return bool(self.failures)

    # -- replay position and lag --------------------------------------------------------------------

    def reached(self, lsn: Position) -> bool:
        """True if the replica is known to have replayed ``lsn`` (no query needed)."""
        return self.replayed >= lsn

    def mark(self, lsn: Position, now: float) -> None:
        """``lsn`` is known to exist on the primary at ``now`` (a commit of this process, or received)."""
        with self._lock:
            if lsn <= self.replayed or (self._marks and lsn <= self._marks[-1][0]):
                return
            if len(self._marks) >= _MAX_MARKS:
                marks = self._marks
                drop = min(range(1, len(marks) - 1), key=lambda i: marks[i + 1][1] - marks[i - 1][1])
                del marks[drop]
            self._marks.append((lsn, now))

    def due(self, now: float) -> bool:
        """True (to one thread) when a health check is due; that thread must call :meth:`checked`."""
        if now - self.checked_at < self.check_interval:
            return False
        with self._lock:
            return self._claim_check(now)

    def _claim_check(self, now: float) -> bool:
        if self.checking or now - self.checked_at < self.check_interval:
            return False
        self.checking = True
        return True

    def observed(
        self,
        replayed: Position | None,
        received: Position | None,
        now: float,
        replay_age: float | None = None,
    ) -> None:
        """Record what a query on the replica answered (positions, None when the server gave none).

        ``replay_age``: how long ago the last transaction the replica replayed committed, given only
        while the replica has received WAL it has not replayed yet (on an idle primary that age grows
        without any lag, so it means nothing once everything received is replayed). It bounds the lag
        of a replica even when this process commits little.
        """
        if received is not None:
            self.mark(received, now)
        if replayed is None:
            return
        with self._lock:
            if replayed > self.replayed:
                self.replayed = replayed
            while self._marks and self._marks[0][0] <= self.replayed:
                self._marks.popleft()
            self._replay_age = replay_age or 0.0
            self.lagging = (bool(self._marks) and now - self._marks[0][1] > self.max_lag) or (
                self._replay_age > self.max_lag
            )

    def checked(self, now: float) -> None:
        """End of the health check claimed by :meth:`due` (whatever its outcome)."""
        with self._lock:
            self.checking = False
            self.checked_at = now

    def lag_seconds(self, now: float | None = None) -> float:
        """How long the oldest known position the replica has not replayed has existed (0: none)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            marked = now - self._marks[0][1] if self._marks else 0.0
            return max(marked, self._replay_age)


_alive: weakref.WeakSet[Health] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a lock, or been probing or checking, when the process forked:
    # the child has no such thread, so it starts with fresh locks and no claim outstanding.
    for health in list(_alive):
        health._lock = threading.Lock()
        health.probing = health.checking = False


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
