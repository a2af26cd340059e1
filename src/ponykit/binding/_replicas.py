"""Read replicas: the router that ``bind_url(db, primary, replicas=[...])`` installs as the Database's pool.

Pony asks its provider's pool for a connection when a ``db_session`` first needs one, and gives it back
when the session ends. The router answers from the primary's pool, unless the current context has a
*read intent* (:func:`replica_session`, ``transaction(read_only=True)``, a GET request of a web
integration): then from a healthy replica's pool, if that replica has replayed the reader's pin (see
``_pins``), waiting up to ``pin_wait`` for it; otherwise from the primary. Connections go back to the pool
they came from. After a commit on the primary, the commit's position becomes the current scope's pin
(PostgreSQL's WAL LSN, MariaDB's GTID position: ``_dialects`` holds what differs).

Writes never reach a replica: a flush in a read session raises :class:`~ponykit.errors.ReadOnlySessionError`
before any SQL (with ``attach()``, every write statement too), or with ``on_write="primary"`` moves the
session to the primary through Pony's own reconnect path, keeping its identity map (so Pony's optimistic
checks compare against what was read on the replica and a stale read fails the update).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .. import _pony
from .._kit import find_kit
from ..errors import ConfigurationError, OptionError, PoolTimeout, UnsupportedDatabase
from ._dialects import Dialect, dialect_for
from ._gtid import Position
from ._health import Health
from ._pins import pin_for, record_pin
from ._pool import PoolConfig, make_bounded_pool

__all__ = ["ReplicaConfig", "Router", "install_router", "replica_config", "replica_status", "replica_targets"]

log = logging.getLogger("ponykit.binding")


@dataclass(frozen=True)
class ReplicaConfig:
    """The replicas of a primary and how reads are routed to them (``bind_url(..., replicas=...)``).

    ``urls``: the replicas' URLs (PostgreSQL streaming replicas of the primary, or MariaDB replicas
    replicating it with GTIDs, ``MASTER_USE_GTID=slave_pos``). ``pin_wait``: how long
    (seconds) a reader pinned to its own last commit waits for a replica to replay it before reading
    from the primary. ``poll``: the first interval between two replay checks while waiting (it doubles
    up to 50 ms). ``max_lag``: a replica more than this many seconds behind a position known to exist
    on the primary is skipped. ``check_interval``: how often (seconds) one thread re-checks a replica's
    replay position and lag. ``retry_after``/``retry_cap``: a replica that failed is skipped for
    ``retry_after`` seconds, doubling with each failure in a row up to ``retry_cap``.
    """

    urls: tuple[str, ...] = ()
    pin_wait: float = 0.25
    poll: float = 0.005
    max_lag: float = 5.0
    check_interval: float = 1.0
    retry_after: float = 1.0
    retry_cap: float = 30.0

    def __post_init__(self) -> None:
        urls = (self.urls,) if isinstance(self.urls, str) else tuple(self.urls)
        for url in urls:
            if not isinstance(url, str):
                raise OptionError(
                    f"ReplicaConfig(urls=...) takes database URLs (str), got {type(url).__name__}"
                )
        object.__setattr__(self, "urls", urls)
        for name in ("pin_wait", "poll", "max_lag", "check_interval", "retry_after", "retry_cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise OptionError(f"ReplicaConfig({name}=...) takes seconds >= 0, got {value!r}")
        if self.poll <= 0:
            raise OptionError(f"ReplicaConfig(poll=...) takes seconds > 0, got {self.poll!r}")

    def __repr__(self) -> str:
        # The URLs may hold passwords: shown redacted, like everywhere else in ponykit.
        from . import redact_url

        options = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("pin_wait", "poll", "max_lag", "check_interval", "retry_after", "retry_cap")
        )
        return f"ReplicaConfig(urls={tuple(redact_url(u) for u in self.urls)!r}, {options})"


def replica_config(replicas: Sequence[str] | ReplicaConfig) -> ReplicaConfig:
    """``bind_url``'s ``replicas=`` (URLs, or a :class:`ReplicaConfig`) as a :class:`ReplicaConfig`."""
    if isinstance(replicas, ReplicaConfig):
        return replicas
    if isinstance(replicas, str):
        raise OptionError(
            "bind_url(replicas=...) takes a list of URLs (or a ReplicaConfig), got one str: "
            "write replicas=[url]"
        )
    return ReplicaConfig(urls=tuple(replicas))


