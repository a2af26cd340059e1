"""Oracle tests: every page of both paginators, forwards and backwards, equals the unpaged ordered query."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, db_session, desc, select

import ponykit as pk
from ponykit.query import paginate, paginate_keyset

SECRET = os.urandom(32)
NULLS_FIRST_ASC = {"sqlite": True, "mysql": True, "postgres": False}
SPECS = [("a",), ("-a",), ("a", "-b"), ("-a", "b"), ("b", "a"), ("-b", "-a")]
values = st.one_of(st.none(), st.integers(0, 3))
rows_strategy = st.lists(st.tuples(values, values), max_size=24)


def make_item(db: Database) -> Any:
    """Declare Item(a, b) with nullable integer sort columns, attach and map."""

    class Item(db.Entity):
        a = Optional(int)
        b = Optional(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Item


def reset(item: Any, rows: list[tuple[int | None, int | None]]) -> list[int]:
    """Replace the table's rows by ``rows``; return their ids in insertion order."""
    with db_session:
        item.select().delete(bulk=True)
    with db_session:
        objs = [item(a=a, b=b) for a, b in rows]
    return [o.id for o in objs]


def expected_ids(item: Any, spec: tuple[str, ...], backend: str) -> list[int]:
    """The ids sorted by ``spec`` then id, placing NULLs where ``backend`` places them."""
    with db_session:
        data = [(i.id, i.a, i.b) for i in item.select()]

    def key(row: tuple[int, Any, Any]) -> list[tuple[int, int]]:
        out = []
        for name in spec:
            descending = name.startswith("-")
            value = row[1] if name.lstrip("-") == "a" else row[2]
            nulls_first = NULLS_FIRST_ASC[backend] != descending
            if value is None:
                out.append((0 if nulls_first else 2, 0))
            else:
                out.append((1, -value if descending else value))
        out.append((1, row[0]))
        return out

    return [row[0] for row in sorted(data, key=key)]


def ordered(item: Any, spec: tuple[str, ...]) -> Any:
    """``select(i for i in Item)`` ordered by ``spec`` through Pony's own order_by."""
    attrs = [desc(getattr(item, n[1:])) if n.startswith("-") else getattr(item, n) for n in spec]
    return select(i for i in item).order_by(*attrs)


@settings(max_examples=20)
@given(rows=rows_strategy, spec=st.sampled_from(SPECS), per_page=st.integers(1, 5), data=st.data())
def test_keyset_pages_forward_and_backward_equal_ordered_query(
    db: Database, backend: Any, rows: Any, spec: Any, per_page: int, data: Any
) -> None:
    """Concatenating keyset pages forwards, and backwards, gives the unpaged order with NULLs and ties."""
    item = db.__dict__.get("_test_item") or make_item(db)
    db._test_item = item
    reset(item, rows)
    expected = expected_ids(item, spec, backend.name)
    use_order_arg = data.draw(st.booleans())
    forward: list[list[int]] = []
    cursors: list[Any] = []
    with db_session:
        query = select(i for i in item) if use_order_arg else ordered(item, spec)
        after = None
        while True:
            kwargs: dict[str, Any] = {"order": list(spec)} if use_order_arg else {}
            page = paginate_keyset(query, per_page, after=after, secret=SECRET, **kwargs)
            forward.append([i.id for i in page.items])
            cursors.append(page)
            assert page.has_prev == (after is not None)
            if not page.has_next:
                assert page.next_cursor is None
                break
            assert len(page.items) == per_page
            after = page.next_cursor
            assert len(forward) <= len(rows) + 1
        assert [i for p in forward for i in p] == expected
        backward: list[list[int]] = [forward[-1]]
        prev = cursors[-1].prev_cursor
        while prev is not None:
            page = paginate_keyset(query, per_page, before=prev, secret=SECRET, **kwargs)
            assert page.has_next
            backward.append([i.id for i in page.items])
            prev = page.prev_cursor
            assert len(backward) <= len(rows) + 1
        assert [i for p in reversed(backward) for i in p] == expected
        assert backward == list(reversed(forward))


@settings(max_examples=15)
@given(
    rows=rows_strategy,
    spec=st.sampled_from(SPECS),
    per_page=st.integers(1, 5),
    count=st.sampled_from(["exact", "none", 3]),
)
def test_offset_pages_equal_ordered_query(
    db: Database, backend: Any, rows: Any, spec: Any, per_page: int, count: Any
) -> None:
    """Concatenating every offset page, read forwards and backwards, gives the unpaged ordered query."""
    item = db.__dict__.get("_test_item") or make_item(db)
    db._test_item = item
    reset(item, rows)
    expected = expected_ids(item, spec, backend.name)
    n_pages = max(1, -(-len(expected) // per_page))
    with db_session:
        pages = [paginate(ordered(item, spec), p, per_page, count=count) for p in range(1, n_pages + 1)]
        beyond = paginate(ordered(item, spec), n_pages + 1, per_page, count=count)
        assert beyond.items == []
        assert not beyond.has_next
        assert [i.id for p in pages for i in p.items] == expected
        backwards = [paginate(ordered(item, spec), p, per_page, count=count) for p in range(n_pages, 0, -1)]
        assert [i.id for p in reversed(backwards) for i in p.items] == expected
    assert [p.has_next for p in pages] == [True] * (n_pages - 1) + [False]
    assert [p.has_prev for p in pages] == [False] + [True] * (n_pages - 1)
    if count == "exact":
        assert all(p.total == len(expected) and p.pages == -(-len(expected) // per_page) for p in pages)
    elif count == "none":
        assert all(p.total is None for p in pages)
    else:
        assert all(p.total == min(3, len(expected)) for p in pages)
        assert all(p.total_capped == (len(expected) >= 3) for p in pages)
