"""Keyset (seek) pagination with signed cursors: :func:`paginate_keyset` and :class:`CursorPage`.

A page is ``WHERE (sort key) comes after (the cursor's values) ORDER BY sort key LIMIT per_page + 1``:
its cost does not grow with the depth of the page, unlike OFFSET. The sort key is the query's
ORDER BY (or ``order=``) with the primary key appended so that it is unique.

NULL sort values are placed where the backend puts them (first in ascending order on SQLite and
MariaDB, last on PostgreSQL), and the predicate follows that placement for each column and direction,
so rows with NULL sort values are never skipped or repeated.

Sensitive and encrypted attributes: cursors are signed, not encrypted, so anyone holding one can read
the sort values in it. Sorting by an attribute whose type is sensitive or encrypted is therefore
refused with :class:`~ponykit.errors.ConfigurationError` (and an encrypted column has no useful order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import _pony
from .._kit import find_kit
from .._sql import escape_dollars
from ..errors import ConfigurationError, InvalidCursor, OptionError
from ._page import PageItems, check_per_page
from .cursor import Signer, bind_arguments, decode_cursor, encode_cursor, fingerprint
from .pagination import MAX_PER_PAGE, remember

__all__ = ["CursorPage", "paginate_keyset"]

T = TypeVar("T")

# Where each backend sorts NULL in ascending order (DESC puts them at the other end).
_NULLS_FIRST_ASC = {"sqlite": True, "mysql": True, "postgres": False, "cockroach": False, "oracle": False}
_MIN_SECRET = 16
# Backends whose planner turns a row-value comparison into one index range.
_ROW_VALUES = frozenset({"postgres", "cockroach"})
_STATEMENTS_PER_PLAN = 64
_SIGNERS = 16  # per Database: the key ring's cursor key, or a few explicit secrets


@dataclass(frozen=True, slots=True, repr=False)
class CursorPage(PageItems[T]):
    """One page of a keyset-paginated query: a sequence of its ``items`` (``len``, iteration, indexing).

    Pass ``next_cursor`` as ``after=`` for the following page and ``prev_cursor`` as ``before=`` for
    the preceding one; each is None when there is no such page. The sort values are taken when the
    page is fetched; the cursors are signed on first access.
    """

    items: list[T]
    has_next: bool
    has_prev: bool
    per_page: int
    # (first row values, last row values, signer, query fingerprint): what the cursors are made from.
    _bound: tuple[list[Any], list[Any], Signer, bytes] | None = field(default=None, compare=False)
    _cursors: dict[str, str | None] = field(default_factory=dict, init=False, compare=False)

    def _cursor(self, which: str) -> str | None:
        if which not in self._cursors:
            wanted = self.has_next if which == "next" else self.has_prev
            if not wanted or self._bound is None:
                self._cursors[which] = None
            else:
                first, last, key, bound_to = self._bound
                self._cursors[which] = encode_cursor(last if which == "next" else first, key, bound_to)
        return self._cursors[which]

    @property
    def next_cursor(self) -> str | None:
        """The cursor to pass as ``after=`` for the next page, or None on the last page."""
        return self._cursor("next")

    @property
    def prev_cursor(self) -> str | None:
        """The cursor to pass as ``before=`` for the previous page, or None on the first page."""
        return self._cursor("prev")

    def __repr__(self) -> str:
        return (
            f"<CursorPage of {len(self.items)} items has_prev={self.has_prev} has_next={self.has_next} "
            f"per_page={self.per_page}>"
        )


@dataclass(frozen=True)
class _Column:
    attr: Any  # the Pony attribute, a handle for _pony functions
    name: str
    descending: bool
    nullable: bool


def _signers(db: Any, secret: bytes | None) -> tuple[Signer, ...]:
    """The cursor signers: the first signs, any of them verifies (the key ring's primary first)."""
    if secret is not None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < _MIN_SECRET:
            raise ConfigurationError(
                f"secret= must be bytes of at least {_MIN_SECRET} random bytes (e.g. os.urandom(32))"
            )
        key = bytes(secret)
        signers = _memo(db, "cursor_signers")
        found: tuple[Signer, ...] | None = signers.get(key)
        if found is None:
            found = (Signer(key),)
            remember(signers, key, found, _SIGNERS)
        return found
    ring = getattr(find_kit(db), "keys", None)
    memo = _memo(db, "cursor_ring")
    known = memo.get("ring")
    if known is not None and known[0] is ring:
        return known[1]  # type: ignore[no-any-return]
    subkey = getattr(ring, "subkey", None)
    if not callable(subkey):
        raise ConfigurationError(
            "paginate_keyset() signs its cursors and has no key: attach the Database with a key ring "
            "(ponykit.attach(db, keys=KeyRing...)) or pass secret=<at least 16 random bytes>"
        )
    # Every key of the ring verifies (a rotation keeps the cursors clients hold valid); the primary
    # (first of key_ids) signs. A key ring is immutable, so its signers are kept while it is the Kit's.
    key_ids = getattr(ring, "key_ids", None)
    if key_ids is None:
        ring_signers: tuple[Signer, ...] = (Signer(bytes(subkey("cursor"))),)
    else:
        ring_signers = tuple(Signer(bytes(subkey("cursor", key_id))) for key_id in key_ids)
    memo["ring"] = (ring, ring_signers)
    return ring_signers


def _parse_order(entity: Any, order: Any) -> list[tuple[Any, bool]]:
    items = order if isinstance(order, (list, tuple)) else [order]
    result = []
    for item in items:
        if isinstance(item, str):
            name, descending = (item[1:], True) if item.startswith("-") else (item, False)
            try:
                attr = _pony.entity_attribute(entity, name)
            except AttributeError:
                known = ", ".join(a.name for a in _pony.entity_attributes(entity))
                raise OptionError(
                    f"paginate_keyset(order=...): {entity.__name__} has no attribute {name!r}; its "
                    f"attributes are {known}; fix the name ('year', or '-year' for descending)"
                ) from None
            result.append((attr, descending))
            continue
        parsed = _pony.order_item(item)
        if parsed is None:
            raise OptionError(
                f"order= takes attribute names ('year', '-year'), attributes (Book.year) or "
                f"desc(Book.year); got {item!r}"
            )
        result.append(parsed)
    return result


def _sort_spec(
    query: Any, entity: Any, order: tuple[tuple[Any, bool], ...] | None, distinct: bool
) -> list[_Column]:
    if order is not None:
        spec = list(order)
    else:
        found = _pony.query_order(query)
        if found is None:
            raise ConfigurationError(
                f"paginate_keyset() cannot read the query's ORDER BY (it is not a list of {entity.__name__} "
                "attributes): pass order=[...] with attribute names, attributes or desc(attribute)"
            )
        spec = found
    columns: list[_Column] = []
    seen: set[Any] = set()
    for attr, descending in spec:
        info = _pony.attr_info(attr)
        if not (issubclass(entity, info.entity) or issubclass(info.entity, entity)):
            raise ConfigurationError(f"cannot sort {entity.__name__} by {attr}: it is not its attribute")
        if info.is_relation or len(info.columns) != 1:
            raise ConfigurationError(
                f"cannot keyset-paginate by {attr}: only single-column, non-relation attributes can be "
                "sort keys (sort by the foreign key's target attribute in the query instead)"
            )
        if _pony.attr_is_sensitive(attr):
            raise ConfigurationError(
                f"cannot keyset-paginate by {attr}: it is sensitive or encrypted and a cursor would reveal "
                "its value; sort by another attribute"
            )
        if distinct and _pony.attr_is_lazy(attr):
            raise ConfigurationError(
                f"cannot keyset-paginate by {attr}: it is lazy, and this query needs DISTINCT (it can repeat "
                f"a {entity.__name__}), with which the database sorts only by selected columns; sort by "
                "another attribute"
            )
        if attr in seen:
            continue
        seen.add(attr)
        columns.append(_Column(attr, info.name, descending, info.nullable and not info.pk))
    for attr in _pony.entity_pk_attributes(entity):
        info = _pony.attr_info(attr)
        if info.is_relation:
            raise ConfigurationError(
                f"paginate_keyset() does not support {entity.__name__}: its primary key contains a relation"
            )
        if attr not in seen:
            seen.add(attr)
            columns.append(_Column(attr, info.name, False, False))
    return columns


def _predicate(
    db: Any, alias: str, columns: list[_Column], values: list[Any], backward: bool
) -> tuple[str, list[int]]:
    """SQL (with ``$v[i]`` parameters) selecting the rows strictly after ``values`` in the scan order.

    Returns the SQL and, for each ``$v[i]``, the index of the sort value it binds. The SQL depends
    only on which values are NULL (and the direction), never on the values themselves.
    """
    q = _pony.quote_name
    backend = _pony.dialect(db)
    nulls_first_asc = _NULLS_FIRST_ASC[backend]
    params: list[int] = []  # for each $v[i], the index of the sort value it binds

    def param(index: int) -> str:
        params.append(index)
        return f"$v[{len(params) - 1}]"

    # Pony parses this text for $-expressions: a $ in an identifier is escaped, never evaluated.
    names = [escape_dollars(f"{q(db, alias)}.{q(db, _pony.attr_column(column.attr))}") for column in columns]
    directions = {column.descending != backward for column in columns}
    if (
        backend in _ROW_VALUES
        and len(columns) > 1
        and len(directions) == 1
        and not any(column.nullable for column in columns)
        and all(v is not None for v in values)
    ):
        # One direction and no NULLs: a row-value comparison, which PostgreSQL matches to an index
        # on these columns as one range (the expanded form needs an extra filter step per row).
        marks = ", ".join(param(i) for i in range(len(columns)))
        return f"({', '.join(names)}) {'<' if directions.pop() else '>'} ({marks})", params

    disjuncts: list[str] = []
    equal: list[str] = []
    for index, (column, col, value) in enumerate(zip(columns, names, values, strict=True)):
        descending = column.descending != backward
        nulls_first = nulls_first_asc != descending
        if value is None:
            after = f"{col} IS NOT NULL" if nulls_first else None
        else:
            after = f"{col} {'<' if descending else '>'} {param(index)}"
            if column.nullable and not nulls_first:
                after = f"({after} OR {col} IS NULL)"
        if after is not None:
            disjuncts.append(" AND ".join([*equal, after]) if equal else after)
        equal.append(f"{col} IS NULL" if value is None else f"{col} = {param(index)}")
    if not disjuncts:
        return "1 = 0", params
    sql = disjuncts[0] if len(disjuncts) == 1 else "(" + " OR ".join(f"({d})" for d in disjuncts) + ")"
    first, first_value = columns[0], values[0]
    if len(disjuncts) > 1 and first_value is not None and not first.nullable:
        # A redundant range on the leading column lets the database seek an index on it.
        sql = f"{names[0]} {'<=' if first.descending != backward else '>='} {param(0)} AND {sql}"
    return sql, params


def _memo(db: Any, name: str) -> dict[Any, Any]:
    # Per-Database memos stored on the Database, so they never keep one alive; bounded by remember().
    return _pony.per_database_cache(db, name, dict)  # type: ignore[no-any-return]


class _Plan:
    """What one query shape and sort order need, computed once: sort columns, fingerprint, SQL."""

    __slots__ = ("alias", "arguments", "bound_to", "checks", "columns", "preparable", "statements")

    def __init__(
        self,
        columns: list[_Column],
        bound_to: bytes,
        alias: str,
        preparable: bool,
        arguments: Any,
        checks: list[Callable[[Any], bool]],
    ) -> None:
        self.columns = columns
        self.bound_to = bound_to
        self.alias = alias
        self.preparable = preparable
        # The binder of the unordered query's parameters (None: Pony computes them), for the fingerprint.
        self.arguments = arguments
        # For each sort column, the test a cursor's value must pass before it goes into SQL.
        self.checks = checks
        # (direction, types of the cursor values, limit, join syntax) -> (prepared SQL, $v positions)
        self.statements: dict[Any, tuple[Any, list[int]]] = {}


def _plan(db: Any, query: Any, entity: Any, order: Any, distinct: bool = False) -> _Plan:
    parsed = None if order is None else tuple(_parse_order(entity, order))
    preparable = _pony.preparable(query)
    plans = _memo(db, "keyset_plans")
    key = (_pony.query_shape(query), parsed, distinct)
    if preparable:
        found: _Plan | None = plans.get(key)
        if found is not None:
            return found
    columns = _sort_spec(query, entity, parsed, distinct)
    base = query.order_by(None)
    spec = ",".join(f"{_pony.attr_label(c.attr)}:{'d' if c.descending else 'a'}" for c in columns)
    # Fingerprints are stable across processes: entity, SQL text of the unordered query, sort spec.
    plan = _Plan(
        columns,
        fingerprint(entity.__name__, base.get_sql(), spec),
        _pony.query_alias(base),
        preparable,
        _pony.prepare(base, base, 1) if preparable else None,
        [_pony.column_value_check(column.attr, _pony.dialect(db)) for column in columns],
    )
    if preparable:
        remember(plans, key, plan)
    return plan


def _fetch(
    db: Any, plan: _Plan, query: Any, values: list[Any] | None, backward: bool, limit: int
) -> list[Any]:
    """The first ``limit`` rows after ``values`` (or from the start) in the scan order."""
    types = None if values is None else tuple(map(type, values))
    shape = (backward, types, limit, _pony.join_syntax())
    entry = plan.statements.get(shape)
    if entry is None:
        columns = plan.columns
        base = query.order_by(None)
        filtered, sql, positions = base, None, list[int]()
        if values is not None:
            sql, positions = _predicate(db, plan.alias, columns, values, backward)
            filtered = _pony.filter_raw(base, sql, [values[i] for i in positions])
        ordered = filtered.order_by(
            *[_pony.desc_of(c.attr) if c.descending != backward else c.attr for c in columns]
        )
        prepared = _pony.prepare(ordered, base, limit, sql) if plan.preparable else None
        if prepared is None:
            return _pony.fetch_entities(ordered, limit)
        entry = (prepared, positions)
        remember(plan.statements, shape, entry, _STATEMENTS_PER_PLAN)
    prepared, positions = entry
    return _pony.run_prepared(prepared, query, None if values is None else [values[i] for i in positions])


def _row_values(obj: Any, columns: list[_Column]) -> list[Any]:
    values = []
    for column in columns:
        # The value in the session, read without marking it read (a cursor is not a user's read).
        value = _pony.loaded_value(obj, column.attr)
        if value is _pony.not_loaded():
            value = getattr(obj, column.name)
        values.append(_pony.column_value(column.attr, value))
    return values


def _check_values(plan: _Plan, values: list[Any]) -> None:
    # Only a holder of the key can sign a cursor, but its values must still be ones the sort columns
    # can hold, or they would reach SQL (a database error, or an odd page).
    for check, column, value in zip(plan.checks, plan.columns, values, strict=True):
        if not check(value):
            label, expected = _pony.attr_expectation(column.attr)
            raise InvalidCursor(
                f"invalid cursor: its value for {label} is not a value of that "
                f"attribute's column (expected {expected}"
                f"{' or None' if column.nullable else ''}, got {type(value).__name__}); start again from "
                "the first page"
            )


def paginate_keyset(
    query: Any,
    per_page: int = 20,
    after: str | None = None,
    before: str | None = None,
    order: Any = None,
    *,
    secret: bytes | None = None,
    max_per_page: int = MAX_PER_PAGE,
    bind_parameters: bool = True,
) -> CursorPage[Any]:
    """Fetch one page of a Pony query by keyset, returning a :class:`CursorPage` with signed cursors.

    The sort comes from the query's ``order_by`` (plain attributes of its entity) or from ``order=``
    (``"year"``, ``"-year"``, ``Book.year`` or ``desc(Book.year)``, or a list of them); the primary key
    is appended. ``after=`` continues after a ``next_cursor``, ``before=`` goes back from a
    ``prev_cursor``. Cursors are signed with HMAC-SHA256 using the Kit's key ring (subkey
    ``"cursor"``; signed with the primary key, accepted under any key of the ring) or ``secret=``; a
    tampered, truncated or foreign cursor, or one whose values do not fit the sort attributes, raises
    :class:`~ponykit.errors.InvalidCursor` before any SQL runs.

    A cursor is tied to the entity, the SQL of the unordered query, the sort order and (with
    ``bind_parameters=True``, the default) the values of the query's parameters: a cursor of
    ``score > lo`` taken with ``lo = 5`` is refused for ``lo = 50``. Pass ``bind_parameters=False`` for
    a query whose parameter values change from one request to the next (``datetime.now()``). A query
    that Pony makes DISTINCT only while unordered (it iterates a collection) is paged with DISTINCT.
    """
    check_per_page(per_page, max_per_page)
    if after is not None and before is not None:
        raise InvalidCursor("pass after= or before=, not both")
    entity = _pony.query_entity(query)
    if entity is None:
        raise ConfigurationError(
            "paginate_keyset() needs a query that selects entities, like select(b for b in Book)"
        )
    distinct = _pony.implicit_distinct(query)
    if distinct:
        # Pony leaves DISTINCT out of the ordered page query: keep the rows of the unordered query.
        query = query.distinct()
    db = _pony.database_of(entity)
    signers = _signers(db, secret)
    plan = _plan(db, query, entity, order, distinct)
    bound_to = plan.bound_to
    if bind_parameters:
        bound_to = bind_arguments(bound_to, _pony.query_arguments(query, plan.arguments))
    backward = before is not None
    cursor = before if backward else after
    values = None
    if cursor is not None:
        values = decode_cursor(cursor, signers, bound_to, len(plan.columns))
        _check_values(plan, values)
    rows = _fetch(db, plan, query, values, backward, per_page + 1)
    columns = plan.columns
    more = len(rows) > per_page
    items = rows[:per_page]
    if backward:
        items.reverse()
        has_prev, has_next = more, True
    else:
        has_prev, has_next = cursor is not None, more
    bound = None
    if items and (has_prev or has_next):
        # Only the cursors the page will hand out: the first row's values for prev_cursor, the last
        # row's for next_cursor.
        bound = (
            _row_values(items[0], columns) if has_prev else [],
            _row_values(items[-1], columns) if has_next else [],
            signers[0],
            bound_to,
        )
    return CursorPage(items, has_next, has_prev, per_page, bound)