def replica_targets(
    config: ReplicaConfig,
    provider: str,
    overrides: dict[str, Any],
    parse: Callable[[str], tuple[str, dict[str, Any]]],
    redact: Callable[[str], str],
    aliases: dict[str, str],
) -> list[tuple[str, dict[str, Any]]]:
    """``(redacted URL, connection arguments)`` of each replica: its URL parsed with ``parse``, plus the
    primary's keyword ``overrides`` that the replica URL does not set itself (``aliases``: spellings of one
    setting). Refused (before anything is bound) for a primary that is neither PostgreSQL nor MariaDB."""
    targets = []
    for url in config.urls:
        if provider not in ("postgres", "mysql"):
            raise UnsupportedDatabase(
                f"bind_url(replicas=...) supports PostgreSQL streaming replicas and MariaDB GTID replicas "
                f"only; the primary URL is a {provider} URL. Bind without replicas= (reads then use the "
                "primary)"
            )
        kind, kwargs = parse(url)
        if kind != provider:
            example = "postgresql://..." if provider == "postgres" else "mysql://..."
            raise ConfigurationError(
                f"replica URL {redact(url)!r} is not a {provider} URL like its primary's; a replica is a "
                f"replica of the primary ({example})"
            )
        given = {aliases.get(k, k) for k in kwargs}
        for key, value in overrides.items():
            if aliases.get(key, key) not in given:
                kwargs[key] = value
        targets.append((redact(url), kwargs))
    return targets


@dataclass
class _Replica:
    name: str  # the redacted URL
    pool: Any
    health: Health


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1


class _Taken(threading.local):
    def __init__(self) -> None:
        self.replica: _Replica | None = None
        self.connection: Any = None


