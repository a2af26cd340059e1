"""Bind a Pony ``Database`` from a database URL.

``parse_url`` turns ``sqlite:///app.db``, ``postgresql://app:secret@db:5432/app?sslmode=require``,
``mysql://root@localhost/app`` or ``cockroachdb://...`` into the provider name and keyword arguments that
``Database.bind`` expects; ``bind_url`` binds with them. ``redact_url`` hides the password so a URL can be
logged. No message ponykit builds here ever contains the password, even for a malformed URL.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import ConfigurationError, OptionError
from ._pins import current_pin, use_pin
from ._pool import BoundedPool, PoolConfig, PoolStats, install_bounded_pool, pool_stats
from ._replicas import ReplicaConfig, install_router, replica_config, replica_status, replica_targets
from ._session import replica_session

if TYPE_CHECKING:
    from pony.orm import Database

__all__ = [
    "BindHook",
    "BoundedPool",
    "PoolConfig",
    "PoolStats",
    "ReplicaConfig",
    "bind_direct",
    "bind_url",
    "current_pin",
    "parse_url",
    "pool_stats",
    "redact_url",
    "replica_session",
    "replica_status",
    "set_bind_hook",
    "use_pin",
]

_SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "cockroachdb": "cockroach",
    "cockroach": "cockroach",
}
_EXAMPLES = {
    "sqlite": "sqlite:///app.db",
    "postgres": "postgresql://app:***@db.example.com:5432/app",
    "mysql": "mysql://app:***@db.example.com:3306/app",
    "cockroach": "cockroachdb://app:***@db.example.com:26257/app?sslmode=verify-full",
}
_SUPPORTED = ", ".join(f"{scheme}://" for scheme in _SCHEMES)
_SQLITE_SLASHES = (
    "sqlite URLs take three slashes for a relative path (sqlite:///app.db) "
    "or four for an absolute one (sqlite:////var/lib/app.db)"
)
_SQLITE_MEMORY = (":memory:", ":sharedmemory:")
_SQLITE_PARAMS = ("create_db", "timeout")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# PyMySQL (and MySQLdb) take these as int/bool and misbehave on strings ("false" is truthy: with
# ?autocommit=false every transaction would autocommit), so every one of them is converted.
_MYSQL_INT_PARAMS = frozenset(
    {"connect_timeout", "read_timeout", "write_timeout", "port", "max_allowed_packet", "client_flag"}
)
_MYSQL_BOOL_PARAMS = frozenset(
    {
        "autocommit",
        "binary_prefix",
        "compress",
        "defer_connect",
        "local_infile",
        "named_pipe",
        "ssl_disabled",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "use_unicode",
    }
)
# psycopg2.connect() itself takes these as Python booleans (everything else goes to libpq as text).
_PG_BOOL_PARAMS = frozenset({"async", "async_"})
# Parameters the drivers take as Python objects (classes, dicts, callables): a URL can only give text.
_OBJECT_PARAMS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"connection_factory", "cursor_factory"}),
    "cockroach": frozenset({"connection_factory", "cursor_factory"}),
    "mysql": frozenset({"conv", "cursorclass", "auth_plugin_map", "ssl", "server_public_key"}),
}
# Spellings the drivers accept for one setting; given twice, they would silently disagree.
_ALIASES: dict[str, dict[str, str]] = {
    "sqlite": {},
    "postgres": {"dbname": "database"},
    "cockroach": {"dbname": "database"},
    "mysql": {"password": "passwd", "database": "db"},
}
_SECRET_KEYS = ("password", "passwd", "sslpassword", "ssl_key_password")
_DRIVERS = {
    "postgres": (("psycopg2", "psycopg2cffi"), "postgres"),
    "cockroach": (("psycopg2", "psycopg2cffi"), "postgres"),
    "mysql": (("MySQLdb", "pymysql"), "mysql"),
}
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_PARAM_RE = re.compile(r"([?&;](?:password|passwd|pwd|sslpassword|ssl_key_password)=)[^&#]*", re.I)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_INT_RE = re.compile(r"[+-]?[0-9]+")


def redact_url(url: str) -> str:
    """Return ``url`` with its password (and any ``password=`` query value) replaced by ``***``.

    Works on malformed URLs too: when it cannot tell where the password ends it hides more, never less.
    """
    text = str(url)
    match = _AUTHORITY_RE.match(text)
    start = match.end() if match else 0
    rest = text[start:]
    if match is None:
        # No "scheme://": hide everything between the first ':' and the last '@' ("user:pw@host").
        at = rest.rfind("@")
    else:
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        # An '@' after the host part means an unencoded '/', '?' or '#' may sit inside the password,
        # so the password can reach up to the last '@' of the URL.
        at = rest.rfind("@") if "@" in rest[cut:] else rest.rfind("@", 0, cut)
    if at > 0:
        colon = rest.find(":", 0, at)
        if 0 <= colon < at - 1:
            text = text[: start + colon + 1] + "***" + text[start + at :]
    return _SECRET_PARAM_RE.sub(r"\1***", text)


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Parse a database URL into Pony's provider name and the keyword arguments for ``Database.bind``.

    Supported schemes: ``sqlite``, ``postgresql``/``postgres``, ``mysql``/``mariadb`` and
    ``cockroachdb``/``cockroach``. User names, passwords and database names are percent-decoded.
    Raises :class:`ConfigurationError` naming the problem and showing a correct URL.
    """
    if not isinstance(url, str):
        raise ConfigurationError(
            f"a database URL must be a str, not {type(url).__name__}; for example {_EXAMPLES['postgres']}"
        )
    text = url.strip()
    if not text:
        raise ConfigurationError(f"the database URL is empty; for example {_EXAMPLES['postgres']}")
    match = _SCHEME_RE.match(text)
    if match is None:
        raise ConfigurationError(
            f"database URL {redact_url(text)!r} has no scheme; it should start with one of "
            f"{_SUPPORTED}, for example {_EXAMPLES['postgres']}"
        )
    scheme = match.group(1).lower()
    provider = _SCHEMES.get(scheme)
    if provider is None:
        base = scheme.partition("+")[0]
        hint = "; ponykit picks the driver itself, so drop the '+...' part" if base in _SCHEMES else ""
        raise ConfigurationError(
            f"unknown database URL scheme {scheme!r}{hint}; supported schemes: {_SUPPORTED}"
        )
    parts = _split(text, provider)
    if parts.fragment or text.endswith("#"):
        raise ConfigurationError(
            f"database URL {redact_url(text)!r} contains a '#'; percent-encode it as %23 "
            f"(for example {_EXAMPLES[provider]})"
        )
    params = _query(parts.query, text, provider)
    if provider == "sqlite":
        return provider, _sqlite(parts, params, text)
    if provider == "mysql":
        return provider, _mysql(parts, params, text)
    typed: dict[str, Any] = {}
    for key, value in params.items():
        _refuse_object(provider, text, key)
        typed[key] = _boolean(provider, text, key, value) if key in _PG_BOOL_PARAMS else value
    return provider, _merge(_authority(parts, text, provider), typed, text, provider, _ALIASES[provider])


