"""Principals and ``requires()``: the contextvar follows asyncio tasks and stays in its thread, the plugged
source is a fallback, ``requires`` checks sync and async functions with the default or a plugged
checker, and its refusals name the function, the missing permissions and only the principal's identity."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import ponykit as pk
from ponykit.security import (
    acting_as,
    current_principal,
    permission_checker,
    principal_source,
    requires,
    reset_principal,
    set_principal,
)


@dataclass(frozen=True)
class User:
    """A principal holding permissions as a set; ``email`` stands for data a message must not show."""

    id: int
    permissions: Any = field(default_factory=frozenset)
    email: str = "secret.person@example.com"


class Checked:
    """A principal answering through a method."""

    id = "svc-1"

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def has_permission(self, perm: str) -> bool:
        return perm in self.allowed


@pytest.fixture(autouse=True)
def _plain_process_state() -> Iterator[None]:
    """Each test starts and ends with no plugged source or checker."""
    principal_source(None)
    permission_checker(None)
    yield
    principal_source(None)
    permission_checker(None)


def test_acting_as_nests_and_restores() -> None:
    a, b = User(1), User(2)
    assert current_principal() is None
    with acting_as(a) as given:
        assert given is a
        assert current_principal() is a
        with acting_as(b):
            assert current_principal() is b
        assert current_principal() is a
    assert current_principal() is None


def test_set_and_reset_principal_tokens() -> None:
    token = set_principal(User(1))
    try:
        assert current_principal() == User(1)
        inner = set_principal(User(2))
        reset_principal(inner)
        assert current_principal() == User(1)
    finally:
        reset_principal(token)
    assert current_principal() is None


def test_source_is_the_fallback_and_acting_as_none_hides_it() -> None:
    web_user = User(9)
    assert principal_source(lambda: web_user) is not None
    assert current_principal() is web_user
    with acting_as(User(1)):
        assert current_principal() == User(1)
    with acting_as(None):
        assert current_principal() is None
    principal_source(None)
    assert current_principal() is None
    with pytest.raises(pk.OptionError, match="callable"):
        principal_source("user")  # type: ignore[arg-type]


@requires("orders:write")
def write_order(n: int) -> int:
    """A service function."""
    return n + 1


@requires("orders:read", "orders:write")
async def sync_orders(n: int) -> int:
    """An async service function."""
    await asyncio.sleep(0)
    return n * 2


@requires()
def any_principal() -> str:
    return "ok"


def test_requires_sync() -> None:
    assert write_order.__name__ == "write_order"
    assert write_order.__ponykit_requires__ == ("orders:write",)  # type: ignore[attr-defined]
    with pytest.raises(pk.PermissionDenied, match="no principal is acting") as info:
        write_order(1)
    assert isinstance(info.value, PermissionError)
    assert "write_order()" in str(info.value)
    with acting_as(User(1, frozenset({"orders:write"}))):
        assert write_order(1) == 2
        assert any_principal() == "ok"
    with pytest.raises(pk.PermissionDenied):
        any_principal()


def test_refusal_names_function_missing_permissions_and_identity_only() -> None:
    with acting_as(User(42, {"orders:read"})), pytest.raises(pk.PermissionDenied) as info:
        asyncio.run(sync_orders(1))
    message = str(info.value)
    assert "sync_orders()" in message
    assert "'orders:write'" in message
    assert "'orders:read'" not in message  # held: not listed as missing
    assert "User id=42" in message
    assert "secret.person" not in message
    assert info.value.missing == ("orders:write",)


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        ({"orders:write"}, True),
        (["orders:write"], True),
        (("orders:write",), True),
        (frozenset({"orders:write"}), True),
        ({"orders:write": True}, True),
        ({"orders:write": False}, False),  # a mapping grants only what it maps to a true value
        ({"orders:read"}, False),
        ("orders:write:all", False),  # a string is not a set of names (no substring match)
        (None, False),
    ],
)
def test_default_checker_reads_permissions(held: Any, expected: bool) -> None:
    with acting_as(User(1, held)):
        if expected:
            assert write_order(1) == 2
        else:
            with pytest.raises(pk.PermissionDenied):
                write_order(1)


def test_default_checker_asks_has_permission() -> None:
    with acting_as(Checked({"orders:write"})):
        assert write_order(2) == 3
    with acting_as(Checked(set())), pytest.raises(pk.PermissionDenied, match="Checked id='svc-1'"):
        write_order(2)


def test_plugged_checker() -> None:
    seen: list[tuple[int, str]] = []

    @permission_checker
    def by_role(principal: Any, perm: str) -> bool:
        seen.append((principal.id, perm))
        return principal.id == 1

    with acting_as(User(1)):
        assert write_order(0) == 1
    with acting_as(User(2)), pytest.raises(pk.PermissionDenied):
        write_order(0)
    assert seen == [(1, "orders:write"), (2, "orders:write")]
    permission_checker(None)
    with acting_as(User(1)), pytest.raises(pk.PermissionDenied):
        write_order(0)  # the default checker again: User(1) holds nothing


def test_requires_async_checks_when_the_coroutine_runs() -> None:
    async def main() -> list[Any]:
        coro = sync_orders(3)  # created without a principal ...
        with acting_as(User(1, {"orders:read", "orders:write"})):
            return [await coro]  # ... checked when it runs

    assert asyncio.run(main()) == [6]


def test_principal_follows_asyncio_tasks() -> None:
    async def who(delay: float) -> Any:
        await asyncio.sleep(delay)
        return current_principal()

    async def request(user: User) -> tuple[Any, Any]:
        with acting_as(user):
            task = asyncio.create_task(who(0.01))  # copies the context: sees this request's user
        # The block is over in this task; the child still sees the principal it was created with.
        return await task, current_principal()

    async def main() -> list[tuple[Any, Any]]:
        return list(await asyncio.gather(*(request(User(i)) for i in range(5))))

    assert asyncio.run(main()) == [(User(i), None) for i in range(5)]


def test_principal_does_not_cross_threads() -> None:
    seen: dict[str, Any] = {}
    inside = threading.Event()
    release = threading.Event()

    def worker() -> None:
        seen["start"] = current_principal()
        with acting_as(User(2)):
            inside.set()
            release.wait(5)
            seen["own"] = current_principal()

    with acting_as(User(1)):
        thread = threading.Thread(target=worker)
        thread.start()
        assert inside.wait(5)
        assert current_principal() == User(1)  # the worker's principal is not ours
        release.set()
        thread.join(5)
    assert seen == {"start": None, "own": User(2)}


@pytest.mark.parametrize("bad", ["", 3, None])
def test_requires_refuses_bad_names(bad: Any) -> None:
    with pytest.raises(pk.OptionError, match="permission names"):
        requires(bad)


def test_requires_without_parentheses_is_explained() -> None:
    with pytest.raises(pk.OptionError, match="with parentheses"):
        requires(write_order)  # type: ignore[arg-type]