def primary_key_of(kwargs: dict[str, Any]) -> str:
    """The name of a primary in pins: a hash of its host, port and database (stable across processes)."""
    name = kwargs.get("database") or kwargs.get("dbname") or kwargs.get("db") or ""
    text = f"{kwargs.get('host') or ''}:{kwargs.get('port') or ''}/{name}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class Router(_pony.PoolWrapper):
    """The pool of a Database with replicas: hands out primary or replica connections (module docstring).

    ``original`` (``primary``) is the primary's pool: Pony's own, or a bounded pool.
    """

    def __init__(
        self,
        db: Database,
        primary: Any,
        replicas: list[_Replica],
        config: ReplicaConfig,
        key: str,
        dialect: Dialect | None = None,
    ):
        self.db = db
        self.dialect = dialect or dialect_for("postgres")
        self.original = self.primary = primary
        self.replicas = replicas
        self.config = config
        self.key = key
        self._taken = _Taken()
        self._turn = itertools.count()
        self.stats = _Stats()

    # -- Pony's pool interface ----------------------------------------------------------------------

    def connect(self) -> tuple[Any, bool]:
        """A connection for the current session: a replica's for a read intent, else the primary's."""
        intent = _pony.read_intent(self.db)
        if intent is None or not intent.route:
            return self.primary.connect()  # type: ignore[no-any-return]
        return self._connect_read(intent)

    def release(self, con: Any) -> None:
        """Give ``con`` back to the pool it came from (Pony's reset: rollback, and DISCARD ALL)."""
        taken = self._taken
        if taken.connection is not None and taken.connection is con:
            replica = taken.replica
            taken.replica = taken.connection = None
            assert replica is not None
            try:
                replica.pool.release(con)  # a failing reset closes the connection (Pony's pools do)
            except Exception as exc:  # noqa: BLE001 - the session only read: nothing is lost, no error
                self._failed(replica, time.monotonic(), exc)
        else:
            self.primary.release(con)

    def drop(self, con: Any) -> None:
        """Close ``con`` (Pony saw it fail) in the pool it came from; a replica connection left behind by a
        session that moved to the primary goes back to its pool instead."""
        taken = self._taken
        if taken.connection is not None and taken.connection is con:
            replica = taken.replica
            taken.replica = taken.connection = None
            assert replica is not None
            if _pony.is_moved_to_primary(self.db):
                replica.pool.release(con)
            else:
                replica.pool.drop(con)
        else:
            self.primary.drop(con)

    def disconnect(self) -> None:
        """Close this thread's connections to the primary and to every replica."""
        self.primary.disconnect()
        for replica in self.replicas:
            replica.pool.disconnect()

    def holds_replica(self, con: Any) -> bool:
        """True if ``con`` is the replica connection the current thread holds."""
        return con is not None and self._taken.connection is con

    # -- routing ------------------------------------------------------------------------------------

    def _connect_read(self, intent: _pony.ReadIntent) -> tuple[Any, bool]:
        db = self.db
        if _pony.is_moved_to_primary(db):
            return self._primary("moved")
        cache = _pony.session_cache(db)
        if cache is not None and _pony.pending_flush(cache) and not intent.transaction:
            # Pony connects to flush: refuse (ReadOnlySessionError), or with on_write="primary" the
            # session is marked moved and takes the primary from the start.
            with contextlib.suppress(_pony.MoveToPrimary):
                _pony.refuse_write(db, _pony.describe_flush(cache))
            return self._primary("moved")
        pin = pin_for(self.key)
        if pin is not None and not self.dialect.is_position(pin):
            pin = None  # a token's pin of another kind of database (forged): a hint only, ignored
        now = time.monotonic()
        count = len(self.replicas)
        start = next(self._turn) % count if count > 1 else 0
        reason = "down"
        for i in range(count):
            replica = self.replicas[(start + i) % count]
            if not replica.health.claim(now):
                reason = "lagging" if replica.health.lagging and not replica.health.down else reason
                continue
            got, why = self._try(replica, pin, now)
            if got is not None:
                self._taken.replica = replica
                self._taken.connection = got[0]
                self.stats.add("replica")
                return got
            reason = why
        return self._primary(reason)

    def _primary(self, reason: str) -> tuple[Any, bool]:
        self.stats.add(f"primary:{reason}")
        return self.primary.connect()  # type: ignore[no-any-return]

    def _try(
        self, replica: _Replica, pin: Position | None, now: float
    ) -> tuple[tuple[Any, bool] | None, str]:
        health = replica.health
        probing = health.down
        check = health.lagging or health.due(now)
        try:
            for attempt in (1, 2):
                try:
                    con, fresh = replica.pool.connect()
                except PoolTimeout:
                    return None, "busy"  # every connection of its bounded pool is in use: not a failure
                except Exception as exc:  # noqa: BLE001 - any driver error: the replica is down for now
                    self._failed(replica, now, exc)
                    return None, "down"
                try:
                    if check or probing:
                        self._observe(replica, con)
                    health.succeeded()
                    if health.lagging:
                        replica.pool.release(con)
                        return None, "lagging"
                    if pin is not None and not health.reached(pin) and not self._wait(replica, con, pin):
                        replica.pool.release(con)
                        return None, "pinned"
                except Exception as exc:  # noqa: BLE001 - the replica failed a query: its connection closed
                    with contextlib.suppress(Exception):  # closing a dead connection may fail too
                        replica.pool.drop(con)  # first: its slot is free before other threads skip it
                    if attempt == 1 and not fresh and not getattr(replica.pool, "pings_kept", False):
                        # A connection kept from before (Pony's pool keeps one per thread) may have died
                        # with a replica restart: only a new connection tells whether it is down now.
                        continue
                    self._failed(replica, now, exc)
                    return None, "down"
                return (con, fresh), ""
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns
        finally:
            if check:
                health.checked(time.monotonic())
            if probing:
                health.unclaim()  # a probe without an answer ("busy", an interrupt): the next may probe

    def _failed(self, replica: _Replica, now: float, exc: BaseException) -> None:
        was_down = replica.health.down
        replica.health.failed(now)
        if not was_down:
            log.warning(
                "ponykit: replica %s is unavailable (%s); reads go to the primary until it answers again",
                replica.name,
                type(exc).__name__,
            )

    def _observe(self, replica: _Replica, con: Any) -> None:
        self.dialect.observe(replica.health, con)

    def _wait(self, replica: _Replica, con: Any, pin: Position) -> bool:
        return self.dialect.wait(replica.health, con, pin, self.config.pin_wait, self.config.poll)

    # -- pins -----------------------------------------------------------------------------------------

    def committed(self, connection: Any) -> None:
        """A transaction committed on ``connection``: on the primary, pin the scope to the commit's
        position (one query, outside any transaction: WAL LSN or GTID position)."""
        if self.holds_replica(connection):
            return
        try:
            lsn = self.dialect.commit_position(connection)
        except Exception as exc:  # noqa: BLE001 - the commit is done; only the pin is missing
            log.warning(
                "ponykit: could not read the replication position after a commit on the primary (%s); "
                "reads of this scope may not see that commit on a replica",
                type(exc).__name__,
            )
            return
        record_pin(self.key, lsn)
        self.stats.add("pins")
        now = time.monotonic()
        for replica in self.replicas:
            replica.health.mark(lsn, now)


