"""Row-level security on PostgreSQL: ``rls_context(**settings)`` and the fail-closed ``rls_required``.

PostgreSQL's row-level security policies read per-request settings (``current_setting('app.tenant_id',
true)``). The standard recipe, ``SET LOCAL`` at the start of each transaction, fails with plain Pony:
Pony runs read-only sessions on PostgreSQL in autocommit, so the setting is gone by the next statement
(an RLS-protected count returns 0), and a session-level ``SET`` stays on the pooled connection for the
next request. ponykit applies the settings of the current :func:`rls_context` before each statement
whose transaction has not got them yet, as ``set_config(name, value, true)`` (transaction-local): the
session runs in a real transaction while a context is active (reads included), the settings are applied
again after a commit, a rollback or Pony's silent reconnect, and they end with the transaction, so the
next borrower of the connection never sees them.

The context lives in a ``contextvars.ContextVar``: it follows ``asyncio`` tasks and threads started with
a copied context (``contextvars.copy_context().run``, ``asyncio.to_thread``); a plain new thread starts
without one, and with ``attach(db, rls_required=...)`` its statements are refused (fail closed).

Policies and their DDL: :mod:`ponykit.security._rls_ddl` (``enable_rls``, ``setting_equals``,
``check_rls``).
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from pony.orm import Database

from .. import _pony
from .._kit import Kit
from ..errors import ConfigurationError, OptionError, RLSContextError

__all__ = [
    "check_backend",
    "current_rls_settings",
    "install",
    "normalize_setting_name",
    "rls_context",
    "rls_housekeeping",
    "settings_key",
]

# A custom setting ("placeholder" GUC): at least two dot-separated identifier parts. PostgreSQL accepts
# more, but these names also go into DDL text (setting_equals), where a narrow alphabet is safest.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The settings of a context: name -> text, in a frozen tuple of pairs sorted by name (one object per
# entered context, compared by identity per statement).
_Settings = tuple[tuple[str, str], ...]
# The entered contexts, innermost last: (id of the rls_context object, its merged settings). A stack in
# the ContextVar itself, not tokens on the object, so one rls_context object (a decorator, a module
# constant) can be entered by many threads and tasks at once.
_Frames = tuple[tuple[int, _Settings], ...]
_stack: ContextVar[_Frames] = ContextVar("ponykit_rls_settings", default=())


def _settings_now() -> _Settings | None:
    frames = _stack.get()
    return frames[-1][1] if frames else None


def normalize_setting_name(name: str) -> str:
    """``"tenant_id"`` -> ``"app.tenant_id"``; a dotted name stays as it is. Raises OptionError if invalid."""
    if not isinstance(name, str):
        raise OptionError(f"rls_context(): a setting name must be a str, got {type(name).__name__}")
    if _PLAIN.fullmatch(name):
        return "app." + name
    if not _NAME.fullmatch(name):
        raise OptionError(
            f"rls_context(): {name!r} is not a setting name ponykit accepts: use a plain identifier "
            "(prefixed with 'app.') or dotted identifiers such as 'request.jwt.claims' (letters, digits "
            "and '_')"
        )
    return name


def _text(name: str, value: Any) -> str:
    if value is None:
        raise OptionError(
            f"rls_context(): setting {name!r} was given None; a context cannot unset a setting (an "
            "inner context inherits the outer one's values). Leave it out, or give '' if your policies "
            "treat an empty setting as unset (nullif(current_setting(...), ''))"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        raise OptionError(
            f"rls_context(): setting {name!r} was given {type(value).__name__}; settings are text: "
            "decode it first"
        )
    return str(value)


class rls_context:
    """Apply PostgreSQL settings in every transaction of every attached PostgreSQL Database while active.

    ``with rls_context(tenant_id=7):`` makes each transaction run ``set_config('app.tenant_id', '7',
    true)`` before its first statement; reads are run in a real transaction so the setting holds for
    the whole session. Keyword names without a dot get the prefix ``app.``; dotted names go in a
    positional mapping: ``rls_context({"request.jwt.claims": claims_json})``. Values become text
    (``str()``; ``True``/``False`` -> ``'true'``/``'false'``); ``None`` is refused (OptionError).

    Contexts nest: an inner context sees the outer settings and overrides the names it gives. On leaving
    a context in the middle of a transaction, the settings it added are cleared (set to ``''``) before
    the next statement, so policies should read ``nullif(current_setting(name, true), '')``.
    Also a decorator. The values never appear in a repr or a log (the names may).
    """

    __slots__ = ("_settings",)

    def __init__(self, settings: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        given: dict[str, str] = {}
        if settings is not None:
            if not isinstance(settings, Mapping):
                raise OptionError(
                    f"rls_context() takes a mapping of setting names to values as its positional "
                    f"argument, got {type(settings).__name__}"
                )
            for name, value in settings.items():
                full = normalize_setting_name(name)
                given[full] = _text(full, value)
        for name, value in kwargs.items():
            full = normalize_setting_name(name)
            given[full] = _text(full, value)
        self._settings = given

    def __repr__(self) -> str:
        return f"<rls_context names={sorted(self._settings)}>"

    def __enter__(self) -> rls_context:
        frames = _stack.get()
        merged = dict(frames[-1][1] if frames else ())
        merged.update(self._settings)
        _stack.set((*frames, (id(self), tuple(sorted(merged.items())))))
        _forget_query_results()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        frames = _stack.get()
        if not frames or frames[-1][0] != id(self):  # a bug of the caller's: exits out of order
            raise RuntimeError("rls_context exited out of order: contexts must nest (use `with`)")
        _stack.set(frames[:-1])
        _forget_query_results()

    def __call__(self, fn: Any) -> Any:
        """Use as a decorator: the function runs inside this context (a new entry per call). An
        ``async def`` function runs its whole body inside it, when awaited; a generator function is
        refused (its body would run after the call returned, outside the context)."""
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise OptionError(
                f"rls_context() cannot decorate the generator function {fn.__qualname__}: its body runs "
                "after the call returns; enter the context inside it (`with rls_context(...):`)"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return run_async

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return wrapper


def _forget_query_results() -> None:
    # Pony answers a query asked twice in a session from its result cache, without SQL: a result read
    # under the settings of another context must not be served under this one.
    if _pony.in_db_session():
        for db in _pony.session_databases():
            _pony.query_results_clear(db)


def current_rls_settings() -> dict[str, str]:
    """The settings of the current :class:`rls_context` (merged over nesting); empty outside any."""
    return dict(_settings_now() or ())


def settings_key() -> tuple[tuple[str, str], ...]:
    """The current context's settings as ``(name, value)`` pairs sorted by name (empty outside any):
    the part of a cache key that keeps results cached under one context from being served in another."""
    return _settings_now() or ()


class _Housekeeping(threading.local):
    def __init__(self) -> None:
        self.depth = 0


_housekeeping = _Housekeeping()


@contextmanager
def rls_housekeeping() -> Iterator[None]:
    """Statements run in this block (this thread) are ponykit's own: ``rls_required`` does not refuse
    them (``enable_rls(..., apply=True)``, catalog lookups). The current context is still applied."""
    _housekeeping.depth += 1
    try:
        yield
    finally:
        _housekeeping.depth -= 1


# ---------------------------------------------------------------------------------------------------------
# The statement hook, installed on one PostgreSQL Database by attach()


def install(kit: Kit) -> None:
    """attach()'s installer: on PostgreSQL, hook every statement of ``kit.db`` (``kit.before_statement``).

    ``kit.rls_required`` on another backend raises ConfigurationError (row-level security is a
    PostgreSQL feature; on SQLite and MariaDB use ``ponykit.security`` policies instead).
    """
    db = kit.db
    check_backend(db, kit.rls_required)
    if _pony.dialect(db) == "postgres" and kit.before_statement is None:
        hook = kit.before_statement = _make_hook(kit)

        def before_bookkeeping(cursor: Any, sql: str) -> None:
            # A SAVEPOINT of a bulk operation may be its transaction's first statement: the settings
            # go first, on their own (never inside a savepoint a ROLLBACK TO would take them out of).
            with rls_housekeeping():
                hook(cursor, sql, _NOT_PREFIXABLE)

        _pony.on_bookkeeping(db, before_bookkeeping)


def check_backend(db: Database, required: tuple[str, ...]) -> None:
    """Raise ConfigurationError if settings are required on a Database that is not PostgreSQL."""
    if required and _pony.dialect(db) != "postgres":
        raise ConfigurationError(
            f"attach(rls_required={list(required)}): row-level security needs PostgreSQL, and the "
            f"{_pony.describe_database(db)} is not one. On SQLite and MariaDB, scope queries with "
            "ponykit.security policies (policy(), scoped()) instead, and leave rls_required out"
        )


def _make_hook(kit: Kit) -> Any:
    db = kit.db
    session_cache = _pony.session_cache
    applied_of = _pony.applied_settings

    def before_statement(cursor: Any, sql: str, arguments: Any) -> str:
        frames = _stack.get()
        settings = frames[-1][1] if frames else None
        cache = session_cache(db)
        if cache is None:  # pragma: no cover - Pony runs every statement in a session cache
            return sql
        # (the context object last brought in, what the server holds: name -> value, '' when cleared)
        applied: _Applied | None = applied_of(cache)
        if applied is not None and not _pony.session_in_transaction(cache):
            # The transaction that got them ended (commit, rollback, reconnect): they went with it.
            applied = None
            _pony.remember_settings(cache, None)
        required = kit.rls_required
        if required and not _housekeeping.depth and not _pony.is_ddl_session(cache):
            _check_required(db, required, settings, sql)
        if applied is not None and sql.startswith("ROLLBACK TO"):
            # It undoes the set_config calls made after the savepoint (values set or cleared): what
            # the server holds is unknown, so every name this transaction touched is set again next.
            _pony.remember_settings(cache, (_UNKNOWN, dict.fromkeys(applied[1], _UNKNOWN)))
        elif (applied[0] if applied is not None else None) is not settings:
            return _apply(db, cache, cursor, sql, arguments, settings, applied)
        return sql

    return before_statement


_IDENT = r'"(?:[^"]|"")+"'
# Pony's table check (generate_mapping(check_tables=True)): plain columns of one table WHERE 0 = 1.
_COLUMN = rf"{_IDENT}\.{_IDENT}"
_TABLE_CHECK = re.compile(
    rf"SELECT {_COLUMN}(?:, {_COLUMN})*\s+FROM {_IDENT}(?:\.{_IDENT})? {_IDENT}\s+WHERE 0 = 1"
)


def _reads_nothing(sql: str) -> bool:
    """True for Pony's table check, which reads no row: no function call, no subquery, no other table."""
    return _TABLE_CHECK.fullmatch(sql) is not None


