"""Offset pagination with page metadata: :func:`paginate` and :class:`Page`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .. import _pony
from ..errors import ConfigurationError, InvalidPage
from ._page import PageItems, check_per_page

__all__ = ["MAX_PER_PAGE", "Page", "paginate", "remember"]

T = TypeVar("T")

MAX_PER_PAGE = 1000
"""The default upper bound of ``per_page`` (pass ``max_per_page=`` to change it per call)."""


@dataclass(frozen=True, slots=True)
class Page(PageItems[T]):
    """One page of an offset-paginated query: a sequence of its ``items`` (``len``, iteration, indexing).

    ``total`` and ``pages`` are None when counting was switched off (``count="none"``). With a capped
    count (``count=N``) they are lower bounds once ``total_capped`` is True.
    """

    items: list[T]
    page: int
    per_page: int
    total: int | None
    pages: int | None
    has_next: bool
    has_prev: bool
    total_capped: bool = False


def _check(page: Any, per_page: Any, max_per_page: int) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidPage(f"page must be an integer >= 1, got {page!r}; pages are numbered from 1")
    check_per_page(per_page, max_per_page)


def _stable(query: Any) -> Any:
    # Offset pages are only well defined over a total order: break ties by primary key. Pony puts a
    # later order_by() in front of the earlier one, so the order is rebuilt with the key at the end.
    entity = _pony.query_entity(query)
    if entity is None:
        return query
    order = _pony.query_order(query)
    if order is None:
        return query  # ordered by an expression: leave it as the caller wrote it
    attrs = [_pony.desc_of(attr) if descending else attr for attr, descending in order]
    attrs += [attr for attr in _pony.entity_pk_attributes(entity) if attr not in {a for a, _ in order}]
    return query.order_by(None).order_by(*attrs)


def _keep_distinct(query: Any) -> Any:
    """``query`` with the DISTINCT Pony gives it unordered, when ordering it would lose it.

    Pony makes a query DISTINCT when it can repeat a row (it iterates a collection, or selects
    attribute values), but only while it is unordered; the ordered page query would repeat rows
    (``total`` would count them too). DISTINCT is put back explicitly when the order is by selected
    columns, which every database accepts with DISTINCT; any other order is refused rather than
    paged over repeated rows.
    """
    if not _pony.implicit_distinct(query):
        return query
    if _pony.query_entity(query) is None and not _pony.lost_distinct(query):
        return query  # unordered, and paginate() orders only entity queries: Pony keeps DISTINCT
    if not _pony.order_in_select(query):
        raise ConfigurationError(
            "paginate(): this query can return the same row more than once (it iterates a collection or "
            "selects attribute values); Pony makes it DISTINCT only while it is unordered, and ponykit "
            "restores DISTINCT only when the order is by selected columns (an entity's own non-lazy "
            "attributes, or the selected expressions). Order it by those, or call .distinct() on the "
            "query yourself if your database accepts its ORDER BY with DISTINCT"
        )
    return query.distinct()


_MEMO_SIZE = 1024


def remember(memo: dict[Any, Any], key: Any, value: Any, limit: int = _MEMO_SIZE) -> None:
    """``memo[key] = value``, emptying ``memo`` first when it holds ``limit`` entries.

    The query helpers' memos are keyed by query shapes (and page numbers, for offset pages), so a
    program has few entries; the bound only stops a stream of distinct pages from growing one.
    """
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value


def _fetch(query: Any, limit: int, offset: int) -> list[Any]:
    """``list(_stable(query).fetch(limit, offset))``, through a prepared statement when possible.

    Pony writes the offset into the SQL text and keeps every distinct text (in its SQL cache and in
    its statement statistics, both never emptied), so each page number a client asks for would stay
    in memory. A statement prepared per query shape and page size binds the offset as a parameter
    instead, and its rows are materialized by ponykit. Queries that cannot be prepared (not over an
    entity, whose SQL depends on values, or on Oracle) go through Pony.
    """
    entity = _pony.query_entity(query)
    if entity is None or not _pony.preparable(query):
        return list(_stable(query).fetch(limit, offset))
    memo = _pony.per_database_cache(_pony.database_of(entity), "offset_pages", dict)
    key = (_pony.query_shape(query), limit, _pony.join_syntax())
    prepared = memo.get(key, False)
    if prepared is False:
        prepared = _pony.prepare(_stable(query), query, limit, bind_offset=True)
        remember(memo, key, prepared)  # None too: this shape goes through Pony
    if prepared is None:
        return list(_stable(query).fetch(limit, offset))
    return _pony.run_prepared(prepared, query, offset=offset)


def paginate(
    query: Any,
    page: int = 1,
    per_page: int = 20,
    count: Literal["exact", "none"] | int = "exact",
    *,
    max_per_page: int = MAX_PER_PAGE,
) -> Page[Any]:
    """Fetch page ``page`` (1-based) of ``per_page`` items of a Pony query, with page metadata.

    ``count`` chooses how ``total`` is known: ``"exact"`` runs ``COUNT(*)``; ``"none"`` skips counting
    and fetches ``per_page + 1`` rows to know ``has_next``; an integer ``N`` counts at most ``N`` rows
    (cheap on huge tables; ``total_capped`` says when the cap was hit). For a query over an entity, the
    primary key is appended to the query's order so that pages never overlap or skip rows; a query
    Pony makes DISTINCT only while unordered (it iterates a collection) is paged with DISTINCT. A bad
    ``page`` or ``per_page`` raises :class:`~ponykit.errors.InvalidPage` before any SQL runs.
    """
    _check(page, per_page, max_per_page)
    query = _keep_distinct(query)
    if not (
        count in ("exact", "none") or (isinstance(count, int) and not isinstance(count, bool) and count > 0)
    ):
        raise InvalidPage(f'count must be "exact", "none" or a positive integer cap, got {count!r}')
    offset = (page - 1) * per_page
    if count == "exact":
        total: int | None = query.count()
        assert total is not None
        items = _fetch(query, per_page, offset) if offset < total else []
        pages = -(-total // per_page)
        return Page(items, page, per_page, total, pages, page < pages, page > 1)
    rows = _fetch(query, per_page + 1, offset)
    has_next = len(rows) > per_page
    items = rows[:per_page]
    if count == "none":
        return Page(items, page, per_page, None, None, has_next, page > 1)
    assert isinstance(count, int)
    total = _pony.count_capped(query, count)
    capped = total >= count
    return Page(items, page, per_page, total, -(-total // per_page), has_next, page > 1, capped)
