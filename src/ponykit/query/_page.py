"""What :class:`~ponykit.query.Page` and :class:`~ponykit.query.CursorPage` share.

Both are frozen, slotted dataclasses over ``items``: this module holds their sequence behaviour (one base
class) and the ``per_page`` check both paginators run before any SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar, overload

from ..errors import InvalidPage

__all__ = ()

T = TypeVar("T")


class PageItems(Generic[T]):
    """A page is the sequence of its ``items``: ``len()``, iteration, indexing and truthiness.

    Subclasses are dataclasses with an ``items: list[T]`` field; ``__slots__ = ()`` keeps theirs slotted.
    """

    __slots__ = ()
    items: list[T]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        return self.items[index]


def check_per_page(per_page: Any, max_per_page: int) -> None:
    """Raise :class:`~ponykit.errors.InvalidPage` unless ``per_page`` is an int in ``1..max_per_page``."""
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= max_per_page:
        raise InvalidPage(
            f"per_page must be an integer between 1 and {max_per_page}, got {per_page!r} "
            "(pass max_per_page= to allow larger pages)"
        )
