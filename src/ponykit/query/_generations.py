"""Per-Database cache bookkeeping: namespaces, query dependencies, generation bumps after commit.

Installed on every attached Database (an attach hook): a commit subscriber bumps the generations of the
entities a committed transaction wrote, in every cache backend used with that Database, and a statement
listener reports writes Pony does not track itself (``Query.delete(bulk=True)``, raw ``db.execute``) to
the transaction, so they reach the commit event like any other write.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from pony.orm import Database

from .. import _pony, transactions
from ..errors import ConfigurationError
from ..kit import CommitEvent, Kit, add_attach_hook, get_kit

__all__ = ["DbState", "db_state", "must_bypass", "register_backend"]

log = logging.getLogger("ponykit.cache")

_STATE_ATTR = "_ponykit_cache_state_"
_install_lock = threading.Lock()

# The statements that change rows, and the table they change (quoted or not, maybe schema-qualified).
_WRITE_RE = re.compile(
    r"^\s*(?:INSERT\s+(?:OR\s+\w+\s+|IGNORE\s+)?INTO|REPLACE\s+INTO|UPDATE(?:\s+IGNORE)?|"
    r"DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|MERGE\s+INTO)\s+([^\s(]+)",
    re.IGNORECASE,
)
_PASSWORD_RE = re.compile(r"(://[^:/@\s]*):[^@\s]*@|(password|passwd)\s*=\s*\S+", re.IGNORECASE)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _PASSWORD_RE.sub(lambda m: (m.group(1) + "@") if m.group(1) else "", value)
    return value


class DbState:
    """Cache bookkeeping of one attached Database."""

    def __init__(self, kit: Kit) -> None:
        self._kit_ref = weakref.ref(kit)
        self._db_ref = weakref.ref(kit.db)
        self._namespace: str | None = None
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
        """A stable name of this database and mapping: the same in every process bound to it.

        Built from the dialect, the connection arguments (passwords removed) and the tables and columns
        of the mapping, hashed. An in-memory SQLite database is private to its process, so its namespace
        is too.
        """
        ns = self._namespace
        if ns is None:
            db = self.db
            if not _pony.is_mapped(db):
                raise ConfigurationError(
                    f"{db!r} has no mapping yet: call db.generate_mapping() before using the cache"
                )
            dialect, args, kwargs = _pony.connection_fingerprint(db)
            safe_kwargs = sorted(
                (k, _scrub(v)) for k, v in kwargs.items() if k.lower() not in ("password", "passwd")
            )
            parts: list[Any] = [dialect, [_scrub(a) for a in args], safe_kwargs, _pony.mapping_signature(db)]
            if dialect == "sqlite" and any(str(a) in (":memory:", "") for a in args[:1]):
                parts.append((_pony.getpid(), id(db)))
            ns = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
            self._namespace = ns
        return ns

    def gen_names(self, entity_names: Iterable[str]) -> tuple[str, ...]:
        """The generation counter names of some entities of this Database."""
        ns = self.namespace
        return tuple(f"{ns}/{name}" for name in entity_names)

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


def _norm(table: Any) -> str:
    return (table[-1] if isinstance(table, tuple) else str(table)).lower()


def db_state(kit: Kit) -> DbState:
    """The cache bookkeeping of an attached Database (made on first use)."""
    state: DbState | None = kit.__dict__.get(_STATE_ATTR)
    if state is None:
        with _install_lock:
            state = kit.__dict__.get(_STATE_ATTR)
            if state is None:
                state = DbState(kit)
                setattr(kit, _STATE_ATTR, state)
    return state


def register_backend(db: Database, backend: Any) -> None:
    """Make commits on ``db`` bump generations in ``backend`` too (the Kit's own cache always is)."""
    state = db_state(get_kit(db))
    if backend not in state.backends:
        state.backends.add(backend)


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


def _on_attach(kit: Kit) -> None:
    state = db_state(kit)
    if state.hooked:
        return
    with _install_lock:
        if state.hooked:
            return
        state.hooked = True
    kit.subscribe(_make_subscriber(state))
    kit.add_execute_listener(_make_write_listener(state))


def _make_subscriber(state: DbState) -> Any:
    state_ref = weakref.ref(state)

    def bump_generations(event: CommitEvent) -> None:
        st = state_ref()
        if st is None:
            return
        kit = st._kit_ref()
        backends = list(st.backends)
        if kit is not None and kit.cache is not None and kit.cache not in backends:
            backends.append(kit.cache)
        if not backends:
            return
        names = st.gen_names(event.writes)
        for backend in backends:
            try:
                backend.bump(names)
            except Exception:
                log.exception("ponykit: cache backend %r failed to bump generations", backend)

    return bump_generations


def _make_write_listener(state: DbState) -> Any:
    state_ref = weakref.ref(state)

    def record_raw_writes(db: Database, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        if error is not None:
            return
        match = _WRITE_RE.match(sql)
        if match is None or _pony.in_flush(db):
            return  # Pony's own flush statements are reported with their keys by the foundation
        st = state_ref()
        if st is None:
            return
        name = match.group(1).split(".")[-1].strip("`\"[]'").lower()
        entities = st.tables().get(name)
        if not entities:
            return
        for entity in entities:
            transactions.record_writes(db, entity, None)

    return record_raw_writes


add_attach_hook(_on_attach)
