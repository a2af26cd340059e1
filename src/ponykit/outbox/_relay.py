"""``Relay``: publishes committed outbox rows to a broker, at least once, in commit order per key."""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from pony.orm import Database

from .. import _pony
from ..errors import OptionError, OutboxError, PublishError
from ..transactions import transaction
from ._batch import BatchResult, run_batch
from ._dead import DeadMessage, list_dead, requeue
from ._message import Publisher
from ._notify import Listener
from ._publish import db_value, utcnow
from ._sql import dialect_of
from ._table import tables_of

__all__ = ["Relay"]

log = logging.getLogger("ponykit.outbox")

_NAMES = itertools.count(1)
_SLICE = 0.1  # seconds: how often a waiting relay looks at its stop event
_PRUNE_CHUNK = 5000  # rows deleted per pruning transaction
_BASE_BACKOFF = 0.2  # seconds: the first wait after a failure


class Relay:
    """Publishes the committed messages of ``db``'s outbox through ``publisher``.

    ``run_once()`` publishes one batch of at most ``batch_size`` pending messages and returns how many
    the broker confirmed (they are then marked sent); ``run(stop)`` loops until ``stop`` (a
    ``threading.Event``) is set or :meth:`stop` is called. Several relays (threads or processes) may run
    on one database: each claims the keys it publishes (``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
    MariaDB; on SQLite one relay works at a time), so the messages of one key are published in commit
    order and never by two relays at once.

    When the publisher fails (:class:`~ponykit.errors.PublishError`: the broker is down, refused or did
    not confirm), the batch's rows stay pending with ``attempts`` counted and ``last_error`` set; ``run``
    waits (exponential backoff with jitter, at most ``max_backoff`` seconds) and tries again. A database
    error is logged and retried the same way. On PostgreSQL the relay LISTENs for the notification each
    committed ``publish()`` sends and wakes up at once; elsewhere it looks every ``poll_interval``
    seconds. Sent rows older than ``retention`` are deleted now and then (``retention=None`` keeps them).
    Progress (rate, lag, oldest pending message, backoff) goes to the ``ponykit.outbox`` logger every
    ``log_interval`` seconds, never a payload.

    A message the broker keeps rejecting while it confirms others is set aside as dead once it failed
    ``max_attempts`` times (``None``: never): it is kept but not published again, logged at ERROR, and
    its key is blocked, so the key's later messages wait (per-key order holds). :meth:`dead` lists such
    messages and :meth:`requeue` puts them back.
    """

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention: timedelta | None = timedelta(days=7),
        max_backoff: float = 30.0,
        name: str | None = None,
        log_interval: float = 10.0,
        max_attempts: int | None = 10,
    ) -> None:
        tables = tables_of(db) if isinstance(db, Database) else None
        if tables is None or tables.outbox is None:
            raise OutboxError(
                "Relay(db, ...) takes a Database attached with ponykit.attach(db, outbox=True), got "
                + (_pony.describe_database(db) if isinstance(db, Database) else type(db).__name__)
            )
        if not callable(getattr(publisher, "publish", None)):
            raise OptionError(
                f"Relay(db, publisher): the publisher must have publish(messages) and close() (see "
                f"ponykit.outbox.Publisher), got {type(publisher).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:
            raise OptionError(
                f"Relay(batch_size=...) takes a whole number from 1 to 10000, got {batch_size!r}"
            )
        for option, value in (("poll_interval", poll_interval), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise OptionError(f"Relay({option}=...) takes seconds > 0, got {value!r}")
        if isinstance(log_interval, bool) or not isinstance(log_interval, (int, float)) or log_interval < 0:
            raise OptionError(f"Relay(log_interval=...) takes seconds >= 0, got {log_interval!r}")
        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
        ):
            raise OptionError(
                f"Relay(max_attempts=...) takes a whole number >= 1 or None, got {max_attempts!r}"
            )
        if retention is not None and (not isinstance(retention, timedelta) or retention <= timedelta(0)):
            raise OptionError(f"Relay(retention=...) takes a positive timedelta or None, got {retention!r}")
        self.db = db
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = float(poll_interval)
        self.retention = retention
        self.max_backoff = float(max_backoff)
        self.log_interval = float(log_interval)
        self.max_attempts = max_attempts
        self.name = name or f"{os.getpid()}-{next(_NAMES)}"
        self._dialect = dialect_of(db)
        self._stop = threading.Event()
        self._null_first = False
        self._failures = 0
        self._last_prune = 0.0
        # Progress since the last log line.
        self._sent_since_log = 0
        self._log_started = time.monotonic()
        self._lag: float | None = None
        #: Messages confirmed and marked sent by this relay since it was made.
        self.sent = 0

    def __repr__(self) -> str:
        return f"<Relay {self.name} to {getattr(self.publisher, 'name', type(self.publisher).__name__)}>"

    # -- one batch ------------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish one batch; return how many messages the broker confirmed and were marked sent.

        Runs its own transaction (call it outside a ``db_session``). When the publisher fails, the
        batch's rows stay pending (``attempts`` + 1, ``last_error`` set) and the publisher's error is
        raised (a :class:`~ponykit.errors.PublishError`). Database errors propagate; the rows stay
        pending (the transaction rolls back).
        """
        self._null_first = not self._null_first  # rows with and without a key take turns going first
        result = run_batch(
            self.db, self._dialect, self.publisher, self.batch_size, self._null_first, self.max_attempts
        )
        if result.error is not None:
            raise result.error
        self._count(result)
        return result.sent

    def _count(self, result: BatchResult) -> None:
        self.sent += result.sent
        self._sent_since_log += result.sent
        if result.newest is not None:
            self._lag = max(0.0, (datetime.now(timezone.utc) - result.newest).total_seconds())

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Publish until ``stop`` is set (or :meth:`stop` is called), then return.

        The batch in progress is finished first. Failures (broker or database) are logged on
        ``ponykit.outbox`` and retried after a backoff; they never end the loop.
        """
        listener = Listener(self.db, self.name) if self._dialect.name == "postgres" else None
        log.info(
            "ponykit.outbox relay %s: publishing from the %s to %s",
            self.name,
            _pony.describe_database(self.db),
            getattr(self.publisher, "name", type(self.publisher).__name__),
            extra={"relay": self.name},
        )
        try:
            while not self._stopping(stop):
                wait = self._step()
                if wait:
                    self._wait(wait, stop, listener)
                self._maybe_prune()
                self._maybe_log()
        finally:
            if listener is not None:
                listener.close()
            log.info(
                "ponykit.outbox relay %s: stopped after %d messages",
                self.name,
                self.sent,
                extra={"relay": self.name, "sent": self.sent},
            )

    def stop(self) -> None:
        """Ask :meth:`run` to return once the current batch is done."""
        self._stop.set()

    def _stopping(self, stop: threading.Event | None) -> bool:
        return self._stop.is_set() or (stop is not None and stop.is_set())

    def _step(self) -> float:
        """Run one batch; the seconds to wait before the next (0: go on at once)."""
        try:
            sent = self.run_once()
        except Exception as exc:  # noqa: BLE001 - the loop outlives broker and database failures
            self._failures += 1
            delay = self._backoff()
            kind = "publishing to the broker" if isinstance(exc, PublishError) else "the batch"
            log.warning(
                "ponykit.outbox relay %s: %s failed (%s: %s); messages stay pending, retry %d in %.1fs",
                self.name,
                kind,
                type(exc).__name__,
                exc,
                self._failures,
                delay,
                extra={"relay": self.name, "failures": self._failures, "backoff": delay},
            )
            return delay
        if self._failures:
            log.info(
                "ponykit.outbox relay %s: publishing again after %d failures",
                self.name,
                self._failures,
                extra={"relay": self.name},
            )
            self._failures = 0
        return 0.0 if sent >= self.batch_size else self.poll_interval

    def _backoff(self) -> float:
        delay = min(self.max_backoff, _BASE_BACKOFF * 2.0 ** min(self._failures - 1, 30))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    def _wait(self, seconds: float, stop: threading.Event | None, listener: Listener | None) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping(stop):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if listener is not None and not self._failures:
                if listener.wait(min(remaining, _SLICE)):
                    return
            else:
                self._stop.wait(min(remaining, _SLICE))

    # -- upkeep ---------------------------------------------------------------------------------------

    def _maybe_prune(self) -> None:
        if self.retention is None:
            return
        now = time.monotonic()
        every = min(self.retention.total_seconds() / 2, 300.0)
        if self._last_prune and now - self._last_prune < every:
            return
        self._last_prune = now
        try:
            deleted = self.prune()
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping: try again later
            log.warning(
                "ponykit.outbox relay %s: pruning failed (%s)",
                self.name,
                type(exc).__name__,
                extra={"relay": self.name},
            )
            return
        if deleted:
            log.info(
                "ponykit.outbox relay %s: pruned %d sent messages older than %s",
                self.name,
                deleted,
                self.retention,
                extra={"relay": self.name, "pruned": deleted},
            )

    def prune(self, older_than: timedelta | None = None) -> int:
        """Delete sent messages older than ``older_than`` (default: the retention); return how many."""
        age = older_than if older_than is not None else self.retention
        if age is None:
            return 0
        cutoff = db_value(self._dialect.name, utcnow() - age)
        total = 0
        while True:
            with transaction(db=self.db):
                cursor = _pony.execute_in_session(self.db, self._dialect.prune(_PRUNE_CHUNK), (cutoff,))
                deleted = max(int(cursor.rowcount or 0), 0)
            total += deleted
            if deleted < _PRUNE_CHUNK:
                return total

    def dead(self, limit: int = 100) -> list[DeadMessage]:
        """The messages set aside as dead (the broker rejected them ``max_attempts`` times), oldest
        first, at most ``limit``; without payloads (``outbox_entity(db)`` has them)."""
        with transaction(db=self.db, read_only=True):
            return list_dead(self.db, self._dialect, limit)

    def requeue(self, ids: Sequence[str]) -> int:
        """Give dead messages (by id) another ``max_attempts`` tries and unblock their keys; return how
        many were dead. Fix the cause first (the consumer's queue, the broker's limits...)."""
        if isinstance(ids, str):
            raise OptionError(
                "Relay.requeue(ids) takes a list of message ids, got one str: pass [message_id]"
            )
        with transaction(db=self.db):
            return requeue(self.db, self._dialect, list(ids))

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest pending message was published (None: nothing pending)."""
        with transaction(db=self.db, read_only=True):
            rows = _pony.execute_in_session(self.db, self._dialect.oldest_pending(), ()).fetchall()
        if not rows:
            return None
        created: datetime | str = rows[0][0]
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        age: float = (utcnow() - created.replace(tzinfo=None)).total_seconds()
        return max(0.0, age)

    def _maybe_log(self) -> None:
        now = time.monotonic()
        elapsed = now - self._log_started
        if elapsed < self.log_interval:
            return
        try:
            oldest = self.oldest_pending_age()
        except Exception:  # noqa: BLE001 - a progress line is not worth failing for
            oldest = None
        rate = self._sent_since_log / elapsed if elapsed > 0 else 0.0
        log.info(
            "ponykit.outbox relay %s: %d messages in %.0fs (%.1f/s), lag %s, oldest pending %s",
            self.name,
            self._sent_since_log,
            elapsed,
            rate,
            "-" if self._lag is None else f"{self._lag:.3f}s",
            "none" if oldest is None else f"{oldest:.1f}s",
            extra={"relay": self.name, "rate": rate, "lag": self._lag, "oldest_pending": oldest},
        )
        self._sent_since_log = 0
        self._log_started = now