def _check_required(db: Database, required: tuple[str, ...], settings: _Settings | None, sql: str) -> None:
    have = {name for name, value in settings or () if value != ""}
    missing = [name for name in required if name not in have]
    if missing and not _reads_nothing(sql):
        raise RLSContextError(
            f"ponykit: a statement on the {_pony.describe_database(db)} ran without the row-level security "
            f"setting(s) {', '.join(missing)} that attach(rls_required=...) requires; nothing was sent. "
            f"Run it inside `with ponykit.rls_context(...)` giving {', '.join(missing)} (a new thread "
            "starts without the context of the thread that started it: use contextvars.copy_context())",
            missing=missing,
        )


# Statements the settings may ride along with, in the same round trip (not COPY, not transaction control).
_PREFIXABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
_NOT_PREFIXABLE: Any = object()  # the "arguments" of a statement the settings must not ride along with
_UNKNOWN: Any = object()  # a value the server may or may not hold (after a ROLLBACK TO)
_Applied = tuple[Any, dict[str, Any]]


def _apply(
    db: Database,
    cache: Any,
    cursor: Any,
    sql: str,
    arguments: Any,
    settings: _Settings | None,
    applied: _Applied | None,
) -> str:
    """Bring the transaction's settings to ``settings`` (set new and changed ones, clear ones left
    behind) before ``sql``; the SQL to send in its place."""
    held = {} if applied is None else applied[1]
    target = dict.fromkeys(held, "")  # a name this transaction set stays known, cleared ('')
    target.update(settings or ())
    changes = [(name, value) for name, value in target.items() if held.get(name, "") != value]
    # Stored even when nothing changed: the identity check then skips the work at the next statement.
    _pony.remember_settings(cache, (settings, target))
    if not changes:
        return sql
    _pony.force_transaction(db, cache, cursor.connection)
    if arguments is not _NOT_PREFIXABLE and type(arguments) is not list and sql.startswith(_PREFIXABLE):
        # One round trip for both: "SELECT set_config(...); <statement>" (the cursor keeps the result,
        # row count and RETURNING row of the last statement). Listeners still see the statement alone.
        return _pony.settings_prefix(cursor, changes, arguments is not None) + sql
    _pony.apply_settings(db, cursor, changes)
    return sql
