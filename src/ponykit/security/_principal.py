"""Who is acting: the current principal (a contextvar, with a pluggable fallback source) and
``requires()``, the permission check for service functions.

The principal is whatever object the application uses for "the current user" (a User entity, a JWT
claims object, a dataclass): ponykit only reads the attributes the application's policies and permission
checker read. It lives in a :class:`contextvars.ContextVar`, so it follows ``asyncio`` tasks (each task
copies the context it was created in) and never crosses threads (a new thread starts with an empty
context): the leaks of thread-local tenants (django-multitenant, django-tenants) cannot happen here.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Container, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from ..errors import OptionError, PermissionDenied

__all__ = [
    "acting_as",
    "current_principal",
    "describe_principal",
    "permission_checker",
    "principal_source",
    "requires",
    "reset_principal",
    "set_principal",
]

F = TypeVar("F", bound=Callable[..., Any])

# "Nobody set one" differs from "acting as None" (``acting_as(None)``), which hides the plugged source.
_UNSET: Any = object()
_principal: contextvars.ContextVar[Any] = contextvars.ContextVar("ponykit_principal", default=_UNSET)

_lock = threading.Lock()
_source: Callable[[], Any] | None = None
_checker: Callable[[Any, str], bool] | None = None


def current_principal() -> Any:
    """The principal acting now, or None.

    The one set in this context (:func:`acting_as`, :func:`set_principal`) wins; without one, the source
    plugged with :func:`principal_source` is asked (a web integration's "current user"); without either,
    None (and every check refuses).
    """
    value = _principal.get()
    if value is not _UNSET:
        return value
    source = _source
    return None if source is None else source()


def set_principal(principal: Any) -> contextvars.Token[Any]:
    """Make ``principal`` the current one in this context; give the returned token to
    :func:`reset_principal` when the request ends (web middlewares use this pair)."""
    return _principal.set(principal)


def reset_principal(token: contextvars.Token[Any]) -> None:
    """Put back the principal that was current before the :func:`set_principal` that returned ``token``."""
    _principal.reset(token)


@contextmanager
def acting_as(principal: Any) -> Iterator[Any]:
    """``with acting_as(user):`` makes ``user`` the current principal inside the block (and in the
    ``asyncio`` tasks created inside it); ``acting_as(None)`` runs the block as nobody."""
    token = _principal.set(principal)
    try:
        yield principal
    finally:
        _principal.reset(token)


def principal_source(source: Callable[[], Any] | None) -> Callable[[], Any] | None:
    """Plug where :func:`current_principal` looks when no principal was set in the context: a callable
    returning the principal or None (``lambda: flask.g.get("user")``). One per process; ``None`` unplugs
    it. Returns ``source``, so it can decorate a function."""
    global _source
    if source is not None and not callable(source):
        raise OptionError(
            f"principal_source() takes a callable returning the principal or None, got {source!r}"
        )
    with _lock:
        _source = source
    return source


def permission_checker(checker: Callable[[Any, str], bool] | None) -> Callable[[Any, str], bool] | None:
    """Plug how :func:`requires` decides that a principal holds a permission: ``checker(principal, perm)
    -> bool``. One per process; ``None`` puts back the default (:func:`_default_check`). Returns
    ``checker``, so it can decorate a function."""
    global _checker
    if checker is not None and not callable(checker):
        raise OptionError(
            f"permission_checker() takes a callable (principal, permission) -> bool, got {checker!r}"
        )
    with _lock:
        _checker = checker
    return checker


def _default_check(principal: Any, permission: str) -> bool:
    """``permission in principal.permissions`` (a set, list, tuple or frozenset of names; a mapping of
    name -> truth, where only a true value grants), else ``principal.has_permission(permission)``; a
    principal with neither holds nothing (fail closed)."""
    held = getattr(principal, "permissions", None)
    if isinstance(held, Mapping):
        return bool(held.get(permission))  # {"admin": False} does not grant "admin"
    if isinstance(held, Container) and not isinstance(held, (str, bytes)):
        return permission in held
    method = getattr(principal, "has_permission", None)
    if callable(method):
        return bool(method(permission))
    return False


def describe_principal(principal: Any) -> str:
    """A principal's identity for messages: its type and ``id`` (never its other data, which may be
    personal: a repr could print an email address or a token)."""
    try:
        ident = getattr(principal, "id", None)
    except Exception:  # noqa: BLE001 - an entity read outside its session, a property that fails: identity unknown
        ident = None
    name = type(principal).__name__
    if ident is None or not isinstance(ident, (int, str)) or isinstance(ident, bool):
        return name
    shown = ident if isinstance(ident, int) or len(ident) <= 64 else ident[:64] + "..."
    return f"{name} id={shown!r}"


def _check(label: str, permissions: tuple[str, ...]) -> None:
    principal = current_principal()
    if principal is None:
        wanted = ", ".join(map(repr, permissions)) or "a principal"
        raise PermissionDenied(
            f"{label} requires {wanted}, and no principal is acting: set one with ponykit.acting_as(user) "
            "or set_principal(user), or plug principal_source(...)",
            missing=permissions,
        )
    check = _checker or _default_check
    missing = tuple(p for p in permissions if not check(principal, p))
    if missing:
        who = describe_principal(principal)
        raise PermissionDenied(
            f"{label} requires {', '.join(map(repr, missing))}, which {who} does not hold (the permission "
            "checker said no: grant the permission or call this as another principal)",
            missing=missing,
        )


def requires(*permissions: str) -> Callable[[F], F]:
    """Decorate a service function (plain or ``async def``) so that each call first checks that the
    current principal holds every permission named; otherwise it raises :class:`PermissionDenied` and
    the function does not run. ``@requires()`` with no name only requires that some principal is acting.

    The check runs at call time (for ``async def``, when the coroutine starts, in its task's context),
    with the checker plugged by :func:`permission_checker` or the default one.
    """
    for perm in permissions:
        if not isinstance(perm, str) or not perm:
            hint = ' (write @requires("name"), with parentheses)' if callable(perm) else ""
            raise OptionError(f"requires() takes permission names (non-empty strings), got {perm!r}{hint}")
    names = tuple(permissions)

    def decorate(func: F) -> F:
        label = f"{func.__module__}.{func.__qualname__}()"
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def checked_async(*args: Any, **kwargs: Any) -> Any:
                _check(label, names)
                return await func(*args, **kwargs)

            checked_async.__ponykit_requires__ = names  # type: ignore[attr-defined]
            return cast(F, checked_async)

        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _check(label, names)
            return func(*args, **kwargs)

        checked.__ponykit_requires__ = names  # type: ignore[attr-defined]
        return cast(F, checked)

    return decorate
