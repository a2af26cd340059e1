"""Per-Database cache bookkeeping: namespaces, query dependencies, generation bumps after commit.

Installed on every attached Database by ``attach()`` (``query.cache.install``): a commit subscriber bumps
the generations of the entities a committed transaction wrote, in every cache backend used with that
Database, and a statement listener reports writes Pony does not track itself (``Query.delete(bulk=True)``,
raw ``db.execute``) to the transaction, so they reach the commit event like any other write.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

from pony.orm import Database

from .. import _pony, transactions
from .._kit import CommitEvent, Kit, get_kit
from ..errors import ConfigurationError, MemoryCacheWarning
from ._sqlwrites import ALL, written_tables

__all__ = ["DbState", "check_shared_database", "db_state", "install", "must_bypass", "register_backend"]

log = logging.getLogger("ponykit.cache")

_install_lock = threading.Lock()


class DbState:
    """Cache bookkeeping of one attached Database."""

    def __init__(self, kit: Kit) -> None:
        self._kit_ref = weakref.ref(kit)
        self._db_ref = weakref.ref(kit.db)
        self._namespace: str | None = None
        self._entry_namespace: str | None = None
        self._written: dict[str, Any] = {}
        self._by_entity: dict[str, str] | None = None
        self._deps: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._tables: dict[str, frozenset[Any]] | None = None
        self._quoted: list[tuple[str, frozenset[str]]] | None = None
        self.backends: weakref.WeakSet[Any] = weakref.WeakSet()
        self.hooked = False

    @property
    def db(self) -> Database:
        db = self._db_ref()
        assert db is not None
        return db

    @property
    def namespace(self) -> str:
        """The name invalidations of this database go under: the same in every process that reaches it.

        ``attach(db, cache_namespace=...)`` if given, else a hash of what identifies the data on the
        server (dialect, database, schema: :func:`ponykit._pony.server_identity`), never of client
        options, so processes with other URL details or another version of the mapping share
        generations. An in-memory SQLite database is private to its process, so its namespace is too.
        """
        ns = self._namespace
        if ns is None:
            kit = self._kit_ref()
            override = kit.cache_namespace if kit is not None else None
            if override is not None:
                ns = "n:" + override
                self._warn_if_per_process((_pony.dialect(self.db),))
            else:
                identity = _pony.server_identity(self.db)
                ns = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
                self._warn_if_per_process(identity)
            self._namespace = ns
        return ns

    @property
    def entry_namespace(self) -> str:
        """The namespace of cached entries: :attr:`namespace` plus the mapping's tables, columns and
        attribute types, so two versions of an application never serve each other's entries (they
        share generations, so a write of either invalidates both)."""
        ns = self._entry_namespace
        if ns is None:
            db = self.db
            if not _pony.is_mapped(db):
                raise ConfigurationError(
                    f"{db!r} has no mapping yet: call db.generate_mapping() before using the cache"
                )
            signature = repr(_pony.mapping_signature(db))  # plain strings and tuples of them: stable
            ns = hashlib.sha256(f"{self.namespace}\0{signature}".encode()).hexdigest()[:16]
            self._entry_namespace = ns
        return ns

    def _warn_if_per_process(self, identity: tuple[str, ...]) -> None:
        if identity[:2] == ("sqlite", ":memory:"):
            return  # private to this process anyway: a per-process cache is exactly right
        kit = self._kit_ref()
        caches = [*self.backends, *([kit.cache] if kit is not None else [])]
        for cache in caches:
            check_shared_database(cache, identity[0])

    def gen_names(self, entity_names: Iterable[str]) -> tuple[str, ...]:
        """The generation counter names of some entities of this Database: one per *table* they are
        stored in, so processes whose mappings name an entity differently (another version of the
        application, another application) still share invalidations of the same rows."""
        ns = self.namespace
        tables = self._entity_tables()
        return tuple(sorted({f"{ns}/t:{tables.get(name) or 'e:' + name}" for name in entity_names}))

    def _entity_tables(self) -> dict[str, str]:
        found = self._by_entity
        if found is None:
            db = self.db
            if not _pony.is_mapped(db):
                return {}
            # The unqualified, lower-cased name: two spellings of one table ("t" on the search_path,
            # ("public", "t")) must meet; two tables that only look alike share a counter, which costs
            # extra misses, never a stale read.
            found = {
                name: _norm(_pony.entity_info(entity).table) for name, entity in _pony.entities_of(db).items()
            }
            self._by_entity = found
        return found

    def written_tables(self, sql: str) -> Any:
        """:func:`._sqlwrites.written_tables` of ``sql`` in this database's dialect, remembered per text."""
        memo = self._written
        if sql in memo:
            return memo[sql]
        found = written_tables(sql, _pony.dialect(self.db))
        if len(memo) > 10_000:
            memo.clear()
        memo[sql] = found
        return found

    def tables(self) -> dict[str, frozenset[Any]]:
        """Lower-cased table name -> entities a write to it changes."""
        if self._tables is None:
            self._tables = _pony.table_entities(self.db)
        return self._tables

    def query_deps(self, sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(entity names, generation names)`` a query's result depends on: every entity whose table (or
        many-to-many link table) the SQL reads."""
        found = self._deps.get(sql)
        if found is not None:
            return found
        if self._quoted is None:
            db = self.db
            quoted = []
            for entity in _pony.entities_of(db).values():
                names: set[str] = {c.__name__ for c in _pony.entity_lineage(entity)}
                names |= {e.__name__ for e in self.tables()[_norm(_pony.entity_info(entity).table)]}
                quoted.append((_pony.quote_name(db, _pony.entity_info(entity).table), frozenset(names)))
                for link in _pony.entity_info(entity).link_tables:
                    linked = {e.__name__ for e in self.tables()[_norm(link.table)]}
                    quoted.append((_pony.quote_name(db, link.table), frozenset(linked)))
            self._quoted = quoted
        deps: set[str] = set()
        for quoted_name, dep_names in self._quoted:
            if quoted_name in sql:
                deps |= dep_names
        entity_names = tuple(sorted(deps))
        found = (entity_names, self.gen_names(entity_names))
        if len(self._deps) > 10_000:
            self._deps.clear()
        self._deps[sql] = found
        return found


_norm = _pony.table_key  # the one table-name normalisation, shared with the door's table lookups


def db_state(kit: Kit) -> DbState:
    """The cache bookkeeping of an attached Database (made on first use)."""
    state: DbState | None = kit.cache_state
    if state is None:
        with _install_lock:
            state = kit.cache_state
            if state is None:
                state = kit.cache_state = DbState(kit)
    return state


def register_backend(db: Database, backend: Any) -> None:
    """Make commits on ``db`` bump generations in ``backend`` too (the Kit's own cache always is)."""
    state = db_state(get_kit(db))
    if backend not in state.backends:
        state.backends.add(backend)
        if state._namespace is not None and _pony.dialect(db) != "sqlite":
            check_shared_database(backend, _pony.dialect(db))
        _resolve_early(state)


def _resolve_early(state: DbState) -> None:
    """Ask the server for the namespace now, while nothing depends on it, rather than in the first
    commit's invalidation; if the database cannot be reached yet, the first use asks again."""
    try:
        state.namespace  # noqa: B018 - resolved and remembered
    except Exception as exc:  # noqa: BLE001 - a server not reachable yet defers; attach() never fails on it
        log.warning(
            "ponykit: cache namespace of %r not known yet (%s); asking again at first use", state.db, exc
        )


def _invalidate_everything(backend: Any) -> None:
    try:
        bump_epoch = getattr(backend, "bump_epoch", None)
        if callable(bump_epoch):
            bump_epoch()
        else:
            backend.clear()
    except Exception:
        log.exception("ponykit: cache backend %r failed to invalidate everything", backend)


def check_shared_database(cache: Any, dialect: str) -> None:
    """Warn (once per cache) when a per-process cache serves a database other processes can write.

    A MemoryCache only sees the commits of its own process; a server database (PostgreSQL, MariaDB ...)
    is usually written by several (web workers, task workers), whose commits it never hears of.
    """
    if dialect == "sqlite" or not getattr(cache, "per_process", False):
        return
    if getattr(cache, "_warned_shared", False):
        return
    cache._warned_shared = True
    warnings.warn(
        f"{cache!r} is a per-process cache on a {dialect} database: commits made by other processes "
        "(other web workers, task workers, a second server) never invalidate its entries, so they serve "
        "stale rows until their ttl. Use RedisCache for a database written by several processes, or pass "
        "MemoryCache(..., single_process=True) if this process is the only writer",
        MemoryCacheWarning,
        stacklevel=4,
    )


def must_bypass(db: Database, entity_names: Iterable[str]) -> bool:
    """True inside a db_session that has written (flushed or not, not yet committed) one of the entities.

    Such a session must read its own writes, which no shared cache holds.
    """
    if _pony.session_cache(db) is None:
        return False
    pending = transactions.pending_writes(db)
    unflushed = _pony.unflushed_entities(db)
    if not pending and not unflushed:
        return False
    return any(name in pending or name in unflushed for name in entity_names)


# ---------------------------------------------------------------------------------------------------------
# Hooks installed at attach()


def install(kit: Kit) -> None:
    """Hook the cache bookkeeping into ``kit`` (the last of attach()'s installers; runs at every attach()).

    The commit subscriber and the raw-write listener are added once. The namespace is asked again at each
    call, since that ``attach()`` may have changed ``cache_namespace`` or ``cache``.
    """
    state = db_state(kit)
    with _install_lock:
        hook, state.hooked = not state.hooked, True
    if hook:
        kit.subscribe(_make_subscriber(state))
        kit.add_execute_listener(_make_write_listener(state))
    if kit.cache_namespace is not None or kit.cache is not None:
        state._namespace = state._entry_namespace = None  # attach() may have changed cache_namespace
        _resolve_early(state)


def _make_subscriber(state: DbState) -> Any:
    state_ref = weakref.ref(state)

    def bump_generations(event: CommitEvent) -> None:
        st = state_ref()
        if st is None:
            return
        kit = st._kit_ref()
        if not st.backends and (kit is None or kit.cache is None):
            return  # no cache has been used on this Database: nothing to invalidate (most commits)
        backends = list(st.backends)
        if kit is not None and kit.cache is not None and kit.cache not in backends:
            backends.append(kit.cache)
        if not backends:
            return
        try:
            names = st.gen_names(event.writes)
        except Exception:
            # The namespace could not be asked of the server (no connection to spare, say): the
            # invalidation cannot be named, so make everything these backends hold unreachable.
            log.exception("ponykit: cannot name the cache generations of %r; invalidating everything", st.db)
            for backend in backends:
                _invalidate_everything(backend)
            return
        for backend in backends:
            try:
                backend.bump(names)
            except Exception:
                log.exception("ponykit: cache backend %r failed to bump generations", backend)

    return bump_generations


_UNKNOWN = object()  # not yet in DbState._written


def _make_write_listener(state: DbState) -> Any:
    state_ref = weakref.ref(state)

    def record_raw_writes(db: Database, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        st = state_ref()
        if st is None:
            return
        # Runs after every statement: a text already known not to write (Pony's cached SELECTs) returns
        # after one dict lookup, before the session checks below (~4 µs per round trip otherwise, measured).
        written = st._written.get(sql, _UNKNOWN)
        if written is None:
            return
        if error is not None or _pony.in_flush(db) or _pony.in_self_reported_statement():
            return  # Pony's flushes and ponykit's bulk statements report their keys themselves
        if written is _UNKNOWN:
            written = st.written_tables(sql)
        if written is None or not _pony.is_mapped(db):
            return  # not a write, or create_tables() itself: nothing can be cached yet
        if written is ALL:
            # A write whose tables cannot be told (a CTE, a multi-table UPDATE, a procedure call ...):
            # invalidate everything of this Database rather than serve a pre-write answer.
            entities: set[Any] = set(_pony.entities_of(db).values())
        else:
            tables = st.tables()
            entities = {entity for name in written for entity in tables.get(name, ())}
        for entity in entities:
            transactions.record_writes(db, entity, None)

    return record_raw_writes