# Set by ponykit.testing while an application's test suite runs: called before every bind_url(); when it
# returns True it has bound the Database itself (to the test database) and bind_url does nothing more.
BindHook = Callable[["Database", str], bool]
_bind_hook: BindHook | None = None


def set_bind_hook(hook: BindHook | None) -> BindHook | None:
    """Install ``hook`` to be asked before every :func:`bind_url` (None removes it); the previous hook.

    ``ponykit.testing`` uses it to bind an application's Database to the test database, so that the
    production URL the application names is never connected to. ``hook(db, url)`` returns True when it
    took care of the bind.
    """
    global _bind_hook
    previous, _bind_hook = _bind_hook, hook
    return previous


Replicas = Sequence[str] | ReplicaConfig


def bind_url(
    db: Database, url: str, *, replicas: Replicas = (), pool: PoolConfig | None = None, **overrides: Any
) -> None:
    """Bind ``db`` to the database ``url`` names; keyword ``overrides`` replace what the URL gives.

    ``pool=PoolConfig(max_size=..., timeout=...)`` replaces Pony's one-connection-per-thread pool with a
    :class:`BoundedPool` shared by all threads (docs/scaling.md); without it Pony's pool stays as it is.

    ``replicas``: URLs of PostgreSQL streaming replicas of ``url``, or of MariaDB replicas replicating
    it with GTIDs (``MASTER_USE_GTID=slave_pos``), or a :class:`ReplicaConfig` with
    them and the routing options). Read sessions (:func:`replica_session`, ``transaction(read_only=True)``,
    GET requests of the web integrations when enabled) then use a healthy replica that has replayed
    the reader's own last commit; everything else uses the primary (see docs/scaling.md). The
    ``overrides`` apply to the replicas too, except the ones a replica URL gives itself; with ``pool``
    each replica gets a bounded pool of its own with the same configuration.

    Pony connects while binding, so connection errors surface here. They are re-raised unchanged unless
    their text contains the password; then a :class:`ConfigurationError` with the password masked is
    raised in their place. Under ponykit's pytest plugin configured with ``ponykit_database``, the
    application's Database is bound to the test database instead (see docs/testing.md).
    """
    hook = _bind_hook
    if hook is not None and hook(db, url):
        return  # the test plugin bound it to the test database: replicas are not used under tests
    bind_direct(db, url, replicas=replicas, pool=pool, **overrides)