def install_router(
    db: Database, replicas: list[tuple[str, dict[str, Any]]], config: ReplicaConfig, pool: PoolConfig | None
) -> Router:
    """Put a :class:`Router` in front of ``db``'s pool, with one pool per replica (``replicas``: redacted
    URL and connection arguments of each): Pony's kind, or a bounded pool with ``pool``'s configuration.
    Hooks commits (pins), the start of transactions and reconnects (refusing or moving writes)."""
    members = [
        _Replica(
            name,
            _replica_pool(db, name, kwargs, pool),
            Health(
                max_lag=config.max_lag,
                check_interval=config.check_interval,
                retry_after=config.retry_after,
                retry_cap=config.retry_cap,
            ),
        )
        for name, kwargs in replicas
    ]
    primary = _pony.provider_pool(db)
    router = Router(
        db,
        primary,
        members,
        config,
        primary_key_of(dict(_pony.pony_pool(db).kwargs)),
        dialect_for(_pony.dialect(db)),
    )
    _pony.set_router(db, router)
    _pony.chain_provider_method(db, "commit", lambda original: _commit(router, original))
    _pony.chain_provider_method(db, "set_transaction_mode", lambda original: _set_mode(db, original))
    _pony.chain_provider_method(db, "should_reconnect", _should_reconnect)
    return router


def _replica_pool(db: Database, name: str, kwargs: dict[str, Any], config: PoolConfig | None) -> Any:
    if config is None:
        return _pony.native_pool(db, kwargs)
    # A reader never waits for a replica connection: when the replica's pool is full it reads from the
    # primary at once ("busy") rather than after the primary's whole timeout.
    return make_bounded_pool(db, dataclasses.replace(config, timeout=0), name, kwargs)


def _commit(router: Router, original: Any) -> Any:
    def commit(connection: Any, cache: Any = None) -> Any:
        if router.holds_replica(connection):
            # A replica session only read, so its COMMIT would change nothing; the release that follows
            # rolls the transaction back. Skipping it saves a round trip, and a replica that went away
            # after the last read cannot fail a session whose reads all succeeded.
            _pony.end_read_transaction(cache)
            return None
        wrote = _may_have_written(router.db, cache)  # before: the commit forgets what was written
        result = original(connection, cache)
        if wrote:
            router.committed(connection)
        return result

    return commit


def _may_have_written(db: Database, cache: Any) -> bool:
    """False only for a transaction known to have only read (attach() counts every statement and every
    reported write). Pinning it would cost a query and tie the reader's next replica reads to other
    clients' writes; Pony's MySQL provider commits every read session, so that is every session there."""
    kit = find_kit(db)
    wrote = kit.transaction_wrote if kit is not None else None
    return wrote is None or cache is None or wrote(cache)


def _set_mode(db: Database, original: Any) -> Any:
    def set_transaction_mode(connection: Any, cache: Any) -> Any:
        # A flush is about to write: refuse it (or move the session) before Pony sends anything.
        if _pony.read_intent(db) is not None and _pony.pending_flush(cache):
            _pony.refuse_write(db, _pony.describe_flush(cache))
        return original(connection, cache)

    return set_transaction_mode


def _should_reconnect(original: Any) -> Any:
    def should_reconnect(exc: BaseException) -> bool:
        return isinstance(exc, _pony.MoveToPrimary) or bool(original(exc))

    return should_reconnect


def replica_status(db: Database) -> dict[str, Any]:
    """How reads of ``db`` were routed so far in this process, and what is known of each replica.

    ``{"sessions": {"replica": n, "primary:pinned": n, "primary:down": n, ...}, "pins": n, "replicas":
    [{"url": redacted, "down": bool, "lagging": bool, "lag_seconds": float, "replayed": "0/3000148"}]}``.
    Read sessions counted under ``primary:<reason>`` fell back to the primary (``pinned``: no replica had
    replayed the reader's own last commit within ``pin_wait``; ``down``, ``lagging``; ``busy``: the
    replica's bounded pool had no free connection within its timeout; ``moved``: a write moved it). Empty
    for a Database without replicas.
    """
    router = _pony.routes_reads(db)
    if router is None:
        return {}
    with router.stats.lock:
        counts = dict(router.stats.counts)
    return {
        "sessions": {k: v for k, v in counts.items() if k != "pins"},
        "pins": counts.get("pins", 0),
        "replicas": [
            {
                "url": r.name,
                "down": r.health.down,
                "lagging": r.health.lagging,
                "lag_seconds": r.health.lag_seconds(),
                "replayed": router.dialect.format(r.health.replayed) if r.health.replayed >= 0 else None,
            }
            for r in router.replicas
        ],
    }
