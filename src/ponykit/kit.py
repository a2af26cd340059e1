"""``attach(db)``: the one set-up call that gives a Pony ``Database`` its ponykit configuration.

Everything ponykit installs is installed on one ``Database``: its converters (on that database's provider
instance), its commit/rollback interception, its keys and its cache. Two databases in one process never
see each other's keys, caches or converters (type declarations themselves are process-wide, see
``ponykit.types``).

``attach()`` checks the timing, makes the :class:`Kit` (``ponykit._kit``) and runs :data:`INSTALLERS`,
one explicit tuple in a fixed order. No module installs anything because it was imported, so what an
attached Database gets never depends on which modules were imported before ``attach()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from pony.orm import Database

from . import _kit, _pony, diagnostics, transactions, types
from . import outbox as outbox_tables
from ._kit import CommitEvent, Kit, attached_databases, find_kit, forget, get_kit
from .errors import ConfigurationError, OptionError
from .query import cache as query_cache
from .query.backends import CacheBackend
from .security import rls
from .security.keys import KeyRing

__all__ = [
    "INSTALLERS",
    "CommitEvent",
    "Kit",
    "attach",
    "attached_databases",
    "find_kit",
    "forget",
    "get_kit",
]

_attach_lock = threading.Lock()


def _look_in_current_schema(kit: Kit) -> None:
    # Schema-per-tenant through search_path: Pony's create_tables looks in "public" (issue #12 item 21).
    _pony.look_in_current_schema(kit.db)


#: What ``attach()`` runs, in this order, at every call (each installer is idempotent: a second
#: ``attach()`` installs nothing twice but sees the options it was given):
#:
#: 1. ``transactions.install``: the provider wrappers (commit, rollback, release, execute ...) everything
#:    else rides on; the execute wrapper is what calls the statement listeners added below;
#: 2. the PostgreSQL schema lookup, a provider wrapper needed by ``generate_mapping``;
#: 3. ``types.install``: the converters, which must be in place before ``generate_mapping``;
#: 4. ``diagnostics.install``: the statement listener of ``count_queries``;
#: 5. ``security.rls.install``: the row-level security statement hook (PostgreSQL), which the execute
#:    wrapper of step 1 calls before each statement;
#: 6. ``query.cache.install``: the cache's commit subscriber and raw-write listener, last because it may
#:    ask the server for the cache namespace (on a side connection of its own, which the statement hook
#:    never sees), which needs the transaction hooks and this call's options.
INSTALLERS: tuple[Callable[[Kit], None], ...] = (
    transactions.install,
    _look_in_current_schema,
    types.install,
    diagnostics.install,
    rls.install,
    query_cache.install,
)


def _name(installer: Callable[[Kit], None]) -> str:
    return f"{installer.__module__}.{installer.__qualname__}"


def attach(
    db: Database,
    *,
    keys: KeyRing | None = None,
    cache: CacheBackend | None = None,
    cache_namespace: str | None = None,
    reraise_callback_errors: bool | None = None,
    slow_query_ms: float | None = None,
    rls_required: Sequence[str] | None = None,
    outbox: bool = False,
    inbox: bool = False,
) -> Kit:
    """Configure ``db`` for ponykit and return its :class:`Kit`.

    Call it once, after ``db.bind(...)`` (or :func:`ponykit.bind_url`) and before
    ``db.generate_mapping(...)``::

        db = Database()
        ...entities...
        bind_url(db, "sqlite:///app.db")
        kit = attach(db, keys=KeyRing.from_env("PONYKIT_KEYS"))
        db.generate_mapping(create_tables=True)

    It installs ponykit's attribute converters and its commit/rollback interception on this Database
    only. ``keys`` is a key ring for encrypted types and signed cursors, ``cache`` a cache backend,
    ``reraise_callback_errors`` the default of ``on_commit(..., reraise=...)``. ``cache_namespace`` names the
    data for cache invalidation: every process that gives the same name (or, by default, reaches the same
    database and schema on its server) shares invalidations through a shared cache. ``slow_query_ms`` turns
    on the slow-query log (``ponykit.sql.slow``; see :func:`ponykit.diagnostics.set_slow_query_log`).
    ``rls_required`` (PostgreSQL only) names settings such as ``"app.tenant_id"`` (or ``"tenant_id"``)
    that every statement needs from :func:`ponykit.rls_context`: a statement without them raises
    :class:`~ponykit.errors.RLSContextError` before any SQL is sent (see ``docs/security.md``).
    ``outbox=True`` declares the transactional outbox's tables (``ponykit_outbox``, ``ponykit_outbox_key``)
    on ``db`` and ``inbox=True`` the consumers' ``ponykit_inbox`` (see ``ponykit.outbox`` and
    ``docs/outbox.md``), so that ``generate_mapping(create_tables=True)`` creates them.

    A second call before ``generate_mapping`` returns the same Kit, replacing the options it is given and
    keeping the others; hooks are never installed twice. Called before ``bind`` or after
    ``generate_mapping`` it raises :class:`ConfigurationError` saying when to call it.
    """
    if not isinstance(db, Database):
        raise ConfigurationError(f"attach() takes a pony.orm.Database, got {type(db).__name__}")
    if not _pony.is_bound(db):
        raise ConfigurationError(
            "attach(db) was called before the Database was bound: call bind_url(db, url) (or db.bind(...)) "
            "first, then attach(db), then db.generate_mapping()"
        )
    if _pony.is_mapped(db):
        raise ConfigurationError(
            "attach(db) was called after db.generate_mapping(): ponykit must install its converters before "
            "the mapping is built; call attach(db) right after binding and before generate_mapping()"
        )
    if cache_namespace is not None and (not isinstance(cache_namespace, str) or not cache_namespace):
        raise ConfigurationError(
            f"attach(cache_namespace=...) takes a non-empty str naming the database's data, got "
            f"{cache_namespace!r}"
        )
    required = None if rls_required is None else _required_settings(db, rls_required)
    for option, flag in (("outbox", outbox), ("inbox", inbox)):
        if not isinstance(flag, bool):
            raise OptionError(f"attach({option}=...) takes True or False, got {flag!r}")
    with _attach_lock:
        kit = find_kit(db)
        if kit is None:
            kit = Kit(db)
            _kit.register(kit)
        if keys is not None:
            kit.keys = keys
        if cache is not None:
            kit.cache = cache
        if cache_namespace is not None:
            kit.cache_namespace = cache_namespace
        if reraise_callback_errors is not None:
            kit.reraise_callback_errors = reraise_callback_errors
        if slow_query_ms is not None:
            bad = isinstance(slow_query_ms, bool) or not isinstance(slow_query_ms, (int, float))
            if bad or slow_query_ms < 0:
                raise OptionError(
                    f"attach(slow_query_ms=...) takes a number of milliseconds >= 0, got {slow_query_ms!r}"
                )
            kit.slow_query_ms = float(slow_query_ms)
        if required is not None:
            kit.rls_required = required
        # The outbox's entities are declared like the user's own, before generate_mapping() maps them.
        outbox_tables.install(db, outbox=outbox, inbox=inbox)
        for installer in INSTALLERS:
            installer(kit)
            name = _name(installer)
            if name not in kit.installed:
                kit.installed = (*kit.installed, name)
    return kit


def _required_settings(db: Database, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise OptionError(
            f"attach(rls_required=...) takes a list or tuple of setting names such as ('app.tenant_id',), "
            f"got {type(names).__name__}"
        )
    required = tuple(dict.fromkeys(rls.normalize_setting_name(name) for name in names))
    rls.check_backend(db, required)  # before anything is set: fail closed on SQLite and MariaDB
    return required