def bind_direct(
    db: Database, url: str, *, replicas: Replicas = (), pool: PoolConfig | None = None, **overrides: Any
) -> None:
    """:func:`bind_url` without asking the test plugin's hook (the plugin binds with it)."""
    if pool is not None and not isinstance(pool, PoolConfig):
        raise OptionError(
            f"bind_url(pool=...) takes a ponykit.PoolConfig (for example PoolConfig(max_size=10)), "
            f"not {type(pool).__name__}"
        )
    provider, kwargs = parse_url(url)
    config = replica_config(replicas)
    targets = replica_targets(config, provider, overrides, parse_url, redact_url, _ALIASES[provider])
    if "provider" in overrides:
        raise ConfigurationError("the provider comes from the URL scheme and cannot be overridden")
    aliases = _ALIASES[provider]
    for key, value in overrides.items():
        canonical = aliases.get(key, key)
        for other in [k for k in kwargs if aliases.get(k, k) == canonical]:
            del kwargs[other]
        kwargs[key] = value
    _require_driver(provider)
    if provider == "mysql" and importlib.util.find_spec("MySQLdb") is None:
        # Pony falls back to PyMySQL, which warns (DeprecationWarning) on every connection made with
        # the MySQLdb spellings, so they are translated for it.
        for args in (kwargs, *(target for _name, target in targets)):
            for old, new in (("passwd", "password"), ("db", "database")):
                if old in args and new not in args:
                    args[new] = args.pop(old)
    secrets = _secrets(url, kwargs)
    failure: str | None = None
    try:
        db.bind(provider, **kwargs)
    except Exception as exc:
        text = str(exc)
        if not any(s in t for s in secrets for t in _exception_texts(exc)):
            raise
        failure = f"could not connect to {redact_url(url)}: {text}"
        for secret in secrets:
            failure = failure.replace(secret, "***")
    if failure is not None:
        # Raised outside the except block so that the original exception, which holds the password,
        # is not kept as __context__ either.
        raise ConfigurationError(failure) from None
    if pool is not None:
        install_bounded_pool(db, pool, redact_url(url))
    if targets:
        install_router(db, targets, config, pool)


def _fail(provider: str, text: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"database URL {redact_url(text)!r}: {problem}; for example {_EXAMPLES[provider]}"
    )


def _split(text: str, provider: str) -> SplitResult:
    parts: SplitResult | None
    try:
        parts = urlsplit(text)
    except ValueError:
        # urlsplit's own messages may quote part of the netloc, i.e. of the password: not reused.
        parts = None
    if parts is None:
        raise _fail(
            provider,
            text,
            "the host part is malformed: IPv6 addresses go in brackets ([::1]), and a '[' or ']' "
            "inside a user name or password must be percent-encoded (%5B, %5D)",
        )
    return parts


