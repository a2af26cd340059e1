"""``Page[T]`` and ``CursorPage[T]``: Pydantic response envelopes over ponykit's paginators.

``Page[ItemOut].from_query(query, page=..., per_page=..., request=request)`` runs
:func:`ponykit.query.paginate` and turns each object into ``ItemOut`` (``from_attributes``) while the
session is open, so the response holds plain data. The count and the items come from one snapshot: when
no transaction has begun on the query's Database in this session yet, both run in a
``transaction(isolation="repeatable_read")`` (PostgreSQL and MariaDB; on SQLite every ponykit
transaction is serializable), so a writer committing between the two statements cannot make ``total``
disagree with the items. Inside a transaction that has already begun, they share that transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, TypeAdapter

from .. import _pony
from .._kit import find_kit
from ..query import paginate, paginate_keyset
from ..query.pagination import MAX_PER_PAGE
from ..transactions import transaction

__all__ = ["CursorLinks", "CursorPage", "Page", "PageLinks"]

T = TypeVar("T")


class PageLinks(BaseModel):
    """Links of an offset page: the URL of this request with ``page`` replaced (None where no page is)."""

    self: str | None = None
    first: str | None = None
    prev: str | None = None
    next: str | None = None
    last: str | None = None


class CursorLinks(BaseModel):
    """Links of a keyset page: this request's URL with ``after``/``before`` replaced."""

    self: str | None = None
    first: str | None = None
    prev: str | None = None
    next: str | None = None


@contextmanager
def snapshot(query: Any) -> Iterator[None]:
    """Run the block in one repeatable-read transaction on the query's Database, unless one has begun."""
    entity = _pony.query_entity(query)
    db = _pony.database_of(entity) if entity is not None else None
    if db is None or find_kit(db) is None:
        yield  # not an attached entity query: nothing to choose an isolation level for
        return
    if _pony.in_db_session():
        cache = _pony.session_cache(db)
        if cache is not None and _pony.is_in_transaction(cache):
            yield  # its isolation is fixed already; count and items share this transaction
            return
    with transaction(isolation="repeatable_read", db=db):
        yield


def _converter(cls: type[BaseModel], item: Callable[[Any], Any] | None) -> Callable[[list[Any]], list[Any]]:
    if item is not None:
        return lambda objects: [item(obj) for obj in objects]
    annotation = cls.model_fields["items"].annotation
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return lambda objects: adapter.validate_python(objects, from_attributes=True)


def _link(request: Any, **params: Any) -> str | None:
    if request is None:
        return None
    url = request.url
    for name, value in params.items():
        url = url.remove_query_params(name) if value is None else url.include_query_params(**{name: value})
    return str(url)


class Page(BaseModel, Generic[T]):
    """One page of an offset-paginated list: ``items``, ``total``/``pages`` and ``links``."""

    items: list[T]
    page: int
    per_page: int
    total: int | None
    pages: int | None
    has_next: bool
    has_prev: bool
    links: PageLinks = PageLinks()

    @classmethod
    def from_query(
        cls,
        query: Any,
        *,
        page: int = 1,
        per_page: int = 20,
        request: Any = None,
        count: Literal["exact", "none"] | int = "exact",
        max_per_page: int = MAX_PER_PAGE,
        item: Callable[[Any], Any] | None = None,
    ) -> Page[T]:
        """Page ``page`` of ``query`` (:func:`ponykit.query.paginate`), its items converted to ``T``.

        Items become ``T`` with Pydantic's ``from_attributes`` (``Page[ItemOut]``), or through
        ``item(obj)`` when given. ``request`` (a Starlette/FastAPI request) gives the links. A bad
        ``page``/``per_page`` raises :class:`~ponykit.errors.InvalidPage` (400 with ``install(app)``).
        """
        convert = _converter(cls, item)
        with snapshot(query):
            result = paginate(query, page, per_page, count, max_per_page=max_per_page)
            items = convert(result.items)
        last = result.pages if result.pages else None
        links = PageLinks(
            self=_link(request, page=page),
            first=_link(request, page=1),
            prev=_link(request, page=page - 1) if result.has_prev else None,
            next=_link(request, page=page + 1) if result.has_next else None,
            last=_link(request, page=last) if last else None,
        )
        return cls(
            items=items,
            page=result.page,
            per_page=result.per_page,
            total=result.total,
            pages=result.pages,
            has_next=result.has_next,
            has_prev=result.has_prev,
            links=links,
        )


class CursorPage(BaseModel, Generic[T]):
    """One page of a keyset-paginated list: ``items``, signed ``next_cursor``/``prev_cursor``, ``links``."""

    items: list[T]
    per_page: int
    has_next: bool
    has_prev: bool
    next_cursor: str | None = None
    prev_cursor: str | None = None
    links: CursorLinks = CursorLinks()

    @classmethod
    def from_query(
        cls,
        query: Any,
        *,
        per_page: int = 20,
        after: str | None = None,
        before: str | None = None,
        order: Any = None,
        request: Any = None,
        secret: bytes | None = None,
        max_per_page: int = MAX_PER_PAGE,
        item: Callable[[Any], Any] | None = None,
    ) -> CursorPage[T]:
        """One page of ``query`` by keyset (:func:`ponykit.query.paginate_keyset`), items converted to ``T``.

        A tampered or foreign cursor raises :class:`~ponykit.errors.InvalidCursor` (400 with
        ``install(app)``). The links carry ``after=`` / ``before=`` with the page's cursors.
        """
        convert = _converter(cls, item)
        with snapshot(query):
            result = paginate_keyset(
                query, per_page, after, before, order, secret=secret, max_per_page=max_per_page
            )
            items = convert(result.items)
        nxt, prev = result.next_cursor, result.prev_cursor
        links = CursorLinks(
            self=_link(request, after=after, before=before),
            first=_link(request, after=None, before=None),
            prev=_link(request, after=None, before=prev) if prev else None,
            next=_link(request, after=nxt, before=None) if nxt else None,
        )
        return cls(
            items=items,
            per_page=per_page,
            has_next=result.has_next,
            has_prev=result.has_prev,
            next_cursor=nxt,
            prev_cursor=prev,
            links=links,
        )