def _query(query: str, text: str, provider: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        raw_key, sep, raw_value = piece.partition("=")
        key = unquote(raw_key)
        if not sep or not key:
            # The piece is not named: it may be the tail of a password that held an unencoded '&'.
            raise _fail(provider, text, "every query parameter needs a name and '=value' (encode '&' as %26)")
        if key in params:
            raise _fail(provider, text, f"query parameter {key!r} is given twice")
        # unquote, not unquote_plus: a '+' in a value is a plus sign, not a space.
        params[key] = unquote(raw_value)
    return params


def _boolean(provider: str, text: str, key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise _fail(provider, text, f"query parameter {key!r} must be one of 1/0, true/false, yes/no, on/off")


def _refuse_object(provider: str, text: str, key: str) -> None:
    if key in _OBJECT_PARAMS.get(provider, ()):
        raise _fail(
            provider,
            text,
            f"query parameter {key!r} must be a Python object, which a URL cannot give; "
            f"pass it to bind_url() as a keyword argument ({key}=...)",
        )


def _sqlite(parts: SplitResult, params: dict[str, str], text: str) -> dict[str, Any]:
    netloc, path = parts.netloc, parts.path
    if netloc in _SQLITE_MEMORY and not path:
        filename = netloc
    elif netloc or not text[len(parts.scheme) + 1 :].startswith("//") or not path.startswith("/"):
        raise ConfigurationError(f"bad sqlite URL {redact_url(text)!r}: {_SQLITE_SLASHES}")
    else:
        raw = unquote(path[1:])
        if not raw:
            raise ConfigurationError(f"sqlite URL {redact_url(text)!r} names no file: {_SQLITE_SLASHES}")
        # Pony resolves a relative filename against the directory of the module calling bind (ours),
        # not the working directory users expect.
        filename = raw if raw in _SQLITE_MEMORY else os.path.abspath(raw)
    kwargs: dict[str, Any] = {"filename": filename}
    for key, value in params.items():
        if key == "create_db":
            kwargs[key] = _boolean("sqlite", text, key, value)
        elif key == "timeout":
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise _fail("sqlite", text, "query parameter 'timeout' must be a number of seconds") from None
        else:
            raise _fail(
                "sqlite", text, f"unknown query parameter {key!r}; sqlite accepts {', '.join(_SQLITE_PARAMS)}"
            )
    return kwargs


def _authority(parts: SplitResult, text: str, provider: str) -> dict[str, Any]:
    """User, password, host, port and database from the URL; absent ones are left out."""
    found: dict[str, Any] = {}
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            found["user"] = unquote(user)
        if colon and password:
            found["password"] = unquote(password)
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise _fail(provider, text, "an IPv6 host must be written in brackets, as in [::1]:5432")
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
        if ":" in port:
            raise _fail(provider, text, "an IPv6 host must be written in brackets, as in [::1]:5432")
    if host:
        found["host"] = unquote(host)
    if port:
        # The port text is not echoed: with an unencoded '/' in the password it can be part of it.
        if not _PORT_RE.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise _fail(provider, text, "the port must be a number from 1 to 65535")
        found["port"] = int(port)
    database = parts.path[1:]
    if not database:
        raise _fail(provider, text, "the URL names no database (put it after the host: .../app)")
    if "/" in database:
        raise _fail(provider, text, "the database name contains '/'; percent-encode it as %2F")
    found["database"] = unquote(database)
    return found


def _merge(
    found: dict[str, Any], params: dict[str, Any], text: str, provider: str, aliases: dict[str, str]
) -> dict[str, Any]:
    for key, value in params.items():
        canonical = aliases.get(key, key)
        if canonical in found:
            raise _fail(provider, text, f"{key!r} is given both in the URL and as a query parameter")
        found[key] = value
    return found


def _mysql(parts: SplitResult, params: dict[str, str], text: str) -> dict[str, Any]:
    found = _authority(parts, text, "mysql")
    # MySQLdb only knows passwd/db; PyMySQL accepts both spellings.
    renamed = {"password": "passwd", "database": "db"}
    kwargs = {renamed.get(k, k): v for k, v in found.items()}
    converted: dict[str, Any] = {}
    for key, value in params.items():
        _refuse_object("mysql", text, key)
        if key in _MYSQL_INT_PARAMS:
            if not _INT_RE.fullmatch(value.strip()):
                raise _fail("mysql", text, f"query parameter {key!r} must be a whole number")
            converted[key] = int(value)
        elif key in _MYSQL_BOOL_PARAMS:
            converted[key] = _boolean("mysql", text, key, value)
        else:
            converted[key] = value
    kwargs = _merge(kwargs, converted, text, "mysql", _ALIASES["mysql"])
    # Pony defaults to utf8 (utf8mb3), which cannot store emoji or other 4-byte characters.
    kwargs.setdefault("charset", "utf8mb4")
    return kwargs


def _require_driver(provider: str) -> None:
    if provider not in _DRIVERS:
        return
    modules, extra = _DRIVERS[provider]
    if not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ConfigurationError(
            f"the {provider} provider needs {' or '.join(modules)}; "
            f"install it with pip install 'ponykit[{extra}]'"
        )


def _secrets(url: str, kwargs: dict[str, Any]) -> list[str]:
    found = {str(kwargs[k]) for k in _SECRET_KEYS if kwargs.get(k)}
    # The encoded spelling too, in case a driver quotes the URL or DSN it was given.
    found.add(urlsplit(url.strip()).netloc.rpartition("@")[0].partition(":")[2])
    # Longest first, so that masking a short secret never leaves part of a longer one visible.
    return sorted((s for s in found if s), key=len, reverse=True)


def _exception_texts(exc: BaseException) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts.extend((str(current), repr(current)))
        original = getattr(current, "original_exc", None)  # Pony's wrapper around the driver's error
        pending += [current.__cause__, current.__context__]
        if isinstance(original, BaseException):
            pending.append(original)
    return texts
